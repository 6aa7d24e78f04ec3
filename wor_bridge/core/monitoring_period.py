"""Report periods: month, quarter or year, their labels and date ranges. Pure."""

from __future__ import annotations

import datetime as dt
from typing import Final, Literal

Period = Literal["month", "quarter", "year"]
PERIODS: Final[tuple[Period, ...]] = ("month", "quarter", "year")


def period_label(day: dt.date, period: Period) -> str:
    """``2026-03``, ``2026-Q1`` or ``2026``."""
    if period == "month":
        return f"{day.year}-{day.month:02d}"
    if period == "quarter":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return str(day.year)


def period_range(label: str) -> tuple[dt.date, dt.date]:
    """``[first day, first day after)`` of a period label; ValueError when it is not one."""
    if len(label) == 4 and label.isdigit():
        year = int(label)
        return dt.date(year, 1, 1), dt.date(year + 1, 1, 1)
    year_text, _, rest = label.partition("-")
    year = int(year_text)
    if rest.startswith("Q") and rest[1:] in ("1", "2", "3", "4"):
        month = 3 * (int(rest[1:]) - 1) + 1
        end = dt.date(year + 1, 1, 1) if month == 10 else dt.date(year, month + 3, 1)
        return dt.date(year, month, 1), end
    month = int(rest)
    end = dt.date(year + 1, 1, 1) if month == 12 else dt.date(year, month + 1, 1)
    return dt.date(year, month, 1), end
