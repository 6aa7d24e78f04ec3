"""Referral amendments in the SQLite store (a mixin of ``SqliteOutboxStore``): the changed
referral, its messages and the audit record in one ``BEGIN IMMEDIATE`` transaction, under an
optimistic lock on the Task version."""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import AbstractContextManager
from typing import Protocol

from wor_bridge.adapters.sqlite_rows import insert_audit, insert_message, ts
from wor_bridge.records import Amendment, AuditEvent

_RESTART = (
    ", status = 'requested', business_status = NULL, reason_code = NULL, reason_text = NULL,"
    " first_contact_at = NULL, alerted_at = NULL"
)


class _Connected(Protocol):
    def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...


class SqliteAmendments:
    """``amend_referral`` on the ``referral`` and ``outbox`` tables."""

    def amend_referral(
        self: _Connected, amendment: Amendment, now: dt.datetime, *, audit: AuditEvent
    ) -> int | None:
        """Store a changed referral with its messages and audit at once (see the port)."""
        new = amendment.referral
        with self._write() as conn:
            old = conn.execute(
                "SELECT idempotency_key, destination FROM referral"
                " WHERE task_id = ? AND version = ?",
                (new.task_id, amendment.expected_version),
            ).fetchone()
            if old is None:
                return None
            messages = amendment.messages
            if amendment.redirected:
                withdrawn = conn.execute(
                    "UPDATE outbox SET state = 'dead',"
                    " last_error = 'withdrawn before delivery (redirected)'"
                    " WHERE idempotency_key = ? AND state = 'pending'"
                    " AND (lease_until IS NULL OR lease_until <= ?)"
                    " AND (attempts = 0 OR last_status IS NOT NULL)",
                    (old["idempotency_key"], ts(now)),
                )
                if withdrawn.rowcount == 1:
                    messages = tuple(m for m in messages if m.destination != old["destination"])
            restart = _RESTART if amendment.redirected else ""
            key = new.idempotency_key if amendment.redirected else old["idempotency_key"]
            conn.execute(
                "UPDATE referral SET idempotency_key = ?, destination = ?, mapping = ?,"  # noqa: S608 - a constant clause
                " patient_id = ?, responsible = ?, bundle = ?, service_request_id = ?,"
                " his_system = ?, his_value = ?, owner_id = ?, updated_at = ?,"
                f" deadline_at = ?, version = version + 1{restart} WHERE task_id = ?",
                (
                    key,
                    new.destination,
                    new.mapping,
                    new.patient_id,
                    new.responsible,
                    new.bundle,
                    new.service_request_id,
                    new.his_system,
                    new.his_value,
                    new.owner_id,
                    ts(now),
                    ts(new.deadline_at) if new.deadline_at else None,
                    new.task_id,
                ),
            )
            for message in messages:
                insert_message(conn, message, now)
            insert_audit(conn, audit, now)
            return amendment.expected_version + 1
