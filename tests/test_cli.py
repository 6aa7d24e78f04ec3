"""The ``wor-bridge`` console script, run for real in a subprocess.

Exit codes: 0 done, 2 refused (OperationOutcome on stdout), 1 internal or configuration error (one
line on stderr). Every run also checks that stderr holds no traceback and none of the fixture
patient's identifying values.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

REPO = Path(__file__).resolve().parents[1]
REFERRALS = REPO / "fixtures" / "referral"
ACCEPTED = REFERRALS / "accepted-contained" / "input.json"
ACCEPTED_XML = REFERRALS / "accepted-xml-contained" / "input.xml"
REFUSED = REFERRALS / "refused-no-z68" / "input.json"
EXECUTABLE = Path(sys.executable).parent / "wor-bridge"
# The fixture patient: BSN, family name, phone. They must never reach stderr.
PATIENT_VALUES = ("999990007", "Jansen", "06-00000001")
TIMEOUT = 60


def _run(
    *args: str | Path, stdin: bytes | None = None, command: list[str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run the CLI (``python -m wor_bridge.cli`` unless ``command`` is given) from the repo root."""
    argv = [*(command or [sys.executable, "-m", "wor_bridge.cli"]), *map(str, args)]
    proc = subprocess.run(
        argv,
        input=stdin if stdin is not None else b"",
        capture_output=True,
        cwd=REPO,
        timeout=TIMEOUT,
        check=False,
    )
    stderr = proc.stderr.decode("utf-8", errors="replace")
    assert "Traceback" not in stderr, "the CLI must not print a traceback"
    for value in PATIENT_VALUES:
        # Name which kind of value leaked by position only, never the value itself.
        assert value not in stderr, f"patient value #{PATIENT_VALUES.index(value)} on stderr"
    return proc


def _json(proc: subprocess.CompletedProcess[bytes]) -> Any:
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def mapped_stdout() -> bytes:
    """stdout of ``map`` for the accepted contained referral (the reference for other runs)."""
    proc = _run("map", ACCEPTED)
    assert proc.returncode == 0
    return proc.stdout


def _copy_config(tmp_path: Path) -> tuple[Path, Path]:
    """The shipped config and mappings under tmp_path; returns (toml path, default mapping path)."""
    shutil.copytree(REPO / "mappings", tmp_path / "mappings")
    text = (REPO / "config" / "wor-bridge.toml").read_text(encoding="utf-8")
    text, count = re.subn(r'(?m)^mappings_dir\s*=\s*"[^"]*"', 'mappings_dir = "mappings"', text)
    assert count == 1, "the shipped config must have exactly one mappings_dir line"
    toml = tmp_path / "wor-bridge.toml"
    toml.write_text(text, encoding="utf-8")
    return toml, tmp_path / "mappings" / "destinations" / "wor-r4-default.json"


def test_map_prints_transaction_bundle(mapped_stdout: bytes) -> None:
    """``map`` of an accepted referral exits 0 and prints a JSON transaction Bundle on stdout."""
    bundle = json.loads(mapped_stdout)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction"
    assert bundle["entry"]


def test_map_stdin_matches_file(mapped_stdout: bytes) -> None:
    """``map -`` with the same bytes on stdin prints byte-identical stdout."""
    proc = _run("map", "-", stdin=ACCEPTED.read_bytes())
    assert proc.returncode == 0
    assert proc.stdout == mapped_stdout


def test_installed_executable_matches_module(mapped_stdout: bytes) -> None:
    """The installed ``wor-bridge`` script maps like ``python -m wor_bridge.cli``."""
    assert EXECUTABLE.is_file(), f"console script not installed at {EXECUTABLE}"
    proc = _run("map", ACCEPTED, command=[str(EXECUTABLE)])
    assert proc.returncode == 0
    assert proc.stdout == mapped_stdout


def test_map_xml_input_matches_json_input(mapped_stdout: bytes) -> None:
    """``map`` of the XML form of the referral (detected from the bytes) prints the same Bundle."""
    proc = _run("map", ACCEPTED_XML)
    assert proc.returncode == 0
    assert proc.stdout == mapped_stdout


def test_map_format_xml_prints_fhir_xml() -> None:
    """``map --format xml`` prints a FHIR XML Bundle."""
    proc = _run("map", "--format", "xml", ACCEPTED)
    assert proc.returncode == 0
    assert proc.stdout.startswith((b"<?xml", b"<Bundle"))
    root = etree.fromstring(proc.stdout.strip())
    assert root.tag == "{http://hl7.org/fhir}Bundle"
    bundle_type = root.find("{http://hl7.org/fhir}type")
    assert bundle_type is not None
    assert bundle_type.get("value") == "transaction"


def test_map_refused_exits_2_with_operation_outcome() -> None:
    """``map`` of a refused referral exits 2 and prints the OperationOutcome on stdout."""
    proc = _run("map", REFUSED)
    assert proc.returncode == 2
    outcome = _json(proc)
    assert outcome["resourceType"] == "OperationOutcome"
    assert all(issue["severity"] == "error" for issue in outcome["issue"])
    assert any(
        issue["code"] == "business-rule" and issue.get("expression") == ["ServiceRequest.code"]
        for issue in outcome["issue"]
    )
    assert not any(value.encode() in proc.stdout for value in PATIENT_VALUES)


def test_validate_accepted_prints_information() -> None:
    """``validate`` of an accepted referral exits 0 with an informational OperationOutcome."""
    proc = _run("validate", ACCEPTED)
    assert proc.returncode == 0
    outcome = _json(proc)
    assert outcome["resourceType"] == "OperationOutcome"
    assert [issue["severity"] for issue in outcome["issue"]] == ["information"]


def test_validate_refused_exits_2() -> None:
    """``validate`` of a refused referral exits 2 with an error OperationOutcome."""
    proc = _run("validate", REFUSED)
    assert proc.returncode == 2
    outcome = _json(proc)
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"]
    assert all(issue["severity"] == "error" for issue in outcome["issue"])


def test_verbose_logs_hold_no_patient_data() -> None:
    """``--verbose`` logs on stderr for mapped and refused referrals hold no patient values."""
    mapped = _run("--verbose", "map", ACCEPTED)
    refused = _run("--verbose", "map", REFUSED)
    assert (mapped.returncode, refused.returncode) == (0, 2)
    assert b"referral_mapped" in mapped.stderr
    assert b"referral_refused" in refused.stderr


def test_missing_input_exits_1_with_one_line(tmp_path: Path) -> None:
    """A missing input file exits 1 with a one-line message on stderr and nothing on stdout."""
    proc = _run("map", tmp_path / "absent.json")
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert len(proc.stderr.decode().strip().splitlines()) == 1


def test_broken_toml_is_configuration_error(tmp_path: Path) -> None:
    """A ``--config`` file that is not valid TOML exits 1 with a configuration error."""
    broken = tmp_path / "broken.toml"
    broken.write_text('mappings_dir = "../mappings\n[output\n', encoding="utf-8")
    proc = _run("map", "--config", broken, ACCEPTED)
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert "configuration error" in proc.stderr.decode()


def test_copied_config_maps_like_shipped_one(tmp_path: Path, mapped_stdout: bytes) -> None:
    """The shipped config copied to another folder (mappings_dir adjusted) maps the same."""
    toml, _ = _copy_config(tmp_path)
    proc = _run("map", "--config", toml, ACCEPTED)
    assert proc.returncode == 0
    assert proc.stdout == mapped_stdout


def test_unknown_transform_is_configuration_error(tmp_path: Path) -> None:
    """A mapping rule with an unknown transform exits 1 with a configuration error."""
    toml, mapping_path = _copy_config(tmp_path)
    mapping = json.loads(mapping_path.read_text(encoding="utf-8"))
    mapping["patient"][0]["transform"] = "nope"
    mapping_path.write_text(json.dumps(mapping), encoding="utf-8")
    proc = _run("map", "--config", toml, ACCEPTED)
    assert proc.returncode == 1
    assert proc.stdout == b""
    stderr = proc.stderr.decode()
    assert "configuration error" in stderr
    assert "unknown transform 'nope'" in stderr
