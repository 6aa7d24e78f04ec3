"""The Task side of the in-memory store (a mixin of ``MemoryOutboxStore``): Task state, recorded
feedback items, poll cursors and first-contact alerts, with the SQLite store's semantics. Also the
outbox row and the time helpers both halves share."""

from __future__ import annotations

import datetime as dt
import threading
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from typing import Any, Protocol

from wor_bridge.adapters.memory_monitoring import MonitoringRows
from wor_bridge.core.monitoring_facts import monitoring_key
from wor_bridge.core.outbox import State
from wor_bridge.records import (
    AuditEvent,
    NewMessage,
    NewReferral,
    OutboxEntry,
    TaskRecord,
    TaskUpdate,
)

_ACTIVE = frozenset({"requested", "accepted", "in-progress", "on-hold"})


def ts(moment: dt.datetime) -> float:
    return moment.timestamp()


def from_ts(value: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(value, tz=dt.UTC)


@dataclass(slots=True)
class Row:
    """One outbox row, lease included (mutable; only touched under the store's lock)."""

    id: int
    idempotency_key: str
    task_id: str
    destination: str
    state: State
    attempts: int
    created_at: float
    next_attempt_at: float
    payload: bytes
    lease_owner: str | None = None
    lease_until: float | None = None
    delivered_at: float | None = None
    last_status: int | None = None
    last_error: str | None = None
    requeued_at: float | None = None
    purged_at: float | None = None

    def entry(self) -> OutboxEntry:
        """The row as the immutable value the port hands out."""
        return OutboxEntry(
            id=self.id,
            idempotency_key=self.idempotency_key,
            task_id=self.task_id,
            destination=self.destination,
            state=self.state,
            attempts=self.attempts,
            created_at=from_ts(self.created_at),
            next_attempt_at=from_ts(self.next_attempt_at),
            delivered_at=None if self.delivered_at is None else from_ts(self.delivered_at),
            last_status=self.last_status,
            last_error=self.last_error,
            payload=self.payload,
            requeued_at=None if self.requeued_at is None else from_ts(self.requeued_at),
        )


class _Shared(Protocol):
    """What the Task half uses of ``MemoryOutboxStore``."""

    _lock: threading.Lock
    _referrals: dict[str, tuple[NewReferral, float]]
    _rows: dict[int, Row]
    _by_key: dict[str, int]
    _audit: list[dict[str, Any]]
    _tasks: dict[str, TaskRecord]
    _cursors: dict[str, str]
    _items: dict[str, str]
    _monitoring: MonitoringRows

    def _insert_message(self: _Shared, message: NewMessage, at: float) -> int: ...

    def _append_audit(self: _Shared, event: AuditEvent, at: float) -> None: ...


class MemoryTaskTables:
    """Task state, feedback items, poll cursors and alerts, in dictionaries."""

    def get_task(self: _Shared, task_id: str) -> TaskRecord | None:
        """The Task of a referral, or None."""
        with self._lock:
            return self._tasks.get(task_id)

    def task_for_request(self: _Shared, service_request_id: str) -> str | None:
        """The Task id of the referral whose ServiceRequest has this id."""
        with self._lock:
            for referral, _ in self._referrals.values():
                if service_request_id and referral.service_request_id == service_request_id:
                    return referral.task_id
            return None

    def known_items(self: _Shared, task_id: str) -> set[str]:
        """Keys of the feedback items already recorded for a Task."""
        with self._lock:
            return {key for key, owner in self._items.items() if owner == task_id}

    def save_task_update(
        self: _Shared,
        task_id: str,
        expected_version: int,
        update: TaskUpdate,
        *,
        audit: AuditEvent,
        now: dt.datetime,
    ) -> int | None:
        """New state, item keys, outbox message and audit at once (optimistic lock)."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.version != expected_version:
                return None
            at = ts(now)
            first = task.first_contact_at
            if update.first_contact and first is None:
                first = from_ts(at)
            self._tasks[task_id] = replace(
                task,
                status=update.status,
                business_status=update.business_status,
                reason_code=update.reason_code,
                reason_text=update.reason_text,
                version=task.version + 1,
                first_contact_at=first,
                updated_at=from_ts(at),
            )
            for key in update.item_keys:
                self._items.setdefault(key, task_id)
            message = update.message
            if update.withdraw:
                referral, _ = self._referrals[task_id]
                row = self._rows[self._by_key[referral.idempotency_key]]
                free = row.lease_until is None or row.lease_until <= at
                definite = row.attempts == 0 or row.last_status is not None
                if row.state == "pending" and free and definite:
                    row.state, row.last_error = "dead", "withdrawn before delivery"
                    message = None  # the welfare side never received it: nothing to cancel
            if message is not None:
                self._insert_message(message, at)
            self._append_audit(audit, at)
            if update.progress is not None:  # monitoring hook: facts without patient data
                self._monitoring.apply_progress(monitoring_key(task_id), update.progress)
            return expected_version + 1

    def exclusive(self: _Shared, name: str) -> AbstractContextManager[bool]:
        """One process: always held (see the port)."""
        return nullcontext(True)

    def poll_cursor(self: _Shared, destination: str) -> str | None:
        """The high-water mark of the last poll of a destination."""
        with self._lock:
            return self._cursors.get(destination)

    def set_poll_cursor(self: _Shared, destination: str, cursor: str) -> None:
        """Remember the high-water mark after a poll round."""
        with self._lock:
            self._cursors[destination] = cursor

    def overdue_tasks(self: _Shared, now: dt.datetime, limit: int) -> list[str]:
        """Past the deadline, no first contact, not finished, not alerted."""
        at = ts(now)
        with self._lock:
            due = sorted(
                (
                    t
                    for t in self._tasks.values()
                    if t.deadline_at is not None
                    and ts(t.deadline_at) < at
                    and t.first_contact_at is None
                    and t.alerted_at is None
                    and t.status in _ACTIVE
                ),
                key=lambda t: ts(t.deadline_at) if t.deadline_at else 0.0,
            )
            return [t.task_id for t in due[: max(limit, 0)]]

    def mark_alerted(
        self: _Shared,
        task_id: str,
        message: NewMessage | None,
        *,
        audit: AuditEvent,
        now: dt.datetime,
    ) -> bool:
        """Alert once: flag, outbox message and audit at once."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.alerted_at is not None:
                return False
            at = ts(now)
            self._tasks[task_id] = replace(task, alerted_at=from_ts(at))
            if message is not None:
                self._insert_message(message, at)
            self._append_audit(audit, at)
            return True
