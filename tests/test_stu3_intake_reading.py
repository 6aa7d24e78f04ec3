"""STU3 intake (reading and locations): R4 refusal locations told at the STU3 element, the
STU3 reader as hardened as the R4 one, XML, auto-detection and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.stu3_intake_cases import R4_FIXTURES, STU3_PATIENT_VALUES, stu3_case, stu3_input
from wor_bridge.core import inbound
from wor_bridge.core.settings import Settings
from wor_bridge.core.stu3 import intake
from wor_bridge.core.stu3.location import relocate
from wor_bridge.errors import InboundError, Issue, MappingError


@pytest.mark.parametrize(
    ("r4", "stu3"),
    [
        ("code", "type"),
        ("category", "type"),
        ("code.coding[0].code", "type.coding[0].code"),
        ("requester", "requester.agent"),
        ("requester.reference", "requester.agent.reference"),
        ("performer[0]", "recipient[0]"),
        ("reasonCode[0].text", "reasonCode[0].text"),
        ("patientInstruction", ""),
        ("contained[4].provision.type", "contained[4].policyRule"),
        ("contained[4].policyRule.coding[0]", "contained[4].policyRule"),
        ("contained[4].provision.period.end", "contained[4].period.end"),
        ("contained[4].provision.provision[0].type", "contained[4].except[0].type"),
        (
            "contained[4].provision.provision[0].code[0].coding[0].code",
            "contained[4].except[0].code[0].code",
        ),
        ("contained[4].provision", "contained[4]"),
        ("contained[4].scope", "contained[4]"),
        ("contained[4].identifier[0]", "contained[4].identifier"),
        ("contained[0].name[0].family", "contained[0].name[0].family"),
        ("contained[2].organization", "contained[2].organization"),
    ],
)  # fmt: skip
def test_r4_locations_are_told_at_the_stu3_element(r4: str, stu3: str) -> None:
    """Each R4 location in the converted contained referral names its STU3 element."""
    converted = intake.convert_input(stu3_input("accepted-contained"), None, max_bytes=1 << 20)
    issue = Issue("invalid", f"ServiceRequest.{r4}", "must be a ServiceRequest element")
    moved = relocate(issue, converted.r4_root, converted.stu3_root)
    assert moved.expression == f"ReferralRequest.{stu3}".rstrip(".")
    assert "ServiceRequest" not in moved.diagnostics.split(" (read as FHIR R4")[0]


def test_r4_locations_in_a_bundle_keep_the_entry_and_rename_inside_it() -> None:
    """In a Bundle the entry stays, the ReferralRequest entry's elements get STU3 names."""
    converted = intake.convert_input(
        stu3_input("accepted-bundle-transaction-urn"), None, max_bytes=1 << 20
    )
    sr = next(
        i for i, e in enumerate(converted.r4_root["entry"])
        if e["resource"]["resourceType"] == "ServiceRequest"
    )  # fmt: skip
    cases = {
        f"Bundle.entry[{sr}].resource.code": f"Bundle.entry[{sr}].resource.type",
        f"Bundle.entry[{sr}].request.url": f"Bundle.entry[{sr}].request.url",
        "Bundle.entry[4].resource.provision.type": "Bundle.entry[4].resource.policyRule",
        "Bundle.type": "Bundle.type",
        "(body)": "(body)",
    }
    for r4, stu3 in cases.items():
        issue = Issue("invalid", r4, "must be there")
        assert relocate(issue, converted.r4_root, converted.stu3_root).expression == stu3


def test_an_r4_only_element_is_reported_at_its_holder_naming_the_r4_element() -> None:
    """An R4 element STU3 lacks is reported at the resource, the diagnostic naming it."""
    converted = intake.convert_input(stu3_input("accepted-contained"), None, max_bytes=1 << 20)
    issue = Issue("required", "ServiceRequest.patientInstruction", "must give the reason")
    moved = relocate(issue, converted.r4_root, converted.stu3_root)
    assert moved.expression == "ReferralRequest"
    assert moved.diagnostics.endswith(
        "(read as FHIR R4 ServiceRequest.patientInstruction, which STU3 has no element for)"
    )


def test_reason_read_from_an_r4_only_path_refuses_stu3_input(settings: Settings) -> None:
    """With the help question read from patientInstruction only, STU3 input is refused (fail
    closed, at the ReferralRequest), never accepted without a reason."""
    gates = settings.gates.model_copy(update={"reason_paths": ("patientInstruction",)})
    narrow = settings.model_copy(update={"gates": gates})
    with pytest.raises(MappingError) as caught:
        intake.translate(stu3_input("accepted-contained"), None, narrow)
    assert [i.expression for i in caught.value.issues] == ["ReferralRequest"]


def test_stu3_reader_keeps_the_hardening_of_the_r4_reader() -> None:
    """DOCTYPE, duplicate JSON names and control characters are refused in STU3 input too."""
    xml = stu3_input("accepted-xml-contained")
    doctype = xml.replace(b"<ReferralRequest", b'<!DOCTYPE x [<!ENTITY a "b">]><ReferralRequest', 1)
    duplicate = stu3_input("accepted-contained").replace(
        b'"status": "active",', b'"status": "active", "status": "draft",', 1
    )
    control = stu3_input("accepted-contained").replace(b'"Jansen"', b'"Jan\\u0001sen"', 1)
    expected = {
        doctype: ("security", "(body)"),
        duplicate: ("structure", "ReferralRequest.status"),
        control: ("invalid", "ReferralRequest.contained[0].name[0].family"),
    }
    for data, (code, where) in expected.items():
        with pytest.raises(InboundError) as caught:
            intake.convert_input(data, None, max_bytes=1 << 20)
        assert (caught.value.issues[0].code, caught.value.issues[0].expression) == (code, where)


def test_stu3_input_is_refused_over_the_size_limit() -> None:
    """The body limit applies to STU3 input as to R4 (too-costly at the body)."""
    with pytest.raises(InboundError) as caught:
        intake.convert_input(stu3_input("accepted-contained"), None, max_bytes=1024)
    assert caught.value.issues[0].code == "too-costly"


def test_stu3_reader_refuses_another_declared_fhir_version() -> None:
    """A Content-Type declaring fhirVersion 4.0 is refused by the STU3 reader (415 location)."""
    with pytest.raises(InboundError) as caught:
        inbound.read(
            stu3_input("accepted-contained"),
            "application/fhir+json; fhirVersion=4.0",
            max_bytes=1 << 20,
            version="STU3",
        )
    assert caught.value.issues[0].expression == "(content-type)"


def test_xml_stu3_input_reads_like_its_json() -> None:
    """The STU3 XML reader gives the dict the STU3 JSON reader gives."""
    as_json = inbound.read(
        stu3_input("accepted-contained"), None, max_bytes=1 << 20, version="STU3"
    )
    as_xml = inbound.read(
        stu3_input("accepted-xml-contained"), None, max_bytes=1 << 20, version="STU3"
    )
    assert as_xml == as_json


def test_looks_stu3_detects_a_referral_request_in_json_and_xml() -> None:
    """Auto-detection: a ReferralRequest (JSON resourceType or XML element) means STU3."""
    assert intake.looks_stu3(stu3_input("accepted-contained"))
    assert intake.looks_stu3(stu3_input("accepted-xml-transaction-urn"))
    r4 = (R4_FIXTURES / "accepted-contained" / "input.json").read_bytes()
    r4_xml = (R4_FIXTURES / "accepted-xml-bundle" / "input.xml").read_bytes()
    assert not intake.looks_stu3(r4)
    assert not intake.looks_stu3(r4_xml)


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        [sys.executable, "-m", "wor_bridge.cli", *args],
        capture_output=True,
        timeout=60,
        check=False,
    )
    stderr = proc.stderr.decode("utf-8", errors="replace")
    assert "Traceback" not in stderr
    assert not [n for n, v in enumerate(STU3_PATIENT_VALUES) if v in stderr]
    return proc


def _outcome_paths(proc: subprocess.CompletedProcess[bytes]) -> list[Any]:
    return [i.get("expression", i.get("location")) for i in json.loads(proc.stdout)["issue"]]


def test_cli_map_reads_stu3_by_auto_detection_and_by_fhir_version() -> None:
    """``map`` maps STU3 input (detected, or --fhir-version 3.0) to the golden R4 Bundle."""
    path = str(stu3_case("accepted-xml-contained") / "input.xml")
    golden = json.loads((stu3_case("accepted-xml-contained") / "expected.bundle.json").read_bytes())
    for extra in ([], ["--fhir-version", "3.0"]):
        proc = _cli("map", path, *extra)
        assert proc.returncode == 0
        assert json.loads(proc.stdout) == golden


def test_cli_validate_refuses_stu3_at_stu3_locations_exit_2() -> None:
    """``validate`` of an STU3 opt-out exits 2 with the refusal at the STU3 policyRule."""
    proc = _cli("validate", str(stu3_case("refused-consent-optout") / "input.json"))
    assert proc.returncode == 2
    assert _outcome_paths(proc) == [["ReferralRequest.contained[4].policyRule"]]


def test_cli_fhir_version_chooses_the_reader_whatever_the_content() -> None:
    """--fhir-version 4.0 reads STU3 as R4 (refused: no ServiceRequest), 3.0 reads R4 as STU3."""
    stu3 = str(stu3_case("accepted-contained") / "input.json")
    r4 = str(R4_FIXTURES / "accepted-contained" / "input.json")
    as_r4 = _cli("validate", stu3, "--fhir-version", "4.0")
    as_stu3 = _cli("validate", r4, "--fhir-version", "3.0")
    assert (as_r4.returncode, as_stu3.returncode) == (2, 2)
    assert _outcome_paths(as_r4) == [["resourceType"]]
    assert _outcome_paths(as_stu3) == [["resourceType"]]
    assert _cli("validate", r4).returncode == 0


def test_empty_bundle_entry_is_refused_so_locations_stay_aligned() -> None:
    """An empty STU3 entry (which the conversion would drop, shifting every later entry) is 400
    at that entry."""
    bundle = json.loads(stu3_input("accepted-bundle-transaction-urn"))
    bundle["entry"].insert(2, {})
    with pytest.raises(InboundError) as caught:
        intake.convert_input(json.dumps(bundle).encode(), None, max_bytes=1 << 20)
    assert [(i.code, i.expression) for i in caught.value.issues] == [
        ("structure", "Bundle.entry[2]")
    ]
