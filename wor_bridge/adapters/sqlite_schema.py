"""The SQLite side of the store's migrations (``adapters/migrations.py``): the version-1 schema,
the SQLite ``Backend`` (lock, savepoint per step, ``schema_version``, online backup) and
``open_store`` that upgrades a file at start-up.

The lock is one ``BEGIN IMMEDIATE`` transaction held for the whole upgrade (each step runs in a
``SAVEPOINT`` inside it and is committed with it, or rolled back alone when it fails; the earlier
ones are then committed). A second process waits on that lock (busy timeout ``lock_wait_s``) and
then finds the store upgraded. The backup is taken by SQLite's online backup API on a second
connection (the WAL lets it read while the lock is held) into a file created 0600.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Final

from wor_bridge.adapters.sqlite_rows import ts

if TYPE_CHECKING:
    from wor_bridge.adapters.migrations import Dialect, Migration

BASELINE: Final = """
CREATE TABLE IF NOT EXISTS referral (
    task_id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    source_system TEXT NOT NULL,
    destination TEXT NOT NULL,
    mapping TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    responsible TEXT NOT NULL,
    client_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    bundle BLOB NOT NULL,
    service_request_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'requested',
    business_status TEXT,
    reason_code TEXT,
    reason_text TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    deadline_at REAL,
    first_contact_at REAL,
    alerted_at REAL
);
CREATE INDEX IF NOT EXISTS referral_request ON referral (service_request_id);
CREATE TABLE IF NOT EXISTS poll_state (
    destination TEXT PRIMARY KEY,
    cursor TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback_item (
    key TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES referral(task_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES referral(task_id),
    destination TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    delivered_at REAL,
    last_status INTEGER,
    last_error TEXT,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_task ON outbox (task_id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    user TEXT NOT NULL,
    responsible TEXT NOT NULL,
    source_system TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
"""
"""Version 1: the schema of the previous release (commit c422c29), unchanged."""

_VERSION_TABLE: Final = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL, applied_at REAL NOT NULL)"
)


def add_columns(conn: sqlite3.Connection, table: str, columns: tuple[tuple[str, str], ...]) -> None:
    """``ALTER TABLE ... ADD COLUMN`` for each (name, type) ``table`` lacks."""
    names = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
    for column, kind in columns:
        if column not in names:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")


def tables(conn: sqlite3.Connection) -> set[str]:
    """The names of the database's tables."""
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def schema_version(conn: sqlite3.Connection) -> int:
    """``MAX(version)`` of ``schema_version``; 1 for an unversioned store with a referral table
    (the previous release, or a development build after it); 0 for an empty file."""
    names = tables(conn)
    if "schema_version" in names:
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)
    return 1 if "referral" in names else 0


def backup_to(conn: sqlite3.Connection, dest: Path) -> None:
    """Copy the database of ``conn`` to ``dest`` (created 0600; must not exist) by SQLite's
    online backup API: a consistent snapshot while other connections write. Raises
    FileExistsError, sqlite3.Error."""
    os.close(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    target = sqlite3.connect(dest)
    try:
        conn.backup(target)
    finally:
        target.close()


def backup_whole(conn: sqlite3.Connection, dest: Path, partial: Path) -> None:
    """``backup_to`` through ``partial``: what a killed copy left there (and its ``-journal``)
    is removed first, the copy is made there, synced, and renamed to ``dest`` (must not exist)
    only when complete, so a file named ``dest`` is always a whole copy. Raises OSError,
    sqlite3.Error."""
    for leftover in (partial, partial.with_name(f"{partial.name}-journal")):
        leftover.unlink(missing_ok=True)
    backup_to(conn, partial)
    fd = os.open(partial, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    if dest.exists():
        raise FileExistsError(dest.name)
    partial.rename(dest)
    folder = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power cut
    finally:
        os.close(folder)


def _free_name(path: Path) -> Path:
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


class SqliteBackend:
    """The migrations ``Backend`` for one SQLite file (its own connection, closed by ``close``)."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: str | Path, *, lock_wait_s: float = 600.0) -> None:
        self.path = Path(path)
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.conn.execute(f"PRAGMA busy_timeout = {int(lock_wait_s * 1000)}")
        self.conn.execute("PRAGMA journal_mode = WAL")
        self.conn.execute("PRAGMA synchronous = FULL")

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def _tables(self) -> set[str]:
        return tables(self.conn)

    def read_version(self) -> int:
        """See ``schema_version``."""
        return schema_version(self.conn)

    @contextmanager
    def locked(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` held until every step ran; committed at the end (also after a
        failed step: the steps before it stay applied)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            self.conn.execute("COMMIT")

    @contextmanager
    def step(self) -> Iterator[sqlite3.Connection]:
        """One step in a savepoint of the held transaction."""
        self.conn.execute("SAVEPOINT migration_step")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK TO migration_step")
            self.conn.execute("RELEASE migration_step")
            raise
        self.conn.execute("RELEASE migration_step")

    def run_sql(self, conn: sqlite3.Connection, sql: str) -> None:
        """Statement by statement (``executescript`` would commit the held transaction)."""
        from wor_bridge.adapters.migrations import statements  # noqa: PLC0415 - import cycle

        for statement in statements(sql, sqlite3.complete_statement):
            conn.execute(statement)

    def record(self, conn: sqlite3.Connection, migration: Migration, now: dt.datetime) -> None:
        """Insert the step's row into ``schema_version`` (made by the first step)."""
        conn.execute(_VERSION_TABLE)
        conn.execute(
            "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
            (migration.version, migration.name, ts(now)),
        )

    def holds_data(self) -> bool:
        """Any table with a row."""
        for table in sorted(self._tables()):
            if table.startswith("sqlite_"):
                continue
            if self.conn.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone():  # noqa: S608 - a name read from sqlite_master
                return True
        return False

    def backup(self, from_version: int, to_version: int) -> Path:
        """``<store>.v<from>-to-v<to>.bak`` (``.2``, ``.3`` appended when taken), read through
        a second connection while the lock is held; made as ``<store>.v<from>-to-v<to>.partial``
        and renamed when complete (``backup_whole``)."""
        name = f"{self.path.name}.v{from_version}-to-v{to_version}"
        dest = _free_name(self.path.with_name(f"{name}.bak"))
        reader = sqlite3.connect(self.path)
        try:
            backup_whole(reader, dest, self.path.with_name(f"{name}.partial"))
        finally:
            reader.close()
        return dest
