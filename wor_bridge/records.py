"""The records the ports carry: frozen values the use cases hand to a store and get back.

``ports.py`` names the ports (Protocols) over them. No I/O here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from wor_bridge.core.monitoring_facts import Progress, ReferralFacts
from wor_bridge.core.outbox import State
from wor_bridge.core.search_terms import Alternative


@dataclass(frozen=True, slots=True)
class NewReferral:
    """An accepted referral, ready to be stored with its outbox entry in one transaction."""

    task_id: str
    idempotency_key: str
    source_system: str
    destination: str
    mapping: str
    patient_id: str
    responsible: str
    client_id: str
    bundle: bytes
    service_request_id: str = ""
    deadline_at: dt.datetime | None = None
    his_system: str = ""
    his_value: str = ""
    """The HIS's own referral number (``ServiceRequest.identifier[0]``), searchable."""
    owner_id: str = ""
    """The id of the welfare Organization the Task is for (``Task.owner``), searchable."""
    monitoring: ReferralFacts | None = None
    """Monitoring facts (no patient data), recorded in the same transaction when new."""


@dataclass(frozen=True, slots=True)
class NewMessage:
    """Another message for the outbox about a referral (feedback or an alert to the GP record)."""

    idempotency_key: str
    task_id: str
    destination: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class TaskRecord:
    """The referral's Task as the bridge keeps it: progress reported by the welfare side."""

    task_id: str
    destination: str
    source_system: str
    patient_id: str
    bundle: bytes
    status: str
    business_status: str | None
    reason_code: str | None
    reason_text: str | None
    version: int
    deadline_at: dt.datetime | None
    first_contact_at: dt.datetime | None
    alerted_at: dt.datetime | None
    received_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    """When the Task as GET returns it last changed (``meta.lastUpdated``): intake, an update,
    a delivery state reached or left."""


@dataclass(frozen=True, slots=True)
class TaskUpdate:
    """A new Task state with what goes with it, stored in one transaction."""

    status: str
    business_status: str | None
    reason_code: str | None
    reason_text: str | None
    first_contact: bool
    item_keys: tuple[str, ...]
    message: NewMessage | None
    withdraw: bool = False
    """GP-side withdrawal: if the referral itself is still pending and not leased, it is dead-
    lettered (never sent) and ``message`` is dropped, since the receiver never heard of it."""
    progress: Progress | None = None
    """Monitoring facts of this change (no patient data), recorded in the same transaction."""


@dataclass(frozen=True, slots=True)
class Amendment:
    """A changed referral (same source system and HIS identifier), stored in one transaction.

    ``referral`` is the new content: its ``bundle`` replaces the stored one, its ``destination``
    becomes the referral's (and, when ``redirected``, its ``idempotency_key``: the key of the
    referral's entry for the new destination; otherwise the first entry stays); ``messages`` are
    queued in this order (an update for the same destination; or a cancellation for the old one
    and the referral for the new one). ``redirected``: the destination changed, so the Task starts
    again at ``requested`` and, when the old referral entry is still pending and not leased (the
    old destination never received it), that entry is dead-lettered and the messages for the old
    destination dropped.
    Source: issue 10 section 5 (referral amendments).
    """

    referral: NewReferral
    expected_version: int
    messages: tuple[NewMessage, ...]
    redirected: bool = False
    previous_destination: str = ""


@dataclass(frozen=True, slots=True)
class Added:
    """The result of storing a referral: its Task and outbox ids, and whether it was new."""

    task_id: str
    outbox_id: int
    created: bool


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One message in the outbox (``payload`` is the Bundle; it holds patient data)."""

    id: int
    idempotency_key: str
    task_id: str
    destination: str
    state: State
    attempts: int
    created_at: dt.datetime
    next_attempt_at: dt.datetime
    delivered_at: dt.datetime | None
    last_status: int | None
    last_error: str | None
    payload: bytes
    requeued_at: dt.datetime | None = None
    """When an operator last sent it again (its retry budget's age counts from then);
    ``created_at`` never changes."""


@dataclass(frozen=True, slots=True)
class ReferralRecord:
    """What the bridge knows of a referral (for ``GET Task/{id}``)."""

    task_id: str
    destination: str
    source_system: str
    patient_id: str
    bundle: bytes
    state: State
    attempts: int
    idempotency_key: str = ""
    """The key of the referral's own outbox entry (other messages about it have other keys)."""


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One NEN 7513 audit record (the audit trail may hold the patient identifier; logs never)."""

    event: str
    action: str  # C create, R read, U update, D delete, E execute
    outcome: str
    user: str
    responsible: str
    source_system: str
    patient_id: str = ""
    object_type: str = ""
    object_id: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True)
class TaskSearch:
    """A Task search as the store runs it (``core.search`` builds it from FHIR parameters).

    ``where`` is a conjunction of disjunctions: every group must have one alternative whose
    equalities (``core.search_terms.COLUMNS``) all hold (an empty group matches nothing).
    Tenancy is part of the query: only Tasks from ``source_system``, or routed to
    ``destination``, or any with ``everyone``.
    ``updated_from`` is inclusive, ``updated_before`` exclusive. Order: ``meta.lastUpdated``
    then id (``newest_first`` reverses both).
    """

    where: tuple[tuple[Alternative, ...], ...] = ()
    updated_from: dt.datetime | None = None
    updated_before: dt.datetime | None = None
    source_system: str | None = None
    destination: str | None = None
    everyone: bool = False
    newest_first: bool = False
    offset: int = 0
    count: int = 20


@dataclass(frozen=True, slots=True)
class TaskPage:
    """One page of a Task search: the matching Tasks' total and this page's Tasks."""

    total: int
    tasks: tuple[TaskRecord, ...]


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Outbox figures for /metrics and /readyz."""

    pending: int
    dead: int
    delivered: int
    oldest_pending_age_s: float


@dataclass(frozen=True, slots=True)
class ResealCount:
    """What one ``reseal`` batch moved to the active key ``key_id``: referrals and outbox
    entries."""

    key_id: str
    referrals: int
    entries: int


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """What one retention purge removed (or, in a dry run, would remove): counts only."""

    referrals: int
    """referrals whose Bundle, patient id and free-text reason were removed"""
    payloads: int
    """outbox messages whose payload was removed"""
    audit: int
    """audit records older than the audit retention that were removed"""

    def detail(self) -> str:
        """The counts as the purge's audit record states them."""
        return f"referrals={self.referrals} payloads={self.payloads} audit={self.audit}"


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """An audit search (NEN 7513: a patient's access request, an operator's look-up): every
    given field must match; ``since`` inclusive, ``until`` exclusive; newest first."""

    patient_id: str | None = None
    user: str | None = None
    object_id: str | None = None
    event: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int = 500


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One stored audit record and when it was made."""

    at: dt.datetime
    event: AuditEvent
