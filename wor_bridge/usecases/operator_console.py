"""Use case: what the operator console shows and does (issue 17), over the same ports as the CLI.

- the outbox by state, destination and age: ids, states, codes and times, never a payload;
- one entry with its attempts (the ``referral_delivery`` audit records of its Task) and its
  Task's audit trail; its content only through ``reveal``, which is audited (``outbox_reveal``,
  as ``wor-bridge outbox show --reveal``);
- retry and replay through ``usecases.outbox_repair``: the same rules as the CLI;
- health per destination: last success, failure rate of the attempts of the last 7 days, oldest
  pending entry, and the first-contact deadline alerts raised (``first_contact_overdue``);
- the audit search, also "who accessed this patient's data" (NEN 7513), itself audited, and its
  CSV form.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from wor_bridge.core.account import Account
from wor_bridge.core.outbox import State
from wor_bridge.ports import AuditReader, Clock, OutboxStore
from wor_bridge.records import AuditEvent, AuditQuery, AuditRecord, OutboxEntry

HEALTH_WINDOW: Final = dt.timedelta(days=7)
MAX_SCANNED: Final = 10_000
AUDIT_COLUMNS: Final = (
    "at",
    "event",
    "action",
    "outcome",
    "user",
    "responsible",
    "source_system",
    "patient_id",
    "object_type",
    "object_id",
    "detail",
)


@dataclass(frozen=True, slots=True)
class Health:
    """One destination's figures (no patient data)."""

    destination: str
    name: str
    type: str
    pending: int
    dead: int
    last_success: dt.datetime | None
    attempts: int
    failed_attempts: int
    oldest_pending: dt.datetime | None
    deadline_alerts: int

    @property
    def failure_rate(self) -> str:
        """Failed attempts as a percentage of attempts in the window ("-" without attempts)."""
        if not self.attempts:
            return "-"
        return f"{100 * self.failed_attempts / self.attempts:.0f}%"


def entries(
    store: OutboxStore,
    now: dt.datetime,
    *,
    state: State | None = None,
    destination: str | None = None,
    min_age_h: float | None = None,
    limit: int = 200,
) -> list[OutboxEntry]:
    """Outbox entries, newest first, filtered by state, destination and age (hours)."""
    found = []
    for entry in store.list_entries(state, MAX_SCANNED):
        if destination and entry.destination != destination:
            continue
        age_h = (now - entry.created_at).total_seconds() / 3600
        if min_age_h is not None and age_h < min_age_h:
            continue
        found.append(entry)
        if len(found) >= limit:
            break
    return found


def trail(audit: AuditReader, task_id: str) -> list[AuditRecord]:
    """The audit trail of a Task, newest first (attempts, reads, updates, operator actions)."""
    return audit.find_audit(AuditQuery(object_id=task_id, limit=500))


def reveal(store: OutboxStore, clock: Clock, account: Account, entry: OutboxEntry) -> bytes:
    """The entry's payload (patient data), recorded in the audit trail first."""
    record = store.get_referral(entry.task_id)
    store.audit(
        AuditEvent(
            event="outbox_reveal",
            action="R",
            outcome="success",
            user=f"console:{account.username}",
            responsible=f"console:{account.username}",
            source_system=record.source_system if record else "",
            patient_id=record.patient_id if record else "",
            object_type="Task",
            object_id=entry.task_id,
            detail=f"outbox entry {entry.id}",
        ),
        clock.now(),
    )
    return entry.payload


def health(
    store: OutboxStore,
    audit: AuditReader,
    now: dt.datetime,
    destinations: Sequence[tuple[str, str, str]],
) -> list[Health]:
    """Figures per destination (``(id, name, type)``, in that order)."""
    rows = store.list_entries(None, MAX_SCANNED)
    since = now - HEALTH_WINDOW
    attempts = audit.find_audit(
        AuditQuery(event="referral_delivery", since=since, limit=MAX_SCANNED)
    )
    alerts = audit.find_audit(AuditQuery(event="first_contact_overdue", limit=MAX_SCANNED))
    alerted = {r.event.object_id for r in alerts}
    out = []
    for dest_id, name, dtype in destinations:
        mine = [e for e in rows if e.destination == dest_id]
        pending = [e.requeued_at or e.created_at for e in mine if e.state == "pending"]
        delivered = [e.delivered_at for e in mine if e.delivered_at is not None]
        tried = [a for a in attempts if a.event.responsible == dest_id]
        out.append(
            Health(
                destination=dest_id,
                name=name,
                type=dtype,
                pending=len(pending),
                dead=sum(1 for e in mine if e.state == "dead"),
                last_success=max(delivered, default=None),
                attempts=len(tried),
                failed_attempts=sum(1 for a in tried if a.event.outcome != "delivered"),
                oldest_pending=min(pending, default=None),
                deadline_alerts=len(
                    {e.task_id for e in mine if e.task_id in alerted and e.destination == dest_id}
                ),
            )
        )
    return out


def search_audit(
    store: OutboxStore, audit: AuditReader, clock: Clock, account: Account, query: AuditQuery
) -> list[AuditRecord]:
    """The audit records matching ``query``; the search itself is audited (a patient's access
    request names the patient: looking it up is a read of that patient's trail)."""
    found = audit.find_audit(query)
    store.audit(
        AuditEvent(
            event="audit_search",
            action="R",
            outcome="success",
            user=f"console:{account.username}",
            responsible=f"console:{account.username}",
            source_system="",
            patient_id=query.patient_id or "",
            object_type="AuditEvent",
            object_id=query.object_id or "",
            detail=f"{len(found)} record(s)",
        ),
        clock.now(),
    )
    return found


def audit_csv(records: list[AuditRecord]) -> str:
    """The records as CSV (``AUDIT_COLUMNS``; times in UTC, ISO 8601)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(AUDIT_COLUMNS)
    for record in records:
        e = record.event
        writer.writerow(
            [
                record.at.isoformat(timespec="seconds"),
                e.event,
                e.action,
                e.outcome,
                e.user,
                e.responsible,
                e.source_system,
                e.patient_id,
                e.object_type,
                e.object_id,
                e.detail,
            ]
        )
    return out.getvalue()
