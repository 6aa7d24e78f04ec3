"""Reading outbox entries in the SQLite store (a mixin of ``SqliteOutboxStore``).

An entry's payload is its own (sealed) ``outbox.payload``, or, when that is empty (``SHARED``),
its referral's Bundle from ``referral.bundle``: each Bundle is stored once.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import AbstractContextManager
from typing import Any, Final, Protocol, cast

from wor_bridge.adapters.sealing import Sealer
from wor_bridge.adapters.sqlite_rows import from_ts, open_payload, ts
from wor_bridge.core.outbox import State
from wor_bridge.records import OutboxEntry

ENTRY_SELECT: Final = (
    "SELECT o.id, o.idempotency_key, o.task_id, o.destination, o.state, o.attempts,"
    " o.created_at, o.next_attempt_at, o.delivered_at, o.last_status, o.last_error, o.payload,"
    " o.requeued_at, CASE WHEN length(o.payload) = 0 THEN r.bundle END AS shared"
    " FROM outbox o LEFT JOIN referral r ON r.task_id = o.task_id"
)
"""Every column of an entry, and its referral's Bundle when the entry carries that."""


class _Connected(Protocol):
    _sealer: Sealer

    def _conn(self) -> sqlite3.Connection: ...

    def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...


def entry_payload(sealer: Sealer, row: sqlite3.Row) -> bytes:
    """The payload of an ``ENTRY_SELECT`` row, opened."""
    shared = row["shared"]
    return open_payload(
        sealer,
        row["idempotency_key"],
        row["payload"],
        row["task_id"],
        None if shared is None else bytes(shared),
    )


def entry(sealer: Sealer, row: sqlite3.Row) -> OutboxEntry:
    """An ``ENTRY_SELECT`` row as the port's value."""
    return OutboxEntry(
        id=row["id"],
        idempotency_key=row["idempotency_key"],
        task_id=row["task_id"],
        destination=row["destination"],
        state=cast(State, row["state"]),
        attempts=row["attempts"],
        created_at=cast(dt.datetime, from_ts(row["created_at"])),
        next_attempt_at=cast(dt.datetime, from_ts(row["next_attempt_at"])),
        delivered_at=from_ts(row["delivered_at"]),
        last_status=row["last_status"],
        last_error=row["last_error"],
        payload=entry_payload(sealer, row),
        requeued_at=from_ts(row["requeued_at"]),
    )


class SqliteEntryReads:
    """``get_entry``, ``list_entries``, ``entry_ids`` and ``task_messages``."""

    def get_entry(self: _Connected, entry_id: int) -> OutboxEntry | None:
        """One outbox entry, or None."""
        row = self._conn().execute(f"{ENTRY_SELECT} WHERE o.id = ?", (entry_id,)).fetchone()
        return None if row is None else entry(self._sealer, row)

    def list_entries(self: _Connected, state: State | None, limit: int) -> list[OutboxEntry]:
        """Entries newest first, optionally filtered by state."""
        sql = ENTRY_SELECT
        args: tuple[Any, ...] = ()
        if state is not None:
            sql += " WHERE o.state = ?"
            args = (state,)
        rows = self._conn().execute(sql + " ORDER BY o.id DESC LIMIT ?", (*args, limit))
        return [entry(self._sealer, r) for r in rows.fetchall()]

    def entry_ids(self: _Connected, state: State, since: dt.datetime | None = None) -> list[int]:
        """Ids in ``state``, created at or after ``since``."""
        floor = ts(since) if since is not None else 0.0
        rows = (
            self._conn()
            .execute(
                "SELECT id FROM outbox WHERE state = ? AND created_at >= ? ORDER BY id",
                (state, floor),
            )
            .fetchall()
        )
        return [int(r["id"]) for r in rows]

    def task_messages(self: _Connected, task_id: str) -> list[tuple[str, bytes]]:
        """Destination and payload of the Task's outbox entries, oldest first."""
        rows = self._conn().execute(
            f"{ENTRY_SELECT} WHERE o.task_id = ? ORDER BY o.id",
            (task_id,),
        )
        return [(str(r["destination"]), entry_payload(self._sealer, r)) for r in rows.fetchall()]
