"""Counting the monitoring tables in SQLite for a report (``count_window``): SQLite groups the
referrals of one window into equal profiles, equal sets of reasons or activities and equal
sample values (``GROUP BY`` over the facts derived when the referral was written,
``sqlite_monitoring_derived``); Python expands each group into its cells once and builds the
report's tallies (``core.monitoring_grid``), exactly as the pure path does. A helper of
``sqlite_monitoring``; no writes.

A cell's first referral (which orders the cells, and so secondary suppression's choices) is the
least ``order_key`` of the groups counted in it.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from wor_bridge.adapters.sqlite_tally_pass import Sets, count_referrals, set_cells
from wor_bridge.core.monitoring_cells import (
    CONTACT_BINS,
)
from wor_bridge.core.monitoring_facts import CLOSED, UNKNOWN
from wor_bridge.core.monitoring_grid import (
    SCOPE_FIELDS,
    TOTAL,
    Breakdown,
    Tally,
    tally_of_groups,
)
from wor_bridge.core.monitoring_period import Period

PERIOD_SQL: Final = {
    "month": "substr(authored_on, 1, 7)",
    "quarter": "substr(authored_on, 1, 4) || '-Q' || ((CAST(substr(authored_on, 6, 2) AS INTEGER)"
    " + 2) / 3)",
    "year": "substr(authored_on, 1, 4)",
}
GROUP_COLUMN: Final = {
    "practice": "practice",
    "referrer_type": "referrer_type",
    "welfare": "welfare",
    "municipality": "municipality",
    "sex": "sex",
    "age_band": "age_band",
}
EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
US: Final = dt.timedelta(microseconds=1)


def micros(value: float | None) -> int | None:
    """A stored time as whole microseconds, exactly as ``from_ts`` rounds it (SQL ``wor_us``;
    SQLite may evaluate it on NULL even behind an ``AND``)."""
    if value is None:
        return None
    return (dt.datetime.fromtimestamp(value, tz=dt.UTC) - EPOCH) // US


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs in the counting SQL between SQLite and PostgreSQL: the placeholders
    (``:name`` / ``%(name)s``), a condition as 0 or 1, a stored time in whole microseconds
    exactly as ``from_ts`` rounds it, and the bytewise least ``order_key``."""

    name: str

    def param(self, name: str) -> str:
        """The placeholder of the named parameter ``name``."""
        return f":{name}" if self.name == "sqlite" else f"%({name})s"

    def flag(self, condition: str) -> str:
        """1 where ``condition`` holds, else 0 (SQLite's comparisons are integers already)."""
        if self.name == "sqlite":
            return f"({condition})"
        return f"(CASE WHEN {condition} THEN 1 ELSE 0 END)"

    def us(self, value: str) -> str:
        """``micros(value)`` in SQL. SQLite: the user function ``wor_us``. PostgreSQL: CPython's
        own rounding (``datetime.fromtimestamp``: the whole seconds, then the fraction times
        10**6 rounded half to even, which is ``round(float8)``'s ``rint``); the fraction
        ``value - trunc(value)`` and its product are the same IEEE operations."""
        if self.name == "sqlite":
            return f"wor_us({value})"
        return (
            f"(CAST(trunc({value}) AS BIGINT) * 1000000 + CAST(round(({value} - trunc({value}))"
            " * CAST(1000000 AS DOUBLE PRECISION)) AS BIGINT))"
        )

    def key(self) -> str:
        """``order_key`` compared bytewise (as Python compares the keys: code points)."""
        return "order_key" if self.name == "sqlite" else 'order_key COLLATE "C"'

    def number(self, name: str) -> str:
        """A REAL parameter (PostgreSQL: typed, so it is compared as a double)."""
        if self.name == "sqlite":
            return self.param(name)
        return f"CAST({self.param(name)} AS DOUBLE PRECISION)"


SQLITE: Final = Dialect("sqlite")
POSTGRESQL: Final = Dialect("postgresql")


def _compare(d: Dialect, a: str, op: str, b: str, b_us: str) -> str:
    """SQL for ``a op b`` on the times as ``from_ts`` reads them (whole microseconds): the
    stored REALs decide unless they are within a millisecond, then ``micros`` does."""
    return f"(CASE WHEN ABS({a} - {b}) > 0.001 THEN {a} {op} {b} ELSE {d.us(a)} {op} {b_us} END)"


def flags(d: Dialect) -> str:
    """The milestone and deadline bits of a referral's profile (``_profile``) as one integer."""
    now, now_us = d.number("now"), d.param("now_us")
    return (
        f"{d.flag('accepted_at IS NOT NULL')} + 2 * {d.flag('first_contact_at IS NOT NULL')}"
        f" + 4 * {d.flag('intake_at IS NOT NULL')} + 8 * {d.flag('activity_at IS NOT NULL')}"
        f" + 16 * {d.flag('follow_up_at IS NOT NULL')} + 32 * {d.flag('feedback_at IS NOT NULL')}"
        f" + 64 * {d.flag('deadline_at IS NOT NULL')} + 128 * "
        + d.flag(f"deadline_at IS NOT NULL AND {_compare(d, 'deadline_at', '<', now, now_us)}")
        + " + 256 * "
        + d.flag(
            "deadline_at IS NOT NULL AND first_contact_at IS NOT NULL AND "
            + _compare(d, "first_contact_at", "<=", "deadline_at", d.us("deadline_at"))
        )
    )


CONTACT_BIN: Final = (
    "CASE WHEN contact_days IS NULL THEN NULL"
    + "".join(f" WHEN contact_days <= {top} THEN '{label}'" for top, label in CONTACT_BINS[:-1])
    + f" ELSE '{CONTACT_BINS[-1][1]}' END"
)
"""``monitoring_cells.contact_bin`` of the stored ``contact_days`` (the same comparisons)."""
_CLOSED_SQL: Final = ", ".join(f"'{status}'" for status in sorted(CLOSED))
WAITING: Final = (
    "CASE WHEN waiting_since IS NULL THEN NULL WHEN waiting_until IS NOT NULL"
    f" OR (status IN ({_CLOSED_SQL}) AND closed_at IS NOT NULL) THEN 'ended' ELSE 'now' END"
)
"""Whether a referral that was on the waiting list still is (``monitoring_cells.waiting_end``)."""
CLOSURE: Final = (
    f"CASE WHEN status IN ({_CLOSED_SQL}) THEN status || ':' ||"
    " COALESCE(NULLIF(reason_code, ''), 'zonder-reden') END"
)
"""The closure category of a closed referral (``monitoring_cells.profile_cells``), else NULL."""


_CLOSED: Final = f"st IN ({_CLOSED_SQL})"
_DEADLINE: Final = "(f & 64) <> 0 AND ((f & 2) <> 0 OR (f & 128) <> 0)"
_LATE: Final = "(f & 64) <> 0 AND (f & 128) <> 0 AND (f & 2) = 0"
FIXED: Final = (
    (("funnel", "accepted"), "(f & 15) <> 0"),
    (("funnel", "first-contact"), "(f & 14) <> 0"),
    (("funnel", "intake"), "(f & 12) <> 0"),
    (("funnel", "activity"), "(f & 8) <> 0"),
    (("funnel", "closed"), _CLOSED),
    (("funnel", "follow-up"), "(f & 16) <> 0"),
    (("outcome", "open"), f"NOT ({_CLOSED})"),
    *((("outcome", status), f"st = '{status}'") for status in sorted(CLOSED)),
    (("feedback", "yes"), "(f & 32) <> 0"),
    (("feedback", "no"), "(f & 32) = 0"),
    (("contact_deadline", "within"), f"{_DEADLINE} AND (f & 256) <> 0"),
    (("contact_deadline", "late"), f"{_DEADLINE} AND (f & 256) = 0"),
    (("contact_time", "n"), "cb IS NOT NULL"),
    *((("contact_days", label), f"cb = '{label}'") for _top, label in CONTACT_BINS),
    (("overdue", "overdue"), f"NOT ({_CLOSED}) AND {_LATE}"),
    (("overdue", "not-overdue"), f"NOT ({_CLOSED}) AND NOT ({_LATE})"),
    (("waiting", "now"), "w = 'now'"),
    (("waiting_time", "n"), "w IS NOT NULL"),
    (("conversations", "n"), "cv = 1"),
)
"""The cells every referral may count in apart from ``("funnel", "referred")`` (all of them),
the closure, referrer, reasons and activities, each with its condition on a referral's
profile: ``f`` the milestone and deadline bits (``flags``), ``st`` the status, ``cb`` the
contact-days bin, ``w`` the waiting state, ``cv`` 1 with conversations (as
``monitoring_cells.profile_cells``, ``tail_cells``, ``overdue_cells`` and ``cells_of``)."""
FIXED_CELLS: Final = (("funnel", "referred"), *(cell for cell, _condition in FIXED))


class Counting:
    """Counts per period label and group: ``cell -> [count, least order_key]``."""

    def __init__(self) -> None:
        self.cells: dict[str, dict[str, dict[tuple[str, str], list[Any]]]] = {}
        self.samples: dict[str, dict[tuple[str, str], list[float]]] = {}

    def add(self, label: str, g: str, cells: Iterable[tuple[str, str]], n: int, first: str) -> None:
        """``n`` referrals of group ``g`` whose least ``order_key`` is ``first`` count in each
        of ``cells``."""
        groups = self.cells.get(label)
        if groups is None:
            groups = self.cells[label] = {}
        mine = groups.get(g)
        if mine is None:
            mine = groups[g] = {}
        for cell in cells:
            seen = mine.get(cell)
            if seen is None:
                mine[cell] = [n, first]
            else:
                seen[0] += n
                if first < seen[1]:  # noqa: PLR1730 - a hot loop: no call
                    seen[1] = first

    def add_fixed(self, rows: Iterable[Sequence[Any]]) -> None:
        """The rows of the per-group statement: label, group, then count and least
        ``order_key`` of each of ``FIXED_CELLS`` (cells counted 0 left out). Each label and group
        once, before any ``add``."""
        fixed = FIXED_CELLS
        for label, g, *counted in rows:
            groups = self.cells.get(label)
            if groups is None:
                groups = self.cells[label] = {}
            groups[g] = {
                cell: [n, first]
                for cell, n, first in zip(fixed, counted[0::2], counted[1::2], strict=True)
                if n
            }

    def tallies(self) -> dict[str, Tally]:
        """The tally of each label (cells ordered by their least ``order_key``, which sorts as
        the referrals' ranks do)."""
        return {
            label: tally_of_groups(groups, self.samples.get(label, {}))
            for label, groups in self.cells.items()
        }


Run = Callable[[str, Mapping[str, Any]], Iterable[Sequence[Any]]]
"""Runs one statement with named parameters and gives its rows (``sqlite3`` or psycopg)."""


def count_window(
    conn: sqlite3.Connection,
    period: Period,
    breakdown: Breakdown,
    now: dt.datetime,
    *,
    since: dt.date | None,
    until: dt.date | None,
    where: Mapping[str, str] | None,
) -> dict[str, Tally]:
    """The tallies of the referrals authored in ``[since, until)`` whose facts match ``where``
    (None: all; empty: none), as ``monitoring_grid.tallies`` gives them over ``trajectories``:
    on a SQLite connection (``count_rows`` with ``SQLITE``)."""
    conn.create_function("wor_us", 1, micros, deterministic=True)

    def run(sql: str, params: Mapping[str, Any]) -> Iterable[Sequence[Any]]:
        return conn.execute(sql, params)

    return count_rows(run, SQLITE, period, breakdown, now, since=since, until=until, where=where)


def count_rows(
    run: Run,
    dialect: Dialect,
    period: Period,
    breakdown: Breakdown,
    now: dt.datetime,
    *,
    since: dt.date | None,
    until: dt.date | None,
    where: Mapping[str, str] | None,
) -> dict[str, Tally]:
    """``count_window`` in ``dialect``: two statements through ``run`` (the profiles grouped,
    then one row per referral for the sets and samples), on any engine that has the monitoring
    tables with the derived columns (schema step 9)."""
    if where is not None and not where:
        return {}
    p = dialect.param
    column = GROUP_COLUMN.get(breakdown)
    head = (
        f"{PERIOD_SQL[period]} AS label, "
        + (f"COALESCE(NULLIF({column}, ''), {p('unknown')})" if column else p("total"))
        + " AS grp"
    )
    conditions = [f"{name} = {p(name)}" for name in SCOPE_FIELDS if where and name in where]
    if since is not None:
        conditions.append(f"authored_on >= {p('low')}")
    if until is not None:
        conditions.append(f"authored_on < {p('high')}")
    params: dict[str, Any] = {
        "low": since.isoformat() if since is not None else None,
        "high": until.isoformat() if until is not None else None,
        "now": now.timestamp(),
        "now_us": (now - EPOCH) // US,
        "unknown": UNKNOWN,
        "total": TOTAL,
        **{name: where[name] for name in SCOPE_FIELDS if where and name in where},
    }
    test = " WHERE " + " AND ".join(conditions) if conditions else ""
    profile = (
        f"SELECT {head}, {dialect.key()} AS k, {flags(dialect)} AS f, status AS st,"  # noqa: S608 - constant SQL only
        f" {CONTACT_BIN} AS cb, {WAITING} AS w, {dialect.flag('conversations > 0')} AS cv"
        f" FROM monitoring_referral{test}"
    )
    counted = ", ".join(
        f"SUM({dialect.flag(condition)}), MIN(CASE WHEN {condition} THEN k END)"
        for _cell, condition in FIXED
    )
    per_group = run(
        f"WITH q AS MATERIALIZED ({profile}) SELECT label, grp, COUNT(*), MIN(k), {counted}"  # noqa: S608 - constant SQL only
        " FROM q GROUP BY label, grp",
        params,
    )
    counting = Counting()
    counting.add_fixed(per_group)
    rows = run(
        f"SELECT {head}, order_key, referrer_type, {CLOSURE}, reasons, activities,"  # noqa: S608 - constant SQL only
        " contact_days, conversations, waiting_since, status, waiting_until, closed_at"
        f" FROM monitoring_referral{test} ORDER BY {dialect.key()} DESC",
        params,
    )
    sets, counting.samples = count_referrals(list(rows), now)
    count_sets(sets, counting)
    return counting.tallies()


def count_sets(sets: Sets, counting: Counting) -> None:
    """The cells of each group of referrals with the same referrer type, closure, reasons or
    activities (the cells of each made once)."""
    known: dict[str, list[tuple[str, str]]] = {}
    for (label, g, multi), (n, first) in sets.items():
        cells = known.get(multi)
        if cells is None:
            cells = known[multi] = set_cells(multi)
        counting.add(label, g, cells, n, first)
