"""Keys used once, with an expiry (the private-key JWT ``jti`` replay cache): a mixin of
``SqliteOutboxStore``, so every process on the same SQLite file shares it and it survives a
restart. It uses that class's per-thread connection and ``BEGIN IMMEDIATE`` transactions."""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from typing import Final, Protocol

from wor_bridge.adapters.sql_conn import SqlConnection
from wor_bridge.adapters.sqlite_rows import ts

ONCE_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS used_once (
    key TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS used_once_expiry ON used_once (expires_at);
"""


class _Connected(Protocol):
    def _write(self) -> AbstractContextManager[SqlConnection]: ...


class SqliteOnceTable:
    """Table ``used_once``: a key and the moment it may be forgotten."""

    def use_once(self: _Connected, key: str, expires_at: dt.datetime, now: dt.datetime) -> bool:
        """Remember ``key`` until ``expires_at``; False while it is remembered (one transaction:
        two processes presenting the same key at once cannot both get True)."""
        with self._write() as conn:
            conn.execute("DELETE FROM used_once WHERE expires_at <= ?", (ts(now),))
            cursor = conn.execute(
                "INSERT OR IGNORE INTO used_once (key, expires_at) VALUES (?, ?)",
                (key, ts(expires_at)),
            )
            return cursor.rowcount == 1
