"""In-memory ``OutboxStore``: the fake the contract tests hold to the same rules as SQLite.

It mirrors ``SqliteOutboxStore`` decision for decision: times are kept as UNIX seconds (floats)
and handed back as aware UTC datetimes, so comparisons and rounding match; ids count up from 1 and
are never reused; a claim leases due pending entries whose lease is free or expired, in
``(next_attempt_at, id)`` order; an attempt is recorded only while its owner holds the lease (an
expired lease nobody else took still counts) and the entry is pending; a requeue follows
``outbox.requeue_refusal`` entry by entry and never touches ``created_at``. One lock guards
everything, so threads may share one instance. Nothing survives the process: use it in tests and
demos only.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from wor_bridge.adapters.memory_accounts import AccountRows, MemoryAccountTables
from wor_bridge.adapters.memory_amend import MemoryAmendments
from wor_bridge.adapters.memory_monitoring import MemoryMonitoringTables, MonitoringRows
from wor_bridge.adapters.memory_retention import MemoryRetention
from wor_bridge.adapters.memory_search import MemorySearchTables, touch_delivery
from wor_bridge.adapters.memory_tasks import MemoryTaskTables, Row, from_ts, ts
from wor_bridge.core import outbox
from wor_bridge.core.outbox import State
from wor_bridge.ports import OutboxStore
from wor_bridge.records import (
    Added,
    AuditEvent,
    NewMessage,
    NewReferral,
    OutboxEntry,
    QueueStats,
    ReferralRecord,
    TaskRecord,
)


class MemoryOutboxStore(
    MemoryTaskTables,
    MemorySearchTables,
    MemoryMonitoringTables,
    MemoryAmendments,
    MemoryRetention,
    MemoryAccountTables,
):
    """``OutboxStore`` in dictionaries, thread-safe, with ``SqliteOutboxStore``'s semantics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._referrals: dict[str, tuple[NewReferral, float]] = {}
        self._rows: dict[int, Row] = {}
        self._by_key: dict[str, int] = {}
        self._audit: list[dict[str, Any]] = []
        self._audit_ids = itertools.count(1)  # never reused, also after a purge (as SQLite)
        self._purged: set[str] = set()
        self._ids = itertools.count(1)
        self._tasks: dict[str, TaskRecord] = {}
        self._cursors: dict[str, str] = {}
        self._items: dict[str, str] = {}
        self._once: dict[str, float] = {}
        self._monitoring = MonitoringRows()
        self._account_rows = AccountRows()

    def close(self) -> None:
        """Nothing to release (kept for parity with ``SqliteOutboxStore``)."""

    def use_once(self, key: str, expires_at: dt.datetime, now: dt.datetime) -> bool:
        """Remember ``key`` until ``expires_at``; False while it is remembered."""
        with self._lock:
            self._once = {k: v for k, v in self._once.items() if v > ts(now)}
            if key in self._once:
                return False
            self._once[key] = ts(expires_at)
            return True

    def add_referral(
        self, referral: NewReferral, now: dt.datetime, audit: AuditEvent | None = None
    ) -> Added:
        """Store referral + outbox entry (+ audit) at once; a known key returns the existing."""
        at = ts(now)
        with self._lock:
            known = self._by_key.get(referral.idempotency_key)
            if known is None and referral.task_id in self._referrals:
                first, _ = self._referrals[referral.task_id]
                known = self._by_key.get(first.idempotency_key)
            if known is not None:
                row = self._rows[known]
                if audit is not None:
                    self._append_audit(replace(audit, outcome="duplicate"), at)
                return Added(row.task_id, row.id, created=False)
            # Like SQLite's INSERT OR IGNORE: a Task id stored before keeps its first referral.
            self._referrals.setdefault(referral.task_id, (referral, at))
            self._tasks.setdefault(
                referral.task_id,
                TaskRecord(
                    task_id=referral.task_id,
                    destination=referral.destination,
                    source_system=referral.source_system,
                    patient_id=referral.patient_id,
                    bundle=referral.bundle,
                    status="requested",
                    business_status=None,
                    reason_code=None,
                    reason_text=None,
                    version=1,
                    deadline_at=referral.deadline_at,
                    first_contact_at=None,
                    alerted_at=None,
                    received_at=from_ts(at),
                    updated_at=from_ts(at),
                ),
            )
            entry_id = self._insert_message(
                NewMessage(
                    referral.idempotency_key,
                    referral.task_id,
                    referral.destination,
                    referral.bundle,
                ),
                at,
            )
            if audit is not None:
                self._append_audit(replace(audit, outcome="accepted"), at)
            if referral.monitoring is not None:  # monitoring hook: facts without patient data
                self._monitoring.insert_facts(referral.monitoring)
            return Added(referral.task_id, entry_id, created=True)

    def claim_due(
        self, owner: str, now: dt.datetime, lease_s: float, limit: int
    ) -> list[OutboxEntry]:
        """Lease due pending entries whose lease is free or expired."""
        at = ts(now)
        with self._lock:
            due = sorted(
                (
                    row
                    for row in self._rows.values()
                    if row.state == "pending"
                    and row.next_attempt_at <= at
                    and (row.lease_until is None or row.lease_until <= at)
                    and not any(
                        other.task_id == row.task_id
                        and other.destination == row.destination
                        and other.state == "pending"
                        and other.id < row.id
                        for other in self._rows.values()
                    )
                ),
                key=lambda row: (row.next_attempt_at, row.id),
            )
            chosen = due if limit < 0 else due[:limit]  # SQLite: a negative LIMIT is no limit
            for row in chosen:
                row.lease_owner = owner
                row.lease_until = at + lease_s
            return [row.entry() for row in chosen]

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
        with self._lock:
            if audit is not None:
                self._append_audit(audit, ts(now))
            row = self._rows.get(entry_id)
            if row is None or row.lease_owner != owner or row.state != "pending":
                return False
            row.state = state
            row.attempts += 1
            row.next_attempt_at = ts(next_attempt_at or now)
            if state == "delivered":
                row.delivered_at = ts(now)
            row.last_status = status
            row.last_error = error
            row.lease_owner = row.lease_until = None
            touch_delivery(self, row, ts(now))
            self._note_attempt(row, state, now)  # monitoring hook
            if state != "pending":
                self._bump_referral(row)
            if message is not None:
                self._insert_message(message, ts(now))
            return True

    def _note_attempt(self, row: Row, state: State, now: dt.datetime) -> None:
        """Monitoring: feedback that reached the GP record, a referral given up (as SQLite)."""
        stored = self._referrals.get(row.task_id)
        if state == "delivered" and row.idempotency_key.startswith("gp|"):
            self._monitoring.note(row.task_id, "feedback-delivered", now)
        elif state == "dead" and stored and stored[0].idempotency_key == row.idempotency_key:
            self._monitoring.note(row.task_id, "delivery-failed", now)

    def get_referral(self, task_id: str) -> ReferralRecord | None:
        """The referral and the state of its (latest) outbox entry."""
        with self._lock:
            stored = self._referrals.get(task_id)
            rows = [row for row in self._rows.values() if row.task_id == task_id]
            if stored is None or not rows:
                return None
            referral, _ = stored
            own = [row for row in rows if row.idempotency_key == referral.idempotency_key]
            latest = own[0] if own else max(rows, key=lambda row: row.id)
            return ReferralRecord(
                task_id=referral.task_id,
                destination=referral.destination,
                source_system=referral.source_system,
                patient_id=referral.patient_id,
                bundle=referral.bundle,
                state=latest.state,
                attempts=latest.attempts,
                idempotency_key=referral.idempotency_key,
            )

    def get_entry(self, entry_id: int) -> OutboxEntry | None:
        """One outbox entry, or None."""
        with self._lock:
            row = self._rows.get(entry_id)
            return None if row is None else row.entry()

    def list_entries(self, state: State | None, limit: int) -> list[OutboxEntry]:
        """Entries newest first, optionally filtered by state."""
        with self._lock:
            rows = [
                row
                for row in sorted(self._rows.values(), key=lambda row: row.id, reverse=True)
                if state is None or row.state == state
            ]
            chosen = rows if limit < 0 else rows[:limit]
            return [row.entry() for row in chosen]

    def requeue(
        self,
        entry_ids: list[int],
        now: dt.datetime,
        *,
        wanted: State = "dead",
        messages: Mapping[int, NewMessage] | None = None,
    ) -> dict[int, str | None]:
        """Per id, requeue it (None) or say why not, by ``outbox.requeue_refusal``, under one
        lock; ``created_at`` is never touched."""
        at = ts(now)
        results: dict[int, str | None] = {}
        with self._lock:
            for entry_id in dict.fromkeys(entry_ids):
                results[entry_id] = refusal = self._requeue_refusal(entry_id, wanted, at)
                if refusal is not None:
                    continue
                row = self._rows[entry_id]
                touch_delivery(self, row, at)  # a referral's Task leaves its final state
                row.state = "pending"
                row.next_attempt_at = row.requeued_at = at
                row.attempts = 0
                row.lease_owner = row.lease_until = None
                message = (messages or {}).get(entry_id)
                if self._bump_referral(row) and message is not None:
                    self._insert_message(message, at)
        return results

    def _requeue_refusal(self, entry_id: int, wanted: State, at: float) -> str | None:
        """``outbox.requeue_refusal`` for one entry (caller holds the lock)."""
        row = self._rows.get(entry_id)
        if row is None:
            return "unknown"
        later = [
            outbox.Neighbour(
                state=other.state,
                attempts=other.attempts,
                last_status=other.last_status,
                leased=other.lease_until is not None and other.lease_until > at,
            )
            for other in self._rows.values()
            if other.task_id == row.task_id
            and other.destination == row.destination
            and other.id > row.id
        ]
        task = self._tasks.get(row.task_id) if self._is_referral(row) else None
        status = task.status if task else None
        return outbox.requeue_refusal(
            row.state, wanted, later, status, purged=row.purged_at is not None
        )

    def _is_referral(self, row: Row) -> bool:
        stored = self._referrals.get(row.task_id)
        return stored is not None and stored[0].idempotency_key == row.idempotency_key

    def _bump_referral(self, row: Row) -> bool:
        """A referral's own entry changed state: its Task's version goes up (lock held)."""
        task = self._tasks.get(row.task_id)
        if task is None or not self._is_referral(row):
            return False
        self._tasks[row.task_id] = replace(task, version=task.version + 1)
        return True

    def entry_ids(self, state: State, since: dt.datetime | None = None) -> list[int]:
        """Ids in ``state``, created at or after ``since``."""
        floor = ts(since) if since is not None else 0.0
        with self._lock:
            return sorted(
                row.id
                for row in self._rows.values()
                if row.state == state and row.created_at >= floor
            )

    def audit(self, event: AuditEvent, now: dt.datetime) -> None:
        """Append one audit record."""
        with self._lock:
            self._append_audit(event, ts(now))

    def _append_audit(self, event: AuditEvent, at: float) -> None:
        """Append under the caller's lock."""
        self._audit.append(
            {
                "id": next(self._audit_ids),
                "at": at,
                "event": event.event,
                "action": event.action,
                "outcome": event.outcome,
                "user": event.user,
                "responsible": event.responsible,
                "source_system": event.source_system,
                "patient_id": event.patient_id,
                "object_type": event.object_type,
                "object_id": event.object_id,
                "detail": event.detail,
            }
        )

    def audit_records(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The newest audit records (copies: the trail itself cannot be changed)."""
        with self._lock:
            newest = self._audit[::-1]
            return [dict(record) for record in (newest if limit < 0 else newest[:limit])]

    def stats(self, now: dt.datetime) -> QueueStats:
        """Counts per state and the age of the oldest pending entry."""
        with self._lock:
            counts = dict.fromkeys(("pending", "delivered", "dead"), 0)
            for row in self._rows.values():
                counts[row.state] += 1
            pending = [
                row.requeued_at or row.created_at
                for row in self._rows.values()
                if row.state == "pending"
            ]
        age = max(0.0, ts(now) - min(pending)) if pending else 0.0
        return QueueStats(counts["pending"], counts["dead"], counts["delivered"], age)

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        """One process only: its intake wakes its dispatcher directly. A no-op."""
        return lambda: None

    def ping(self) -> None:
        """Always reachable."""

    def check_writable(self, min_free_bytes: int = 0, *, probe: bool = True) -> str | None:
        """Always writable (nothing is durable, no file, no disk): None."""
        del min_free_bytes, probe
        return None

    def _insert_message(self, message: NewMessage, at: float) -> int:
        """Like SQLite's INSERT OR IGNORE into the outbox (caller holds the lock); the entry id."""
        if message.idempotency_key in self._by_key:
            return self._by_key[message.idempotency_key]
        row = Row(
            id=next(self._ids),
            idempotency_key=message.idempotency_key,
            task_id=message.task_id,
            destination=message.destination,
            state="pending",
            attempts=0,
            created_at=at,
            next_attempt_at=at,
            payload=message.payload,
        )
        self._rows[row.id] = row
        self._by_key[row.idempotency_key] = row.id
        return row.id


def _conforms(store: MemoryOutboxStore) -> OutboxStore:
    """Lets mypy check that the class implements the port."""
    return store
