"""The Task side of the SQLite store: progress reported by the welfare side, recorded feedback
items, poll cursors and first-contact alerts. A mixin of ``SqliteOutboxStore``: it uses that
class's per-thread connection and ``BEGIN IMMEDIATE`` transactions."""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from typing import Protocol

from wor_bridge.adapters import sqlite_monitoring as monitoring
from wor_bridge.adapters.sealing import Sealer
from wor_bridge.adapters.sql_conn import SqlConnection
from wor_bridge.adapters.sqlite_rows import insert_audit, insert_message, seal_text, ts
from wor_bridge.adapters.sqlite_search import TASK_COLUMNS, task_record, touch
from wor_bridge.core.monitoring_facts import monitoring_key
from wor_bridge.records import AuditEvent, NewMessage, TaskRecord, TaskUpdate


class _Connected(Protocol):
    _sealer: Sealer

    def _conn(self) -> SqlConnection: ...

    def _write(self) -> AbstractContextManager[SqlConnection]: ...


class SqliteTaskTables:
    """Task state, feedback items, poll cursors and alerts (tables ``referral``,
    ``feedback_item``, ``poll_state``)."""

    def get_task(self: _Connected, task_id: str) -> TaskRecord | None:
        """The Task of a referral, or None."""
        row = (
            self._conn()
            .execute(f"SELECT {TASK_COLUMNS} FROM referral r WHERE r.task_id = ?", (task_id,))  # noqa: S608 - a constant column list
            .fetchone()
        )
        return None if row is None else task_record(self._sealer, row)

    def task_for_request(self: _Connected, service_request_id: str) -> str | None:
        """The Task id of the referral whose ServiceRequest has this id."""
        row = (
            self._conn()
            .execute(
                "SELECT task_id FROM referral WHERE service_request_id = ? AND service_request_id"
                " != ''",
                (service_request_id,),
            )
            .fetchone()
        )
        return None if row is None else str(row["task_id"])

    def known_items(self: _Connected, task_id: str) -> set[str]:
        """Keys of the feedback items already recorded for a Task."""
        rows = self._conn().execute("SELECT key FROM feedback_item WHERE task_id = ?", (task_id,))
        return {str(r["key"]) for r in rows.fetchall()}

    def save_task_update(
        self: _Connected,
        task_id: str,
        expected_version: int,
        update: TaskUpdate,
        *,
        audit: AuditEvent,
        now: dt.datetime,
    ) -> int | None:
        """New state, item keys, outbox message and audit in one transaction (optimistic lock)."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE referral SET status = ?, business_status = ?, reason_code = ?,"
                " reason_text = ?, version = version + 1,"
                " first_contact_at = CASE WHEN ? AND first_contact_at IS NULL THEN ?"
                " ELSE first_contact_at END WHERE task_id = ? AND version = ?",
                (
                    update.status,
                    update.business_status,
                    update.reason_code,
                    seal_text(
                        self._sealer,
                        "referral",
                        "reason_text",
                        task_id,
                        update.reason_text,
                        conn=conn,
                    ),
                    bool(update.first_contact),
                    ts(now),
                    task_id,
                    expected_version,
                ),
            )
            if cursor.rowcount != 1:
                return None
            touch(conn, task_id, now)
            conn.executemany(
                "INSERT OR IGNORE INTO feedback_item (key, task_id) VALUES (?, ?)",
                [(key, task_id) for key in update.item_keys],
            )
            message = update.message
            if update.withdraw:
                withdrawn = conn.execute(
                    "UPDATE outbox SET state = 'dead', last_error = 'withdrawn before delivery'"
                    " WHERE idempotency_key = (SELECT idempotency_key FROM referral"
                    " WHERE task_id = ?) AND state = 'pending'"
                    " AND (lease_until IS NULL OR lease_until <= ?)"
                    # never sent, or every try got a definite answer (a timeout may have landed)
                    " AND (attempts = 0 OR last_status IS NOT NULL)",
                    (task_id, ts(now)),
                )
                if withdrawn.rowcount == 1:
                    message = None  # the welfare side never received it: nothing to cancel
            if message is not None:
                insert_message(conn, self._sealer, message, now)
            insert_audit(conn, self._sealer, audit, now)
            if update.progress is not None:  # monitoring hook: facts without patient data
                monitoring.apply_progress(conn, monitoring_key(task_id), update.progress)
            return expected_version + 1

    def poll_cursor(self: _Connected, destination: str) -> str | None:
        """The high-water mark of the last poll of a destination."""
        row = (
            self._conn()
            .execute("SELECT cursor FROM poll_state WHERE destination = ?", (destination,))
            .fetchone()
        )
        return None if row is None else str(row["cursor"])

    def set_poll_cursor(self: _Connected, destination: str, cursor: str) -> None:
        """Remember the high-water mark after a poll round."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO poll_state (destination, cursor) VALUES (?, ?)"
                " ON CONFLICT (destination) DO UPDATE SET cursor = excluded.cursor",
                (destination, cursor),
            )

    def overdue_tasks(self: _Connected, now: dt.datetime, limit: int) -> list[str]:
        """Past the deadline, no first contact, not finished, not alerted."""
        rows = self._conn().execute(
            "SELECT task_id FROM referral WHERE deadline_at IS NOT NULL AND deadline_at < ?"
            " AND first_contact_at IS NULL AND alerted_at IS NULL AND status IN"
            " ('requested', 'accepted', 'in-progress', 'on-hold') ORDER BY deadline_at LIMIT ?",
            (ts(now), limit),
        )
        return [str(r["task_id"]) for r in rows.fetchall()]

    def mark_alerted(
        self: _Connected,
        task_id: str,
        message: NewMessage | None,
        *,
        audit: AuditEvent,
        now: dt.datetime,
    ) -> bool:
        """Alert once: flag, outbox message and audit in one transaction."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE referral SET alerted_at = ? WHERE task_id = ? AND alerted_at IS NULL",
                (ts(now), task_id),
            )
            if cursor.rowcount != 1:
                return False
            if message is not None:
                insert_message(conn, self._sealer, message, now)
            insert_audit(conn, self._sealer, audit, now)
            return True
