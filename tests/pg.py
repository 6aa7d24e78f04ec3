"""PostgreSQL for the tests: a fresh database per test session, and stores emptied per test.

The server is ``WOR_BRIDGE_TEST_PG`` (a libpq connection string to a database the tests may
``CREATE DATABASE`` from; CI sets it, see ``.ci/run``), else the machine's server on
127.0.0.1:5432 as user ``postgres``. With ``WOR_BRIDGE_TEST_PG`` set an unreachable server fails
the tests; without it they are skipped (a developer machine without PostgreSQL).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from tests import sealed
from wor_bridge.adapters import migrations
from wor_bridge.adapters.postgres_db import Database
from wor_bridge.adapters.postgres_store import PostgresOutboxStore

DEFAULT_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"
TABLES = (
    "referral, poll_state, feedback_item, outbox, audit, used_once, monitoring_referral,"
    " monitoring_reason, monitoring_activity, monitoring_event, directory_resource,"
    " directory_key, directory_sync, account, console_session, login_failure"
)


def admin_dsn() -> str:
    """The connection string of the server the tests use."""
    return os.environ.get("WOR_BRIDGE_TEST_PG") or DEFAULT_ADMIN


def with_dbname(dsn: str, name: str) -> str:
    """``dsn`` pointed at database ``name``."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    params["dbname"] = name
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A new, empty database for this test session (dropped afterwards)."""
    try:
        admin = psycopg.connect(admin_dsn(), autocommit=True)
    except psycopg.OperationalError as err:
        if os.environ.get("WOR_BRIDGE_TEST_PG"):
            pytest.fail(f"WOR_BRIDGE_TEST_PG is set but PostgreSQL is unreachable ({err})")
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 and WOR_BRIDGE_TEST_PG not set")
    name = f"wor_bridge_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield with_dbname(admin_dsn(), name)
        finally:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def empty(dsn: str) -> None:
    """The store's schema, with every row removed from its tables (ids start at 1 again)."""
    db = Database(dsn, pool_size=1)
    try:
        migrations.upgrade_postgres(db)
        with db.write() as conn:
            conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    finally:
        db.close()


@pytest.fixture
def pg_store(pg_dsn: str) -> Iterator[PostgresOutboxStore]:
    """An empty PostgreSQL store on the session's database."""
    empty(pg_dsn)  # first: what an earlier test sealed would stop a store in clear opening
    store = PostgresOutboxStore(pg_dsn, pool_size=4)
    yield store
    store.close()


@pytest.fixture
def pg_sealed_store(pg_dsn: str) -> Iterator[PostgresOutboxStore]:
    """An empty PostgreSQL store on the session's database, its patient columns sealed
    (AES-GCM, a fresh key ``k1``); emptied afterwards too, so no sealed row stops a later
    store in clear opening the database."""
    empty(pg_dsn)
    store = PostgresOutboxStore(pg_dsn, pool_size=4, sealer=sealed.sealer())
    yield store
    store.close()
    empty(pg_dsn)
