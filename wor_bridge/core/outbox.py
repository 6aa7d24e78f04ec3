"""The outbox's rules (pure): states, idempotency keys and the retry policy.

An entry is ``pending`` until it is ``delivered`` or ``dead`` (dead letter). A worker *claims* a
due pending entry with a lease; a crashed worker's lease simply expires. After each attempt the
policy decides: done, try again after a delay (exponential backoff with full jitter, at least the
receiver's Retry-After), or give up (too many attempts, too old, or rejected).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

from wor_bridge.core.delivery import Delivered, Outcome, Rejected

State = Literal["pending", "delivered", "dead"]
STATES: Final[tuple[State, ...]] = ("pending", "delivered", "dead")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Backoff and limits. ``base_s * 2**attempt`` capped at ``cap_s``, with full jitter."""

    base_s: float = 2.0
    cap_s: float = 900.0
    max_attempts: int = 12
    max_age_s: float = 3 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with an entry after an attempt."""

    state: State
    delay_s: float | None = None


def idempotency_key(referral_key: str, destination_id: str) -> str:
    """Business key of one delivery: source system + HIS referral identifier + destination."""
    return f"{referral_key}|{destination_id}"


def decide(
    policy: RetryPolicy,
    outcome: Outcome,
    attempts: int,
    age_s: float,
    jitter: float,
) -> Decision:
    """The next state after ``attempts`` attempts (this one included) on an entry ``age_s`` old.

    ``jitter`` is a random number in [0, 1) supplied by the caller, so this stays pure.
    """
    if isinstance(outcome, Delivered):
        return Decision("delivered")
    if isinstance(outcome, Rejected):
        return Decision("dead")
    if attempts >= policy.max_attempts:
        return Decision("dead")
    exponent = min(max(0, attempts - 1), 62)  # 2**62 * base_s exceeds any sensible cap
    ceiling = min(policy.cap_s, policy.base_s * float(2**exponent))
    delay = jitter * ceiling
    if outcome.retry_after_s is not None:
        delay = max(delay, min(outcome.retry_after_s, policy.cap_s))
    if age_s + delay > policy.max_age_s:
        return Decision("dead")
    return Decision("pending", delay)


def may_have_arrived(state: State, attempts: int, last_status: int | None, *, leased: bool) -> bool:
    """Whether an entry may have reached its receiver: delivered, being sent right now, or tried
    without a definite answer (a timeout may have landed; a status code says what happened)."""
    if state == "delivered" or leased:
        return True
    return attempts > 0 and (last_status is None or 200 <= last_status < 300)


@dataclass(frozen=True, slots=True)
class Neighbour:
    """A later entry about the same Task to the same destination, as the requeue rules see it."""

    state: State
    attempts: int
    last_status: int | None
    leased: bool


def requeue_refusal(
    state: State,
    wanted: State,
    later: list[Neighbour],
    referral_task_status: str | None,
    *,
    purged: bool = False,
) -> str | None:
    """Why an entry in ``state`` may not be sent again by an operator (None: it may).

    Only entries in ``wanted`` (``dead`` for a retry, ``delivered`` for a replay) qualify; never
    one that would overtake a later message about its Task to its destination that may already
    have arrived (the receiver would see the Task go back); never a referral (its Task's status
    is ``referral_task_status``; None for other messages) whose Task moved on; never one whose
    payload the retention purge removed (``purged``).
    """
    if state != wanted:
        return f"the entry is {state}, not {wanted}"
    if purged:
        return "its payload was purged (retention): there is nothing left to send"
    if any(may_have_arrived(n.state, n.attempts, n.last_status, leased=n.leased) for n in later):
        return "a later message about its Task to this destination may have arrived already"
    if referral_task_status not in (None, "requested"):
        return f"its Task moved on (status {referral_task_status}): the referral is not sent again"
    return None
