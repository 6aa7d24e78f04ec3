"""Referral amendments in the in-memory store (a mixin of ``MemoryOutboxStore``), with the SQLite
store's semantics (``sqlite_amend``): the changed referral, its messages and the audit record at
once, under an optimistic lock on the Task version."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

from wor_bridge.adapters.memory_tasks import _Shared, ts
from wor_bridge.records import Amendment, AuditEvent


class MemoryAmendments:
    """``amend_referral`` over the dictionaries of ``MemoryOutboxStore``."""

    def amend_referral(
        self: _Shared, amendment: Amendment, now: dt.datetime, *, audit: AuditEvent
    ) -> int | None:
        """Store a changed referral with its messages and audit at once (see the port)."""
        new = amendment.referral
        with self._lock:
            task = self._tasks.get(new.task_id)
            if task is None or task.version != amendment.expected_version:
                return None
            at = ts(now)
            old, received = self._referrals[new.task_id]
            messages = amendment.messages
            if amendment.redirected:
                row = self._rows[self._by_key[old.idempotency_key]]
                free = row.lease_until is None or row.lease_until <= at
                definite = row.attempts == 0 or row.last_status is not None
                if row.state == "pending" and free and definite:
                    row.state, row.last_error = "dead", "withdrawn before delivery (redirected)"
                    messages = tuple(m for m in messages if m.destination != old.destination)
            if not amendment.redirected:  # the referral's delivery stays the first entry
                new = replace(new, idempotency_key=old.idempotency_key)
            self._referrals[new.task_id] = (new, received)
            task = replace(
                task,
                destination=new.destination,
                patient_id=new.patient_id,
                bundle=new.bundle,
                deadline_at=new.deadline_at,
                version=task.version + 1,
                updated_at=now,
            )
            if amendment.redirected:  # the new organisation starts from the beginning
                task = replace(
                    task,
                    status="requested",
                    business_status=None,
                    reason_code=None,
                    reason_text=None,
                    first_contact_at=None,
                    alerted_at=None,
                )
            self._tasks[new.task_id] = task
            for message in messages:
                self._insert_message(message, at)
            self._append_audit(audit, at)
            return amendment.expected_version + 1
