"""Clocks for ``ports.Clock``: the system clock, and a fixed one that tests move by hand."""

from __future__ import annotations

import datetime as dt
import threading


class SystemClock:
    """The real time, in UTC."""

    def now(self) -> dt.datetime:
        """The current time as an aware UTC datetime."""
        return dt.datetime.now(dt.UTC)


class FixedClock:
    """A clock that stands still until told to move (for tests)."""

    def __init__(self, start: dt.datetime) -> None:
        self._lock = threading.Lock()
        self._now = _utc(start)

    def now(self) -> dt.datetime:
        """The time the clock was set to."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward (or back, when negative)."""
        with self._lock:
            self._now += dt.timedelta(seconds=seconds)

    def set(self, when: dt.datetime) -> None:
        """Set the clock to ``when`` (an aware datetime)."""
        with self._lock:
            self._now = _utc(when)


def _utc(when: dt.datetime) -> dt.datetime:
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("a clock needs an aware datetime (got a naive one)")
    return when.astimezone(dt.UTC)
