"""Monitoring figures: per period and breakdown, each with its counting unit and denominator,
small cells suppressed (``core.suppression``). Pure: trajectories and settings in, a ``Report``
out; the store, the clock and the output formats are elsewhere.

Every count is published only when it is zero or at least ``threshold`` and no published figure
gives it away; a percentage only when its count is published and its denominator is published
and at least ``threshold``; a statistic (median, 75th percentile, mean) only over at least
``threshold`` referrals. The total row of a breakdown is withheld exactly as the report without
breakdown withholds it, so the two reports together give away nothing either alone protects.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, overload

from wor_bridge.core.monitoring_facts import Trajectory
from wor_bridge.core.monitoring_grid import TOTAL, Breakdown, Grid, Key, Tally, grid_of, tallies
from wor_bridge.core.monitoring_period import Period
from wor_bridge.core.monitoring_settings import MonitoringSettings, Target
from wor_bridge.core.suppression import suppress


@dataclass(frozen=True, slots=True)
class Spec:
    """One figure: which cells, counted in what unit, as a share of what."""

    id: str
    title: str
    unit: str
    denominator: str
    var: str
    denominator_cell: tuple[str, str] | None = None
    """``(variable, category)`` of the denominator in the same group; None: the row's sum."""
    categories: tuple[str, ...] = ()
    stats: tuple[str, ...] = ()
    note: str = ""


REFERRED: Final = ("funnel", "referred")
SPECS: Final = (
    Spec("referrals", "Verwijzingen", "verwijzing naar Welzijn op Recept", "geen (aantal)",
         "funnel", None, ("referred",)),
    Spec("funnel", "Trechter: verwezen tot afgesloten", "verwijzing die deze stap of een latere "
         "bereikte", "verwijzingen in de periode", "funnel", REFERRED,
         ("referred", "accepted", "first-contact", "intake", "activity", "closed", "follow-up")),
    Spec("outcome", "Stand van de trajecten", "verwijzing, naar haar huidige status",
         "verwijzingen in de periode", "outcome", REFERRED),
    Spec("closure", "Afgesloten, naar status en reden", "afgesloten verwijzing",
         "afgesloten verwijzingen", "closure", ("funnel", "closed")),
    Spec("reasons", "Redenen van verwijzing", "verwijzing met deze reden (meer redenen per "
         "verwijzing mogelijk)", "verwijzingen in de periode", "reason", REFERRED,
         note="meerkeuze: de percentages tellen op tot meer dan 100%"),
    Spec("referrer_types", "Verwijzers", "verwijzing, naar type verwijzer",
         "verwijzingen in de periode", "referrer", REFERRED),
    Spec("activity_categories", "Activiteiten naar categorie", "verwijzing met een gestarte "
         "activiteit in deze categorie", "verwijzingen met een gestarte activiteit",
         "activity_category", ("funnel", "activity"), note="meerkeuze"),
    Spec("activity_roles", "Activiteiten naar rol", "verwijzing met een activiteit in deze rol",
         "verwijzingen met een gestarte activiteit", "activity_role", ("funnel", "activity"),
         note="meerkeuze"),
    Spec("feedback", "Terugkoppeling bereikte de verwijzer", "verwijzing waarvan terugkoppeling "
         "het HIS bereikte (ja/nee)", "verwijzingen in de periode", "feedback", REFERRED,
         ("yes", "no")),
    Spec("first_contact_deadline", "Eerste contact binnen de termijn", "verwijzing met eerste "
         "contact, of zonder eerste contact na de termijn", "verwijzingen waarvan de termijn "
         "verstreek of die contact hadden", "contact_deadline", None, ("within", "late")),
    Spec("first_contact_time", "Dagen tot eerste contact", "verwijzing met eerste contact",
         "verwijzingen met eerste contact", "contact_time", None, ("n",),
         ("median_days", "p75_days")),
    Spec("first_contact_days", "Verdeling van de dagen tot eerste contact", "verwijzing met "
         "eerste contact", "verwijzingen met eerste contact", "contact_days", ("contact_time", "n"),
         ("0-7", "8-14", "15-28", "29+")),
    Spec("overdue", "Open verwijzingen over de termijn", "open verwijzing zonder eerste contact "
         "na de termijn", "open verwijzingen", "overdue", ("outcome", "open"),
         ("overdue", "not-overdue")),
    Spec("waiting_list", "Wachtlijst", "verwijzing nu op de wachtlijst",
         "verwijzingen in de periode", "waiting", REFERRED, ("now",)),
    Spec("waiting_time", "Wachttijd (dagen)", "verwijzing die op de wachtlijst stond",
         "verwijzingen die op de wachtlijst stonden", "waiting_time", None, ("n",),
         ("median_days", "p75_days")),
    Spec("conversations", "Gesprekken per traject", "traject met een gemeld aantal gesprekken",
         "trajecten met een gemeld aantal gesprekken", "conversations", None, ("n",),
         ("median", "mean")),
)  # fmt: skip
TARGET_UNIT: Final = {"municipality": "municipality", "practice": "practice", "welfare": "welfare"}


@dataclass(frozen=True, slots=True)
class Cell:
    """One published (or withheld) value of a figure."""

    period: str
    group: str
    category: str
    count: int | None = None
    denominator: int | None = None
    percent: float | None = None
    value: float | None = None
    suppressed: bool = False


Row = tuple[str, str, str, int | None, int | None, float | None, float | None, bool]
"""A cell as a plain tuple: the fields of ``Cell`` in order."""


@dataclass(frozen=True, slots=True)
class Cells(Sequence[Cell]):
    """A figure's cells, kept as plain tuples (``Row``: one ``Cell`` costs ten times as much to
    build, and a fine grid has 300,000 of them); ``Cell``s are made only when read by index or
    iteration. Equal when the rows are."""

    rows: tuple[Row, ...] = ()

    @classmethod
    def of(cls, cells: Iterable[Cell]) -> Cells:
        """The cells of ``Cell`` values."""
        return cls(tuple(astuple_of(c) for c in cells))

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> Cell: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Cell]: ...
    def __getitem__(self, index: int | slice) -> Cell | Sequence[Cell]:
        if isinstance(index, slice):
            return [Cell(*row) for row in self.rows[index]]
        return Cell(*self.rows[index])

    def __iter__(self) -> Iterator[Cell]:
        return (Cell(*row) for row in self.rows)


def astuple_of(c: Cell) -> Row:
    """A cell's fields as a ``Row`` (``dataclasses.astuple`` copies deeply)."""
    return (c.period, c.group, c.category, c.count, c.denominator, c.percent, c.value,
            c.suppressed)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Figure:
    """A figure with its counting unit, its denominator and its cells."""

    id: str
    title: str
    unit: str
    denominator: str
    note: str
    cells: Cells


@dataclass(frozen=True, slots=True)
class Report:
    """All figures of one period kind and breakdown."""

    period: Period
    breakdown: Breakdown
    threshold: int
    generated_at: dt.datetime
    periods: tuple[str, ...]
    scope: str
    figures: tuple[Figure, ...]


def percent(count: int, denominator: int) -> float:
    """``100 * count / denominator`` rounded half up to one decimal (98.1, not 98.0), for a
    count of at least 0 and a positive denominator: in whole numbers, tenths of a percent
    ``floor(1000 * count / denominator + 1/2)``, so no binary fraction decides a half."""
    return (2000 * count + denominator) // (2 * denominator) / 10


def p75(values: Sequence[float]) -> float:
    """The 75th percentile by nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.75 * len(ordered)) - 1)]


def hidden_cells(grid: Grid, threshold: int) -> set[Key]:
    """What to withhold: the total row as the report without breakdown decides, then the rest."""
    total_values = {k: v for k, v in grid.values.items() if k[1] == TOTAL}
    known = total_values.__contains__
    total_relations = [
        r for r in grid.relations if r.total[1] == TOTAL and all(map(known, r.members()))
    ]
    hidden_total = suppress(total_values, total_relations, threshold)
    if len(grid.groups) == 1:
        return hidden_total
    frozen = {k: k in hidden_total for k in total_values}
    return suppress(grid.values, grid.relations, threshold, frozen)


def compute(
    trajectories: Iterable[Trajectory],
    *,
    period: Period,
    breakdown: Breakdown,
    settings: MonitoringSettings,
    now: dt.datetime,
    threshold: int | None = None,
    scope: str = "alles",
) -> Report:
    """The report over ``trajectories`` (already limited to what the reader may see)."""
    return compute_tallied(
        tallies(trajectories, period, breakdown, now),
        period=period,
        breakdown=breakdown,
        settings=settings,
        now=now,
        threshold=threshold,
        scope=scope,
    )


def compute_tallied(
    by_period: Mapping[str, Tally],
    *,
    period: Period,
    breakdown: Breakdown,
    settings: MonitoringSettings,
    now: dt.datetime,
    threshold: int | None = None,
    scope: str = "alles",
) -> Report:
    """The report over the tallies of each period label (``monitoring_grid.tallies``, or the
    same counted by a store)."""
    limit = threshold if threshold is not None else settings.threshold
    cells: dict[str, list[Row]] = {s.id: [] for s in SPECS}
    cells["target"] = []
    for label in sorted(by_period):
        grid = grid_of(by_period[label])
        hidden = hidden_cells(grid, limit)
        for spec in SPECS:
            cells[spec.id] += _cells(spec, grid, hidden, label, limit)
        cells["target"] += _targets(grid, hidden, label, period, breakdown, settings.targets)
    figures = [
        Figure(s.id, s.title, s.unit, s.denominator, s.note, Cells(tuple(cells[s.id])))
        for s in SPECS
    ]
    figures.append(
        Figure(
            "target",
            "Verwijzingen naast streefaantal en coachuren",
            "verwijzing naar Welzijn op Recept",
            "streefaantal voor de periode (jaarstreefaantal naar rato)",
            "meer verwijzingen is geen doel op zich: altijd naast de capaciteit",
            Cells(tuple(cells["target"])),
        )
    )
    return Report(period, breakdown, limit, now, tuple(sorted(by_period)), scope, tuple(figures))


def _cells(spec: Spec, grid: Grid, hidden: set[Key], label: str, limit: int) -> list[Row]:
    """The cells of one figure in one period, group by group (a hot loop on fine grids: one
    tuple per category and group, lookups hoisted, ``percent`` inlined)."""
    categories = spec.categories or tuple(grid.categories(spec.var))
    out: list[Row] = []
    value_of, var = grid.values.get, spec.var
    shared = spec.denominator_cell is not None or len(categories) > 1
    for group in grid.groups:
        row = [(var, group, c) for c in categories]
        withheld = [key in hidden for key in row]
        counts = [value_of(key, 0) for key in row]
        if spec.denominator_cell is not None:
            dkey: Key = (spec.denominator_cell[0], group, spec.denominator_cell[1])
            denom = None if dkey in hidden else value_of(dkey, 0)
        else:
            denom = None if True in withheld else sum(counts)
        rated = denom if shared and denom is not None and denom >= limit and denom > 0 else 0
        out += [
            (label, group, c, None, denom, None, None, True) if w
            # ``percent`` of the count, written out (one call less per cell)
            else (label, group, c, n, denom, (2000 * n + rated) // (2 * rated) / 10 if rated
                  else None, None, False)
            for c, w, n in zip(categories, withheld, counts, strict=True)
        ]  # fmt: skip
        if spec.stats:
            sample = grid.samples.get((var, group), [])
            ok = (var, group, "n") not in hidden and len(sample) >= limit
            for stat in spec.stats:
                value = _stat(stat, sample) if ok else None
                out.append((label, group, stat, None, None, None, value, not ok and bool(sample)))
    return out


def _stat(name: str, sample: list[float]) -> float:
    if name in ("median_days", "median"):
        return round(statistics.median(sample), 1)
    if name == "mean":
        return round(statistics.fmean(sample), 1)
    return round(p75(sample), 1)


def _targets(  # noqa: PLR0917 - one call site, read in order
    grid: Grid,
    hidden: set[Key],
    label: str,
    period: Period,
    breakdown: Breakdown,
    targets: tuple[Target, ...],
) -> list[Row]:
    unit = TARGET_UNIT.get(breakdown, "municipality")
    year = int(label[:4])
    share = {"month": 1 / 12, "quarter": 1 / 4, "year": 1.0}[period]
    out: list[Row] = []
    for group in grid.groups:
        mine = [
            t for t in targets
            if t.unit == unit and t.year == year and group in (TOTAL, t.value)
        ]  # fmt: skip
        if not mine:
            continue
        key: Key = ("funnel", group, "referred")
        count = None if key in hidden else grid.values.get(key, 0)
        target = round(sum(t.referrals for t in mine) * share, 1)
        hours = round(sum(t.coach_hours_per_week for t in mine), 1)
        rate = percent(count, round(target)) if count is not None and round(target) else None
        out += [
            (label, group, "referrals", count, None, None, None, count is None),
            (label, group, "target", None, None, rate, target, False),
            (label, group, "coach_hours_per_week", None, None, None, hours, False),
        ]
    return out
