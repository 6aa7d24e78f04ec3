"""Use case: an operator sends outbox entries again, without undoing the workflow.

``retry`` takes dead entries only; ``replay`` takes delivered referrals only. Neither sends a
message ahead of a later message about its Task to its destination that may have arrived, nor a
referral whose Task moved on (``core.outbox.requeue_refusal``, decided by the store in one
transaction). ``created_at`` never changes (a ZorgDomein document keeps its date, so the repeat
is the same document); the retry budget counts from the requeue. A retried referral's Task is
``requested`` again and the GP record is told. Every call is audited.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from wor_bridge.core.outbox import State
from wor_bridge.core.settings import Settings
from wor_bridge.ports import Clock, OutboxStore
from wor_bridge.records import AuditEvent, NewMessage
from wor_bridge.usecases import delivery_notice


@dataclass(frozen=True, slots=True)
class Repair:
    """What an operator command did: the entries requeued, and why the others were not."""

    requeued: tuple[int, ...] = ()
    refused: dict[int, str] = field(default_factory=dict)


def _is_referral(store: OutboxStore, entry_id: int) -> bool:
    entry = store.get_entry(entry_id)
    record = store.get_referral(entry.task_id) if entry is not None else None
    return (
        record is not None and entry is not None and record.idempotency_key == entry.idempotency_key
    )


def _requeue(
    store: OutboxStore,
    settings: Settings,
    clock: Clock,
    entry_ids: list[int],
    *,
    wanted: State,
    operator: str,
    what: str,
) -> Repair:
    now = clock.now()
    messages: dict[int, NewMessage] = {}
    if wanted == "dead":  # the GP record was told the referral failed: now it is queued again
        for entry_id in entry_ids:
            entry = store.get_entry(entry_id)
            if entry is not None and entry.state == "dead" and _is_referral(store, entry_id):
                message = delivery_notice.notice(
                    store, settings, entry.task_id, delivery_notice.REQUEUED, now
                )
                if message is not None:
                    messages[entry_id] = message
    results = store.requeue(entry_ids, now, wanted=wanted, messages=messages)
    repair = Repair(
        tuple(i for i, why in results.items() if why is None),
        {i: why for i, why in results.items() if why is not None},
    )
    refused = "; ".join(f"entry {i}: {why}" for i, why in repair.refused.items())
    store.audit(
        AuditEvent(
            event=f"outbox_{'retry' if wanted == 'dead' else 'replay'}",
            action="U",
            outcome="success" if repair.requeued or not repair.refused else "refused",
            user=operator,
            responsible=operator,
            source_system="",
            detail=f"{what}: {len(repair.requeued)} requeued"
            + (f"; refused {refused}" if refused else ""),
        ),
        now,
    )
    return repair


def retry(
    store: OutboxStore,
    settings: Settings,
    clock: Clock,
    entry_ids: list[int] | None,
    *,
    operator: str,
) -> Repair:
    """Requeue dead entries (``None``: every dead entry) with a fresh retry budget."""
    ids = store.entry_ids("dead") if entry_ids is None else entry_ids
    what = "all dead" if entry_ids is None else ", ".join(f"entry {i}" for i in ids)
    return _requeue(store, settings, clock, ids, wanted="dead", operator=operator, what=what)


def replay(
    store: OutboxStore, settings: Settings, clock: Clock, since: dt.datetime, *, operator: str
) -> Repair:
    """Requeue the delivered referrals made since ``since`` whose Task is still ``requested``
    (the same bytes again: one effect at the receiver)."""
    ids = [i for i in store.entry_ids("delivered", since) if _is_referral(store, i)]
    what = f"delivered since {since.isoformat()}"
    return _requeue(store, settings, clock, ids, wanted="delivered", operator=operator, what=what)
