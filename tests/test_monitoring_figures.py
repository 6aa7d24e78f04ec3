"""Monitoring facts and figures, pure: age bands, municipality, progress, funnel, timing."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, fields, replace
from decimal import ROUND_HALF_UP, Decimal

from hypothesis import given
from hypothesis import strategies as st

from wor_bridge.core import report_formats
from wor_bridge.core.feedback import FeedbackItem
from wor_bridge.core.monitoring import Cell, Cells, Figure, Report, compute, percent
from wor_bridge.core.monitoring_facts import (
    ReferralFacts,
    Trajectory,
    age_band,
    monitoring_key,
    municipality_of,
    progress_of,
)
from wor_bridge.core.monitoring_period import period_label, period_range
from wor_bridge.core.monitoring_settings import MonitoringSettings, MunicipalityRange, Target
from wor_bridge.core.task import Reason, TaskState

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def trajectory(
    n: int,
    *,
    sex: str = "female",
    referrer: str = "huisarts",
    status: str = "requested",
    reasons: tuple[str, ...] = ("eenzaamheid",),
    first_contact_days: float | None = None,
    municipality: str = "Tiel",
) -> Trajectory:
    """A synthetic trajectory number ``n`` (opaque; no patient data)."""
    facts = ReferralFacts(
        key=f"k{n}", received_at=T0, authored_on=T0.date(), practice="agb:01099990",
        source_system="his", referrer_type=referrer, welfare="w", municipality=municipality,
        sex=sex, age_band="65-74", reasons=reasons, deadline_at=T0 + dt.timedelta(days=7),
    )  # fmt: skip
    first = None if first_contact_days is None else T0 + dt.timedelta(days=first_contact_days)
    return Trajectory(facts, status=status, first_contact_at=first)


def cell(report, figure: str, category: str, group: str = "totaal"):
    """One cell of a computed report."""
    found = next(f for f in report.figures if f.id == figure)
    return next(c for c in found.cells if c.category == category and c.group == group)


def test_age_band_never_keeps_the_birth_date() -> None:
    """The age at the referral date becomes a band; unreadable dates are unknown."""
    edges = (18, 30, 45, 55, 65, 75, 85)
    on = dt.date(2026, 3, 2)
    assert age_band("1952-03-14", on, edges) == "65-74"
    assert age_band("1952-03-01", on, edges) == "65-74"
    assert age_band("1930-01-01", on, edges) == "85+"
    assert age_band("2015-01-01", on, edges) == "0-17"
    assert age_band("not a date", on, edges) == "onbekend"


def test_municipality_from_district_then_postcode() -> None:
    """The district (spelled as routing spells it) wins; else the postcode ranges."""
    settings = MonitoringSettings(postcodes=(MunicipalityRange(low=4000, high=4009,
                                                               municipality="Tiel"),))  # fmt: skip
    assert municipality_of([{"district": "tiel"}], settings, ("Tiel",)) == "Tiel"
    assert municipality_of([{"postalCode": "4001 AB"}], settings) == "Tiel"
    assert municipality_of([{"postalCode": "9999 ZZ"}], settings) == "onbekend"


def test_monitoring_key_is_not_the_task_id() -> None:
    """The facts' key is a stable one-way function of the Task id."""
    assert monitoring_key("task-1") == monitoring_key("task-1") != "task-1"


def test_progress_records_codes_and_times_never_free_text() -> None:
    """A closure keeps its reason code; a text-only reason becomes 'zonder-code'."""
    done = progress_of(
        TaskState("in-progress"), TaskState("cancelled", None, Reason(None, "wil niet meer")),
        (), occurred_at="2026-03-10T10:00:00+00:00", now=NOW,
    )  # fmt: skip
    assert done.reason_code == "zonder-code"
    assert done.closed_at == dt.datetime(2026, 3, 10, 10, tzinfo=dt.UTC)
    items = (
        FeedbackItem("first-contact", "2026-03-04"),
        FeedbackItem("conversation-count", "2026-03-20", 3),
        FeedbackItem("activity-started", "2026-03-21", category="natuur", role="volunteer"),
    )
    step = progress_of(TaskState("accepted"), TaskState("in-progress", "activity-started"),
                       items, occurred_at=None, now=NOW)  # fmt: skip
    assert step.first_contact_at == dt.datetime(2026, 3, 4, 12, tzinfo=dt.UTC)
    assert step.conversations == 3
    assert step.activities == (("natuur", "volunteer"),)
    assert step.activity_at is not None


def test_a_reported_time_in_the_future_is_taken_as_now() -> None:
    """A sender's clock ahead of ours never puts a milestone after the moment it arrived."""
    step = progress_of(TaskState(), TaskState("in-progress", "first-contact"), (),
                       occurred_at="2030-01-01T00:00:00+00:00", now=NOW)  # fmt: skip
    assert step.first_contact_at == NOW


def test_percent_rounds_half_up() -> None:
    """52 of 53 is 98.1; 1 of 8 is 12.5; 1 of 16 is 6.3 (half up, not to even)."""
    assert percent(52, 53) == 98.1
    assert percent(1, 8) == 12.5
    assert percent(1, 16) == 6.3


@given(st.integers(0, 10**7), st.integers(1, 10**7))
def test_percent_is_the_decimal_half_up_rounding(count: int, denominator: int) -> None:
    """The whole-number rounding gives what decimal arithmetic rounding half up gives."""
    exact = (Decimal(100 * count) / Decimal(denominator)).quantize(
        Decimal("0.1"), rounding=ROUND_HALF_UP
    )
    assert percent(count, denominator) == float(exact)


def test_periods_have_labels_and_ranges() -> None:
    """Month, quarter and year labels and their half-open date ranges."""
    day = dt.date(2026, 11, 2)
    assert [period_label(day, p) for p in ("month", "quarter", "year")] == [
        "2026-11", "2026-Q4", "2026"
    ]  # fmt: skip
    assert period_range("2026-Q4") == (dt.date(2026, 10, 1), dt.date(2027, 1, 1))
    assert period_range("2026-12") == (dt.date(2026, 12, 1), dt.date(2027, 1, 1))


def test_time_to_first_contact_median_p75_and_deadline_share() -> None:
    """Contacts after 1..20 days: median 10.5, p75 15, 7 of 20 within the 7-day deadline."""
    items = [trajectory(i, first_contact_days=i + 1) for i in range(20)]
    report = compute(items, period="year", breakdown="total", settings=MonitoringSettings(),
                     now=NOW)  # fmt: skip
    assert cell(report, "first_contact_time", "median_days").value == 10.5
    assert cell(report, "first_contact_time", "p75_days").value == 15.0
    within = cell(report, "first_contact_deadline", "within")
    assert (within.count, within.denominator, within.percent) == (7, 20, 35.0)


def test_a_share_is_not_given_when_its_complement_is_withheld() -> None:
    """7 within and 3 late: the 3 is withheld, so neither the 10 nor a percentage is given."""
    items = [trajectory(i, first_contact_days=i + 1) for i in range(10)]
    report = compute(items, period="year", breakdown="total", settings=MonitoringSettings(),
                     now=NOW)  # fmt: skip
    within = cell(report, "first_contact_deadline", "within")
    assert (within.count, within.denominator, within.percent) == (7, None, None)


def test_open_referrals_past_the_deadline_are_overdue() -> None:
    """Six open referrals without contact, past their deadline, are overdue among 6 open."""
    items = [trajectory(i) for i in range(6)] + [
        trajectory(10 + i, status="completed", first_contact_days=1) for i in range(5)
    ]
    report = compute(items, period="year", breakdown="total", settings=MonitoringSettings(),
                     now=NOW)  # fmt: skip
    overdue = cell(report, "overdue", "overdue")
    assert (overdue.count, overdue.denominator) == (6, 6)


def test_statistics_need_enough_referrals() -> None:
    """Four contacts: no median is published."""
    items = [trajectory(i, first_contact_days=2) for i in range(4)]
    report = compute(items, period="year", breakdown="total", settings=MonitoringSettings(),
                     now=NOW)  # fmt: skip
    assert cell(report, "first_contact_time", "median_days").value is None


def test_referrals_next_to_target_and_coach_hours() -> None:
    """A municipality's yearly target is shown per quarter pro rata, with its coach hours."""
    target = Target(unit="municipality", value="Tiel", year=2026, referrals=40,
                    coach_hours_per_week=8)  # fmt: skip
    items = [trajectory(i) for i in range(12)]
    report = compute(items, period="quarter", breakdown="municipality",
                     settings=MonitoringSettings(targets=(target,)), now=NOW)  # fmt: skip
    assert cell(report, "target", "referrals", "Tiel").count == 12
    assert cell(report, "target", "target", "Tiel").value == 10.0
    assert cell(report, "target", "target", "Tiel").percent == 120.0
    assert cell(report, "target", "coach_hours_per_week", "Tiel").value == 8.0


def test_no_group_describes_a_single_referral() -> None:
    """A breakdown group with one referral publishes no non-zero count."""
    items = [trajectory(i) for i in range(8)] + [trajectory(99, sex="male")]
    report = compute(items, period="year", breakdown="sex", settings=MonitoringSettings(),
                     now=NOW)  # fmt: skip
    for figure in report.figures:
        for c in figure.cells:
            if c.group == "male":
                assert c.count in (None, 0)
                assert c.value is None or figure.id == "target"


def _journeys() -> list[Trajectory]:
    """40 referrals, ten of each kind: waiting, in contact, active and completed, cancelled."""
    day = dt.timedelta(days=1)
    out = []
    for i in range(40):
        t, kind = trajectory(i), i // 10
        if kind == 0:  # on the waiting list since the referral (90.625 days at NOW)
            t = replace(t, waiting_since=T0)
        elif kind == 1:  # first contact, waited 10 days, 2 conversations
            t = replace(t, status="in-progress", first_contact_at=T0 + day,
                        waiting_since=T0, waiting_until=T0 + 10 * day, conversations=2)  # fmt: skip
        elif kind == 2:  # an activity, completed; half followed up
            acts = (("natuur", "participant"),) if i % 2 else (
                ("bewegen", "participant"), ("natuur", "vrijwilliger"))  # fmt: skip
            t = replace(t, status="completed", reason_code="doel-bereikt", first_contact_at=T0,
                        activity_at=T0 + day, closed_at=T0 + 9 * day, conversations=4,
                        follow_up_at=T0 + 30 * day if i % 2 else None, activities=acts)  # fmt: skip
        else:  # cancelled without contact; feedback reached the GP
            t = replace(t, status="cancelled", reason_code="geen-contact",
                        closed_at=T0 + 20 * day, feedback_at=T0 + 20 * day)  # fmt: skip
        out.append(t)
    return out


def test_funnel_closures_activities_waiting_and_conversations() -> None:
    """The funnel counts each stage reached or passed (of n = 40), closures by status and reason
    (of the closed), activities by category and role (of those with an activity), the waiting
    list now with the waiting time, conversations per trajectory, feedback yes/no."""
    report = compute(_journeys(), period="year", breakdown="total",
                     settings=MonitoringSettings(), now=NOW)  # fmt: skip
    funnel = {s: cell(report, "funnel", s) for s in
              ("referred", "accepted", "first-contact", "intake", "activity", "closed",
               "follow-up")}  # fmt: skip
    assert {s: (c.count, c.percent) for s, c in funnel.items()} == {
        "referred": (40, 100.0), "accepted": (20, 50.0), "first-contact": (20, 50.0),
        "intake": (10, 25.0), "activity": (10, 25.0), "closed": (20, 50.0),
        "follow-up": (5, 12.5),
    }  # fmt: skip
    assert cell(report, "outcome", "open").count == 20
    closed = [cell(report, "closure", c) for c in ("completed:doel-bereikt",
                                                   "cancelled:geen-contact")]  # fmt: skip
    assert [(c.count, c.denominator, c.percent) for c in closed] == [(10, 20, 50.0)] * 2
    assert [(cell(report, "activity_categories", c).count,
             cell(report, "activity_categories", c).percent) for c in ("bewegen", "natuur")] == [
        (5, 50.0), (10, 100.0)]  # fmt: skip
    assert [cell(report, "activity_roles", r).count for r in ("participant", "vrijwilliger")] == [
        10, 5]  # fmt: skip
    assert (cell(report, "waiting_list", "now").count,
            cell(report, "waiting_list", "now").percent) == (10, 25.0)  # fmt: skip
    assert cell(report, "waiting_time", "n").count == 20
    assert cell(report, "waiting_time", "median_days").value == 50.3  # (10 + 90.625) / 2
    assert cell(report, "waiting_time", "p75_days").value == 90.6
    assert cell(report, "conversations", "median").value == 3.0
    assert cell(report, "conversations", "mean").value == 3.0
    assert [cell(report, "feedback", f).percent for f in ("yes", "no")] == [25.0, 75.0]


@given(
    st.builds(
        Cell,
        period=st.text(max_size=7),
        group=st.text(max_size=12),
        category=st.text(max_size=12),
        count=st.none() | st.integers(min_value=0),
        denominator=st.none() | st.integers(min_value=0),
        percent=st.none() | st.floats(allow_nan=False),
        value=st.none() | st.floats(allow_nan=False),
        suppressed=st.booleans(),
    )
)
def test_a_cell_is_written_as_all_its_fields_in_order(cell: Cell) -> None:
    """A JSON cell has every field of ``Cell``, in declaration order, with its value."""
    written = report_formats.to_json(
        Report("month", "total", 5, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), ("2026-01",), "alles",
               (Figure("f", "t", "u", "d", "", Cells.of((cell,))),))
    )["figures"][0]["cells"][0]  # fmt: skip
    assert list(written) == [f.name for f in fields(Cell)]
    assert written == asdict(cell)
