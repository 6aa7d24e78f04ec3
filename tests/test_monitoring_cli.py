"""``wor-bridge report`` (the installed console script) over a real SQLite store filled through
the service: each format, the data dictionary after the CSV, a practice's own part only, the
threshold never below the configuration, and every run audited. No patient data in the output."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cases import PATIENT_VALUES
from tests.inprocess import World
from tests.monitoring_cases import empty_world, push, seed_reasons

SCRIPT = Path(sys.executable).parent / "wor-bridge"


@pytest.fixture(scope="module")
def seeded_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[World, Path]:
    """The 53 referrals of the seed example, pushed through the service; the configuration."""
    tmp_path = tmp_path_factory.mktemp("report-cli")
    world = empty_world(tmp_path)
    for number, reasons in enumerate(seed_reasons()):
        push(world, number, reasons)
    return world, tmp_path / "c.toml"


def run(config: Path, *args: str) -> str:
    """``wor-bridge report --config config args``; its stdout (asserting exit 0, no leak)."""
    proc = subprocess.run(
        [str(SCRIPT), "report", "--config", str(config), "--period", "year", *args],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert proc.returncode == 0, err[-2000:]
    leaks = [n for n, value in enumerate(PATIENT_VALUES) if value in out + err]
    assert not leaks, f"patient values #{leaks} in the output"  # indexes only, never values
    return out


def test_json_gives_the_seed_example(seeded_store: tuple[World, Path]) -> None:
    """JSON: the reasons of the 53 referrals as 98.1% ... 37.7% of n = 53."""
    _world, config = seeded_store
    report = json.loads(run(config, "--format", "json"))
    reasons = next(f for f in report["figures"] if f["id"] == "reasons")
    shares = {c["category"]: c["percent"] for c in reasons["cells"] if c["group"] == "totaal"}
    assert sorted(shares.values(), reverse=True) == [98.1, 86.8, 69.8, 52.8, 49.1, 37.7]
    assert {c["denominator"] for c in reasons["cells"]} == {53}


def test_csv_is_followed_by_its_data_dictionary(seeded_store: tuple[World, Path]) -> None:
    """CSV: the data, one empty line, then a dictionary explaining every column and figure."""
    _world, config = seeded_store
    data, dictionary = run(config, "--format", "csv", "--breakdown", "sex").split("\n\n", 1)
    rows = list(csv.DictReader(io.StringIO(data)))
    assert {r["breakdown"] for r in rows} == {"sex"}
    explained = dictionary.lower()
    for column in rows[0]:
        assert column in explained, column
    for figure in {r["figure"] for r in rows}:
        assert figure in explained, figure


def test_html_and_measure_reports(seeded_store: tuple[World, Path]) -> None:
    """HTML is one self-contained page; measurereport is a FHIR Bundle of MeasureReports."""
    _world, config = seeded_store
    page = run(config, "--format", "html")
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page
    bundle = json.loads(run(config, "--format", "measurereport"))
    assert bundle["resourceType"] == "Bundle"
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} == {"MeasureReport"}


def test_a_practice_sees_its_own_part_and_the_threshold_holds(
    seeded_store: tuple[World, Path], tmp_path: Path
) -> None:
    """``--practice`` of another practice counts nothing; ``--threshold 1`` stays 5; written to a
    file with the dictionary next to it; every run is audited as a CLI report."""
    world, config = seeded_store
    before = world.last_audit_id()
    other = json.loads(run(config, "--practice", "agb:00000000"))
    assert other["periods"] == []
    assert other["scope"] == "praktijk agb:00000000"
    low = json.loads(run(config, "--threshold", "1"))
    assert low["threshold"] == 5
    target = tmp_path / "r.csv"
    assert run(config, "--format", "csv", "--output", str(target)) == ""
    assert target.read_text(encoding="utf-8").startswith("figure,period,breakdown,group")
    assert target.with_suffix(".dictionary.csv").stat().st_size > 0
    rows = [r for r in world.audit(before) if r["event"] == "monitoring_report"]
    assert [r["detail"].split(";")[0] for r in rows] == ["cli", "cli", "cli"]
    assert "scope=praktijk agb:00000000" in rows[0]["detail"]
