"""SQLite implementation of ``DirectoryReplica``: the care-services directory replica.

It lives in the store's file (its own tables, its own connection per thread) with the store's
durability: WAL, ``synchronous=FULL``, every write in ``BEGIN IMMEDIATE``. A page of changes is
applied in one transaction, each record only when ``core.directory.newer`` says it is later
than the kept version (S6), so a repeat or a late older version changes nothing (S7). A deletion
is kept as a tombstone (``body`` NULL) with its version. No foreign keys: references are not
enforced on write (L8).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Final

from wor_bridge.adapters.sql_conn import SqlConnection
from wor_bridge.adapters.sqlite_files import private_file
from wor_bridge.adapters.sqlite_rows import from_ts, ts
from wor_bridge.core.directory import DirectoryRecord, SyncState, newer
from wor_bridge.ports import DirectoryReplica

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS directory_resource (
    resource_type TEXT NOT NULL,
    id TEXT NOT NULL,
    last_updated_us INTEGER NOT NULL,
    version_id TEXT NOT NULL,
    body BLOB,
    PRIMARY KEY (resource_type, id)
);
CREATE TABLE IF NOT EXISTS directory_key (
    resource_type TEXT NOT NULL,
    key TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (resource_type, key, id)
);
CREATE INDEX IF NOT EXISTS directory_key_by_id ON directory_key (resource_type, id);
CREATE TABLE IF NOT EXISTS directory_sync (
    name TEXT PRIMARY KEY CHECK (name = 'replica'),
    since TEXT,
    ready INTEGER NOT NULL,
    synced_at REAL
);
"""


def _record(row: Any, keys: tuple[str, ...] = ()) -> DirectoryRecord:
    body = row["body"]
    return DirectoryRecord(
        row["resource_type"],
        row["id"],
        int(row["last_updated_us"]),
        row["version_id"],
        None if body is None else bytes(body),
        keys,
    )


class SqliteDirectoryReplica:
    """``DirectoryReplica`` in the SQLite store file; one connection per thread.

    The SQL is shared with ``PostgresDirectoryReplica`` (``sql_conn``)."""

    _apply_lock: ClassVar[str] = ""
    """Run first in ``apply``'s transaction (PostgreSQL: an advisory lock, so replicas that sync
    at once apply their pages one after the other and never keep an older version)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        private_file(self.path)
        self._sqlite().executescript(SCHEMA)

    def _conn(self) -> SqlConnection:
        return self._sqlite()

    def _sqlite(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            self._local.conn = conn
        return conn

    @contextmanager
    def _write(self) -> Iterator[SqlConnection]:
        conn = self._sqlite()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def close(self) -> None:
        """Close this thread's connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def apply(self, records: Sequence[DirectoryRecord]) -> int:
        """Keep each record newer than the kept version, with its index keys; one transaction."""
        changed = 0
        with self._write() as conn:
            if self._apply_lock:
                conn.execute(self._apply_lock)
            for record in records:
                row = conn.execute(
                    "SELECT * FROM directory_resource WHERE resource_type = ? AND id = ?",
                    (record.resource_type, record.id),
                ).fetchone()
                if row is not None and not newer(record, _record(row)):
                    continue
                conn.execute(
                    "INSERT INTO directory_resource (resource_type, id, last_updated_us,"
                    " version_id, body) VALUES (?, ?, ?, ?, ?) ON CONFLICT (resource_type, id)"
                    " DO UPDATE SET last_updated_us = excluded.last_updated_us,"
                    " version_id = excluded.version_id, body = excluded.body",
                    (
                        record.resource_type,
                        record.id,
                        record.last_updated_us,
                        record.version_id,
                        record.body,
                    ),
                )
                conn.execute(
                    "DELETE FROM directory_key WHERE resource_type = ? AND id = ?",
                    (record.resource_type, record.id),
                )
                if not record.deleted:
                    conn.executemany(
                        "INSERT OR IGNORE INTO directory_key (resource_type, key, id)"
                        " VALUES (?, ?, ?)",
                        [(record.resource_type, key, record.id) for key in record.keys],
                    )
                changed += 1
        return changed

    def get(self, resource_type: str, resource_id: str) -> DirectoryRecord | None:
        """The kept version (a tombstone when deleted), or None."""
        conn = self._conn()
        row = conn.execute(
            "SELECT * FROM directory_resource WHERE resource_type = ? AND id = ?",
            (resource_type, resource_id),
        ).fetchone()
        if row is None:
            return None
        keys = conn.execute(
            "SELECT key FROM directory_key WHERE resource_type = ? AND id = ? ORDER BY key",
            (resource_type, resource_id),
        ).fetchall()
        return _record(row, tuple(k["key"] for k in keys))

    def find(self, resource_type: str, key: str) -> list[DirectoryRecord]:
        """Live resources of a type with this key, by id."""
        rows = (
            self._conn()
            .execute(
                "SELECT r.* FROM directory_key k JOIN directory_resource r"
                " ON r.resource_type = k.resource_type AND r.id = k.id"
                " WHERE k.resource_type = ? AND k.key = ? AND r.body IS NOT NULL ORDER BY r.id",
                (resource_type, key),
            )
            .fetchall()
        )
        return [found for row in rows if (found := self.get(row["resource_type"], row["id"]))]

    def sync_state(self) -> SyncState:
        """The stored state, or an empty one."""
        row = self._conn().execute("SELECT * FROM directory_sync WHERE name = 'replica'").fetchone()
        if row is None:
            return SyncState()
        return SyncState(row["since"], bool(row["ready"]), from_ts(row["synced_at"]))

    def save_sync_state(self, state: SyncState) -> None:
        """Replace the stored state."""
        synced = ts(state.synced_at) if state.synced_at is not None else None
        with self._write() as conn:
            conn.execute(
                "INSERT INTO directory_sync (name, since, ready, synced_at)"
                " VALUES ('replica', ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " since = excluded.since, ready = excluded.ready, synced_at = excluded.synced_at",
                (state.since, int(state.ready), synced),
            )

    def counts(self) -> dict[str, int]:
        """Live resources per type."""
        rows = self._conn().execute(
            "SELECT resource_type, COUNT(*) AS n FROM directory_resource"
            " WHERE body IS NOT NULL GROUP BY resource_type ORDER BY resource_type"
        )
        return {row["resource_type"]: int(row["n"]) for row in rows.fetchall()}


def _conforms(replica: SqliteDirectoryReplica) -> DirectoryReplica:
    """Lets mypy check that the class implements the port."""
    return replica
