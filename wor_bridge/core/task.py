"""The Task state machine of a Welzijn op Recept referral (HL7 SDOH Clinical Care rules). Pure.

One transition table. The GP side sets ``requested``, ``cancelled`` and ``entered-in-error``; the
welfare side sets ``accepted``, ``rejected``, ``in-progress``, ``on-hold``, ``failed``,
``completed`` and ``cancelled``. ``rejected``, ``cancelled``, ``on-hold`` and ``failed`` need a
``statusReason``. Milestones (``businessStatus``) come from the welfare side only; the bridge's
own delivery codes (``DELIVERY_CODES``) and, from the GP side, the current milestone sent back
unchanged are ignored (a GP-side change keeps the last milestone), so both sides can update the
Task as GET returns it. Finished states
never move again, so an update that arrives late (out of order) can never move a finished Task
back; an update equal to the current state is a no-op, so the same update twice has one effect.
``ready`` and ``received`` are not used (the SDOH value set excludes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Side = Literal["gp", "welfare"]

STATUSES: Final = (
    "requested",
    "accepted",
    "rejected",
    "in-progress",
    "on-hold",
    "failed",
    "completed",
    "cancelled",
    "entered-in-error",
)
DELIVERY_CODES: Final = frozenset({"sent", "queued", "delivered", "delivery-failed"})
"""``businessStatus`` codes the bridge owns (its delivery state, shown on the Task it serves):
not milestones either side reports. An update carrying one has it ignored, so either side can
send back the Task as GET returned it."""
FINISHED: Final = frozenset({"rejected", "failed", "completed", "cancelled", "entered-in-error"})
REASON_REQUIRED: Final = frozenset({"rejected", "cancelled", "on-hold", "failed"})
SETTABLE: Final[dict[Side, frozenset[str]]] = {
    "gp": frozenset({"requested", "cancelled", "entered-in-error"}),
    "welfare": frozenset(
        {"accepted", "rejected", "in-progress", "on-hold", "failed", "completed", "cancelled"}
    ),
}

_AFTER_CLOSURE: Final[dict[str, tuple[str, ...]]] = {
    "completed": ("follow-up",),  # the 3- and 6-month follow-up comes after closure
}
_AFTER_CLOSURE_DEFAULT: Final[tuple[str, ...]] = ()

# from -> the statuses it may move to (a status may always stay the same, with new milestones).
TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "requested": frozenset(
        {"accepted", "rejected", "in-progress", "failed", "cancelled", "entered-in-error"}
    ),
    "accepted": frozenset(
        {"in-progress", "on-hold", "failed", "completed", "cancelled", "entered-in-error"}
    ),
    "in-progress": frozenset({"on-hold", "failed", "completed", "cancelled", "entered-in-error"}),
    "on-hold": frozenset({"in-progress", "failed", "completed", "cancelled", "entered-in-error"}),
    "rejected": frozenset({"entered-in-error"}),
    "failed": frozenset({"entered-in-error"}),
    "completed": frozenset({"entered-in-error"}),
    "cancelled": frozenset({"entered-in-error"}),
    "entered-in-error": frozenset(),
}


@dataclass(frozen=True, slots=True)
class Reason:
    """A statusReason: a code from the closure-reason CodeSystem where one fits, and/or text."""

    code: str | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class TaskState:
    """What the bridge knows of a Task's progress."""

    status: str = "requested"
    business_status: str | None = None
    reason: Reason | None = None


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an update is refused: HTTP status (409/422) and a message without patient data."""

    http_status: int
    code: str
    message: str


def reachable(current: str, target: str, side: Side) -> bool:
    """True when ``side`` could move ``current`` to ``target`` through the table in some steps.

    Polling sees only the latest state: a Task that went requested -> accepted -> completed
    between two polls arrives as one jump, which this admits (the push channels see every step).
    """
    seen, todo = {current}, [current]
    while todo:
        for nxt in TRANSITIONS[todo.pop()]:
            if nxt in SETTABLE[side] and nxt not in seen:
                if nxt == target:
                    return True
                seen.add(nxt)
                todo.append(nxt)
    return False


def transition(  # noqa: PLR0911 - one answer per rule, in the order they are checked
    current: TaskState,
    side: Side,
    status: str | None,
    business_status: str | None = None,
    reason: Reason | None = None,
    *,
    jump: bool = False,
) -> TaskState | Refusal:
    """The state after an update by ``side``, or why it is refused.

    ``status`` None keeps the current status (a milestone-only update). ``jump`` admits a target
    that is reachable in several steps (for polling, which sees only the latest state).
    """
    target = current.status if status is None else status
    if target not in STATUSES:
        return Refusal(422, "code-invalid", f"status must be one of {', '.join(STATUSES)}")
    if reason is not None and not (reason.code or reason.text):
        reason = None
    if status is not None and target not in SETTABLE[side]:
        return Refusal(422, "business-rule", f"the {side} side may not set status {target}")
    if business_status in DELIVERY_CODES:
        business_status = None  # the bridge's delivery state, not a milestone: ignored
    if side == "gp" and business_status is not None:
        if business_status != current.business_status:
            return Refusal(422, "business-rule", "the gp side does not report milestones")
        business_status = None  # the welfare side's milestone sent back unchanged: ignored
    if side == "gp":
        business_status = current.business_status  # the last milestone stays what it was
    if target != current.status:
        allowed = target in TRANSITIONS[current.status]
        if not allowed and not (jump and reachable(current.status, target, side)):
            return Refusal(
                409,
                "conflict",
                f"the Task is {current.status}; it cannot become {target}",
            )
    elif current.status in FINISHED and (
        business_status
        not in (
            None,
            current.business_status,
            *_AFTER_CLOSURE.get(current.status, _AFTER_CLOSURE_DEFAULT),
        )
        or (reason is not None and reason != current.reason)
    ):
        return Refusal(409, "conflict", f"the Task is {current.status}; it is finished")
    new_reason = (
        reason if reason is not None else (current.reason if target == current.status else None)
    )
    if target in REASON_REQUIRED and (
        new_reason is None or not (new_reason.code or new_reason.text)
    ):
        return Refusal(
            422,
            "required",
            f"statusReason is required to set status {target} (current status {current.status})",
        )
    return TaskState(
        status=target,
        business_status=business_status
        if business_status is not None
        else (current.business_status if target == current.status else None),
        reason=new_reason,
    )
