"""The report's JSON text written from its cell rows equals ``json.dumps`` of ``to_json``."""

from __future__ import annotations

import datetime as dt
import json

from hypothesis import given
from hypothesis import strategies as st

from tests.test_monitoring_figures import NOW, trajectory
from wor_bridge.core import report_formats
from wor_bridge.core.monitoring import Cell, Cells, Figure, Report, compute
from wor_bridge.core.monitoring_settings import MonitoringSettings, Target
from wor_bridge.core.report_json import json_text

OPTIONS = ((True, None), (False, None), (True, 2), (False, 2), (False, 4), (True, 0))

CELLS = st.builds(
    Cell,
    period=st.text(max_size=7),
    group=st.text(max_size=12),
    category=st.text(max_size=12),
    count=st.none() | st.integers(min_value=0),
    denominator=st.none() | st.integers(min_value=0),
    percent=st.none() | st.floats(allow_nan=True),
    value=st.none() | st.floats(allow_nan=True) | st.integers(),
    suppressed=st.booleans(),
)
FIGURES = st.builds(
    Figure,
    id=st.text(max_size=8),
    title=st.text(max_size=20),
    unit=st.text(max_size=8),
    denominator=st.text(max_size=8),
    note=st.text(max_size=8),
    cells=st.lists(CELLS, max_size=6).map(Cells.of),
)
REPORTS = st.builds(
    Report,
    period=st.sampled_from(("month", "quarter", "year")),
    breakdown=st.sampled_from(("total", "practice", "municipality")),
    threshold=st.integers(min_value=1, max_value=20),
    generated_at=st.datetimes(timezones=st.just(dt.UTC)),
    periods=st.lists(st.text(max_size=7), max_size=3).map(tuple),
    scope=st.text(max_size=20),
    figures=st.lists(FIGURES, max_size=4).map(tuple),
)


def _dumped(report: Report, ensure_ascii: bool, indent: int | None) -> str:
    return json.dumps(report_formats.to_json(report), ensure_ascii=ensure_ascii, indent=indent)


@given(REPORTS)
def test_json_text_is_json_dumps_of_to_json(report: Report) -> None:
    """Any report (any text, NaN, infinities, ints as values, no figures or no cells) is
    written byte for byte as ``json.dumps(to_json(report))`` with each option."""
    for ensure_ascii, indent in OPTIONS:
        expected = _dumped(report, ensure_ascii, indent)
        assert json_text(report, ensure_ascii=ensure_ascii, indent=indent) == expected


def test_json_text_of_a_computed_report() -> None:
    """A computed report with a breakdown, withheld cells, statistics and targets is written as
    ``json.dumps`` writes its ``to_json``, in the formats the CLI and the service use."""
    items = [trajectory(i, municipality="Tiel" if i % 3 else "Súdwest-Fryslân") for i in range(40)]
    items += [trajectory(100 + i, municipality="Buren", first_contact_days=i) for i in range(2)]
    target = Target(
        unit="municipality", value="Tiel", year=2026, referrals=40, coach_hours_per_week=8
    )
    report = compute(items, period="month", breakdown="municipality",
                     settings=MonitoringSettings(targets=(target,)), now=NOW)  # fmt: skip
    assert any(c.suppressed for f in report.figures for c in f.cells)
    for ensure_ascii, indent in ((False, 2), (False, None), (True, None)):
        expected = _dumped(report, ensure_ascii, indent)
        assert json_text(report, ensure_ascii=ensure_ascii, indent=indent) == expected
