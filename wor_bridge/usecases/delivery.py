"""Use case: deliver what is due (claim, render per destination type, send, record the attempt).

One bad entry never blocks the others; the outbox is the only retry loop. Logs carry ids, status
codes and durations only; the ``delivery_attempted`` line names the ``X-Request-Id`` the
connector sent (opaque and stable per message, ``outgoing.request_id``), so a receiver's logs can
be matched to the bridge's.
"""

from __future__ import annotations

import datetime as dt
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
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
from wor_bridge.core.directory import DirectorySettings
from wor_bridge.core.settings import Settings
from wor_bridge.errors import TransportError
from wor_bridge.ports import Clock, DirectoryReplica, OutboxStore, Transport
from wor_bridge.records import AuditEvent, OutboxEntry
from wor_bridge.usecases import delivery_notice, directory_routing

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


@dataclass(frozen=True, slots=True)
class Directory:
    """The care-services directory replica and its settings: where destinations with a
    ``directory`` block get their endpoint at delivery time (``directory_routing``)."""

    replica: DirectoryReplica | None
    settings: DirectorySettings | None


def _send(
    entry: OutboxEntry,
    settings: Settings,
    transport: Transport,
    clock: Clock,
    directory: Directory | None = None,
    *,
    store: OutboxStore | None = None,
    sent: list[str] | None = None,
) -> tuple[Outcome, str | None]:
    """Send an entry's requests in order; the first answer that is not 2xx decides. Also says
    where the endpoint came from, for destinations that use the directory. The ``X-Request-Id``
    of each request tried is appended to ``sent``."""
    try:
        destination = settings.destination(entry.destination)
    except StopIteration:
        return RetryLater("cannot send (StopIteration)"), None
    source = None
    if destination.directory is not None:
        directory = directory or Directory(None, None)
        route = directory_routing.resolve(
            directory.replica, directory.settings, destination, clock.now()
        )
        if isinstance(route, directory_routing.Unresolved):
            return RetryLater(f"no endpoint ({route.reason})"), "none"
        destination, source = route.destination, route.source
    try:
        requests = outbound.render(
            entry.payload,
            destination,
            entry.idempotency_key,
            settings,
            created_at=entry.created_at.isoformat(timespec="seconds"),
            earlier=lambda: _earlier(store, entry),
        )
    except (ValueError, KeyError) as err:
        # no endpoint, unreadable payload: backed off, then a dead letter
        return RetryLater(f"cannot send ({type(err).__name__})"), source
    last = 0
    for request in requests:
        if sent is not None:
            sent.extend(v for k, v in request.headers if k.lower() == "x-request-id")
        try:
            response = transport.send(request, destination)
        except TransportError as err:
            return classify_error(err.kind), source
        outcome = classify_response(response, clock.now())
        if not isinstance(outcome, Delivered):
            return outcome, source
        last = outcome.status
    return Delivered(last), source


def _earlier(store: OutboxStore | None, entry: OutboxEntry) -> list[bytes]:
    """The payloads of the messages about the entry's Task to its destination made before it."""
    if store is None:
        return []
    found = []
    for destination, payload in store.task_messages(entry.task_id):
        if payload == entry.payload:
            break
        if destination == entry.destination:
            found.append(payload)
    return found


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
    directory: Directory | None = None,
    workers: Executor | None = None,
    concurrency: int = 1,
) -> list[Attempt]:
    """Claim due entries and attempt each once; one bad entry never blocks the others.

    A destination with a ``directory`` block is sent where the directory replica says at this
    moment (or to its static endpoint); the audit record of the attempt names which.
    With ``workers`` and ``concurrency`` > 1, that many loops of claim-send-record run at once
    on ``workers`` (up to ``limit`` claims in all); per-Task order holds, as only the oldest
    pending message of a Task can be claimed.
    """
    budget = _Budget(limit)

    def work() -> list[Attempt]:
        attempts = []
        while budget.take():
            # one entry per claim: each lease starts when its delivery starts, so a slow round
            # cannot outlive the leases of entries it has not reached yet
            claimed = store.claim_due(owner, clock.now(), lease_s, 1)
            if not claimed:
                budget.close()
                break
            attempts.append(
                _attempt(
                    claimed[0], store, settings, transport, clock, policy, owner, jitter, directory
                )
            )
        return attempts

    if workers is None or concurrency <= 1:
        return work()
    rounds = [workers.submit(work) for _ in range(concurrency)]
    return [attempt for done in rounds for attempt in done.result()]


class _Budget:
    """How many claims a round may still make, shared by its workers."""

    def __init__(self, limit: int) -> None:
        self._left = limit
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            self._left -= 1
            return self._left >= 0

    def close(self) -> None:
        with self._lock:
            self._left = 0


def _attempt(  # noqa: PLR0917 - one delivery with everything it needs
    entry: OutboxEntry,
    store: OutboxStore,
    settings: Settings,
    transport: Transport,
    clock: Clock,
    policy: outbox.RetryPolicy,
    owner: str,
    jitter: Callable[[], float],
    directory: Directory | None,
) -> Attempt:
    """Send one claimed entry and record the attempt (with its audit record)."""
    started = time.monotonic()
    sent: list[str] = []
    outcome, source = _send(entry, settings, transport, clock, directory, store=store, sent=sent)
    duration = time.monotonic() - started
    if isinstance(outcome, Delivered):
        faults.hit("after_send")
    now = clock.now()
    number = entry.attempts + 1
    age_s = (now - (entry.requeued_at or entry.created_at)).total_seconds()
    decision = outbox.decide(policy, outcome, number, age_s, jitter())
    next_at = now + dt.timedelta(seconds=decision.delay_s or 0)
    status = getattr(outcome, "status", None)
    error = None if isinstance(outcome, Delivered) else outcome.reason
    record = store.get_referral(entry.task_id)
    notice = None
    if decision.state == "dead" and record and record.idempotency_key == entry.idempotency_key:
        # the referral itself is a dead letter: the GP record hears the Task failed
        notice = delivery_notice.notice(store, settings, entry.task_id, delivery_notice.FAILED, now)
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
            detail=f"attempt {number}; {error or 'delivered'}"
            + (f"; endpoint: {source}" if source else ""),
        ),
        message=notice,
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
        request_id=_named(sent),
        **({"endpoint": source} if source else {}),
    )
    return Attempt(entry.id, entry.destination, outcome, decision.state, number, duration)


def _named(request_ids: list[str]) -> str | list[str] | None:
    """The one ``X-Request-Id`` an attempt sent (every request of a message carries the same),
    else all of them, else None (nothing was sent)."""
    unique = sorted(set(request_ids))
    return unique[0] if len(unique) == 1 else unique or None


def outcome_name(outcome: Outcome) -> str:
    if isinstance(outcome, Delivered):
        return "delivered"
    if isinstance(outcome, Rejected):
        return "rejected"
    return "retry"
