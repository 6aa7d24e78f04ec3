"""FHIR dates and times as spans of instants, and whether an element is current on a date.

FHIR R4 datatypes (datatypes.html#dateTime, #date, #Period): a ``dateTime`` with a time SHALL carry
a time zone, so it is one instant; ``YYYY``, ``YYYY-MM`` and ``YYYY-MM-DD`` are partial values that
stand for the whole year, month or day. This module reads partial values as those whole periods in
**Europe/Amsterdam** (the bridge's jurisdiction: a GP in the Netherlands writing ``2026-11-02``
means that Dutch calendar day). A ``Period`` includes its bounds: "the end value includes any
matching date/time" (datatypes.html#Period), so ``end`` ``2026-11-02`` reaches the last instant of
that day.

An address, telecom or name is **current** on a moment when its ``use`` is not ``old`` and its
``period`` (when present) covers that moment: a period that ended before it or starts after it
makes the element historical (or future), never current. Pure: no clock, no I/O.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final
from zoneinfo import ZoneInfo

AMSTERDAM: Final = ZoneInfo("Europe/Amsterdam")
_LATEST: Final = dt.datetime.max.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Span:
    """The instants a FHIR date or dateTime stands for: ``start <= t < end`` (aware datetimes)."""

    start: dt.datetime
    end: dt.datetime


def span(text: Any) -> Span | None:
    """The span of a FHIR ``date``/``dateTime`` string, or None when it cannot be read.

    A value with a time is the instant (to its stated precision); a partial date is the whole
    year, month or day in Europe/Amsterdam. A time without a zone, a leap second or anything
    else this cannot compute with is None (callers refuse rather than guess).
    """
    if not isinstance(text, str) or not text:
        return None
    return _instant(text) if "T" in text else _partial(text)


def _instant(text: str) -> Span | None:
    try:
        moment = dt.datetime.fromisoformat(text)
        return Span(moment, moment + dt.timedelta(microseconds=1)) if moment.tzinfo else None
    except (ValueError, OverflowError):
        return None


def _partial(text: str) -> Span | None:
    pieces = text.split("-")
    widths = [4, 2, 2][: len(pieces)]
    if len(pieces) > 3 or [len(p) for p in pieces] != widths or not all(map(str.isdigit, pieces)):
        return None
    year, month, day = [*(int(p) for p in pieces), 1, 1][:3]
    try:
        first = dt.date(year, month, day)
    except ValueError:
        return None
    try:
        if len(pieces) == 1:
            after = dt.date(year + 1, 1, 1)
        elif len(pieces) == 2:
            after = dt.date(year + (month == 12), month % 12 + 1, 1)
        else:
            after = first + dt.timedelta(days=1)
        end = dt.datetime.combine(after, dt.time(), AMSTERDAM)
    except (ValueError, OverflowError):
        end = _LATEST  # the last year, month or day there is
    start = dt.datetime.combine(first, dt.time(), AMSTERDAM)
    return Span(start, end)


def covers(period: Any, moment: Span) -> bool | None:
    """Whether a FHIR ``Period`` (bounds included) covers the whole of ``moment``.

    An absent bound is open. None when a bound cannot be read (the caller decides how to fail).
    """
    if not isinstance(period, dict):
        return None
    start, end = period.get("start"), period.get("end")
    first = span(start) if start is not None else None
    last = span(end) if end is not None else None
    if (start is not None and first is None) or (end is not None and last is None):
        return None
    return (first is None or first.start <= moment.start) and (
        last is None or moment.end <= last.end
    )


def relation(period: Any, moment: Span) -> str | None:
    """``"covers"``, ``"ended"`` (before ``moment``), ``"later"`` (starts after it) or None."""
    found = covers(period, moment)
    if found is None:
        return None
    if found:
        return "covers"
    end = span(period.get("end")) if period.get("end") is not None else None
    return "ended" if end is not None and end.end <= moment.end else "later"


def is_current(element: Any, moment: Span) -> bool:
    """True when an Address, ContactPoint or HumanName is current at ``moment``.

    Not current: ``use`` ``old``; a ``period`` that ended before ``moment`` or starts after it;
    a ``period`` that cannot be read (never guessed to be current).
    """
    if not isinstance(element, dict) or element.get("use") == "old":
        return False
    period = element.get("period")
    return period is None or covers(period, moment) is True


def current(elements: Any, moment: Span) -> list[Any]:
    """The elements of a list that are current at ``moment`` (in their order)."""
    return [e for e in elements if is_current(e, moment)] if isinstance(elements, list) else []
