"""The counts of one period and breakdown, and the relations a reader knows between them. Pure.

Every count is a cell ``(variable, group, category)``; ``TOTAL`` is the group of all referrals.
The relations (``suppression.Relation``) are what makes secondary suppression necessary: a row
of exclusive categories adds up to its denominator, each column of groups adds up to the total
row, the closed referrals add up to the closed statuses, and so on.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar

from wor_bridge.core.monitoring_facts import CLOSED, UNKNOWN, Trajectory
from wor_bridge.core.monitoring_period import Period, period_label
from wor_bridge.core.suppression import Relation

Breakdown = Literal[
    "total", "practice", "referrer_type", "welfare", "municipality", "sex", "age_band"
]
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


def group_of(t: Trajectory, breakdown: Breakdown) -> str:
    """The group of a referral in a breakdown (``TOTAL`` without one)."""
    if breakdown == "total":
        return TOTAL
    value = getattr(t.facts, "welfare" if breakdown == "welfare" else breakdown)
    return str(value) or UNKNOWN


SCOPE_FIELDS: Final = ("practice", "municipality", "welfare", "source_system")
"""The facts a reader's scope can bind (``usecases.monitoring.Reader``)."""


def visible(t: Trajectory, where: Mapping[str, str] | None) -> bool:
    """Whether a referral is in scope: None is every referral; otherwise each bound fact must
    match, and an empty scope sees nothing."""
    if where is None:
        return True
    return bool(where) and all(getattr(t.facts, name) == value for name, value in where.items())


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
    _cats: dict[str, set[str]] | None = field(default=None, repr=False, compare=False)
    """The categories of each variable in ``values``: made on the first ``categories`` call,
    then kept by ``count`` and ``ensure`` (the only writers after the grid is filled)."""

    def count(self, var: str, group: str, category: str, n: int = 1) -> None:
        """Add ``n`` to a cell (creating it at 0)."""
        key = (var, group, category)
        self.values[key] = self.values.get(key, 0) + n
        if self._cats is not None:
            self._cats.setdefault(var, set()).add(category)

    def ensure(self, var: str, categories: Iterable[str]) -> None:
        """Cells at 0 for every group and category (so every relation is complete)."""
        cats = tuple(categories)
        for group in self.groups:
            for category in cats:
                self.values.setdefault((var, group, category), 0)
        if self._cats is not None and self.groups:
            self._cats.setdefault(var, set()).update(cats)

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
        if self._cats is None:
            self._cats = {}
            for v, _g, c in self.values:
                self._cats.setdefault(v, set()).add(c)
        return sorted(self._cats.get(var, ()))


@dataclass(slots=True)
class Tally:
    """One period's counts per group, before the grid is completed.

    ``counts[group]`` holds the cells ``(variable, category)`` of that group's referrals, in the
    order they were first seen (groups too): the order of the total row's column relations, and
    so of secondary suppression's choices, follows it. ``samples[(variable, group)]`` are the
    values of the statistics."""

    counts: dict[str, dict[tuple[str, str], int]] = field(default_factory=dict)
    samples: dict[tuple[str, str], list[float]] = field(default_factory=dict)


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


def tally(
    trajectories: Iterable[Trajectory],
    group: Callable[[Trajectory], str],
    now: dt.datetime,
) -> Tally:
    """The counts of one period's referrals, each in its group."""
    per_group: dict[str, Counter[tuple[str, str]]] = {}
    samples: dict[tuple[str, str], list[float]] = {}
    for t in trajectories:
        g = group(t)
        cells, sampled = _cells_of(t, now)
        per_group.setdefault(g, Counter()).update(cells)
        for var, value in sampled:
            samples.setdefault((var, g), []).append(value)
    return Tally({g: dict(c) for g, c in per_group.items()}, samples)


def tallies(
    trajectories: Iterable[Trajectory], period: Period, breakdown: Breakdown, now: dt.datetime
) -> dict[str, Tally]:
    """The tally of each period label (the referrals in the order given)."""
    by_period: dict[str, list[Trajectory]] = {}
    for t in trajectories:
        by_period.setdefault(period_label(t.facts.authored_on, period), []).append(t)
    return {
        label: tally(rows, lambda t: group_of(t, breakdown), now)
        for label, rows in by_period.items()
    }


def build(
    trajectories: Iterable[Trajectory],
    group: Callable[[Trajectory], str],
    now: dt.datetime,
) -> Grid:
    """The grid of one period's referrals (each counted in its group; the total row is the sum
    of the groups, so the column relations hold by construction)."""
    return grid_of(tally(trajectories, group, now))


CELL_ORDER: Final = {
    var: i
    for i, var in enumerate((
        "funnel", "outcome", "closure", "reason", "referrer", "activity_category",
        "activity_role", "feedback", "contact_deadline", "contact_time", "contact_days",
        "overdue", "waiting", "waiting_time", "conversations",
    ))
}  # fmt: skip
"""The order in which one referral counts in its cells (``_cells_of``)."""


F = TypeVar("F", int, str)
"""What orders referrals: a rank, or a text that sorts as the ranks would (``order_key``)."""


def tally_of_counts(
    counted: Iterable[tuple[str, str, str, int, F]],
    samples: dict[tuple[str, str], list[float]],
) -> Tally:
    """A tally from counts already made elsewhere (a store's ``GROUP BY``): each entry is
    ``(group, variable, category, count, first)`` with ``first`` the rank of the first referral
    (oldest first, as ``MonitoringReader.trajectories`` orders them) counted in it, or any
    value that compares as that rank does; entries of the same cell add up. Groups and cells
    get the order ``tally`` would give them."""
    groups: dict[str, dict[tuple[str, str], list[Any]]] = {}
    for g, var, category, n, first in counted:
        mine = groups.get(g)
        if mine is None:
            mine = groups[g] = {}
        seen = mine.get((var, category))
        if seen is None:
            mine[(var, category)] = [n, first]
        else:
            seen[0] += n
            if first < seen[1]:  # noqa: PLR1730 - a hot loop: no call
                seen[1] = first
    return tally_of_groups(groups, samples)


def tally_of_groups(
    groups: Mapping[str, Mapping[tuple[str, str], Sequence[Any]]],
    samples: dict[tuple[str, str], list[float]],
) -> Tally:
    """``tally_of_counts`` of counts already added up per group: ``groups[group][(variable,
    category)]`` is ``(count, first)``. Groups in the order of their least ``first``, and each
    group's cells by ``(first, CELL_ORDER, funnel stage, category)``: the order ``tally``
    gives."""
    stage = {s: i for i, s in enumerate(STAGES)}
    order = CELL_ORDER
    ranked = []
    for g, mine in groups.items():
        cells = sorted(
            (first, order[var], stage[category] if var == "funnel" else 0, category, var, n)
            for (var, category), (n, first) in mine.items()
        )
        if cells:
            ranked.append((cells[0][0], g, cells))
    ranked.sort(key=lambda entry: entry[0])
    return Tally(
        {g: {(cell[4], cell[3]): cell[5] for cell in cells} for _f, g, cells in ranked},
        samples,
    )


def grid_of(counted: Tally) -> Grid:
    """The completed grid of a tally: the total row, zero cells and the relations."""
    per_group, samples = counted.counts, counted.samples
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


def _cells_of(
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
