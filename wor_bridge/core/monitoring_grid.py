"""The counts of one period and breakdown, and the relations a reader knows between them. Pure.

Every count is a cell ``(variable, group, category)``; ``TOTAL`` is the group of all referrals.
The relations (``suppression.Relation``) are what makes secondary suppression necessary: a row
of exclusive categories adds up to its denominator, each column of groups adds up to the total
row, the closed referrals add up to the closed statuses, and so on.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from wor_bridge.core.monitoring_facts import CLOSED, UNKNOWN, Trajectory
from wor_bridge.core.suppression import Relation

Period = Literal["month", "quarter", "year"]
Breakdown = Literal[
    "total", "practice", "referrer_type", "welfare", "municipality", "sex", "age_band"
]
PERIODS: Final[tuple[Period, ...]] = ("month", "quarter", "year")
BREAKDOWNS: Final[tuple[Breakdown, ...]] = (
    "total",
    "practice",
    "referrer_type",
    "welfare",
    "municipality",
    "sex",
    "age_band",
)
TOTAL: Final = "totaal"
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
OUTCOMES: Final = ("open", "completed", "cancelled", "rejected", "failed", "entered-in-error")
Key = tuple[str, str, str]


def period_label(day: dt.date, period: Period) -> str:
    """``2026-03``, ``2026-Q1`` or ``2026``."""
    if period == "month":
        return f"{day.year}-{day.month:02d}"
    if period == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return str(day.year)


def period_range(label: str) -> tuple[dt.date, dt.date]:
    """``[first day, first day after)`` of a period label; ValueError when it is not one."""
    if len(label) == 4 and label.isdigit():
        year = int(label)
        return dt.date(year, 1, 1), dt.date(year + 1, 1, 1)
    year_text, _, rest = label.partition("-")
    year = int(year_text)
    if rest.startswith("Q") and rest[1:] in ("1", "2", "3", "4"):
        month = 3 * (int(rest[1:]) - 1) + 1
        end = dt.date(year + 1, 1, 1) if month == 10 else dt.date(year, month + 3, 1)
        return dt.date(year, month, 1), end
    month = int(rest)
    end = dt.date(year + 1, 1, 1) if month == 12 else dt.date(year, month + 1, 1)
    return dt.date(year, month, 1), end


def group_of(t: Trajectory, breakdown: Breakdown) -> str:
    """The group of a referral in a breakdown (``TOTAL`` without one)."""
    if breakdown == "total":
        return TOTAL
    value = getattr(t.facts, "welfare" if breakdown == "welfare" else breakdown)
    return str(value) or UNKNOWN


def _stage(t: Trajectory, stage: str) -> bool:
    later = {
        "accepted": (t.accepted_at, t.first_contact_at, t.intake_at, t.activity_at),
        "first-contact": (t.first_contact_at, t.intake_at, t.activity_at),
        "intake": (t.intake_at, t.activity_at),
        "activity": (t.activity_at,),
        "follow-up": (t.follow_up_at,),
    }
    if stage == "referred":
        return True
    if stage == "closed":
        return t.status in CLOSED
    return any(x is not None for x in later[stage])


def days(start: dt.datetime, end: dt.datetime) -> float:
    """Whole and part days from ``start`` to ``end`` (never negative)."""
    return max(0.0, (end - start).total_seconds() / 86400)


@dataclass(slots=True)
class Grid:
    """Counts, relations and the samples of the statistics, for one period."""

    groups: list[str]
    values: dict[Key, int] = field(default_factory=dict)
    relations: list[Relation[Key]] = field(default_factory=list)
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)

    def count(self, var: str, group: str, category: str, n: int = 1) -> None:
        """Add ``n`` to a cell (creating it at 0)."""
        key = (var, group, category)
        self.values[key] = self.values.get(key, 0) + n

    def ensure(self, var: str, categories: Iterable[str]) -> None:
        """Cells at 0 for every group and category (so every relation is complete)."""
        for group in self.groups:
            for category in categories:
                self.values.setdefault((var, group, category), 0)

    def row(self, total: Key, var: str, categories: Iterable[str]) -> None:
        """Per group: ``total`` (its group substituted) = the categories of ``var``."""
        cats = tuple(categories)
        for group in self.groups:
            self.relations.append(
                Relation((total[0], group, total[2]), tuple((var, group, c) for c in cats))
            )

    def columns(self) -> None:
        """Each cell of the total row = the same cell summed over the other groups."""
        parts = [g for g in self.groups if g != TOTAL]
        if not parts:
            return
        for var, group, category in list(self.values):
            if group == TOTAL:
                self.relations.append(
                    Relation((var, TOTAL, category), tuple((var, g, category) for g in parts))
                )

    def categories(self, var: str) -> list[str]:
        """The categories of ``var`` present in the grid, sorted."""
        return sorted({c for v, _g, c in self.values if v == var})


def build(
    trajectories: Iterable[Trajectory],
    group: Callable[[Trajectory], str],
    now: dt.datetime,
) -> Grid:
    """The grid of one period's referrals (each counted in its group; the total row is the sum
    of the groups, so the column relations hold by construction)."""
    per_group: dict[str, Counter[tuple[str, str]]] = {}
    samples: dict[tuple[str, str], list[float]] = {}
    for t in trajectories:
        g = group(t)
        cells, sampled = _cells_of(t, now)
        per_group.setdefault(g, Counter()).update(cells)
        for var, value in sampled:
            samples.setdefault((var, g), []).append(value)
    grid = Grid([*sorted(set(per_group) - {TOTAL}), TOTAL])
    total: Counter[tuple[str, str]] = Counter()
    for g, counts in per_group.items():
        total.update(counts)
        for (var, category), n in counts.items():
            grid.values[(var, g, category)] = n
        for var in ("contact_time", "waiting_time", "conversations"):
            grid.samples.setdefault((var, TOTAL), []).extend(samples.get((var, g), []))
    for (var, category), n in total.items():
        grid.values[(var, TOTAL, category)] = n
    grid.samples.update({k: v for k, v in samples.items() if k[1] != TOTAL})
    _complete(grid)
    return grid


def _cells_of(
    t: Trajectory, now: dt.datetime
) -> tuple[list[tuple[str, str]], list[tuple[str, float]]]:
    """The cells one referral counts in (without its group), and its statistics' samples."""
    cells = [("funnel", s) for s in STAGES if _stage(t, s)]
    status = t.status if t.status in CLOSED else "open"
    cells.append(("outcome", status))
    if status != "open":
        cells.append(("closure", f"{status}:{t.reason_code or 'zonder-reden'}"))
    cells += [("reason", code) for code in t.facts.reasons]
    cells.append(("referrer", t.facts.referrer_type))
    if t.activities:
        cells += [("activity_category", c) for c in sorted({c for c, _r in t.activities})]
        cells += [("activity_role", r) for r in sorted({r for _c, r in t.activities})]
    cells.append(("feedback", "yes" if t.feedback_at else "no"))
    sampled: list[tuple[str, float]] = []
    deadline, first = t.facts.deadline_at, t.first_contact_at
    if deadline is not None and (first is not None or deadline < now):
        on_time = first is not None and first <= deadline
        cells.append(("contact_deadline", "within" if on_time else "late"))
    if first is not None:
        waited = days(t.facts.received_at, first)
        cells.append(("contact_time", "n"))
        cells.append(("contact_days", next(label for top, label in CONTACT_BINS if waited <= top)))
        sampled.append(("contact_time", waited))
    if status == "open":
        late = deadline is not None and deadline < now and first is None
        cells.append(("overdue", "overdue" if late else "not-overdue"))
    if t.waiting_since is not None:
        end = t.waiting_until or (t.closed_at if status != "open" else None)
        if end is None:
            cells.append(("waiting", "now"))
        cells.append(("waiting_time", "n"))
        sampled.append(("waiting_time", days(t.waiting_since, end or now)))
    if t.conversations is not None and t.conversations > 0:
        cells.append(("conversations", "n"))
        sampled.append(("conversations", float(t.conversations)))
    return cells, sampled


def _complete(grid: Grid) -> None:
    """Zero cells and the relations between them."""
    grid.ensure("funnel", STAGES)
    grid.ensure("outcome", OUTCOMES)
    grid.ensure("feedback", ("yes", "no"))
    grid.ensure("contact_deadline", ("within", "late"))
    grid.ensure("overdue", ("overdue", "not-overdue"))
    grid.ensure("contact_time", ("n",))
    grid.ensure("contact_days", [label for _top, label in CONTACT_BINS])
    grid.row(("contact_time", "", "n"), "contact_days", [label for _top, label in CONTACT_BINS])
    grid.ensure("waiting", ("now",))
    grid.ensure("waiting_time", ("n",))
    grid.ensure("conversations", ("n",))
    for var in ("closure", "reason", "referrer", "activity_category", "activity_role"):
        grid.ensure(var, grid.categories(var))
    referred: Key = ("funnel", "", "referred")
    grid.row(referred, "outcome", OUTCOMES)
    grid.row(referred, "referrer", grid.categories("referrer"))
    grid.row(referred, "feedback", ("yes", "no"))
    grid.row(("funnel", "", "closed"), "outcome", OUTCOMES[1:])
    grid.row(("outcome", "", "open"), "overdue", ("overdue", "not-overdue"))
    for status in OUTCOMES[1:]:
        mine = [c for c in grid.categories("closure") if c.startswith(f"{status}:")]
        grid.row(("outcome", "", status), "closure", mine)
    grid.columns()
