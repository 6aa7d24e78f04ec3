"""Counting the monitoring tables in SQLite for a report: the SQL that reads one window of
referrals in a fixed order with their flags, and the counting that turns those rows into the
report's tallies (``core.monitoring_grid``), exactly as the pure path does. A helper of
``sqlite_monitoring``; no writes.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from wor_bridge.adapters.sqlite_rows import from_ts
from wor_bridge.core.monitoring_grid import (
    CONTACT_BINS,
    Profile,
    Tally,
    contact_bin,
    days,
    overdue_cells,
    profile_cells,
    tail_cells,
    tally_of_counts,
    waiting_end,
)

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


def _compare(a: str, op: str, b: str, b_us: str) -> str:
    """SQL for ``a op b`` on the times as ``from_ts`` reads them (whole microseconds): the
    stored REALs decide unless they are within a millisecond, then ``wor_us`` does."""
    return f"(CASE WHEN ABS({a} - {b}) > 0.001 THEN {a} {op} {b} ELSE wor_us({a}) {op} {b_us} END)"


FLAGS: Final = (
    "(accepted_at IS NOT NULL) + 2 * (first_contact_at IS NOT NULL) + 4 * (intake_at IS NOT NULL)"
    " + 8 * (activity_at IS NOT NULL) + 16 * (follow_up_at IS NOT NULL)"
    " + 32 * (feedback_at IS NOT NULL) + 64 * (deadline_at IS NOT NULL)"
    f" + 128 * (deadline_at IS NOT NULL AND {_compare('deadline_at', '<', ':now', ':now_us')})"
    " + 256 * (deadline_at IS NOT NULL AND first_contact_at IS NOT NULL"
    f" AND {_compare('first_contact_at', '<=', 'deadline_at', 'wor_us(deadline_at)')})"
)


def _profile(status: str, reason_code: str | None, referrer: str, bits: int) -> Profile:
    return Profile(
        status=status, reason_code=reason_code, referrer_type=referrer, accepted=bool(bits & 1),
        first_contact=bool(bits & 2), intake=bool(bits & 4), activity=bool(bits & 8),
        follow_up=bool(bits & 16), feedback=bool(bits & 32), deadline=bool(bits & 64),
        deadline_passed=bool(bits & 128), on_time=bool(bits & 256),
    )  # fmt: skip


class Counting:
    """Counts per period label: ``(group, variable, category) -> [count, first rank]``."""

    def __init__(self) -> None:
        self.cells: dict[str, dict[tuple[str, str, str], list[int]]] = {}
        self.samples: dict[str, dict[tuple[str, str], list[float]]] = {}

    def add(self, label: str, g: str, var: str, category: str, n: int, rank: int) -> None:  # noqa: PLR0917 - a hot loop, one call shape
        mine = self.cells.setdefault(label, {})
        seen = mine.get((g, var, category))
        if seen is None:
            mine[(g, var, category)] = [n, rank]
        else:
            seen[0] += n
            seen[1] = min(seen[1], rank)

    def sample(self, label: str, g: str, var: str, value: float) -> None:
        self.samples.setdefault(label, {}).setdefault((var, g), []).append(value)

    def tallies(self) -> dict[str, Tally]:
        return {
            label: tally_of_counts(
                ((g, var, c, n, rank) for (g, var, c), (n, rank) in cells.items()),
                self.samples.get(label, {}),
            )
            for label, cells in self.cells.items()
        }


def count_rows(rows: Any, now: dt.datetime, counting: Counting) -> None:
    """Count the referral rows (oldest first, so a cell's first rank is the first referral
    counted in it). Referrals with the same profile, or the same reasons or activities, are
    counted together and expanded into their cells once (``_expand``)."""
    at, utc = dt.datetime.fromtimestamp, dt.UTC
    profiles: dict[tuple[Any, ...], list[int]] = {}
    sets: dict[tuple[str, str, str], list[int]] = {}
    samples = counting.samples
    for rank, row in enumerate(rows):
        _key, label, g, status, _code, _referrer, _bits, received, first = row[:9]
        extra: tuple[Any, ...] = ()
        if first is not None:
            waited = days(at(received, utc), at(first, utc))
            samples.setdefault(label, {}).setdefault(("contact_time", g), []).append(waited)
            extra = (contact_bin(waited),)
        closed, since, until, conversations = row[9:13]
        if since is not None:
            end = waiting_end(status, from_ts(until), from_ts(closed))
            waited = days(at(since, utc), end or now)
            samples.setdefault(label, {}).setdefault(("waiting_time", g), []).append(waited)
            extra += ("now" if end is None else "ended",)
        if conversations is not None and conversations > 0:
            samples.setdefault(label, {}).setdefault(("conversations", g), []).append(
                float(conversations)
            )
            extra += ("conversations",)
        profile = (*row[1:7], extra)
        seen = profiles.get(profile)
        if seen is None:
            profiles[profile] = [1, rank]
        else:
            seen[0] += 1
        for multi in row[13:]:
            if multi is not None:
                seen = sets.get((label, g, multi))
                if seen is None:
                    sets[(label, g, multi)] = [1, rank]
                else:
                    seen[0] += 1
    _expand(profiles, sets, counting)


def _expand(
    profiles: dict[tuple[Any, ...], list[int]],
    sets: dict[tuple[str, str, str], list[int]],
    counting: Counting,
) -> None:
    """The cells of each distinct profile and each distinct set of reasons or activities."""
    for (label, g, status, code, referrer, bits, extra), (n, rank) in profiles.items():
        p = _profile(status, code, referrer, bits)
        cells = [*profile_cells(p), ("referrer", p.referrer_type), *tail_cells(p)]
        if extra and extra[0] in _BINS:
            cells += [("contact_time", "n"), ("contact_days", extra[0])]
        cells += overdue_cells(p)
        if "now" in extra:
            cells.append(("waiting", "now"))
        if "now" in extra or "ended" in extra:
            cells.append(("waiting_time", "n"))
        if "conversations" in extra:
            cells.append(("conversations", "n"))
        for var, category in cells:
            counting.add(label, g, var, category, n, rank)
    for (label, g, multi), (n, rank) in sets.items():
        if multi.startswith(_REASONS):
            for code in multi[1:].split(_UNIT):
                counting.add(label, g, "reason", code, n, rank)
            continue
        pairs = [pair.split(_UNIT) for pair in multi[1:].split(_RECORD)]
        for category in sorted({c for c, _r in pairs}):
            counting.add(label, g, "activity_category", category, n, rank)
        for role in sorted({r for _c, r in pairs}):
            counting.add(label, g, "activity_role", role, n, rank)


_BINS: Final = frozenset(label for _top, label in CONTACT_BINS)
_UNIT, _RECORD, _REASONS, _ACTIVITIES = "\x1f", "\x1e", "r", "a"
SETS_SQL: Final = (
    "(SELECT 'r' || group_concat(code, char(31)) FROM monitoring_reason x WHERE x.key = m.key),"
    " (SELECT 'a' || group_concat(category || char(31) || role, char(30))"
    " FROM monitoring_activity x WHERE x.key = m.key)"
)
