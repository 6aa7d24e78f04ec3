"""Referral amendments in the SQLite store (a mixin of ``SqliteOutboxStore``): the changed
referral, its messages and the audit record in one ``BEGIN IMMEDIATE`` transaction, under an
optimistic lock on the Task version.

Each Bundle is stored once: entries that carried the referral's Bundle (``SHARED``) are given
the old Bundle as their own payload before ``referral.bundle`` changes, and a new message whose
payload is the new Bundle carries it as ``SHARED``."""

from __future__ import annotations

import datetime as dt
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Protocol

from wor_bridge.adapters.sealing import Sealer
from wor_bridge.adapters.sql_conn import SqlConnection
from wor_bridge.adapters.sqlite_rows import (
    SHARED,
    insert_audit,
    insert_message,
    open_bundle,
    seal_bundle,
    seal_payload,
    seal_text,
    ts,
)
from wor_bridge.records import Amendment, AuditEvent

_RESTART = (
    ", status = 'requested', business_status = NULL, reason_code = NULL, reason_text = NULL,"
    " first_contact_at = NULL, alerted_at = NULL"
)


class _Connected(Protocol):
    _sealer: Sealer
    _row_lock: str

    def _write(self) -> AbstractContextManager[SqlConnection]: ...


class SqliteAmendments:
    """``amend_referral`` on the ``referral`` and ``outbox`` tables."""

    def amend_referral(
        self: _Connected, amendment: Amendment, now: dt.datetime, *, audit: AuditEvent
    ) -> int | None:
        """Store a changed referral with its messages and audit at once (see the port)."""
        new = amendment.referral
        with self._write() as conn:
            old = conn.execute(
                "SELECT idempotency_key, destination, bundle FROM referral"  # noqa: S608 - a constant clause
                f" WHERE task_id = ? AND version = ?{self._row_lock}",
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
            _unshare(conn, self._sealer, new.task_id, bytes(old["bundle"]))
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
                    seal_text(
                        self._sealer,
                        "referral",
                        "patient_id",
                        new.task_id,
                        new.patient_id,
                        conn=conn,
                    ),
                    new.responsible,
                    seal_bundle(self._sealer, new.task_id, new.bundle),
                    new.service_request_id,
                    new.his_system,
                    self._sealer.index(new.his_value),
                    new.owner_id,
                    ts(now),
                    ts(new.deadline_at) if new.deadline_at else None,
                    new.task_id,
                ),
            )
            for message in messages:
                if message.task_id == new.task_id and message.payload == new.bundle:
                    message = replace(message, payload=SHARED)  # noqa: PLW2901 - stored once
                insert_message(conn, self._sealer, message, now)
            insert_audit(conn, self._sealer, audit, now)
            return amendment.expected_version + 1


def _unshare(conn: SqlConnection, sealer: Sealer, task_id: str, stored: bytes) -> None:
    """Give the entries that carry the referral's Bundle (``SHARED``) that Bundle as their own
    payload, before ``referral.bundle`` changes (inside the caller's transaction)."""
    rows = conn.execute(
        "SELECT id, idempotency_key FROM outbox WHERE task_id = ? AND length(payload) = 0",
        (task_id,),
    ).fetchall()
    if not rows:
        return
    bundle = open_bundle(sealer, task_id, stored)
    for row in rows:
        conn.execute(
            "UPDATE outbox SET payload = ? WHERE id = ?",
            (seal_payload(sealer, row["idempotency_key"], bundle), row["id"]),
        )
