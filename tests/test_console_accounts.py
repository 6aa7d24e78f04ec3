"""Console accounts as use cases on a fixed clock: sign-in, idle and absolute timeouts,
throttling, disabling, resetting; and the ``wor-bridge account`` CLI (password never in argv)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import pyotp
import pytest

from tests.service_harness import write_config
from wor_bridge import bootstrap
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.core.account import ConsoleSettings
from wor_bridge.usecases import accounts as uc

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
PASSWORD = "correct horse battery staple"
SETTINGS = ConsoleSettings(idle_timeout_s=600, max_age_s=3600, login_max_failures=3)


def _world() -> tuple[MemoryOutboxStore, MemoryOutboxStore, FixedClock]:
    store = MemoryOutboxStore()
    accounts = store
    clock = FixedClock(T0)
    uc.create(
        accounts,
        store,
        clock,
        username="coach.a",
        role="coach",
        organisation="welzijn-voorbeeld",
        password=PASSWORD,
        known_organisations=frozenset({"welzijn-voorbeeld"}),
    )
    return accounts, store, clock


def _sign_in(
    accounts: MemoryOutboxStore, store: MemoryOutboxStore, clock: FixedClock, pw: str = PASSWORD
) -> uc.SignedIn | uc.Refused:
    return uc.sign_in(
        accounts, store, clock, SETTINGS, username="coach.a", password=pw, address="10.0.0.1"
    )


def test_the_password_is_stored_as_an_argon2id_hash() -> None:
    """No clear password is kept: the hash is argon2id."""
    accounts, _, _ = _world()
    stored = accounts.get_account("coach.a")
    assert stored is not None
    assert stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash


def test_a_session_ends_after_the_idle_timeout_and_the_maximum_age() -> None:
    """Used within the idle time it lives on, up to its maximum age; idle too long it ends."""
    accounts, store, clock = _world()
    signed = _sign_in(accounts, store, clock)
    assert isinstance(signed, uc.SignedIn)
    for _ in range(5):  # 5 x 9 minutes: each use within the idle timeout
        clock.advance(540)
        assert uc.current(accounts, clock, SETTINGS, signed.session_id) is not None
    clock.advance(900)  # 60 minutes after sign-in: the maximum age
    assert uc.current(accounts, clock, SETTINGS, signed.session_id) is None
    again = _sign_in(accounts, store, clock)
    assert isinstance(again, uc.SignedIn)
    clock.advance(601)
    assert uc.current(accounts, clock, SETTINGS, again.session_id) is None


def test_the_session_id_is_new_at_every_sign_in_and_stored_hashed() -> None:
    """Two sign-ins give two ids; the store holds neither in clear."""
    accounts, store, clock = _world()
    first, second = _sign_in(accounts, store, clock), _sign_in(accounts, store, clock)
    assert isinstance(first, uc.SignedIn)
    assert isinstance(second, uc.SignedIn)
    assert first.session_id != second.session_id
    assert accounts.get_session(first.session_id) is None
    assert accounts.get_session(first.session.id_hash) is not None


def test_failures_throttle_the_username_until_the_window_passes() -> None:
    """After the allowed failures even the right password is refused; later it works again."""
    accounts, store, clock = _world()
    for _ in range(3):
        assert _sign_in(accounts, store, clock, "wrong guess here") == uc.Refused("invalid")
    assert _sign_in(accounts, store, clock) == uc.Refused("throttled")
    clock.advance(SETTINGS.login_window_s + 1)
    assert isinstance(_sign_in(accounts, store, clock), uc.SignedIn)
    outcomes = [r["outcome"] for r in store.audit_records() if r["event"] == "console_login"]
    assert outcomes.count("refused") == 3
    assert outcomes.count("throttled") == 1


def test_a_disabled_account_cannot_sign_in_and_loses_its_session() -> None:
    """Disable ends the session and refuses sign-in; reset enables it with the new password."""
    accounts, store, clock = _world()
    signed = _sign_in(accounts, store, clock)
    assert isinstance(signed, uc.SignedIn)
    uc.disable(accounts, store, clock, "coach.a")
    assert uc.current(accounts, clock, SETTINGS, signed.session_id) is None
    assert _sign_in(accounts, store, clock) == uc.Refused("invalid")
    uc.reset(accounts, store, clock, "coach.a", "another long passphrase")
    assert isinstance(_sign_in(accounts, store, clock, "another long passphrase"), uc.SignedIn)


def test_account_fields_are_checked() -> None:
    """Short passwords, unknown organisations, a coach without one and taken names are refused."""
    accounts, store, clock = _world()

    def make(**kw: object) -> None:
        fields: dict[str, object] = {
            "username": "new.user",
            "role": "coach",
            "organisation": "welzijn-voorbeeld",
            "password": PASSWORD,
            "known_organisations": frozenset({"welzijn-voorbeeld"}),
            **kw,
        }
        uc.create(accounts, store, clock, **fields)  # type: ignore[arg-type]

    for bad in (
        {"password": "short"},
        {"organisation": "elsewhere"},
        {"organisation": None},
        {"role": "operator"},
        {"username": "Bad Name"},
        {"username": "coach.a"},
    ):
        with pytest.raises(uc.AccountError):
            make(**bad)


def test_totp_codes_of_the_current_step_pass_and_others_fail() -> None:
    """With TOTP on, the code of now passes once; an old one and a used one do not."""
    accounts, store, clock = _world()
    changed = uc.reset(accounts, store, clock, "coach.a", PASSWORD, totp=True)
    assert changed.totp_secret is not None
    totp = pyotp.TOTP(changed.totp_secret)

    def attempt(code: str) -> uc.SignedIn | uc.Refused:
        return uc.sign_in(
            accounts, store, clock, SETTINGS, username="coach.a", password=PASSWORD, code=code,
            address="10.0.0.2",
        )  # fmt: skip

    assert attempt(totp.at(T0 - dt.timedelta(minutes=10))) == uc.Refused("invalid")
    code = totp.at(T0)
    assert isinstance(attempt(code), uc.SignedIn)
    assert attempt(code) == uc.Refused("invalid")  # the same code again: used


def _cli(config: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wor_bridge.cli", "account", *args, "--config", str(config)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_account_cli_reads_the_password_from_stdin(tmp_path: Path) -> None:
    """create/disable/reset/list: the password comes from stdin, never argv; list shows no hash."""
    config = write_config(tmp_path, "http://127.0.0.1:9/fhir")
    made = _cli(
        config,
        "create",
        "coach.cli",
        "--role",
        "coach",
        "--organisation",
        "welzijn-voorbeeld",
        stdin=PASSWORD + "\n",
    )
    assert made.returncode == 0, made.stderr
    assert PASSWORD not in made.stdout
    assert _cli(config, "create", "coach.cli", "--role", "operator", stdin=PASSWORD).returncode == 1
    short = _cli(config, "create", "op.short", "--role", "operator", stdin="short\n")
    assert short.returncode == 1
    assert "at least" in short.stderr
    assert _cli(config, "disable", "coach.cli").returncode == 0
    listed = _cli(config, "list")
    assert '"disabled": true' in listed.stdout
    assert "argon2" not in listed.stdout
    reset = _cli(config, "reset", "coach.cli", "--totp", stdin="a new long passphrase\n")
    assert reset.returncode == 0
    assert "otpauth://totp/" in reset.stdout
    c = bootstrap.load(config)
    assert c.accounts is not None
    account = c.accounts.get_account("coach.cli")
    assert account is not None
    assert not account.disabled
    assert account.totp_secret is not None
