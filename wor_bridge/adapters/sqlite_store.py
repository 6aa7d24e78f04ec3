"""SQLite (stdlib sqlite3, WAL) implementation of ``OutboxStore``: referrals, outbox, audit.

Durability: WAL with ``synchronous=FULL``, so a commit survives a process kill and a power cut.
Every write runs in ``BEGIN IMMEDIATE``, so claims by several workers (threads or processes) are
serialised and a lease is held by one owner only; the writes of one process's threads share
transactions and their commit (``sqlite_commit.GroupCommit``), each in its own savepoint, and
none returns before its commit. Reads use one connection per thread. The audit table is
append-only: triggers abort any UPDATE or DELETE on it.

Times are stored as UNIX seconds (REAL) and returned as aware UTC datetimes.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

from wor_bridge.adapters import migrations, sqlite_search
from wor_bridge.adapters import sqlite_monitoring as monitoring
from wor_bridge.adapters.sealing import PLAIN, Sealer, is_sealed
from wor_bridge.adapters.sql_conn import SqlConnection
from wor_bridge.adapters.sqlite_accounts import SqliteAccountTables
from wor_bridge.adapters.sqlite_amend import SqliteAmendments
from wor_bridge.adapters.sqlite_commit import GroupCommit
from wor_bridge.adapters.sqlite_entries import ENTRY_SELECT, SqliteEntryReads, entry
from wor_bridge.adapters.sqlite_files import private_file, unusable
from wor_bridge.adapters.sqlite_monitoring import SqliteMonitoringTables
from wor_bridge.adapters.sqlite_once import SqliteOnceTable
from wor_bridge.adapters.sqlite_ready import SqliteReadiness, read_only_error, rw_uri
from wor_bridge.adapters.sqlite_replicas import SqliteReplicas
from wor_bridge.adapters.sqlite_requeue import requeue_refusal
from wor_bridge.adapters.sqlite_reseal import SqliteResealing, check_keys
from wor_bridge.adapters.sqlite_retention import SqliteRetention
from wor_bridge.adapters.sqlite_rows import (
    SHARED,
    clear_text,
    insert_audit,
    insert_message,
    known_referral,
    open_bundle,
    open_text,
    seal_bundle,
    seal_text,
    ts,
)
from wor_bridge.adapters.sqlite_search import SqliteSearchTables
from wor_bridge.adapters.sqlite_tasks import SqliteTaskTables
from wor_bridge.core.outbox import State
from wor_bridge.errors import StoreError
from wor_bridge.ports import OutboxStore, ResealingStore
from wor_bridge.records import (
    Added,
    AuditEvent,
    NewMessage,
    NewReferral,
    OutboxEntry,
    QueueStats,
    ReferralRecord,
)


class SqliteOutboxStore(
    SqliteTaskTables,
    SqliteSearchTables,
    SqliteEntryReads,
    SqliteOnceTable,
    SqliteMonitoringTables,
    SqliteAmendments,
    SqliteResealing,
    SqliteRetention,
    SqliteReadiness,
    SqliteReplicas,
    SqliteAccountTables,
):
    """``OutboxStore`` on one SQLite file; a read connection per thread, one write connection
    (group commit). Its SQL is shared with
    ``PostgresOutboxStore`` (``sql_conn``; engines differ in ``SqliteReplicas``, ``_write``).

    ``sealer`` encrypts the columns with patient data (``adapters/sealing.py``; default
    ``PLAIN``: stored in clear); ``StoreError`` when it cannot open the store's newest sealed
    values (``sqlite_reseal.check_keys``). A new file is created owner-only (0600), and so are
    its ``-wal`` and ``-shm`` files (SQLite gives them the database file's mode).
    """

    def __init__(
        self, path: str | Path, *, busy_timeout_ms: int = 10_000, sealer: Sealer = PLAIN
    ) -> None:
        self.path = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._sealer = sealer
        self._local = threading.local()
        self._group = GroupCommit(self._writer)
        try:
            private_file(self.path)  # before SQLite creates it: 0600, and so its -wal and -shm
            migrations.upgrade_sqlite(self.path)  # schema versions: adapters/migrations.py
            # held open: the file's inode number cannot go to another file meanwhile
            check_keys(self._sqlite(), sealer, self.path)
            self._remember_file()  # the file the connections write to (check_writable)
        except (sqlite3.Error, OSError) as err:
            raise StoreError(unusable(self.path, err)) from None

    def _conn(self) -> SqlConnection:
        writing: sqlite3.Connection | None = getattr(self._local, "writing", None)
        return writing if writing is not None else self._sqlite()  # a write's reads: its own

    def _sqlite(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and getattr(self._local, "read_only", False) and self._writable():
            self.close()  # opened while the file was read-only: SQLite fell back to reading
            conn = None
        if conn is None:
            conn = self._open(shared=False)
            self._local.conn = conn
            self._local.read_only = self._opened is not None and not self._writable()
        return conn

    def _open(self, *, shared: bool) -> sqlite3.Connection:
        """A new connection; ``shared``: usable from any thread (the group commit's writer)."""
        # once the file is made, a connection never creates one: a store removed under
        # the service is an error in every thread, not a new empty file (check_writable)
        target, uri = (self.path, False) if self._opened is None else (rw_uri(self.path), True)
        conn = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=not shared)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[SqlConnection]:
        """One write transaction, grouped with the other threads' (``sqlite_commit``): returns
        once committed; ``durable=False`` (a lease: its loss costs nothing) commits with
        ``synchronous = NORMAL`` (no wait for the disk; the next durable commit flushes it).
        Raises RuntimeError when called inside a write of the same thread (it would wait for
        itself); the block's reads through ``_conn()`` see its writes."""
        if getattr(self._local, "writing", None) is not None:
            raise RuntimeError("a store write inside a write of the same thread")
        try:
            with self._group.transaction(durable=durable) as conn:
                self._local.writing = conn
                try:
                    yield conn
                finally:
                    self._local.writing = None
        except sqlite3.Error as err:
            if read_only_error(err):
                self.close()  # the next write opens the file again
            raise

    def _writer(self) -> sqlite3.Connection:
        """The group commit's write connection (dropped by ``close`` after a read-only error)."""
        return self._open(shared=True)

    def close(self) -> None:
        """Close this thread's connection, and the write connection unless a write is open."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        self._group.drop()

    def add_referral(
        self, referral: NewReferral, now: dt.datetime, audit: AuditEvent | None = None
    ) -> Added:
        """Store referral + outbox entry (+ audit) in one transaction; a known key: the existing."""
        with self._write() as conn:
            known = known_referral(conn, self._sealer, referral, now, audit)
            if known is not None:
                return known
            inserted = conn.execute(
                "INSERT OR IGNORE INTO referral (task_id, idempotency_key, source_system,"
                " destination, mapping, patient_id, responsible, client_id, received_at, bundle,"
                " service_request_id, deadline_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    referral.task_id,
                    referral.idempotency_key,
                    referral.source_system,
                    referral.destination,
                    referral.mapping,
                    seal_text(
                        self._sealer,
                        "referral",
                        "patient_id",
                        referral.task_id,
                        referral.patient_id,
                        conn=conn,
                    ),
                    referral.responsible,
                    referral.client_id,
                    ts(now),
                    seal_bundle(self._sealer, referral.task_id, referral.bundle),
                    referral.service_request_id,
                    ts(referral.deadline_at) if referral.deadline_at else None,
                ),
            )
            if inserted.rowcount != 1:  # another process's transaction stored it meanwhile
                known = known_referral(conn, self._sealer, referral, now, audit)
                if known is not None:
                    return known
            sqlite_search.index_referral(conn, self._sealer, referral, now)
            # the Bundle is stored once, in referral.bundle (SHARED), unless that row was there
            payload = SHARED if inserted.rowcount == 1 else referral.bundle
            entry_id = insert_message(
                conn,
                self._sealer,
                NewMessage(
                    referral.idempotency_key, referral.task_id, referral.destination, payload
                ),
                now,
            )
            if audit is not None:
                insert_audit(conn, self._sealer, replace(audit, outcome="accepted"), now)
            if referral.monitoring is not None:  # monitoring hook: facts without patient data
                monitoring.insert_facts(conn, referral.monitoring)
            return Added(referral.task_id, int(cast(int, entry_id)), created=True)

    def claim_due(
        self, owner: str, now: dt.datetime, lease_s: float, limit: int
    ) -> list[OutboxEntry]:
        """Lease due pending entries whose lease is free or expired."""
        with self._write(durable=False) as conn:
            for setting in self._claim_plan:
                conn.execute(setting)
            ids = conn.execute(
                "UPDATE outbox SET lease_owner = ?, lease_until = ? WHERE id IN ("  # noqa: S608 - a constant clause
                " SELECT id FROM outbox o WHERE state = 'pending' AND next_attempt_at <= ?"
                " AND (lease_until IS NULL OR lease_until <= ?)"
                " AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.task_id = o.task_id"
                " AND e.destination = o.destination AND e.state = 'pending' AND e.id < o.id)"
                f" ORDER BY next_attempt_at, id LIMIT ?{self._claim_lock})"
                " AND (lease_until IS NULL OR lease_until <= ?) RETURNING id",
                (owner, ts(now) + lease_s, ts(now), ts(now), limit, ts(now)),
            ).fetchall()
            if not ids:
                return []
            marks = ",".join("?" * len(ids))
            rows = conn.execute(
                f"{ENTRY_SELECT} WHERE o.id IN ({marks})",
                [r["id"] for r in ids],
            ).fetchall()
        return sorted(
            (entry(self._sealer, r) for r in rows), key=lambda e: (e.next_attempt_at, e.id)
        )

    def record_attempt(
        self,
        entry_id: int,
        owner: str,
        *,
        now: dt.datetime,
        state: State,
        next_attempt_at: dt.datetime | None,
        status: int | None,
        error: str | None,
        audit: AuditEvent | None = None,
        message: NewMessage | None = None,
    ) -> bool:
        """Record the attempt and release the lease, only while ``owner`` holds it; a
        referral's own entry that ends (delivered, dead) moves its Task's version on."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, next_attempt_at = ?,"
                " delivered_at = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_at END,"
                " last_status = ?, last_error = ?, lease_owner = NULL, lease_until = NULL"
                " WHERE id = ? AND lease_owner = ? AND state = 'pending'",
                (
                    state,
                    ts(next_attempt_at or now),
                    state,
                    ts(now),
                    status,
                    error,
                    entry_id,
                    owner,
                ),
            )
            if cursor.rowcount == 1 and state != "pending":
                sqlite_search.touch_delivery(conn, [entry_id], now)
            if audit is not None:
                insert_audit(conn, self._sealer, audit, now)
            if cursor.rowcount != 1:
                return False
            monitoring.note_attempt(conn, entry_id, state, now)  # feedback reached / given up
            if state != "pending":
                conn.execute(
                    "UPDATE referral SET version = version + 1 WHERE idempotency_key ="
                    " (SELECT idempotency_key FROM outbox WHERE id = ?)",
                    (entry_id,),
                )
            if message is not None:
                insert_message(conn, self._sealer, message, now)
            return True

    def get_referral(self, task_id: str) -> ReferralRecord | None:
        """The referral and the state of its (latest) outbox entry."""
        row = (
            self._conn()
            .execute(
                "SELECT r.task_id, r.destination, r.source_system, r.patient_id, r.bundle,"
                " r.idempotency_key, o.state, o.attempts FROM referral r"
                " JOIN outbox o ON o.idempotency_key = r.idempotency_key WHERE r.task_id = ?",
                (task_id,),
            )
            .fetchone()
        )
        if row is None:
            return None
        task_id = row["task_id"]
        return ReferralRecord(
            task_id=task_id,
            destination=row["destination"],
            source_system=row["source_system"],
            patient_id=open_text(self._sealer, "referral", "patient_id", task_id, row["patient_id"])
            or "",
            bundle=open_bundle(self._sealer, task_id, row["bundle"]),
            state=cast(State, row["state"]),
            attempts=row["attempts"],
            idempotency_key=row["idempotency_key"],
        )

    def requeue(
        self,
        entry_ids: list[int],
        now: dt.datetime,
        *,
        wanted: State = "dead",
        messages: Mapping[int, NewMessage] | None = None,
    ) -> dict[int, str | None]:
        """Per id, requeue it (None) or say why not, by ``outbox.requeue_refusal``, all in one
        transaction; ``created_at`` is never touched."""
        results: dict[int, str | None] = {}
        with self._write() as conn:
            for entry_id in dict.fromkeys(entry_ids):
                results[entry_id] = refusal = requeue_refusal(conn, entry_id, wanted, now)
                if refusal is not None:
                    continue
                sqlite_search.touch_delivery(conn, [entry_id], now)  # it leaves its final state
                conn.execute(
                    "UPDATE outbox SET state = 'pending', next_attempt_at = ?, requeued_at = ?,"
                    " attempts = 0, lease_owner = NULL, lease_until = NULL WHERE id = ?",
                    (ts(now), ts(now), entry_id),
                )
                bumped = conn.execute(
                    "UPDATE referral SET version = version + 1 WHERE idempotency_key ="
                    " (SELECT idempotency_key FROM outbox WHERE id = ?)",
                    (entry_id,),
                )
                message = (messages or {}).get(entry_id)
                if bumped.rowcount == 1 and message is not None:
                    insert_message(conn, self._sealer, message, now)
        return results

    def audit(self, event: AuditEvent, now: dt.datetime) -> None:
        """Append one audit record (its own transaction)."""
        with self._write() as conn:
            insert_audit(conn, self._sealer, event, now)

    def audit_records(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest audit records (for operators and tests)."""
        rows = self._conn().execute("SELECT * FROM audit ORDER BY id DESC LIMIT ?", (limit,))
        found = [dict(r) for r in rows.fetchall()]
        for record in found:  # a record from before encryption stays in clear (append-only)
            patient = record["patient_id"]
            record["patient_id"] = (
                open_text(self._sealer, "audit", "patient_id", str(record["id"]), patient)
                if is_sealed(patient)
                else clear_text(patient)
            )
        return found

    def stats(self, now: dt.datetime) -> QueueStats:
        """Counts per state and the age of the oldest pending entry."""
        conn = self._conn()
        counts = dict.fromkeys(("pending", "delivered", "dead"), 0)
        for row in conn.execute("SELECT state, COUNT(*) AS n FROM outbox GROUP BY state"):
            counts[row["state"]] = row["n"]
        oldest = conn.execute(
            "SELECT MIN(COALESCE(requeued_at, created_at)) FROM outbox WHERE state = 'pending'"
        )
        first = oldest.fetchone()[0]
        age = max(0.0, ts(now) - first) if first is not None else 0.0
        return QueueStats(counts["pending"], counts["dead"], counts["delivered"], age)

    def ping(self) -> None:
        """Run a trivial query; raises sqlite3.Error when the store is unusable."""
        self._conn().execute("SELECT 1").fetchone()


def _conforms(store: SqliteOutboxStore) -> tuple[OutboxStore, ResealingStore]:
    """Lets mypy check that the class implements the ports."""
    return store, store
