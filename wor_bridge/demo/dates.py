"""The demo's dates: current, so that nothing it sends looks overdue.

The fixture referrals were authored on ``FIXTURE_DAY`` (2026-11-02). Pushed unchanged weeks later,
their first-contact deadline (``authoredOn`` + 7 days) is long past, and a GP record that receives
them would get an urgent "overdue" alert per referral. The demo moves every date of a referral by
the same number of days, so that it was authored yesterday (Europe/Amsterdam) and a booked
appointment stays three days after it; birth dates (before 2026) are left alone. The welfare
system's reports follow the referral on the same day (``moment``), so none is in the future.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from wor_bridge.core.period import AMSTERDAM

FIXTURE_DAY: Final = dt.date(2026, 11, 2)
"""The day the fixture referrals were authored."""
_DATE: Final = re.compile(rb"(?<![0-9])(20[2-9][0-9])-([01][0-9])-([0-3][0-9])(?![0-9])")


def referral_day(now: dt.datetime | None = None) -> dt.date:
    """The day the demo's referrals are authored: yesterday in Europe/Amsterdam."""
    moment_now = now or dt.datetime.now(dt.UTC)
    return moment_now.astimezone(AMSTERDAM).date() - dt.timedelta(days=1)


def current(data: bytes, day: dt.date) -> bytes:
    """``data`` (a fixture referral, JSON or XML) with every date from 2026 on moved by the days
    between ``FIXTURE_DAY`` and ``day``; times and zones unchanged."""
    shift = day - FIXTURE_DAY

    def moved(match: re.Match[bytes]) -> bytes:
        year, month, mday = (int(g) for g in match.groups())
        if year < FIXTURE_DAY.year:
            return match.group(0)
        return (dt.date(year, month, mday) + shift).isoformat().encode("ascii")

    return _DATE.sub(moved, data)


def moment(day: dt.date, hour: int, minute: int = 0) -> str:
    """``day`` at ``hour:minute`` in Europe/Amsterdam, as an ISO date-time with its offset."""
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=AMSTERDAM).isoformat()
