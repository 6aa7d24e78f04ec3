"""Retention in the in-memory store (a mixin of ``MemoryOutboxStore``): ``purge`` with the
SQLite store's decisions (``adapters/sqlite_retention.py``), under the store's one lock."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import replace
from typing import Any, Protocol

from wor_bridge.adapters.memory_tasks import Row, ts
from wor_bridge.core import retention
from wor_bridge.records import AuditEvent, NewReferral, PurgeCounts, TaskRecord


class _Tables(Protocol):
    _lock: threading.Lock
    _referrals: dict[str, tuple[NewReferral, float]]
    _rows: dict[int, Row]
    _audit: list[dict[str, Any]]
    _tasks: dict[str, TaskRecord]
    _purged: set[str]

    def _append_audit(self, event: AuditEvent, at: float) -> None: ...


def _ended(store: _Tables, before: float) -> list[str]:
    """Referrals that ended before ``before`` with no pending message (lock held)."""
    found = []
    for task_id, (referral, _) in store._referrals.items():
        task = store._tasks.get(task_id)
        rows = [r for r in store._rows.values() if r.task_id == task_id]
        own = [r for r in rows if r.idempotency_key == referral.idempotency_key]
        if task is None or task_id in store._purged or task.updated_at is None:
            continue
        finished = task.status in retention.FINISHED or any(r.state == "dead" for r in own)
        if finished and ts(task.updated_at) < before and all(r.state != "pending" for r in rows):
            found.append(task_id)
    return found


class MemoryRetention:
    """``OutboxStore.purge`` in memory."""

    def purge(
        self: _Tables,
        payload_before: dt.datetime,
        audit_before: dt.datetime,
        now: dt.datetime,
        *,
        audit: AuditEvent | None = None,
        dry_run: bool = False,
    ) -> PurgeCounts:
        """See ``OutboxStore.purge``."""
        with self._lock:
            ended = _ended(self, ts(payload_before))
            messages = [
                r
                for r in self._rows.values()
                if r.task_id in ended and r.state != "pending" and r.purged_at is None
            ]
            old = [a for a in self._audit if a["at"] < ts(audit_before)]
            counts = PurgeCounts(len(ended), len(messages), len(old))
            if dry_run:
                return counts
            for task_id in ended:
                referral, at = self._referrals[task_id]
                skeleton = retention.redact_bundle(referral.bundle)
                self._referrals[task_id] = (replace(referral, bundle=skeleton, patient_id=""), at)
                task = self._tasks[task_id]
                self._tasks[task_id] = replace(
                    task, bundle=skeleton, patient_id="", reason_text=None
                )
                self._purged.add(task_id)
            for row in messages:  # a referral's own entry reads its skeleton (as SQLite)
                own = self._referrals[row.task_id][0].idempotency_key == row.idempotency_key
                row.payload = self._tasks[row.task_id].bundle if own else retention.PURGED_PAYLOAD
                row.purged_at = ts(now)
            self._audit[:] = [a for a in self._audit if a["at"] >= ts(audit_before)]
            if audit is not None:
                self._append_audit(replace(audit, detail=counts.detail()), ts(now))
            return counts
