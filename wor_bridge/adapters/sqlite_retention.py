"""Retention in the SQLite store (a mixin of ``SqliteOutboxStore``): ``purge`` and the schema
step that makes the audit trail deletable by the purge only.

The audit table stays append-only for everyone else: ``audit_no_update`` refuses every UPDATE,
and ``audit_no_delete`` refuses a DELETE unless the row is older than the threshold in the
one-row table ``audit_purge``, which the purge sets, uses and clears inside its own transaction
(no other code writes it; an ordinary DELETE finds it empty and is refused).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import Final, Protocol

from wor_bridge.adapters.sealing import Sealer
from wor_bridge.adapters.sql_conn import SqlConnection
from wor_bridge.adapters.sqlite_rows import (
    SHARED,
    insert_audit,
    open_bundle,
    seal_bundle,
    seal_payload,
    ts,
)
from wor_bridge.adapters.sqlite_schema import add_columns
from wor_bridge.core import retention
from wor_bridge.records import AuditEvent, PurgeCounts

_RETENTION_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS audit_purge (id INTEGER PRIMARY KEY CHECK (id = 1),"
    " before REAL NOT NULL)",
    "DROP TRIGGER IF EXISTS audit_no_delete",
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
    " WHEN NOT EXISTS (SELECT 1 FROM audit_purge WHERE old.at < audit_purge.before)"
    " BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END",
    "CREATE INDEX IF NOT EXISTS audit_at ON audit (at)",
)


def add_retention(conn: sqlite3.Connection) -> None:
    """Migration step 7: purge marks, the purge's audit threshold and the trigger reading it."""
    for table in ("referral", "outbox"):
        add_columns(conn, table, (("purged_at", "REAL"),))
    for statement in _RETENTION_DDL:
        conn.execute(statement)


_FINISHED_SQL: Final = ", ".join(f"'{status}'" for status in sorted(retention.FINISHED))
_ENDED: Final = (
    "SELECT r.task_id, r.bundle FROM referral r JOIN outbox o"  # noqa: S608 - constant statuses
    " ON o.idempotency_key = r.idempotency_key"
    f" WHERE r.purged_at IS NULL AND r.updated_at < ? AND (r.status IN ({_FINISHED_SQL})"
    " OR o.state = 'dead') AND NOT EXISTS (SELECT 1 FROM outbox p"
    " WHERE p.task_id = r.task_id AND p.state = 'pending')"
)
_MESSAGES: Final = "task_id = ? AND state != 'pending' AND purged_at IS NULL"


class _Connected(Protocol):
    _sealer: Sealer

    def _conn(self) -> SqlConnection: ...

    def _write(self) -> AbstractContextManager[SqlConnection]: ...


class SqliteRetention:
    """``OutboxStore.purge`` on the SQLite file."""

    def purge(
        self: _Connected,
        payload_before: dt.datetime,
        audit_before: dt.datetime,
        now: dt.datetime,
        *,
        audit: AuditEvent | None = None,
        dry_run: bool = False,
    ) -> PurgeCounts:
        """See ``OutboxStore.purge``: one ``BEGIN IMMEDIATE`` transaction, with
        ``secure_delete`` (freed content is overwritten with zeros), then the WAL is checkpointed
        and truncated, so the removed values are left in neither file."""
        self._conn().execute(f"PRAGMA secure_delete = {'OFF' if dry_run else 'ON'}")
        try:
            counts = purge_rows(
                self, payload_before, audit_before, now, audit=audit, dry_run=dry_run
            )
        finally:
            self._conn().execute("PRAGMA secure_delete = OFF")
        if not dry_run:
            self._conn().execute("PRAGMA wal_checkpoint(TRUNCATE)")  # busy readers: next time
        return counts


def purge_rows(
    store: _Connected,
    payload_before: dt.datetime,
    audit_before: dt.datetime,
    now: dt.datetime,
    *,
    audit: AuditEvent | None,
    dry_run: bool,
) -> PurgeCounts:
    """The purge's one transaction (see ``SqliteRetention.purge``; the PostgreSQL store's
    ``purge`` is this alone)."""
    with store._write() as conn:
        ended = conn.execute(_ENDED, (ts(payload_before),)).fetchall()
        payloads = sum(
            conn.execute(
                f"SELECT COUNT(*) FROM outbox WHERE {_MESSAGES}",  # noqa: S608 - constant
                (task_id,),
            ).fetchone()[0]
            for task_id, _ in ended
        )
        old = conn.execute("SELECT COUNT(*) FROM audit WHERE at < ?", (ts(audit_before),))
        counts = PurgeCounts(len(ended), payloads, int(old.fetchone()[0]))
        if dry_run:
            return counts
        for task_id, stored in ended:
            skeleton = retention.redact_bundle(open_bundle(store._sealer, task_id, stored))
            conn.execute(
                "UPDATE referral SET bundle = ?, patient_id = '', reason_text = NULL,"
                " purged_at = ? WHERE task_id = ?",
                (seal_bundle(store._sealer, task_id, skeleton), ts(now), task_id),
            )
            messages = conn.execute(
                f"SELECT id, idempotency_key, payload FROM outbox WHERE {_MESSAGES}",  # noqa: S608 - constant
                (task_id,),
            ).fetchall()
            for entry_id, key, payload in messages:
                # SHARED: the referral's own entry carries no copy, it reads the skeleton
                emptied = (
                    SHARED
                    if bytes(payload) == SHARED
                    else seal_payload(store._sealer, key, retention.PURGED_PAYLOAD)
                )
                conn.execute(
                    "UPDATE outbox SET payload = ?, purged_at = ? WHERE id = ?",
                    (emptied, ts(now), entry_id),
                )
        conn.execute("INSERT INTO audit_purge (id, before) VALUES (1, ?)", (ts(audit_before),))
        conn.execute("DELETE FROM audit WHERE at < ?", (ts(audit_before),))
        conn.execute("DELETE FROM audit_purge")
        if audit is not None:
            insert_audit(conn, store._sealer, replace(audit, detail=counts.detail()), now)
        return counts
