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

from wor_bridge.adapters.sqlite_monitoring_derived import RECORD, UNIT
from wor_bridge.adapters.sqlite_rows import from_ts
from wor_bridge.core.monitoring_cells import (
    CONTACT_BINS,
    Profile,
    days,
    overdue_cells,
    profile_cells,
    tail_cells,
    waiting_end,
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

    def least_key(self) -> str:
        """``MIN(order_key)`` compared bytewise (as Python compares the keys: code points)."""
        return "MIN(order_key)" if self.name == "sqlite" else 'MIN(order_key COLLATE "C")'

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


def _profile(status: str, reason_code: str | None, referrer: str, bits: int) -> Profile:
    return Profile(
        status=status, reason_code=reason_code, referrer_type=referrer, accepted=bool(bits & 1),
        first_contact=bool(bits & 2), intake=bool(bits & 4), activity=bool(bits & 8),
        follow_up=bool(bits & 16), feedback=bool(bits & 32), deadline=bool(bits & 64),
        deadline_passed=bool(bits & 128), on_time=bool(bits & 256),
    )  # fmt: skip


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
    head = f"{PERIOD_SQL[period]}, " + (
        f"COALESCE(NULLIF({column}, ''), {p('unknown')})" if column else p("total")
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
    profiles = list(
        run(
            f"SELECT {head}, status, reason_code, referrer_type, {flags(dialect)}, {CONTACT_BIN},"  # noqa: S608 - constant SQL only
            f" {WAITING}, {dialect.flag('conversations > 0')}, COUNT(*), {dialect.least_key()}"
            f" FROM monitoring_referral{test} GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9",
            params,
        )
    )
    sets: dict[tuple[str, str, str], list[Any]] = {}
    samples = _each_referral(
        run(
            f"SELECT {head}, order_key, reasons, activities, contact_days, conversations,"  # noqa: S608 - constant SQL only
            f" waiting_since, status, waiting_until, closed_at FROM monitoring_referral{test}",
            params,
        ),
        sets,
        now,
    )
    counting = Counting()
    counting.samples = samples
    _count_profiles(profiles, counting)
    _count_sets(sets, counting)
    return counting.tallies()


def _each_referral(  # noqa: PLR0912 - one hot loop, unrolled: no calls
    rows: Any, sets: dict[tuple[str, str, str], list[Any]], now: dt.datetime
) -> dict[str, dict[tuple[str, str], list[float]]]:
    """One pass over the window's referrals: the groups of equal reasons (``"r"``) and equal
    activities (``"a"``) into ``sets`` (``(label, group, kind + set) -> [count, least
    order_key]``), and the statistics' samples per label. A hot loop over every referral: no
    calls but for the few on the waiting list."""
    multi: dict[tuple[str, str, str, str], list[Any]] = {}
    samples: dict[str, dict[tuple[str, str], list[float]]] = {}
    at, utc = dt.datetime.fromtimestamp, dt.UTC
    for label, g, first, reasons, activities, contact, conversations, since, *waiting in rows:
        if reasons:
            seen = multi.get((label, g, "r", reasons))
            if seen is None:
                multi[(label, g, "r", reasons)] = [1, first]
            else:
                seen[0] += 1
                if first < seen[1]:  # noqa: PLR1730 - a hot loop: no call
                    seen[1] = first
        if activities:
            seen = multi.get((label, g, "a", activities))
            if seen is None:
                multi[(label, g, "a", activities)] = [1, first]
            else:
                seen[0] += 1
                if first < seen[1]:  # noqa: PLR1730 - a hot loop: no call
                    seen[1] = first
        mine = samples.get(label)
        if mine is None:
            mine = samples[label] = {}
        if contact is not None:
            values = mine.get(("contact_time", g))
            if values is None:
                mine[("contact_time", g)] = [contact]
            else:
                values.append(contact)
        if conversations:
            values = mine.get(("conversations", g))
            if values is None:
                mine[("conversations", g)] = [float(conversations)]
            else:
                values.append(float(conversations))
        if since is not None:
            status, until, closed = waiting
            end = waiting_end(status, from_ts(until), from_ts(closed))
            value = days(at(since, utc), end or now)
            mine.setdefault(("waiting_time", g), []).append(value)
    for (label, g, kind, text), counted in multi.items():
        sets[(label, g, kind + text)] = counted
    return {label: mine for label, mine in samples.items() if mine}


def _count_profiles(rows: list[Any], counting: Counting) -> None:
    """The cells of each group of referrals with the same profile (cells of a profile once)."""
    known: dict[tuple[Any, ...], list[tuple[str, str]]] = {}
    for label, g, *profile, n, first in rows:
        cells = known.get(tuple(profile))
        if cells is None:
            cells = known[tuple(profile)] = _cells(*profile)
        counting.add(label, g, cells, n, first)


def _cells(  # noqa: PLR0917 - one profile row, read in order
    status: str,
    code: str | None,
    referrer: str,
    bits: int,
    contact: str | None,
    waiting: str | None,
    conversations: int | None,
) -> list[tuple[str, str]]:
    """A profile's cells, in the order one referral counts in them (``monitoring_grid``)."""
    p = _profile(status, code, referrer, bits)
    cells = [*profile_cells(p), ("referrer", referrer), *tail_cells(p)]
    if contact is not None:
        cells += [("contact_time", "n"), ("contact_days", contact)]
    cells += overdue_cells(p)
    if waiting == "now":
        cells.append(("waiting", "now"))
    if waiting is not None:
        cells.append(("waiting_time", "n"))
    if conversations:
        cells.append(("conversations", "n"))
    return cells


def _count_sets(sets: dict[tuple[str, str, str], list[Any]], counting: Counting) -> None:
    """The cells of each group of referrals with the same reasons, or the same activities (the
    cells of a set made once)."""
    known: dict[str, list[tuple[str, str]]] = {}
    for (label, g, multi), (n, first) in sets.items():
        cells = known.get(multi)
        if cells is None:
            cells = known[multi] = _set_cells(multi)
        counting.add(label, g, cells, n, first)


def _set_cells(multi: str) -> list[tuple[str, str]]:
    """The cells of ``"r"`` and the reasons, or of ``"a"`` and the activities (category, then
    role: each once)."""
    if multi.startswith("r"):
        return [("reason", code) for code in multi[1:].split(UNIT)]
    pairs = [pair.split(UNIT) for pair in multi[1:].split(RECORD)]
    cells = [("activity_category", c) for c in sorted({c for c, _r in pairs})]
    return cells + [("activity_role", r) for r in sorted({r for _c, r in pairs})]
