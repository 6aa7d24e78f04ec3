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

from wor_bridge.core.monitoring_cells import CELL_ORDER, CONTACT_BINS, STAGES, cells_of
from wor_bridge.core.monitoring_facts import UNKNOWN, Trajectory
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
        cells, sampled = cells_of(t, now)
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
