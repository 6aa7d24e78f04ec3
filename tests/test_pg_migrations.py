"""Schema versions on PostgreSQL (``migrations.upgrade_postgres``): replicas that start together
upgrade once, a newer database is refused, and one expand step is applied while a replica of the
previous release keeps working on the same database (the rolling upgrade of README)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.pg import with_dbname
from tests.test_pg_concurrency import race
from tests.test_store_contract import T0, at, referral
from wor_bridge.adapters import migrations, postgres_schema
from wor_bridge.adapters.migrations import SKIP, STEPS, Migration, upgrade
from wor_bridge.adapters.postgres_db import Database
from wor_bridge.adapters.postgres_store import PostgresOutboxStore
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
