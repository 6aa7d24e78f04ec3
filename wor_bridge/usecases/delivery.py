"""Use case: deliver what is due (claim, render per destination type, send, record the attempt).

One bad entry never blocks the others; the outbox is the only retry loop. Logs carry ids, status
codes and durations only.
"""

from __future__ import annotations

import datetime as dt
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from wor_bridge import faults
from wor_bridge.connectors import outbound
from wor_bridge.core import outbox
from wor_bridge.core.delivery import (
    Delivered,
    Outcome,
    Rejected,
    RetryLater,
    classify_error,
    classify_response,
)
from wor_bridge.core.settings import Settings
from wor_bridge.errors import TransportError
from wor_bridge.ports import AuditEvent, Clock, OutboxEntry, OutboxStore, Transport

log = structlog.get_logger("wor_bridge.usecases.delivery")


@dataclass(frozen=True, slots=True)
class Attempt:
    """The result of one delivery attempt (for metrics and tests)."""

    entry_id: int
    destination: str
    outcome: Outcome
    state: outbox.State
    attempt: int
    duration_s: float


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
