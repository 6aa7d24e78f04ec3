"""Encryption at rest as configured: ``[store] encryption`` must be stated, keys from a file or
the environment, ``wor-bridge store rotate-key``, and the evidence: after a demo run with
encryption on, no fixture patient value lies in any store file."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import structlog.testing

from tests import sealed
from tests.cases import PATIENT_VALUES, REPO
from tests.test_store_sealed import T0, referral
from wor_bridge import bootstrap
from wor_bridge.adapters.sealing import AesGcmSealer, parse_keys
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.config import load_app
from wor_bridge.demo import scenario
from wor_bridge.errors import ConfigError

EXAMPLE = REPO / "config" / "wor-bridge.toml"


def cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``wor-bridge ARGS`` in a process of its own."""
    script = Path(sys.executable).parent / "wor-bridge"
    return subprocess.run(
        [str(script), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def config(tmp_path: Path, store: str) -> Path:
    """The example configuration with these ``[store]`` lines (the store in ``tmp_path``)."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace('mappings_dir = "../mappings"', f'mappings_dir = "{REPO / "mappings"}"')
    text = text.replace('path = "wor-bridge.sqlite"', f'path = "{tmp_path / "s.sqlite"}"')
    assert 'encryption = "off"' in text
    path = tmp_path / "c.toml"
    path.write_text(text.replace('encryption = "off"', store), encoding="utf-8")
    return path


def test_serve_refuses_to_start_without_an_encryption_decision(tmp_path: Path) -> None:
    """``serve`` exits 1 naming the setting when ``[store] encryption`` is not stated."""
    proc = cli("serve", "--config", config(tmp_path, ""))
    assert proc.returncode == 1
    err = proc.stderr
    assert 'set encryption = "aes-gcm"' in err
    assert 'encryption = "off"' in err
    assert not (tmp_path / "s.sqlite").exists()


@pytest.mark.parametrize(
    ("store", "problem"),
    [
        ('encryption = "aes-gcm"', "needs key_file or key_env"),
        ('encryption = "aes-gcm"\nkey_file = "k"\nkey_env = "K"', "needs key_file or key_env"),
        ('encryption = "aes-gcm"\nkey_file = "missing.keys"', "missing.keys: FileNotFoundError"),
        ('encryption = "aes-gcm"\nkey_env = "WOR_BRIDGE_TEST_NO_SUCH_KEYS"', "no key found"),
        ('encryption = "aes-gcm"\nkey_file = "bad.keys"', "expected 32 bytes, found 3"),
        ('encryption = "rot13"', "encryption"),
    ],
)
def test_a_key_that_cannot_be_used_stops_start_up(tmp_path: Path, store: str, problem: str) -> None:
    """Each missing, doubled, unreadable or malformed key source is a configuration error that
    names it and never shows key material."""
    (tmp_path / "bad.keys").write_text("k1:YWJj\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=problem) as caught:
        bootstrap.build(load_app(config(tmp_path, store)))
    assert "YWJj" not in str(caught.value)


def test_keys_from_a_file_relative_to_the_configuration_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key file resolves against the configuration file; a variable works the same way; the
    store they open seals what it stores."""
    (tmp_path / "secrets").mkdir()
    entries = sealed.entries("k1")
    (tmp_path / "secrets" / "store.keys").write_text(entries, encoding="utf-8")
    by_file = config(tmp_path, 'encryption = "aes-gcm"\nkey_file = "secrets/store.keys"')
    store = bootstrap.build(load_app(by_file)).store
    store.add_referral(referral(), T0)
    assert b"Jansen" not in (tmp_path / "s.sqlite").read_bytes()
    monkeypatch.setenv("WOR_BRIDGE_TEST_KEYS", entries)
    by_env = config(tmp_path, 'encryption = "aes-gcm"\nkey_env = "WOR_BRIDGE_TEST_KEYS"')
    task = bootstrap.build(load_app(by_env)).store.get_task("task-1")
    assert task is not None
    assert b"Jansen" in task.bundle


def test_rotate_key_command_reseals_and_is_audited(tmp_path: Path) -> None:
    """``wor-bridge store rotate-key`` moves the rows to the new first key, prints counts (no
    values), audits the run; afterwards the new key alone reads the store."""
    keys = tmp_path / "store.keys"
    k1, k2 = sealed.entries("k1"), sealed.entries("k2")
    keys.write_text(k1, encoding="utf-8")
    path = config(tmp_path, 'encryption = "aes-gcm"\nkey_file = "store.keys"')
    bootstrap.build(load_app(path)).store.add_referral(referral(), T0)
    keys.write_text(k2 + k1, encoding="utf-8")
    proc = cli("store", "rotate-key", "--config", path, "--batch", "1", "--operator", "ops")
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert summary == {
        "active_key": "k2",
        "referrals": 1,
        "outbox_entries": 0,
        "audit_records_per_key": {},
    }
    keys.write_text(k2, encoding="utf-8")
    store = SqliteOutboxStore(tmp_path / "s.sqlite", sealer=AesGcmSealer(parse_keys(k2)))
    assert store.get_task("task-1") is not None
    (record,) = [r for r in store.audit_records() if r["event"] == "store_rotate_key"]
    assert (record["outcome"], record["user"], record["object_id"]) == ("success", "ops", "k2")


def test_rotate_key_without_encryption_says_so(tmp_path: Path) -> None:
    """With ``encryption = "off"`` the command exits 1 with the reason, and audits the attempt."""
    path = config(tmp_path, 'encryption = "off"')
    bootstrap.build(load_app(path))  # the store exists: an operator command never creates one
    proc = cli("store", "rotate-key", "--config", path)
    assert proc.returncode == 1
    assert "needs [store] encryption" in proc.stderr
    (record,) = SqliteOutboxStore(tmp_path / "s.sqlite").audit_records()
    assert (record["event"], record["outcome"]) == ("store_rotate_key", "failed")


def test_new_key_prints_an_entry_the_key_parser_accepts() -> None:
    """``wor-bridge store new-key ID`` prints one usable ``ID:BASE64`` entry (a real process)."""
    proc = cli("store", "new-key", "2026-12")
    assert proc.returncode == 0, proc.stderr[-500:]
    (key,) = parse_keys(proc.stdout)
    assert key.id == "2026-12"


def forms(value: str) -> dict[str, bytes]:
    """The byte forms a patient value could take in a file: UTF-8, JSON-escaped, UTF-16."""
    return {
        "utf-8": value.encode(),
        "json": json.dumps(value)[1:-1].encode(),
        "utf-16-le": value.encode("utf-16-le"),
        "utf-16-be": value.encode("utf-16-be"),
    }


def test_after_a_demo_run_with_encryption_no_store_file_holds_a_patient_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo (referrals pushed through the real service, delivered, feedback received, the
    Dutch flows) with ``encryption = "aes-gcm"``: the database, its -wal and -shm hold none of
    the fixture patient values in UTF-8, JSON-escaped or UTF-16 form; the store does."""
    keys = sealed.entries("demo")
    watcher = SqliteOutboxStore(tmp_path / "demo.sqlite", sealer=AesGcmSealer(parse_keys(keys)))
    watcher.stats(T0)  # this connection stays open: the -wal file is kept after the run
    assert scenario.run(folder=tmp_path, keys=keys) == 0, capsys.readouterr().out[-3000:]
    files = sorted(tmp_path.glob("demo.sqlite*"))
    assert [f.name for f in files] == ["demo.sqlite", "demo.sqlite-shm", "demo.sqlite-wal"]
    assert (tmp_path / "demo.sqlite-wal").stat().st_size > 0
    assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
    found = sorted(
        {
            f"#{n} {kind} in {f.name}"
            for f in files
            for n, value in enumerate(PATIENT_VALUES)
            for kind, form in forms(value).items()
            if form in f.read_bytes()
        }
    )
    assert not found, found  # indexes and file names only, never the values
    readable = b"".join(e.payload for e in watcher.list_entries(None, 1000))
    assert any(value.encode() in readable for value in PATIENT_VALUES)  # the data is there


@pytest.mark.parametrize("batch", ["0", "-5"])
def test_rotate_key_refuses_a_batch_that_is_not_positive(tmp_path: Path, batch: str) -> None:
    """``--batch`` 0 or below is a usage error (exit 64), never a run reported done that sealed
    nothing; the row stays as it was."""
    keys = tmp_path / "store.keys"
    k1, k2 = sealed.entries("k1"), sealed.entries("k2")
    keys.write_text(k1, encoding="utf-8")
    path = config(tmp_path, 'encryption = "aes-gcm"\nkey_file = "store.keys"')
    bootstrap.build(load_app(path)).store.add_referral(referral(), T0)
    keys.write_text(k2 + k1, encoding="utf-8")
    proc = cli("store", "rotate-key", "--config", path, "--batch", batch)
    assert proc.returncode == 64, proc.stdout
    assert "--batch" in proc.stderr
    store = SqliteOutboxStore(tmp_path / "s.sqlite", sealer=AesGcmSealer(parse_keys(k1)))
    assert store.get_task("task-1") is not None  # still under k1: nothing moved


@pytest.mark.parametrize(("mode", "warned"), [(0o600, False), (0o640, False), (0o644, True)])
def test_a_key_file_others_may_read_is_named_in_a_warning(
    tmp_path: Path, mode: int, warned: bool
) -> None:
    """A key file with bits for others (or group write) is used but named in a warning with its
    mode, never its content; owner-only or group-read is quiet."""
    keys = tmp_path / "store.keys"
    entries = sealed.entries("k1")
    keys.write_text(entries, encoding="utf-8")
    keys.chmod(mode)
    path = config(tmp_path, 'encryption = "aes-gcm"\nkey_file = "store.keys"')
    with structlog.testing.capture_logs() as logs:
        bootstrap.sealer_for(load_app(path))
    found = [e for e in logs if e["event"] == "store_key_file_not_private"]
    assert [(e["file"], e["mode"]) for e in found] == (
        [("store.keys", f"{mode:04o}")] if warned else []
    )
    assert entries.split(":")[1][:20] not in repr(logs)


def test_a_value_under_a_key_no_longer_configured_is_a_store_error_in_the_cli(
    tmp_path: Path,
) -> None:
    """An older row sealed with a key taken out of the file too early: ``outbox list`` exits 1
    with the store error that names the key (not "internal error"), and no value."""
    keys = tmp_path / "store.keys"
    k1, k2 = sealed.entries("k1"), sealed.entries("k2")
    keys.write_text(k1, encoding="utf-8")
    path = config(tmp_path, 'encryption = "aes-gcm"\nkey_file = "store.keys"')
    bootstrap.build(load_app(path)).store.add_referral(referral(1), T0)
    keys.write_text(k2 + k1, encoding="utf-8")
    bootstrap.build(load_app(path)).store.add_referral(referral(2), T0)
    keys.write_text(k2, encoding="utf-8")  # k1 removed before rotate-key ran
    proc = cli("outbox", "list", "--config", path)
    assert proc.returncode == 1
    assert "store error" in proc.stderr
    assert "names key 'k1', which is not configured" in proc.stderr
    assert "internal error" not in proc.stderr
    assert "Jansen" not in proc.stderr + proc.stdout
