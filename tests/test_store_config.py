"""``[store]``: the backend, a DSN from the environment or a file, and clear start-up errors that
never repeat the DSN (it may hold a password)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import structlog
from psycopg import sql

from tests import sealed
from tests.pg import admin_dsn, empty, with_dbname
from tests.service_harness import write_config
from tests.test_store_sealed import T0, referral
from wor_bridge import bootstrap
from wor_bridge.adapters.postgres_store import PostgresOutboxStore
from wor_bridge.adapters.sealing import header
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.cli.main import main
from wor_bridge.config import load_app
from wor_bridge.errors import ConfigError, StoreError

SECRET = "not-a-real-password-3141"


def cli(*argv: str) -> int:
    """``wor-bridge ARGV`` in process; the CLI's logging set-up on the captured stream is undone."""
    try:
        return main(list(argv))
    finally:
        structlog.reset_defaults()


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ({"backend": "postgresql"}, "exactly one of dsn"),
        ({"backend": "postgresql", "dsn": "x", "dsn_file": "f"}, "exactly one of dsn"),
        ({"backend": "sqlite", "dsn": f"password={SECRET}"}, "for backend postgresql"),
        ({"backend": "mysql"}, "store.backend"),
        ({"encryption": "off", "key_file": "store.keys"}, 'encryption = "off" with key_file'),
        ({"encryption": "off", "key_env": "KEYS"}, 'encryption = "off" with key_file or key_env'),
    ],
)
def test_a_store_section_that_does_not_add_up_is_refused(
    tmp_path: Path, store: dict[str, str], message: str
) -> None:
    """Missing, double or misplaced DSNs, unknown backends and a key beside encryption "off"
    stop the start, DSN not echoed."""
    config = write_config(tmp_path, "http://127.0.0.1:9/fhir", store=store)
    with pytest.raises(ConfigError, match=message) as caught:
        load_app(config)
    assert SECRET not in str(caught.value)


def test_an_unreadable_dsn_file_or_unreachable_database_is_a_configuration_error(
    tmp_path: Path,
) -> None:
    """A missing ``dsn_file``, or a database that refuses, is a ConfigError without the DSN."""
    missing = write_config(
        tmp_path, "http://127.0.0.1:9/fhir", store={"backend": "postgresql", "dsn_file": "no"}
    )
    with pytest.raises(ConfigError, match="dsn_file: cannot read"):
        bootstrap.load(missing)
    (tmp_path / "dsn").write_text(
        f"host=127.0.0.1 port=1 user=x password={SECRET} connect_timeout=1", encoding="utf-8"
    )
    refused = write_config(
        tmp_path, "http://127.0.0.1:9/fhir", store={"backend": "postgresql", "dsn_file": "dsn"}
    )
    with pytest.raises(ConfigError, match="PostgreSQL unusable") as caught:
        bootstrap.load(refused)
    assert SECRET not in str(caught.value)


def test_the_dsn_from_the_environment_wires_a_postgresql_store(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``WOR_BRIDGE_STORE__DSN`` with ``backend = "postgresql"`` gives the PostgreSQL store;
    the default stays SQLite."""
    config = write_config(tmp_path, "http://127.0.0.1:9/fhir", store={"backend": "postgresql"})
    monkeypatch.setenv("WOR_BRIDGE_STORE__DSN", pg_dsn)
    components = bootstrap.load(config)
    assert isinstance(components.store, PostgresOutboxStore)
    components.store.ping()
    components.store.close()
    monkeypatch.delenv("WOR_BRIDGE_STORE__DSN")
    plain = bootstrap.load(write_config(tmp_path, "http://127.0.0.1:9/fhir"))
    assert type(plain.store) is SqliteOutboxStore
    plain.store.close()


def test_encryption_at_rest_on_postgresql_wires_a_sealed_store(
    tmp_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``aes-gcm`` with the PostgreSQL backend gives a store that seals what it stores; the same
    database opened with ``encryption = "off"`` is then refused (a store error naming no DSN)."""
    empty(pg_dsn)
    (tmp_path / "store.keys").write_text(sealed.entries("k1"), encoding="utf-8")
    config = write_config(
        tmp_path,
        "http://127.0.0.1:9/fhir",
        store={"backend": "postgresql", "encryption": "aes-gcm", "key_file": "store.keys"},
    )
    monkeypatch.setenv("WOR_BRIDGE_STORE__DSN", pg_dsn)
    store = bootstrap.load(config).store
    try:
        store.add_referral(referral(), T0)
    finally:
        store.close()
    with psycopg.connect(pg_dsn) as conn:
        (patient,) = conn.execute("SELECT patient_id FROM referral").fetchone() or (None,)
    assert isinstance(patient, bytes)
    assert patient.startswith(header("k1"))
    off = write_config(tmp_path, "http://127.0.0.1:9/fhir", store={"backend": "postgresql"})
    with pytest.raises(StoreError, match="holds encrypted values") as caught:
        bootstrap.load(off)
    assert pg_dsn not in str(caught.value)
    empty(pg_dsn)


@pytest.fixture
def bare_pg_dsn(pg_dsn: str) -> Iterator[str]:
    """A database of its own without any table (``pg_dsn`` only to skip without PostgreSQL)."""
    name = f"wor_bridge_bare_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield with_dbname(admin_dsn(), name)
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def test_operator_commands_never_create_a_postgresql_store(
    tmp_path: Path,
    bare_pg_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An operator command on a database without the store's schema (a wrong dbname) says
    ``no store`` and exits 1, creating no table; once ``serve``'s start made it, it works."""
    config = write_config(tmp_path, "http://127.0.0.1:9/fhir", store={"backend": "postgresql"})
    monkeypatch.setenv("WOR_BRIDGE_STORE__DSN", bare_pg_dsn)
    for command in (["outbox", "list"], ["purge", "--dry-run"], ["deliver", "--once"]):
        assert cli(*command, "--config", str(config)) == 1
        err = capsys.readouterr().err
        assert "wor-bridge: no store in the PostgreSQL database" in err
        assert bare_pg_dsn not in err
    with psycopg.connect(bare_pg_dsn) as conn:
        assert conn.execute("SELECT to_regclass('schema_version')").fetchone() == (None,)
    bootstrap.load(config).store.close()  # what serve does at start: the schema is made
    capsys.readouterr()
    assert cli("outbox", "list", "--config", str(config)) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_backup_refuses_a_postgresql_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``backup`` with ``backend = "postgresql"`` exits 1 with one line saying what to use
    instead (not a SQLite path or an internal error); the DSN is not shown."""
    command, message = ["backup", "copy.bak"], "backup copies a SQLite store; with PostgreSQL"
    config = write_config(tmp_path, "http://127.0.0.1:9/fhir", store={"backend": "postgresql"})
    monkeypatch.setenv("WOR_BRIDGE_STORE__DSN", f"host=127.0.0.1 port=9 password={SECRET}")
    monkeypatch.chdir(tmp_path)
    assert cli(*command, "--config", str(config)) == 1
    err = capsys.readouterr().err
    assert message in err
    assert SECRET not in err
    assert [line for line in err.splitlines() if line.startswith("wor-bridge:")] == [
        line for line in err.splitlines() if message in line
    ]
    assert "Traceback" not in err
    assert not (tmp_path / "copy.bak").exists()
