"""The per-referral pass of the monitoring count (``sqlite_tallies.count_rows``): the groups of
referrals with the same referrer type, closure, reasons or activities, and the statistics'
samples, from one row per referral. A helper of ``sqlite_tallies``; no SQL, no writes.

The rows come newest ``order_key`` first, so a plain dict built from ``(key, order_key)`` pairs
keeps each key's least ``order_key`` (its first referral) without a comparison per row, and
``collections.Counter`` counts the keys in C.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Sequence
from operator import itemgetter
from typing import Any, Final

from wor_bridge.adapters.sqlite_monitoring_derived import RECORD, UNIT
from wor_bridge.adapters.sqlite_rows import from_ts
from wor_bridge.core.monitoring_cells import days, waiting_end

KINDS: Final = (("t", 3), ("c", 4), ("r", 5), ("a", 6))
"""Each kind of set (referrer type, closure, reasons, activities) and its column in a row."""
Sets = dict[tuple[str, str, str], list[Any]]
"""``(label, group, kind + text) -> [count, least order_key]``."""
Samples = dict[str, dict[tuple[str, str], list[float]]]
"""Per label: ``(variable, group) -> values``."""


def count_referrals(rows: Sequence[Sequence[Any]], now: dt.datetime) -> tuple[Sets, Samples]:
    """The sets and samples of the window's referrals. ``rows``: label, group, ``order_key``,
    referrer type, closure (``sqlite_tallies.CLOSURE``, NULL when open), reasons, activities
    (``sqlite_monitoring_derived``'s texts), ``contact_days``, conversations,
    ``waiting_since``, status, ``waiting_until``, ``closed_at``; ordered by ``order_key``
    descending (bytewise)."""
    sets: Sets = {}
    first_of = itemgetter(0)
    for kind, column in KINDS:
        pairs = [
            ((r[0], r[1], kind + r[column]), r[2])
            for r in rows
            if r[column] or (kind == "t" and r[column] is not None)  # an empty type counts
        ]
        firsts = dict(pairs)  # the last pair of a key wins: its least order_key
        for key, n in Counter(map(first_of, pairs)).items():
            sets[key] = [n, firsts[key]]
    return sets, _samples(rows, now)


def _samples(rows: Sequence[Sequence[Any]], now: dt.datetime) -> Samples:
    """The values of the statistics per label, variable and group (a hot loop: no calls but
    for the few on the waiting list)."""
    samples: Samples = {}
    at, utc = dt.datetime.fromtimestamp, dt.UTC
    for label, g, *_sets, contact, conversations, since, status, until, closed in rows:
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
            end = waiting_end(status, from_ts(until), from_ts(closed))
            value = days(at(since, utc), end or now)
            mine.setdefault(("waiting_time", g), []).append(value)
    return {label: mine for label, mine in samples.items() if mine}


def set_cells(multi: str) -> list[tuple[str, str]]:
    """The cells of ``"t"`` and a referrer type, ``"c"`` and a closure, ``"r"`` and the
    reasons, or of ``"a"`` and the activities (category, then role: each once)."""
    if multi.startswith("t"):
        return [("referrer", multi[1:])]
    if multi.startswith("c"):
        return [("closure", multi[1:])]
    if multi.startswith("r"):
        return [("reason", code) for code in multi[1:].split(UNIT)]
    pairs = [pair.split(UNIT) for pair in multi[1:].split(RECORD)]
    cells = [("activity_category", c) for c in sorted({c for c, _r in pairs})]
    return cells + [("activity_role", r) for r in sorted({r for _c, r in pairs})]
