"""Use cases over the ports: accept a referral, deliver what is due, show a Task.

Logs here carry ids, counts, status codes and durations only; the audit trail (in the store)
carries the patient identifier, as NEN 7513 requires.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from wor_bridge import faults
from wor_bridge.connectors import outbound
from wor_bridge.core import identifiers as ids
from wor_bridge.core import outbox
from wor_bridge.core.delivery import (
    Delivered,
    Outcome,
    Rejected,
    RetryLater,
    classify_error,
    classify_response,
)
from wor_bridge.core.fhir import canonical_json
from wor_bridge.core.gates import Referral, identifiers_in
from wor_bridge.core.intake import translate
from wor_bridge.core.settings import Settings
from wor_bridge.errors import RefusedError, TransportError
from wor_bridge.ports import (
    AuditEvent,
    Clock,
    NewReferral,
    OutboxEntry,
    OutboxStore,
    Transport,
)

log = structlog.get_logger("wor_bridge.pipeline")


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: the authenticated client, its source system and on whose behalf."""

    client_id: str
    source_system: str | None = None
    on_behalf_of: str = ""


@dataclass(frozen=True, slots=True)
class Accepted:
    """A durably stored referral."""

    task_id: str
    outbox_id: int
    destination: str
    created: bool


@dataclass(frozen=True, slots=True)
class Attempt:
    """The result of one delivery attempt (for metrics and tests)."""

    entry_id: int
    destination: str
    outcome: Outcome
    state: outbox.State
    attempt: int
    duration_s: float


def _patient_id(referral: Referral, patient_uuid: str) -> str:
    bsn = identifiers_in(referral.patient.resource, frozenset({ids.BSN}))
    return f"{ids.BSN}|{bsn[0][1]}" if bsn else f"urn:uuid:{patient_uuid}"


def _responsible(referral: Referral) -> str:
    people = identifiers_in(referral.role.resource, ids.REFERRER_IDENTIFYING_SYSTEMS)
    if referral.practitioner is not None:
        people += identifiers_in(referral.practitioner.resource, ids.REFERRER_IDENTIFYING_SYSTEMS)
    return "|".join(people[0]) if people else ""


def accept_referral(
    store: OutboxStore,
    settings: Settings,
    clock: Clock,
    *,
    data: bytes,
    content_type: str | None,
    caller: Caller,
) -> Accepted:
    """Map, gate and durably store a referral with its outbox entry; raises RefusedError."""
    started = time.monotonic()
    source = caller.source_system or settings.output.source_system
    try:
        result = translate(data, content_type, settings, source_system=source)
    except RefusedError as err:
        store.audit(
            AuditEvent(
                event="referral_intake",
                action="C",
                outcome="refused",
                user=caller.client_id,
                responsible=caller.on_behalf_of,
                source_system=source,
                detail=f"{type(err).__name__}: {len(err.issues)} issue(s)",
            ),
            clock.now(),
        )
        log.info("referral_refused", client=caller.client_id, issues=len(err.issues))
        raise
    key = outbox.idempotency_key(result.ids.key, result.destination.id)
    patient_id = _patient_id(result.referral, result.ids.patient)
    responsible = _responsible(result.referral)
    now = clock.now()
    added = store.add_referral(
        NewReferral(
            task_id=result.ids.task,
            idempotency_key=key,
            source_system=source,
            destination=result.destination.id,
            mapping=result.mapping_ref,
            patient_id=patient_id,
            responsible=responsible,
            client_id=caller.client_id,
            bundle=canonical_json(result.bundle),
            service_request_id=result.ids.service_request,
            deadline_at=deadline(result.bundle),
        ),
        now,
        audit=AuditEvent(
            event="referral_intake",
            action="C",
            outcome="accepted",
            user=caller.client_id,
            responsible=responsible or caller.on_behalf_of,
            source_system=source,
            patient_id=patient_id,
            object_type="Task",
            object_id=result.ids.task,
        ),
    )
    faults.hit("after_commit")
    log.info(
        "referral_accepted",
        task_id=added.task_id,
        outbox_id=added.outbox_id,
        destination=result.destination.id,
        created=added.created,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
    )
    return Accepted(added.task_id, added.outbox_id, result.destination.id, added.created)


def deadline(bundle: dict[str, Any]) -> dt.datetime | None:
    """The first-contact deadline of a mapped referral (Task.restriction.period.end) in UTC.

    A date without a time means the end of that day (Europe/Amsterdam is UTC+1/+2; the end of
    the UTC day is a safe, slightly late bound).
    """
    task = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
    end = ((task.get("restriction") or {}).get("period") or {}).get("end")
    if not isinstance(end, str):
        return None
    if len(end) <= 10:
        day = dt.date.fromisoformat(end)
        return dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=dt.UTC)
    moment = dt.datetime.fromisoformat(end)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _send(entry: OutboxEntry, settings: Settings, transport: Transport, clock: Clock) -> Outcome:
    """Send an entry's requests in order; the first answer that is not 2xx decides."""
    try:
        destination = settings.destination(entry.destination)
        requests = outbound.render(
            entry.payload,
            destination,
            entry.idempotency_key,
            settings,
            created_at=entry.created_at.isoformat(timespec="seconds"),
        )
    except (StopIteration, ValueError, KeyError) as err:
        # unknown destination, no endpoint, unreadable payload: backed off, then a dead letter
        return RetryLater(f"cannot send ({type(err).__name__})")
    last = 0
    for request in requests:
        try:
            response = transport.send(request, destination)
        except TransportError as err:
            return classify_error(err.kind)
        outcome = classify_response(response, clock.now())
        if not isinstance(outcome, Delivered):
            return outcome
        last = outcome.status
    return Delivered(last)


def deliver_due(
    store: OutboxStore,
    settings: Settings,
    transport: Transport,
    clock: Clock,
    policy: outbox.RetryPolicy,
    *,
    owner: str,
    lease_s: float,
    limit: int,
    jitter: Callable[[], float] = random.random,
) -> list[Attempt]:
    """Claim due entries and attempt each once; one bad entry never blocks the others."""
    attempts = []
    for _ in range(limit):
        # one entry per claim: each lease starts when its delivery starts, so a slow round
        # cannot outlive the leases of entries it has not reached yet
        claimed = store.claim_due(owner, clock.now(), lease_s, 1)
        if not claimed:
            break
        entry = claimed[0]
        started = time.monotonic()
        outcome = _send(entry, settings, transport, clock)
        duration = time.monotonic() - started
        if isinstance(outcome, Delivered):
            faults.hit("after_send")
        now = clock.now()
        number = entry.attempts + 1
        decision = outbox.decide(
            policy, outcome, number, (now - entry.created_at).total_seconds(), jitter()
        )
        next_at = now + dt.timedelta(seconds=decision.delay_s or 0)
        status = getattr(outcome, "status", None)
        error = None if isinstance(outcome, Delivered) else outcome.reason
        record = store.get_referral(entry.task_id)
        recorded = store.record_attempt(
            entry.id,
            owner,
            now=now,
            state=decision.state,
            next_attempt_at=next_at,
            status=status,
            error=error,
            audit=AuditEvent(
                event="referral_delivery",
                action="E",
                outcome=outcome_name(outcome),
                user=f"dispatcher:{owner}",
                responsible=entry.destination,
                source_system=record.source_system if record else "",
                patient_id=record.patient_id if record else "",
                object_type="Task",
                object_id=entry.task_id,
                detail=f"attempt {number}; {error or 'delivered'}",
            ),
        )
        log.info(
            "delivery_attempted",
            outbox_id=entry.id,
            task_id=entry.task_id,
            destination=entry.destination,
            attempt=number,
            status_code=status,
            result=outcome_name(outcome),
            state=decision.state,
            duration_ms=round(duration * 1000, 1),
            lease_kept=recorded,
        )
        attempts.append(
            Attempt(entry.id, entry.destination, outcome, decision.state, number, duration)
        )
    return attempts


def outcome_name(outcome: Outcome) -> str:
    if isinstance(outcome, Delivered):
        return "delivered"
    if isinstance(outcome, Rejected):
        return "rejected"
    return "retry"
