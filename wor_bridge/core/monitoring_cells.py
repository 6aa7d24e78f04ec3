"""Which cells one referral counts in (``cells_of``), and the profile a store may count
referrals by (``Profile``: referrals with equal profiles count in the same cells). Pure; the
counting into grids is ``monitoring_grid``.

A cell is ``(variable, category)`` within the referral's group: the funnel stages reached, the
outcome and closure, reasons, referrer, activities, feedback, the first-contact deadline, the
statistics' cells (with their samples), overdue and the waiting list.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from wor_bridge.core.monitoring_facts import CLOSED, Trajectory

STAGES: Final = (
    "referred",
    "accepted",
    "first-contact",
    "intake",
    "activity",
    "closed",
    "follow-up",
)
CONTACT_BINS: Final = ((7, "0-7"), (14, "8-14"), (28, "15-28"), (10**9, "29+"))


def days(start: dt.datetime, end: dt.datetime) -> float:
    """Whole and part days from ``start`` to ``end`` (never negative)."""
    return max(0.0, (end - start).total_seconds() / 86400)


@dataclass(frozen=True, slots=True)
class Profile:
    """What one referral counts in, apart from its group, multi-valued facts and samples (the
    store may count referrals with the same profile together)."""

    status: str
    reason_code: str | None
    referrer_type: str
    accepted: bool
    first_contact: bool
    intake: bool
    activity: bool
    follow_up: bool
    feedback: bool
    deadline: bool
    """The referral has a first-contact deadline."""
    deadline_passed: bool
    """The deadline is before ``now``."""
    on_time: bool
    """First contact at or before the deadline."""


def profile_of(t: Trajectory, now: dt.datetime) -> Profile:
    """A referral's profile at ``now``."""
    deadline, first = t.facts.deadline_at, t.first_contact_at
    return Profile(
        status=t.status,
        reason_code=t.reason_code,
        referrer_type=t.facts.referrer_type,
        accepted=t.accepted_at is not None,
        first_contact=first is not None,
        intake=t.intake_at is not None,
        activity=t.activity_at is not None,
        follow_up=t.follow_up_at is not None,
        feedback=t.feedback_at is not None,
        deadline=deadline is not None,
        deadline_passed=deadline is not None and deadline < now,
        on_time=deadline is not None and first is not None and first <= deadline,
    )


CELL_ORDER: Final = {
    var: i
    for i, var in enumerate((
        "funnel", "outcome", "closure", "reason", "referrer", "activity_category",
        "activity_role", "feedback", "contact_deadline", "contact_time", "contact_days",
        "overdue", "waiting", "waiting_time", "conversations",
    ))
}  # fmt: skip
"""The order in which one referral counts in its cells (``cells_of``)."""


def profile_cells(p: Profile) -> list[tuple[str, str]]:
    """The cells of a profile, in the order a referral counts in them."""
    reached = {
        "referred": True,
        "accepted": p.accepted or p.first_contact or p.intake or p.activity,
        "first-contact": p.first_contact or p.intake or p.activity,
        "intake": p.intake or p.activity,
        "activity": p.activity,
        "closed": p.status in CLOSED,
        "follow-up": p.follow_up,
    }
    cells = [("funnel", s) for s in STAGES if reached[s]]
    status = p.status if p.status in CLOSED else "open"
    cells.append(("outcome", status))
    if status != "open":
        cells.append(("closure", f"{status}:{p.reason_code or 'zonder-reden'}"))
    return cells


def tail_cells(p: Profile) -> list[tuple[str, str]]:
    """The cells after the referrer, reasons and activities (without the samples' cells)."""
    cells = [("feedback", "yes" if p.feedback else "no")]
    if p.deadline and (p.first_contact or p.deadline_passed):
        cells.append(("contact_deadline", "within" if p.on_time else "late"))
    return cells


def overdue_cells(p: Profile) -> list[tuple[str, str]]:
    """The open referral's overdue cell (none when it is closed)."""
    if p.status in CLOSED:
        return []
    late = p.deadline and p.deadline_passed and not p.first_contact
    return [("overdue", "overdue" if late else "not-overdue")]


def contact_bin(waited: float) -> str:
    """The ``contact_days`` category of a number of days."""
    for top, label in CONTACT_BINS:
        if waited <= top:
            return label
    return CONTACT_BINS[-1][1]


def waiting_end(
    status: str, waiting_until: dt.datetime | None, closed_at: dt.datetime | None
) -> dt.datetime | None:
    """When a referral stopped waiting (None: it still waits)."""
    return waiting_until or (closed_at if status in CLOSED else None)


def cells_of(
    t: Trajectory, now: dt.datetime
) -> tuple[list[tuple[str, str]], list[tuple[str, float]]]:
    """The cells one referral counts in (without its group), and its statistics' samples."""
    p = profile_of(t, now)
    cells = profile_cells(p)
    cells += [("reason", code) for code in t.facts.reasons]
    cells.append(("referrer", t.facts.referrer_type))
    if t.activities:
        cells += [("activity_category", c) for c in sorted({c for c, _r in t.activities})]
        cells += [("activity_role", r) for r in sorted({r for _c, r in t.activities})]
    cells += tail_cells(p)
    sampled: list[tuple[str, float]] = []
    first = t.first_contact_at
    if first is not None:
        waited = days(t.facts.received_at, first)
        cells.append(("contact_time", "n"))
        cells.append(("contact_days", contact_bin(waited)))
        sampled.append(("contact_time", waited))
    cells += overdue_cells(p)
    if t.waiting_since is not None:
        end = waiting_end(t.status, t.waiting_until, t.closed_at)
        if end is None:
            cells.append(("waiting", "now"))
        cells.append(("waiting_time", "n"))
        sampled.append(("waiting_time", days(t.waiting_since, end or now)))
    if t.conversations is not None and t.conversations > 0:
        cells.append(("conversations", "n"))
        sampled.append(("conversations", float(t.conversations)))
    return cells, sampled
