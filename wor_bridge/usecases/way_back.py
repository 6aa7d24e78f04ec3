"""Use case: the way back. Apply welfare-side (and GP-side) updates and feedback to the Task.

Whatever the channel (FHIR on the bridge, polling, signed webhook), it ends in ``apply_feedback``:
the transition table decides, consent decides what travels, and the new Task state, the recorded
items, the outbox message for the GP record and the audit record are stored in one transaction.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Final

import structlog

from wor_bridge.core import feedback as fb
from wor_bridge.core import gp_record
from wor_bridge.core.fhir import canonical_json
from wor_bridge.core.monitoring_facts import progress_of
from wor_bridge.core.settings import Settings
from wor_bridge.core.task import Reason, Refusal, Side, TaskState, transition
from wor_bridge.ports import Clock, OutboxStore
from wor_bridge.records import AuditEvent, NewMessage, TaskRecord, TaskUpdate
from wor_bridge.usecases.caller import Caller, may_access

log = structlog.get_logger("wor_bridge.usecases.way_back")

FEEDBACK_MAPPING: Final = "wor-feedback@1.0.0"
"""Written into every GP-record Bundle (``meta.tag``/``meta.source``)."""
FIRST_CONTACT_MILESTONES: Final = frozenset(
    {"first-contact", "intake-done", "conversations", "activity-started", "closed", "follow-up"}
)
ITEM_CODES: Final = {
    "activity-category": fb.ACTIVITY_CATEGORY,
    "activity-role": fb.ACTIVITY_ROLE,
    "closure-reason": fb.CLOSURE_REASON,
}


@dataclass(frozen=True, slots=True)
class Applied:
    """The update was taken (or was a repeat with no effect)."""

    version: int
    changed: bool
    dropped: int = 0
    state: TaskState | None = None


NOT_FOUND: Final = Refusal(404, "not-found", "no Task with this id")
"""The answer for an unknown Task, and for one the caller may not see (the same, so that an
answer never confirms a computed id)."""


def access(task: TaskRecord, caller: Caller, destination: str | None) -> Refusal | None:
    """Deny by default (``caller.may_access``): a welfare-side caller touches only its
    destination's Tasks, a GP-side caller only its source system's, an admin every Task; any
    other Task is answered as unknown."""
    if may_access(caller, destination, task.destination, task.source_system):
        return None
    return NOT_FOUND


def state_of(task: TaskRecord) -> TaskState:
    """The Task's state as the transition table sees it."""
    reason = None
    if task.reason_code or task.reason_text:
        reason = Reason(task.reason_code, task.reason_text)
    return TaskState(task.status, task.business_status, reason)


def _check_items(settings: Settings, items: tuple[fb.FeedbackItem, ...]) -> Refusal | None:
    codes = settings.codes
    for item in items:
        if item.kind not in fb.ITEM_KINDS:
            return Refusal(422, "code-invalid", "feedback item must be a feedback-item code")
        if item.kind == "note" and len(str(item.value or "")) > settings.feedback.note_max_chars:
            return Refusal(
                422,
                "too-long",
                f"note must be at most {settings.feedback.note_max_chars} characters "
                f"(got {len(str(item.value or ''))})",
            )
        if item.kind in fb.PG_DIMENSIONS or item.kind == "conversation-count":
            top = 10 if item.kind in fb.PG_DIMENSIONS else 1000
            if not isinstance(item.value, int) or isinstance(item.value, bool):
                return Refusal(422, "invalid", f"{item.kind} must be an integer")
            if not 0 <= item.value <= top:
                return Refusal(422, "invalid", f"{item.kind} must be between 0 and {top}")
        checks: list[tuple[str, object]] = []
        if item.kind == "activity-started":
            checks = [(fb.ACTIVITY_CATEGORY, item.category), (fb.ACTIVITY_ROLE, item.role)]
        if item.kind == "closed":
            checks = [(fb.CLOSURE_REASON, item.value)]
        for system, code in checks:
            if code is not None and str(code) not in codes.get(system, frozenset({str(code)})):
                return Refusal(422, "code-invalid", f"{item.kind}: code not in {system}")
    return None


def apply_feedback(
    store: OutboxStore,
    settings: Settings,
    clock: Clock,
    feedback: fb.Feedback,
    *,
    side: Side,
    caller: Caller,
    destination: str | None = None,
    expected_version: int | None = None,
    jump: bool = False,
) -> Applied | Refusal:
    """Apply one channel's update to the Task; refuse what the rules do not allow.

    ``jump`` (polling only) admits a status reachable in several steps of the table.
    """
    for _attempt in range(3):
        task = store.get_task(feedback.task_id)
        if task is None:
            return NOT_FOUND
        denied = access(task, caller, destination)
        if denied is not None:
            return denied
        if expected_version is not None and expected_version != task.version:
            return Refusal(412, "conflict", f"the Task is at version {task.version}")
        result = _apply_once(
            store, settings, clock, feedback, task, side=side, caller=caller, jump=jump
        )
        if result is not None:
            return result
        if expected_version is not None:
            return Refusal(412, "conflict", "the Task changed meanwhile")
    return Refusal(409, "conflict", "concurrent updates; try again")


def _apply_once(
    store: OutboxStore,
    settings: Settings,
    clock: Clock,
    feedback: fb.Feedback,
    task: TaskRecord,
    *,
    side: Side,
    caller: Caller,
    jump: bool = False,
) -> Applied | Refusal | None:
    current = state_of(task)
    reason = None
    if feedback.reason_code or feedback.reason_text:
        reason = Reason(feedback.reason_code, feedback.reason_text)
    new = transition(current, side, feedback.status, feedback.business_status, reason, jump=jump)
    if isinstance(new, Refusal):
        _audit_refusal(store, clock, task, caller, new)
        return new
    bad = _check_items(settings, feedback.items)
    if bad is not None:
        _audit_refusal(store, clock, task, caller, bad)
        return bad
    context = fb.context_from_bundle(task.task_id, json.loads(task.bundle), task.patient_id)
    kept, dropped = fb.allowed_items(context, feedback.items)
    known = store.known_items(task.task_id)
    fresh = _fresh(task.task_id, kept, known)
    if isinstance(fresh, Refusal):
        _audit_refusal(store, clock, task, caller, fresh)
        return fresh
    if new == current and not fresh:
        return Applied(task.version, changed=False, dropped=dropped, state=current)
    # a first contact counts whether or not consent lets the item itself travel
    first = any(i.kind == "first-contact" and not i.retracted for i in feedback.items) or (
        new.business_status in FIRST_CONTACT_MILESTONES or new.status == "completed"
    )
    if side == "gp":
        # the GP side withdrew (or marked an error): the welfare side must hear of it
        update = gp_record.welfare_task_update(json.loads(task.bundle), new, feedback.occurred_at)
        payload = canonical_json(update)
        digest = hashlib.sha256(payload).hexdigest()[:32]
        message: NewMessage | None = NewMessage(
            f"task|{task.task_id}|{digest}", task.task_id, task.destination, payload
        )
    else:
        earlier = tuple(sorted(fb.live_keys(known)))
        message = _gp_message(settings, context, feedback, fresh, new, earlier=earlier)
    now = clock.now()
    version = store.save_task_update(
        task.task_id,
        task.version,
        TaskUpdate(
            status=new.status,
            business_status=new.business_status,
            reason_code=new.reason.code if new.reason else None,
            reason_text=new.reason.text if new.reason else None,
            first_contact=first,
            item_keys=tuple(_recorded_key(task.task_id, i) for i in fresh),
            message=message,
            withdraw=side == "gp" and new.status in ("cancelled", "entered-in-error"),
            progress=progress_of(  # monitoring: codes and times only, no patient data
                current, new, feedback.items, occurred_at=feedback.occurred_at, now=now
            ),
        ),
        audit=AuditEvent(
            event="task_update",
            action="U",
            outcome="success",
            user=caller.client_id,
            responsible=task.destination if side == "welfare" else caller.on_behalf_of,
            source_system=task.source_system,
            patient_id=task.patient_id,
            object_type="Task",
            object_id=task.task_id,
            detail=f"{current.status} -> {new.status}; {len(fresh)} item(s); {dropped} withheld",
        ),
        now=now,
    )
    if version is None:
        return None
    log.info(
        "task_updated",
        task_id=task.task_id,
        side=side,
        status=new.status,
        business_status=new.business_status,
        items=len(fresh),
        withheld=dropped,
        queued_to=message.destination if message else None,
    )
    return Applied(version, changed=True, dropped=dropped, state=new)


def _recorded_key(task_id: str, item: fb.FeedbackItem) -> str:
    return fb.retraction_key(task_id, item) if item.retracted else fb.item_key(task_id, item)


def _fresh(
    task_id: str, kept: tuple[fb.FeedbackItem, ...], known: set[str]
) -> tuple[fb.FeedbackItem, ...] | Refusal:
    """The items not recorded before (reports and retractions), or a refusal when an
    ``entered-in-error`` item matches no earlier report: there is nothing to correct."""
    for item in kept:
        if item.retracted and fb.item_key(task_id, item) not in known:
            return Refusal(
                422,
                "business-rule",
                "an entered-in-error Observation retracts an earlier feedback item (same code,"
                " value and time); none matches",
            )
    return tuple(i for i in kept if _recorded_key(task_id, i) not in known)


def _gp_message(
    settings: Settings,
    context: fb.ReferralContext,
    feedback: fb.Feedback,
    fresh: tuple[fb.FeedbackItem, ...],
    state: TaskState,
    *,
    earlier: tuple[str, ...],
) -> NewMessage | None:
    """The GP-record message: the new items (already consent-filtered) and the Task."""
    target = settings.feedback.gp_record
    task_id = context.task_id
    only_new = fb.Feedback(
        task_id=feedback.task_id,
        occurred_at=feedback.occurred_at,
        status=feedback.status,
        business_status=feedback.business_status,
        reason_code=feedback.reason_code,
        reason_text=feedback.reason_text,
        items=fresh,
        coach=feedback.coach,
    )
    if target is None:
        return None
    gp = gp_record.to_gp_bundle(context, only_new, state, FEEDBACK_MAPPING, earlier=earlier)
    payload = canonical_json(gp.bundle)
    digest = hashlib.sha256(payload).hexdigest()[:32]
    return NewMessage(f"gp|{task_id}|{digest}", task_id, target, payload)


def _audit_refusal(
    store: OutboxStore, clock: Clock, task: TaskRecord, caller: Caller, refusal: Refusal
) -> None:
    store.audit(
        AuditEvent(
            event="task_update",
            action="U",
            outcome="refused",
            user=caller.client_id,
            responsible=caller.on_behalf_of or task.destination,
            source_system=task.source_system,
            patient_id=task.patient_id,
            object_type="Task",
            object_id=task.task_id,
            detail=f"{refusal.http_status} {refusal.code}",
        ),
        clock.now(),
    )
