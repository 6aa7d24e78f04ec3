"""Row helpers shared by the SQLite store's modules: time conversion and the two inserts that
several transactions make (audit records, outbox messages)."""

from __future__ import annotations

import datetime as dt
import sqlite3

from wor_bridge.records import AuditEvent, NewMessage


def ts(moment: dt.datetime) -> float:
    return moment.timestamp()


def from_ts(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, tz=dt.UTC)


def insert_audit(conn: sqlite3.Connection, event: AuditEvent, now: dt.datetime) -> None:
    conn.execute(
        "INSERT INTO audit (at, event, action, outcome, user, responsible, source_system,"
        " patient_id, object_type, object_id, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
        (
            ts(now),
            event.event,
            event.action,
            event.outcome,
            event.user,
            event.responsible,
            event.source_system,
            event.patient_id,
            event.object_type,
            event.object_id,
            event.detail,
        ),
    )


def insert_message(conn: sqlite3.Connection, message: NewMessage, now: dt.datetime) -> int | None:
    """Queue a message (INSERT OR IGNORE on its key); the new entry's id, None if it existed."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO outbox (idempotency_key, task_id, destination, state, created_at,"
        " next_attempt_at, payload) VALUES (?, ?, ?, 'pending', ?, ?, ?)",
        (
            message.idempotency_key,
            message.task_id,
            message.destination,
            ts(now),
            ts(now),
            message.payload,
        ),
    )
    return cursor.lastrowid if cursor.rowcount == 1 else None
