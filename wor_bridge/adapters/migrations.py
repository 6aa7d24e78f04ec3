"""Schema versions and migrations of the store, for every backend (SQLite now, PostgreSQL next).

A store records its schema version in the table ``schema_version`` (``version`` integer primary
key, ``name`` text, ``applied_at``: when the step ran). ``STEPS`` is the ordered list of numbered
``Migration`` steps; each carries one body per SQL dialect (``"sqlite"``, ``"postgresql"``): SQL
text (one or more statements) or a callable taking the backend's DB-API-like connection inside
the step's transaction. ``SKIP`` is the body of a step a dialect does not need (its baseline
already has what the step adds).

``upgrade`` is backend-neutral; a ``Backend`` supplies the dialect's parts:

1. read the version without a lock; equal to the code's: done (the usual start-up, no lock);
   newer than the code's: ``StoreVersionError`` (the program must not start);
2. take the upgrade lock (SQLite: one ``BEGIN IMMEDIATE`` transaction held for the whole upgrade;
   PostgreSQL: ``pg_advisory_lock``) and read the version again: another process may have done it
   while this one waited, so two processes upgrading at once make one upgrade;
3. when the store holds data, back it up first (``Backend.backup``; SQLite's online backup API to
   ``<store>.v<from>-to-v<to>.bak``, made under another name and renamed when complete);
4. run each pending step in order in its own transaction (SQLite: a savepoint inside the held
   transaction), recording it in ``schema_version``; a failing step leaves the earlier ones
   applied and raises ``StoreError`` naming the step.

Version 1 is the schema of the previous release (commit c422c29): referral, poll_state,
feedback_item, outbox, audit. A store made by a later development build without
``schema_version`` is treated as version 1; the SQLite steps after it are written so that they
also apply to such a store (``CREATE ... IF NOT EXISTS``, columns added only when missing).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol

import structlog

from wor_bridge.adapters import (
    postgres_schema,
    sqlite_directory,
    sqlite_monitoring_derived,
    sqlite_ready,
    sqlite_schema,
    sqlite_search,
)
from wor_bridge.adapters.postgres_db import Database
from wor_bridge.adapters.sqlite_accounts import ACCOUNT_SCHEMA
from wor_bridge.adapters.sqlite_monitoring import MONITORING_SCHEMA
from wor_bridge.adapters.sqlite_once import ONCE_SCHEMA
from wor_bridge.adapters.sqlite_retention import add_retention
from wor_bridge.errors import StoreError, StoreVersionError

Dialect = Literal["sqlite", "postgresql"]
Body = str | Callable[[Any], None]
"""SQL text, or a callable given the connection inside the step's transaction."""

log = structlog.get_logger("wor_bridge.store")

SKIP: Final = ""
"""The body of a step this dialect does not need."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered schema step: ``bodies`` maps a dialect to what it runs."""

    version: int
    name: str
    bodies: Mapping[str, Body] = field(default_factory=dict)


class Backend(Protocol):
    """What ``upgrade`` needs from one store backend (one connection, one dialect)."""

    dialect: Dialect

    def read_version(self) -> int:
        """The store's schema version: 0 for an empty store, 1 for a store without
        ``schema_version`` that holds the version-1 tables."""
        ...

    def locked(self) -> AbstractContextManager[None]:
        """Hold the upgrade lock (exclusive across processes) for the whole upgrade."""
        ...

    def step(self) -> AbstractContextManager[Any]:
        """One step's transaction (under the lock); yields the connection a body runs on."""
        ...

    def run_sql(self, conn: Any, sql: str) -> None:
        """Run SQL text of one or more statements inside the step's transaction."""
        ...

    def record(self, conn: Any, migration: Migration, now: dt.datetime) -> None:
        """Note ``migration`` as applied in ``schema_version`` (inside the step's transaction)."""
        ...

    def holds_data(self) -> bool:
        """True when the store has rows worth a backup."""
        ...

    def backup(self, from_version: int, to_version: int) -> Path | None:
        """Copy the store before the upgrade; the copy's path (None when the backend keeps none)."""
        ...


def latest(steps: tuple[Migration, ...]) -> int:
    """The newest version ``steps`` brings a store to."""
    return steps[-1].version if steps else 0


def check_steps(steps: tuple[Migration, ...], dialect: str) -> None:
    """Steps are numbered 1, 2, 3, ... and each has a body for ``dialect``; raises StoreError."""
    for number, migration in enumerate(steps, start=1):
        if migration.version != number:
            raise StoreError(
                f"migration {migration.name!r} is numbered {migration.version}, expected {number}"
            )
        if dialect not in migration.bodies:
            raise StoreError(f"migration {number} ({migration.name}) has no {dialect} body")


def pending(steps: tuple[Migration, ...], version: int) -> list[Migration]:
    """The steps after ``version``, oldest first."""
    return [m for m in steps if m.version > version]


def refuse_newer(version: int, steps: tuple[Migration, ...], where: str) -> None:
    """Raise StoreVersionError when the store at ``where`` is newer than this program."""
    if version > latest(steps):
        raise StoreVersionError(
            f"{where}: the store has schema version {version}, this program knows up to "
            f"{latest(steps)}; run the newer release (or restore a backup made for this one)"
        )


@dataclass(frozen=True, slots=True)
class Upgraded:
    """What ``upgrade`` did: versions before and after, and the backup made (if any)."""

    before: int
    after: int
    backup: Path | None = None
    applied: tuple[int, ...] = ()


def upgrade(
    backend: Backend, steps: tuple[Migration, ...], now: Callable[[], dt.datetime], where: str
) -> Upgraded:
    """Bring the store to the newest version in ``steps`` (see the module docstring).

    ``where`` names the store in messages (a path, never a DSN with a password). Raises
    ``StoreVersionError`` for a store newer than ``steps``, ``StoreError`` when a step fails
    (the step's number and name; the cause chained).
    """
    check_steps(steps, backend.dialect)
    seen = backend.read_version()
    refuse_newer(seen, steps, where)
    if not pending(steps, seen):
        return Upgraded(seen, seen)
    with backend.locked():
        before = backend.read_version()  # another process may have upgraded while we waited
        refuse_newer(before, steps, where)
        todo = pending(steps, before)
        made = backend.backup(before, latest(steps)) if todo and backend.holds_data() else None
        for migration in todo:
            _apply(backend, migration, now(), where)
        return Upgraded(before, latest(steps), made, tuple(m.version for m in todo))


def _apply(backend: Backend, migration: Migration, now: dt.datetime, where: str) -> None:
    body = migration.bodies[backend.dialect]
    try:
        with backend.step() as conn:
            if callable(body):
                body(conn)
            elif body:
                backend.run_sql(conn, body)
            backend.record(conn, migration, now)
    except StoreError:
        raise
    except Exception as err:
        raise StoreError(
            f"{where}: migration {migration.version} ({migration.name}) failed "
            f"({type(err).__name__}); the store stays at version {migration.version - 1}"
        ) from err


def statements(sql: str, complete: Callable[[str], bool]) -> Iterator[str]:
    """Split SQL text into whole statements by ``complete`` (e.g. ``sqlite3.complete_statement``,
    which keeps a trigger's ``BEGIN ... END`` together)."""
    buffer = ""
    for line in sql.splitlines(keepends=True):
        buffer += line
        if complete(buffer):
            if buffer.strip():
                yield buffer.strip()
            buffer = ""
    if buffer.strip():
        raise StoreError("migration SQL ends inside a statement")


def _requeued_at(conn: Any) -> None:
    sqlite_schema.add_columns(conn, "outbox", (("requeued_at", "REAL"),))


_DEADLINE_INDEX: Final = (
    "CREATE INDEX IF NOT EXISTS referral_deadline ON referral (deadline_at)"
    " WHERE alerted_at IS NULL AND first_contact_at IS NULL;"
)
"""``overdue_tasks`` runs every ``deadline_check_interval_s`` in every process: without it, a
scan of every referral ever stored (290 ms at 1,000,000 rows on PostgreSQL)."""

_CLAIM_INDEX: Final = (
    "CREATE INDEX IF NOT EXISTS outbox_claim ON outbox (next_attempt_at, id)"
    " WHERE state = 'pending';\n"
    "CREATE INDEX IF NOT EXISTS outbox_task_pending ON outbox (task_id, destination, id)"
    " WHERE state = 'pending';"
)
"""``claim_due`` takes the first pending entry in ``(next_attempt_at, id)`` order whose Task has
no older pending message: with these indexes the database walks the pending entries in that
order (``outbox_claim``) and asks for each whether an older one of its Task is pending (one probe
of ``outbox_task_pending``), stopping at the first that qualifies; without them PostgreSQL sorted
and anti-joined every pending entry for each claim (2.3 ms per claim at 1,000 pending, most of a
drain's time; 180 ms with statistics from an emptier table)."""

STEPS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "baseline (release c422c29)",
        {"sqlite": sqlite_schema.BASELINE, "postgresql": postgres_schema.baseline_step},
    ),
    Migration(2, "outbox.requeued_at", {"sqlite": _requeued_at, "postgresql": SKIP}),
    Migration(3, "used_once (JWT jti replay cache)", {"sqlite": ONCE_SCHEMA, "postgresql": SKIP}),
    Migration(
        4, "Task search columns", {"sqlite": sqlite_search.add_search_columns, "postgresql": SKIP}
    ),
    Migration(5, "monitoring facts", {"sqlite": MONITORING_SCHEMA, "postgresql": SKIP}),
    Migration(
        6,
        "care-services directory replica",
        {"sqlite": sqlite_directory.SCHEMA, "postgresql": SKIP},
    ),
    Migration(
        7,
        "retention: purge marks, audit purge threshold",
        {"sqlite": add_retention, "postgresql": postgres_schema.retention_step},
    ),
    Migration(
        8,
        "readiness probe row",
        {"sqlite": sqlite_ready.SCHEMA, "postgresql": sqlite_ready.SCHEMA},
    ),
    Migration(
        9,
        "monitoring facts derived for counting",
        {
            "sqlite": sqlite_monitoring_derived.add_derived,
            "postgresql": sqlite_monitoring_derived.PG_DERIVED,
        },
    ),
    Migration(
        10,
        "index of the Tasks a deadline alert may be due for",
        {
            "sqlite": _DEADLINE_INDEX,
            "postgresql": _DEADLINE_INDEX,
        },
    ),
    Migration(
        11,
        "console accounts, sessions, failed sign-ins",
        {"sqlite": ACCOUNT_SCHEMA, "postgresql": postgres_schema.ddl_step(ACCOUNT_SCHEMA)},
    ),
    Migration(
        12,
        "index of the pending outbox entries in claim order",
        {"sqlite": _CLAIM_INDEX, "postgresql": _CLAIM_INDEX},
    ),
    Migration(
        13,
        "sealable text columns as bytes (PostgreSQL)",
        # SQLite's dynamic typing already keeps a sealed value as a BLOB in these TEXT columns
        {"sqlite": SKIP, "postgresql": postgres_schema.bytea_step},
    ),
)
"""Every step, oldest first; a new step is appended with the next number and a body for every
dialect (``SKIP`` where a dialect's baseline already has it). Never edit a released step.
PostgreSQL stores began at version 6: their step 1 makes what SQLite's steps 1 to 6 make."""


def upgrade_sqlite(path: str | Path) -> Upgraded:
    """Open the SQLite store at ``path`` (made when missing) and bring it to the newest version;
    raises ``StoreVersionError``, ``StoreError`` (see ``upgrade``), sqlite3.Error."""
    backend = sqlite_schema.SqliteBackend(path)
    try:
        done = upgrade(backend, STEPS, lambda: dt.datetime.now(dt.UTC), str(path))
    finally:
        backend.close()
    if done.applied and done.before > 0:  # an existing store changed (a new one: nothing to say)
        log.info(
            "store_upgraded",
            store=str(path),
            before=done.before,
            after=done.after,
            backup=str(done.backup) if done.backup else None,
        )
    return done


def upgrade_postgres(db: Database, where: str = "postgresql") -> Upgraded:
    """Bring the PostgreSQL store of ``db`` to the newest version (``postgres_schema``);
    ``where`` names it in messages (never the DSN). Raises as ``upgrade`` does, psycopg.Error."""
    done = upgrade(
        postgres_schema.PostgresBackend(db), STEPS, lambda: dt.datetime.now(dt.UTC), where
    )
    if done.applied and done.before > 0:
        log.info("store_upgraded", store=where, before=done.before, after=done.after)
    return done
