"""Installing and configuring (issue 13): ``init``, ``key``, the environment and secret files, one
rule for relative paths, start-up refusals, operator commands that never create a store, exit
codes (64 for usage errors, 1 for a busy port), and the demo's current dates.

The CLI runs in-process (``main``) except where the process boundary is the point.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from tests.service_harness import free_port
from wor_bridge.adapters.sealing import new_key_entry
from wor_bridge.cli.main import main
from wor_bridge.config import load_app
from wor_bridge.config_sources import apply_environment
from wor_bridge.demo import credentials, dates
from wor_bridge.errors import ConfigError
from wor_bridge.shipped import shipped

KEY = "a-test-key-0123456789"
KEY_SHA256 = hashlib.sha256(KEY.encode()).hexdigest()


def _starter(folder: Path, extra: str = "", *, key_line: str | None = None) -> Path:
    """The shipped starter configuration in ``folder`` (client key ``KEY``) plus ``extra``."""
    text = shipped("config", "starter.toml").read_text(encoding="utf-8")
    line = f'key_sha256 = "{KEY_SHA256}"' if key_line is None else key_line
    text = text.replace('key_sha256 = "{key_sha256}"', line) + extra
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "store.keys").write_text(new_key_entry("k1") + "\n", encoding="utf-8")
    path = folder / "wor-bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _keep_logging() -> Iterator[None]:
    """``main`` points the JSON log at the (captured) stderr: restore the configuration after."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def _sections() -> frozenset[str]:
    return frozenset({"destinations", "clients", "service", "store", "pull"})


# --- init and key ------------------------------------------------------------------------------


def test_init_writes_a_starter_with_only_the_key_hash_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """init prints a fresh key once, stores only its SHA-256 (file 0600), writes a store key
    (0600; the store is encrypted at rest), loads, and refuses to overwrite (exit 1, unchanged)."""
    folder = tmp_path / "etc" / "wor-bridge"
    assert main(["init", str(folder)]) == 0
    out = capsys.readouterr().out
    key = out.split("not stored; give it to the GP system): ")[1].split()[0]
    target = folder / "wor-bridge.toml"
    text = target.read_text(encoding="utf-8")
    assert key not in text
    assert hashlib.sha256(key.encode()).hexdigest() in text
    assert target.stat().st_mode & 0o777 == 0o600
    keys = folder / "store.keys"
    assert keys.stat().st_mode & 0o777 == 0o600
    assert keys.read_text(encoding="utf-8").startswith("k1:")
    config = load_app(target)
    assert config.store.encryption == "aes-gcm"
    assert config.store.key_file == str(keys)
    assert config.clients[0].key_sha256 == hashlib.sha256(key.encode()).hexdigest()
    assert Path(config.store.path) == folder / "wor-bridge.sqlite"
    assert main(["init", str(folder)]) == 1
    assert "never overwrites" in capsys.readouterr().err
    assert target.read_text(encoding="utf-8") == text


@pytest.mark.parametrize(
    ("where", "message"),
    [("file", "is not a directory"), ("file/sub", "init cannot write into")],
)
def test_init_at_a_path_that_cannot_be_its_directory_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, message: str
) -> None:
    """init pointed at a file (or below one) exits 1 with one line naming the problem, not
    "changed while init ran" or a traceback, and prints no key."""
    (tmp_path / "file").write_text("x", encoding="utf-8")
    assert main(["init", str(tmp_path / where)]) == 1
    captured = capsys.readouterr()
    assert message in captured.err
    assert "Traceback" not in captured.err
    assert captured.out == ""
    assert (tmp_path / "file").read_text(encoding="utf-8") == "x"


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""])
def test_key_hash_removes_one_trailing_line_break(ending: bytes) -> None:
    """``echo KEY | wor-bridge key hash`` gives SHA-256 of the key alone (sha256sum would not)."""
    proc = subprocess.run(
        [sys.executable, "-m", "wor_bridge.cli", "key", "hash"],
        input=KEY.encode() + ending,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert proc.returncode == 0
    assert proc.stdout.decode().strip() == KEY_SHA256
    assert hashlib.sha256(KEY.encode() + b"\n").hexdigest() != KEY_SHA256


@pytest.mark.parametrize("given", [b"", b"\n", b"two\nlines\n", b"with space\n", b"\xff\n"])
def test_key_hash_refuses_what_cannot_be_a_key(
    given: bytes, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An empty, multi-line, spaced or non-UTF-8 key is exit 64 with a message, no hash."""

    class Stdin:
        buffer = __import__("io").BytesIO(given)

    monkeypatch.setattr(sys, "stdin", Stdin)
    assert main(["key", "hash"]) == 64
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "key hash:" in captured.err


def test_key_new_prints_a_fresh_key_and_its_hash(capsys: pytest.CaptureFixture[str]) -> None:
    """key new: a 43-character URL-safe key and the SHA-256 that matches it; never the same."""
    keys = []
    for _ in range(2):
        assert main(["key", "new"]) == 0
        lines = dict(line.split() for line in capsys.readouterr().out.splitlines())
        assert len(lines["key"]) == 43
        assert lines["key_sha256"] == hashlib.sha256(lines["key"].encode()).hexdigest()
        keys.append(lines["key"])
    assert keys[0] != keys[1]


# --- the shipped example and the demo's credentials --------------------------------------------


def test_shipped_example_has_no_working_key_and_the_demo_adds_its_own() -> None:
    """The example configuration has no key hash, webhook secret or token; the demo's text has."""
    example = load_app()
    assert all(c.key_sha256 is None for c in example.clients)
    assert example.webhooks == ()
    assert all(d.auth.token is None for d in example.core.destinations)
    raw = tomllib.loads(credentials.demo_configuration())
    hashes = {c["id"]: c.get("key_sha256") for c in raw["clients"]}
    assert hashes["his-example"] == hashlib.sha256(b"example-his-key").hexdigest()
    assert len(set(hashes.values())) == len(hashes)
    assert raw["webhooks"][0]["secret"] == credentials.WEBHOOK_SECRET


def test_serve_without_config_refuses_to_start(capsys: pytest.CaptureFixture[str]) -> None:
    """``serve`` without --config is exit 64 with a message naming init; nothing is served."""
    assert main(["serve"]) == 64
    assert "serve needs --config" in capsys.readouterr().err


# --- environment, secret files, paths ----------------------------------------------------------


def test_environment_reaches_arrays_by_index_and_by_id(tmp_path: Path) -> None:
    """WOR_BRIDGE_DESTINATIONS__0__ENDPOINT and WOR_BRIDGE_CLIENTS__<ID>__KEY_SHA256 override
    entries of arrays of tables; JSON values are read as JSON; unrelated variables are ignored."""
    raw = {"destinations": [{"id": "a", "endpoint": "x"}], "clients": [{"id": "his-x"}]}
    environ = {
        "WOR_BRIDGE_DESTINATIONS__0__ENDPOINT": "https://welfare.example.org/fhir",
        "WOR_BRIDGE_CLIENTS__HIS_X__SCOPES": '["task:read"]',
        "WOR_BRIDGE_SERVICE__PORT": "9000",
        "WOR_BRIDGE_FAULT": "after_commit",
    }
    out = apply_environment(raw, environ, _sections(), tmp_path / "c.toml")
    assert out["destinations"][0]["endpoint"] == "https://welfare.example.org/fhir"
    assert out["clients"][0]["scopes"] == ["task:read"]
    assert out["service"] == {"port": "9000"}
    assert "fault" not in out
    assert raw["destinations"][0]["endpoint"] == "x"  # the TOML as read is not changed


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("WOR_BRIDGE_DESTINATIONS__3__ENDPOINT", "index 3 is beyond the 1 entries"),
        ("WOR_BRIDGE_DESTINATIONS__NOPE__ENDPOINT", "no entry with the id 'nope'"),
        ("WOR_BRIDGE_DESTINATIONS__0__ENDPOINT__X", "endpoint is a single value, not a table"),
        ("WOR_BRIDGE_SERVCE__PORT", "'servce' is not a section of the configuration"),
    ],
)
def test_environment_names_that_match_nothing_are_refused(
    tmp_path: Path, name: str, message: str
) -> None:
    """An override that names no entry is a configuration error naming the variable."""
    raw = {"destinations": [{"id": "a", "endpoint": "x"}]}
    with pytest.raises(ConfigError) as err:
        apply_environment(raw, {name: "v"}, _sections(), tmp_path / "c.toml")
    assert name in str(err.value)
    assert message in str(err.value)


def test_environment_overrides_a_loaded_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_app applies the environment to arrays: the endpoint and the client's key hash."""
    path = _starter(tmp_path, key_line="")
    other = hashlib.sha256(b"other").hexdigest()
    monkeypatch.setenv("WOR_BRIDGE_DESTINATIONS__0__ENDPOINT", "https://w.example.org/fhir")
    monkeypatch.setenv("WOR_BRIDGE_CLIENTS__HIS__KEY_SHA256", other)
    config = load_app(path)
    assert config.core.destinations[0].endpoint == "https://w.example.org/fhir"
    assert config.clients[0].key_sha256 == other


@pytest.mark.parametrize(
    "endpoint", ["notaurl", "welfare.example.org/fhir", "ftp://w.example.org/fhir", "https:///fhir"]
)
def test_a_destination_endpoint_that_is_no_http_url_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, endpoint: str
) -> None:
    """An endpoint that is not an absolute http(s) URL is a configuration error naming the
    setting (not a delivery that fails later), without repeating the value."""
    path = _starter(tmp_path, key_line="")
    monkeypatch.setenv("WOR_BRIDGE_DESTINATIONS__0__ENDPOINT", endpoint)
    with pytest.raises(ConfigError) as err:
        load_app(path)
    assert "destinations.0.endpoint" in str(err.value)
    assert "absolute http or https URL" in str(err.value)
    assert endpoint not in str(err.value)


def test_every_secret_can_come_from_a_file_relative_to_the_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """token_file, client_secret_file, secret_file, token_key_file and key_sha256_file are read
    (one trailing line break removed) relative to the configuration file, from any directory."""
    folder = tmp_path / "conf"
    secrets = folder / "secrets"
    secrets.mkdir(parents=True)
    for name, value in {
        "token": "bearer-token-value",
        "oauth": "client-secret-value",
        "hook": "webhook-secret-value",
        "pull": "p" * 40,
        "his.sha256": KEY_SHA256,
    }.items():
        (secrets / name).write_text(value + "\n", encoding="utf-8")
    extra = """
[pull]
token_key_file = "secrets/pull"

[[webhooks]]
id = "hook"
secret_file = "secrets/hook"
destination = "welfare"
mapping = "welzijn-json"

[[destinations]]
id = "second"
name = "Second"
identifier = { system = "http://fhir.nl/fhir/NamingSystem/kvk", value = "00000001" }
endpoint = "https://second.example.org/fhir"
mapping = "wor-r4-default"
auth = { type = "oauth2", token_url = "https://second.example.org/token", client_id = "b", client_secret_file = "secrets/oauth" }
"""  # noqa: E501 - one inline table
    path = _starter(folder, extra, key_line='key_sha256_file = "secrets/his.sha256"')
    text = path.read_text(encoding="utf-8").replace(
        '# auth = { type = "bearer", token_file = "secrets/welfare-token" }',
        'auth = { type = "bearer", token_file = "secrets/token" }',
    )
    path.write_text(text, encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # not the configuration's folder
    config = load_app(Path("conf/wor-bridge.toml"))
    first, second = config.core.destinations
    assert first.auth.token is not None
    assert first.auth.token.get_secret_value() == "bearer-token-value"
    assert second.auth.client_secret is not None
    assert second.auth.client_secret.get_secret_value() == "client-secret-value"
    assert config.webhooks[0].secret.get_secret_value() == "webhook-secret-value"
    assert config.core.pull.token_key is not None
    assert config.core.pull.token_key.get_secret_value() == "p" * 40
    assert config.clients[0].key_sha256 == KEY_SHA256


def test_a_secret_and_its_file_together_or_a_missing_file_are_refused(tmp_path: Path) -> None:
    """Both ``token`` and ``token_file`` is an error; a missing secret file names the setting,
    never a value."""
    both = 'auth = { type = "bearer", token = "t0ken-value", token_file = "secrets/token" }'
    path = _starter(tmp_path)
    text = path.read_text(encoding="utf-8")
    placeholder = '# auth = { type = "bearer", token_file = "secrets/welfare-token" }'
    path.write_text(text.replace(placeholder, both), encoding="utf-8")
    with pytest.raises(ConfigError, match="set token or token_file, not both") as err:
        load_app(path)
    assert "t0ken-value" not in str(err.value)
    missing = 'auth = { type = "bearer", token_file = "secrets/token" }'
    path.write_text(text.replace(placeholder, missing), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"destinations\.0\.auth\.token_file: cannot read"):
        load_app(path)


def test_paths_resolve_against_the_configuration_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """store.path, service.tls and destination TLS files are relative to the TOML's folder."""
    folder = tmp_path / "conf"
    (folder / "tls").mkdir(parents=True)
    for name in ("server.pem", "server.key", "client.pem", "client.key", "ca.pem"):
        (folder / "tls" / name).write_text("x", encoding="utf-8")
    extra = """
[service.tls]
cert_file = "tls/server.pem"
key_file = "tls/server.key"
require_client_cert = false
"""
    path = _starter(folder, extra)
    tls = '{ cert_file = "tls/client.pem", key_file = "tls/client.key", ca_file = "tls/ca.pem" }'
    text = path.read_text(encoding="utf-8").replace(
        'mapping = "wor-r4-default"', f'mapping = "wor-r4-default"\ntls = {tls}'
    )
    path.write_text(text.replace('path = "wor-bridge.sqlite"', 'path = "data/s.sqlite"'), "utf-8")
    monkeypatch.chdir(tmp_path)
    config = load_app(Path("conf/wor-bridge.toml"))
    assert config.store.path == str(folder / "data" / "s.sqlite")
    assert config.service.tls is not None
    assert config.service.tls.cert_file == str(folder / "tls" / "server.pem")
    tls = config.core.destinations[0].tls
    assert tls is not None
    assert (tls.cert_file, tls.ca_file) == (
        str(folder / "tls" / "client.pem"),
        str(folder / "tls" / "ca.pem"),
    )


def test_start_up_refuses_an_unreadable_tls_file_naming_the_setting(tmp_path: Path) -> None:
    """A TLS key that is missing, or a folder, stops loading with the setting's name."""
    (tmp_path / "server.pem").write_text("x", encoding="utf-8")
    (tmp_path / "folder.key").mkdir()
    for key_file, reason in (("missing.key", "FileNotFoundError"), ("folder.key", "IsADirectory")):
        extra = f"""
[service.tls]
cert_file = "server.pem"
key_file = "{key_file}"
require_client_cert = false
"""
        with pytest.raises(ConfigError, match=r"service\.tls\.key_file: cannot read") as err:
            load_app(_starter(tmp_path, extra))
        assert reason in str(err.value)


def test_start_up_refuses_two_clients_with_one_key(tmp_path: Path) -> None:
    """Two clients with the same key_sha256 stop loading, naming both clients, never the hash."""
    extra = f"""
[[clients]]
id = "ops"
key_sha256 = "{KEY_SHA256}"
scopes = ["admin"]
"""
    with pytest.raises(ConfigError, match="clients his and ops have the same key_sha256") as err:
        load_app(_starter(tmp_path, extra))
    assert KEY_SHA256 not in str(err.value)


# --- operator commands and exit codes ----------------------------------------------------------


@pytest.mark.parametrize(
    "command",
    [
        ["outbox", "list"],
        ["outbox", "show", "1"],
        ["outbox", "retry", "--all-dead"],
        ["outbox", "replay", "--since", "2026-11-01"],
        ["deliver", "--once"],
        ["poll", "--once"],
        ["directory", "sync", "--once"],
        ["report"],
    ],
)
def test_operator_commands_never_create_a_store(
    tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Pointed at a missing store, an operator command says so and exits 1; no file appears."""
    extra = '\n[directory]\nbase_url = "https://directory.example.org/fhir"\n'
    path = _starter(tmp_path / "conf", extra if command[0] == "directory" else "")
    assert main([*command, "--config", str(path)]) == 1
    store = tmp_path / "conf" / "wor-bridge.sqlite"
    err = capsys.readouterr().err
    assert f"wor-bridge: no store at {store} (store.path of {path})" in err
    files = sorted(p.name for p in (tmp_path / "conf").iterdir())
    assert files == ["store.keys", "wor-bridge.toml"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["nonsense"], "invalid choice"),
        (["map"], "the following arguments are required: input"),
        (["outbox", "show", "x"], "invalid int value"),
        (["outbox", "replay", "--since", "yesterday"], "expected an ISO 8601 date or date-time"),
        (["report", "--since", "2026-13-01"], "expected a date as YYYY-MM-DD"),
    ],
)
def test_usage_errors_exit_64_naming_the_problem(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """argparse errors exit 64 (2 stays "refused"); a bad date names the expected format."""
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 64
    assert message in capsys.readouterr().err


def test_a_busy_port_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """serve on a port another process listens on: one line naming the address, exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = _starter(tmp_path, "")
        env = {k: v for k, v in os.environ.items() if not k.startswith("WOR_BRIDGE_")}
        proc = subprocess.run(
            [sys.executable, "-m", "wor_bridge.cli", "serve", "--config", str(path)],
            env={**env, "WOR_BRIDGE_SERVICE__PORT": str(port)},
            capture_output=True,
            check=False,
            timeout=60,
        )
    assert proc.returncode == 1
    stderr = proc.stderr.decode()
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("{")]
    assert lines == [
        f"wor-bridge: cannot listen on 127.0.0.1:{port}: the port is in use "
        "(see [service] host and port)"
    ]
    assert free_port() != port


# --- the demo's dates ----------------------------------------------------------------------------


def test_demo_referrals_are_dated_yesterday_with_their_order_kept() -> None:
    """Every 2026+ date moves by the same days (authored yesterday, the appointment 3 days later);
    birth dates stay; the first-contact deadline (+7 days) is not passed today."""
    now = dt.datetime(2027, 3, 15, 0, 30, tzinfo=dt.UTC)
    day = dates.referral_day(now)
    assert day == dt.date(2027, 3, 14)
    raw = shipped("referrals", "accepted-poh-booked-appointment", "input.json").read_bytes()
    moved = json.loads(dates.current(raw, day))
    original = json.loads(raw)
    assert moved["authoredOn"] == "2027-03-14T10:15:00+01:00"
    assert moved["occurrenceDateTime"].startswith("2027-03-17")
    patient = next(r for r in moved["contained"] if r["resourceType"] == "Patient")
    before = next(r for r in original["contained"] if r["resourceType"] == "Patient")
    assert patient["birthDate"] == before["birthDate"]
    authored = dt.datetime.fromisoformat(moved["authoredOn"])
    assert authored + dt.timedelta(days=7) > now
    assert dates.moment(day, 12) == "2027-03-14T12:00:00+01:00"
