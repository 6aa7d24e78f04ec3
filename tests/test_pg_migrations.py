"""Schema versions on PostgreSQL (``migrations.upgrade_postgres``): replicas that start together
upgrade once, a newer database is refused, one expand step is applied while a replica of the
previous release keeps working on the same database (the rolling upgrade of README), and a clear
store of the previous version gets ``bytea`` patient columns and is sealed by ``rotate-key``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import structlog

from tests import sealed
from tests.pg import with_dbname
from tests.service_harness import write_config
from tests.test_pg_concurrency import race
from tests.test_store_contract import T0, at, referral
from tests.test_store_sealed import HIS, by_number, flat
from tests.test_store_sealed import bundle as sealed_bundle
from wor_bridge.adapters import migrations, postgres_schema
from wor_bridge.adapters.migrations import SKIP, STEPS, Migration, upgrade
from wor_bridge.adapters.postgres_db import Database
from wor_bridge.adapters.postgres_store import PostgresOutboxStore
from wor_bridge.adapters.sealing import AesGcmSealer, parse_keys
from wor_bridge.cli.main import main
from wor_bridge.errors import StoreVersionError


@pytest.fixture
def fresh(pg_dsn: str) -> Iterator[str]:
    """A database of its own (no schema yet), dropped afterwards."""
    name = "wor_bridge_migrate_test"
    with psycopg.connect(pg_dsn, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
        yield with_dbname(pg_dsn, name)
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def versions(dsn: str) -> list[int]:
    """The recorded schema versions."""
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]


def test_replicas_starting_together_upgrade_once(fresh: str) -> None:
    """Three upgrades at one moment: one applies every step, the others wait and find it done."""
    dbs = [Database(fresh, pool_size=2) for _ in range(3)]
    try:
        done = race(*(lambda db=db: migrations.upgrade_postgres(db) for db in dbs))
    finally:
        for db in dbs:
            db.close()
    assert sorted(len(d.applied) for d in done) == [0, 0, len(STEPS)]
    assert versions(fresh) == list(range(1, len(STEPS) + 1))


def test_a_newer_database_is_refused(fresh: str) -> None:
    """A database at a version this program does not know stops the start (no DSN in it)."""
    PostgresOutboxStore(fresh).close()
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 'from the future', 0)")
    with pytest.raises(StoreVersionError, match="schema version 99") as caught:
        PostgresOutboxStore(fresh)
    assert "password" not in str(caught.value)


EXPAND = Migration(
    len(STEPS) + 1,
    "referral.note (expand)",
    {"sqlite": SKIP, "postgresql": "ALTER TABLE referral ADD COLUMN IF NOT EXISTS note TEXT;"},
)


def test_an_expand_step_runs_while_the_previous_release_keeps_working(fresh: str) -> None:
    """Release N serves; release N+1's expand step is applied beside it; N keeps storing and
    delivering, and N+1 reads what N wrote (old rows get the new column's default)."""
    old = PostgresOutboxStore(fresh)  # release N, running
    old.add_referral(referral(1), T0)
    new_db = Database(fresh, pool_size=2)  # release N+1 starting: STEPS + the expand step
    try:
        during = race(
            lambda: upgrade(
                postgres_schema.PostgresBackend(new_db), (*STEPS, EXPAND), lambda: T0, "pg"
            ),
            lambda: old.add_referral(referral(2), at(1)),
        )
        assert during[0].applied == (EXPAND.version,)
        assert during[1].created
        old.add_referral(referral(3), at(2))  # release N after the expand: unaffected
        claimed = old.claim_due("old-replica", at(3), 60, 10)
        assert [e.task_id for e in claimed] == ["task-1", "task-2", "task-3"]
        with new_db.write() as conn:  # release N+1 uses its column on N's rows
            conn.execute("UPDATE referral SET note = 'n' WHERE task_id = 'task-3'")
            rows = conn.execute("SELECT task_id, note FROM referral ORDER BY task_id").fetchall()
        assert [(r["task_id"], r["note"]) for r in rows] == [
            ("task-1", None),
            ("task-2", None),
            ("task-3", "n"),
        ]
        assert versions(fresh)[-1] == EXPAND.version
        with pytest.raises(StoreVersionError):  # a release-N replica restarted now is refused
            PostgresOutboxStore(fresh)
        assert old.add_referral(referral(4), at(4)).created  # while the running one goes on
    finally:
        new_db.close()
        old.close()


PATIENT = "http://fhir.nl/fhir/NamingSystem/bsn|\\x41 Zoë 100%"
"""A clear patient identifier with a backslash, a non-ASCII letter and a ``%`` (synthetic)."""


def previous_release_store(dsn: str) -> None:
    """A store at version 12 (its patient columns ``text``) with what that release wrote in
    clear: a referral with free text, its Bundle also copied in the outbox, an audit record."""
    db = Database(dsn, pool_size=2)
    try:
        upgrade(postgres_schema.PostgresBackend(db), STEPS[:12], lambda: T0, "pg")
    finally:
        db.close()
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO referral (task_id, idempotency_key, source_system, destination, mapping,"
            " patient_id, responsible, client_id, received_at, bundle, reason_text, his_system,"
            " his_value, updated_at) VALUES ('task-1', 'his|ref-1|welzijn-a', 'his', 'welzijn-a',"
            " 'm', %s, 'agb|1', 'c', %s, %s, 'Voelt zich eenzaam', %s, 'REF-7781', %s)",
            (PATIENT, T0.timestamp(), sealed_bundle(), HIS, T0.timestamp()),
        )
        conn.execute(
            "INSERT INTO outbox (idempotency_key, task_id, destination, state, created_at,"
            " next_attempt_at, payload) VALUES ('his|ref-1|welzijn-a', 'task-1', 'welzijn-a',"
            " 'pending', %s, %s, %s)",
            (T0.timestamp(), T0.timestamp(), sealed_bundle()),
        )
        conn.execute(
            'INSERT INTO audit (at, event, action, outcome, "user", responsible, source_system,'
            " patient_id, object_type, object_id, detail) VALUES (%s, 'referral_intake', 'C',"
            " 'accepted', 'client', '', 'his', %s, 'Task', 'task-1', '')",
            (T0.timestamp(), PATIENT),
        )


def column_types(dsn: str) -> set[str]:
    """The types of the sealable text columns (``postgres_schema.SEALABLE_TEXT``)."""
    with psycopg.connect(dsn) as conn:
        return {
            conn.execute(
                "SELECT data_type FROM information_schema.columns"
                " WHERE table_name = %s AND column_name = %s",
                pair,
            ).fetchone()[0]  # type: ignore[index]
            for pair in postgres_schema.SEALABLE_TEXT
        }


def test_a_clear_store_of_the_previous_version_is_upgraded_then_sealed_by_rotate_key(
    fresh: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Step 13 turns the patient columns of a version-12 store into ``bytea`` keeping every clear
    value; ``wor-bridge store rotate-key`` with encryption just turned on seals the referral and
    its outbox copy (the append-only audit record stays clear, counted); a strict key reads it."""
    previous_release_store(fresh)
    assert column_types(fresh) == {"text"}
    keys = sealed.entries("k1")
    (tmp_path / "store.keys").write_text(keys, encoding="utf-8")
    store = {"backend": "postgresql", "encryption": "aes-gcm", "key_file": "store.keys"}
    config = write_config(tmp_path, "http://127.0.0.1:9/fhir", store=store)
    monkeypatch.setenv("WOR_BRIDGE_STORE__DSN", fresh)
    try:
        assert main(["store", "rotate-key", "--config", str(config), "--operator", "ops"]) == 0
    finally:
        structlog.reset_defaults()
    summary = json.loads(capsys.readouterr().out)
    assert (summary["referrals"], summary["outbox_entries"]) == (1, 1)
    assert summary["audit_records_per_key"] == {"clear": 1}
    assert versions(fresh)[-1] == STEPS[-1].version
    assert column_types(fresh) == {"bytea"}
    with psycopg.connect(fresh) as conn:
        rows = conn.execute("TABLE referral").fetchall() + conn.execute("TABLE outbox").fetchall()
    assert not [s for s in (PATIENT, "Voelt zich", "Jansen") if s.encode() in flat(rows)]
    strict = PostgresOutboxStore(fresh, pool_size=2, sealer=AesGcmSealer(parse_keys(keys)))
    try:
        task = strict.get_task("task-1")
        assert task is not None
        assert (task.patient_id, task.reason_text) == (PATIENT, "Voelt zich eenzaam")
        assert task.bundle == sealed_bundle()
        assert [r["patient_id"] for r in strict.audit_records() if r["patient_id"]] == [PATIENT]
        assert strict.search_tasks(by_number("REF-7781")).total == 1
    finally:
        strict.close()
