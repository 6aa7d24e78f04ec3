"""Monitoring through the service: the published seed example, formats, tenancy and audit."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.measure import Measure

from tests.cases import REPO
from tests.inprocess import ADMIN, HIS, WELFARE, World
from tests.monitoring_cases import (
    MUNICIPALITY_KEY,
    PRACTICE_KEY,
    SEED,
    cells,
    empty_world,
    push,
    seed_reasons,
)
from wor_bridge.adapters.sqlite_monitoring_derived import order_key

SEED_PERCENT = {
    "eenzaamheid": 98.1,
    "psychische-klachten": 86.8,
    "vastlopen": 69.8,
    "chronische-psychische-aandoening": 52.8,
    "chronische-ziekte": 49.1,
    "ongezonde-leefstijl": 37.7,
}


def seeded(tmp_path: Path) -> World:
    """The service after the 53 synthetic referrals of the seed example."""
    world = empty_world(tmp_path)
    for number, reasons in enumerate(seed_reasons()):
        push(world, number, reasons)
    return world


def report(world: World, key: str = ADMIN, **params: str) -> dict[str, object]:
    """The JSON report (asserting 200)."""
    answer = world.call("GET", "/reports/monitoring", key, params={"period": "year", **params})
    assert answer.status_code == 200, answer.status_code
    return dict(answer.json())


def test_seed_example_is_reproduced_exactly(tmp_path: Path) -> None:
    """53 referrals with the published reason counts give 98.1% ... 37.7% of n = 53."""
    world = seeded(tmp_path)
    reasons = cells(report(world), "reasons")
    for code, count in SEED:
        assert reasons[code]["count"] == count
        assert reasons[code]["denominator"] == 53
        assert reasons[code]["percent"] == SEED_PERCENT[code]
    assert round(sum(SEED_PERCENT.values()), 1) == 394.3
    assert cells(report(world), "referrals")["referred"]["count"] == 53


def test_reasons_figure_states_unit_and_denominator(tmp_path: Path) -> None:
    """Every figure states its counting unit and denominator; reasons say they exceed 100%."""
    world = seeded(tmp_path)
    figures = report(world)["figures"]
    assert isinstance(figures, list)
    assert all(f["unit"] and f["denominator"] for f in figures)
    reasons = next(f for f in figures if f["id"] == "reasons")
    assert "100%" in reasons["note"]


def test_csv_has_a_data_dictionary(tmp_path: Path) -> None:
    """The CSV's columns and figures are each explained in the data dictionary."""
    world = seeded(tmp_path)
    data = world.call("GET", "/reports/monitoring", ADMIN, params={"format": "csv"})
    assert data.status_code == 200
    assert data.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(data.text)))
    assert {"figure", "count", "denominator", "percent", "suppressed"} <= set(rows[0])
    words = world.call("GET", "/reports/monitoring/dictionary.csv", ADMIN)
    entries = list(csv.DictReader(io.StringIO(words.text)))
    named = {e["name"] for e in entries}
    assert set(rows[0]) <= named
    assert {r["figure"] for r in rows} <= named


def test_measure_reports_validate_against_shipped_measures(tmp_path: Path) -> None:
    """MeasureReports parse with the R4 models and each names a Measure under mappings/."""
    world = seeded(tmp_path)
    answer = world.call("GET", "/reports/monitoring", ADMIN, params={"format": "measurereport"})
    assert answer.status_code == 200
    bundle = Bundle.model_validate(answer.json())
    measures = {
        Measure.model_validate(json.loads(p.read_text(encoding="utf-8"))).url
        for p in (REPO / "mappings" / "measures").glob("*.json")
    }
    used = {e.resource.measure for e in bundle.entry or []}
    assert used
    assert used <= measures


def test_practice_client_sees_only_its_practice(tmp_path: Path) -> None:
    """A practice client counts its own practice's referrals; another practice's see none."""
    world = seeded(tmp_path)
    own = report(world, PRACTICE_KEY)
    assert cells(own, "referrals")["referred"]["count"] == 53
    assert "01099990" in str(own["scope"])


def test_municipality_client_sees_only_its_municipality(tmp_path: Path) -> None:
    """A municipality client sees only referrals of patients in its municipality."""
    world = empty_world(tmp_path)
    for number in range(6):
        push(world, number, ["eenzaamheid"], district="Tiel" if number < 5 else "Buren")
    mine = cells(report(world, MUNICIPALITY_KEY), "referrals")
    assert mine["referred"]["count"] == 5
    everyone = cells(report(world, ADMIN), "referrals")
    assert everyone["referred"]["count"] == 6


def test_small_cells_are_withheld_through_the_service(tmp_path: Path) -> None:
    """Four referrals: the count is withheld and no percentage is given."""
    world = empty_world(tmp_path)
    for number in range(4):
        push(world, number, ["eenzaamheid"])
    reasons = cells(report(world), "reasons")
    assert reasons["eenzaamheid"]["count"] is None
    assert reasons["eenzaamheid"]["suppressed"] is True
    assert reasons["eenzaamheid"]["percent"] is None


def test_report_needs_the_report_scope_and_is_audited(tmp_path: Path) -> None:
    """No key is 401, a key without report:read is 403; every request is audited."""
    world = seeded(tmp_path)
    before = world.last_audit_id()
    assert world.call("GET", "/reports/monitoring").status_code == 401
    assert world.call("GET", "/reports/monitoring", HIS).status_code == 403
    assert world.call("GET", "/reports/monitoring", WELFARE).status_code == 403
    report(world, PRACTICE_KEY)
    rows = [r for r in world.audit(before) if r["event"] == "monitoring_report"]
    assert [r["outcome"] for r in rows] == ["refused", "refused", "refused", "success"]
    assert all(r["patient_id"] == "" for r in rows)
    assert rows[-1]["user"] == "praktijk-linde"


def test_bad_parameters_are_refused(tmp_path: Path) -> None:
    """An unknown period, breakdown, format or threshold is 400 with its location."""
    world = empty_world(tmp_path)
    for params in ({"period": "week"}, {"breakdown": "bsn"}, {"format": "pdf"},
                   {"threshold": "0"}, {"since": "gisteren"}):  # fmt: skip
        answer = world.call("GET", "/reports/monitoring", ADMIN, params=params)
        assert answer.status_code == 400
        assert answer.json()["resourceType"] == "OperationOutcome"


def test_threshold_is_never_lowered_below_the_configuration(tmp_path: Path) -> None:
    """Asking for threshold 1 still withholds counts below the configured 5."""
    world = empty_world(tmp_path)
    for number in range(3):
        push(world, number, ["eenzaamheid"])
    body = report(world, threshold="1")
    assert body["threshold"] == 5
    assert cells(body, "referrals")["referred"]["count"] is None


def test_monitoring_tables_hold_no_patient_data(tmp_path: Path) -> None:
    """No BSN, name, birth date, postcode, HIS number or Task id in the monitoring tables: not in
    any text, not as any number, and ``order_key`` is only the row's own date, time and key."""

    world = seeded(tmp_path)
    with sqlite3.connect(world.store_path) as db:
        db.row_factory = sqlite3.Row
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'"
                                           " AND name LIKE 'monitoring_%'")]  # fmt: skip
        rows = [dict(row) for t in tables for row in db.execute(f"SELECT * FROM {t}")]
        task_ids = [r[0] for r in db.execute("SELECT task_id FROM referral")]
    for row in rows:
        if "order_key" in row:
            assert row.pop("order_key") == order_key(
                row["authored_on"], row["received_at"], row["key"]
            )
    text = " ".join(v for row in rows for v in row.values() if isinstance(v, str))
    numbers = {v for row in rows for v in row.values() if isinstance(v, int | float)}
    for value in ("999990007", "Jansen", "Pieter", "1952", "3511", "MON-2026", "06-0000"):
        assert value not in text
    assert not numbers & {999990007, 1952, 3511}
    assert not any(t in text for t in task_ids)


def test_measure_reports_use_only_what_their_measure_declares(tmp_path: Path) -> None:
    """One shipped Measure per figure, stating the figure's unit and denominator; each
    MeasureReport's populations and stratifier are ones its Measure declares."""
    world = seeded(tmp_path)
    answer = world.call("GET", "/reports/monitoring", ADMIN,
                        params={"format": "measurereport", "breakdown": "practice"})  # fmt: skip
    assert answer.status_code == 200
    measures = {
        m["url"]: m
        for m in (
            json.loads(p.read_text(encoding="utf-8"))
            for p in (REPO / "mappings" / "measures").glob("*.json")
        )
    }
    figures = {f["id"]: f for f in report(world)["figures"]}
    assert {url.rsplit("/", 1)[-1] for url in measures} == set(figures)
    for url, measure in measures.items():
        figure = figures[url.rsplit("/", 1)[-1]]
        described = [p["description"] for p in measure["group"][0]["population"]]
        assert described == [figure["unit"], figure["denominator"]], url
    reports = [e["resource"] for e in answer.json()["entry"]]
    assert any(g.get("stratifier") for r in reports for g in r["group"])
    for r in reports:
        declared = measures[r["measure"]]["group"][0]
        populations = {c["code"] for p in declared["population"] for c in p["code"]["coding"]}
        strata = {c["code"] for s in declared["stratifier"] for c in s["code"]["coding"]}
        for group in r["group"]:
            assert {c["code"] for p in group["population"] for c in p["code"]["coding"]} <= (
                populations
            )
            for stratifier in group.get("stratifier", []):
                assert {c["code"] for k in stratifier["code"] for c in k["coding"]} <= strata
