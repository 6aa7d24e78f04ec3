"""Golden files: every fixture case maps to its reviewed expected Bundle or OperationOutcome."""

from __future__ import annotations

import json

import pytest

import wor_bridge
from tests.cases import FIXTURES, PATIENT_VALUES, case_input, case_names
from wor_bridge.core import fhir
from wor_bridge.core.settings import Settings


def _compare(name: str, produced: bytes, expected_name: str, update: bool) -> None:
    path = FIXTURES / name / expected_name
    if update or not path.exists():
        path.write_bytes(produced + b"\n")
        if not update:
            pytest.fail(f"{name}: golden {expected_name} was missing; written, review it")
    assert produced + b"\n" == path.read_bytes(), f"{name}: output differs from {expected_name}"


@pytest.mark.parametrize("name", case_names("accepted-"))
def test_accepted_case_matches_golden_bundle(
    name: str, settings: Settings, update_goldens: bool
) -> None:
    """An accepted case maps to exactly its golden transaction Bundle."""
    result = wor_bridge.translate(case_input(name), None, settings)
    produced = fhir.canonical_json(result.bundle, pretty=True)
    _compare(name, produced, "expected.bundle.json", update_goldens)


@pytest.mark.parametrize("name", case_names("refused-"))
def test_refused_case_matches_golden_outcome(
    name: str, settings: Settings, update_goldens: bool
) -> None:
    """A refused case raises a refusal whose OperationOutcome is exactly the golden one."""
    with pytest.raises(wor_bridge.RefusedError) as caught:
        wor_bridge.translate(case_input(name), None, settings)
    outcome = wor_bridge.operation_outcome(caught.value.issues)
    produced = fhir.canonical_json(outcome, pretty=True)
    _compare(name, produced, "expected.outcome.json", update_goldens)


@pytest.mark.parametrize("name", case_names("refused-"))
def test_refusal_names_location_and_never_patient_values(name: str, settings: Settings) -> None:
    """Every refusal issue is an error with a code and a location, and repeats no patient value."""
    with pytest.raises(wor_bridge.RefusedError) as caught:
        wor_bridge.translate(case_input(name), None, settings)
    outcome = wor_bridge.operation_outcome(caught.value.issues)
    assert fhir.round_trip(outcome)["resourceType"] == "OperationOutcome"
    text = json.dumps(outcome, ensure_ascii=False) + str(caught.value)
    leaks = [n for n, value in enumerate(PATIENT_VALUES) if value in text]
    assert not leaks, f"patient values #{leaks} in the refusal"  # indexes only, never values
    for issue in outcome["issue"]:
        assert issue["severity"] == "error"
        assert issue["code"] in {
            "invalid",
            "structure",
            "required",
            "business-rule",
            "not-supported",
            "security",
            "too-costly",
        }
        assert issue.get("expression") or issue.get("location")


def test_fixture_set_covers_at_least_ten_accepted_and_ten_refused() -> None:
    """The golden set holds at least 10 accepted and 10 refused cases, XML among both."""
    accepted, refused = case_names("accepted-"), case_names("refused-")
    assert len(accepted) >= 10
    assert len(refused) >= 10
    assert any((FIXTURES / n / "input.xml").exists() for n in accepted)
    assert any((FIXTURES / n / "input.xml").exists() for n in refused)


def test_json_and_xml_of_the_same_referral_map_identically(settings: Settings) -> None:
    """The contained referral gives the same Bundle whether pushed as JSON or as XML."""
    from_json = wor_bridge.translate(case_input("accepted-contained"), None, settings).bundle
    from_xml = wor_bridge.translate(case_input("accepted-xml-contained"), None, settings).bundle
    assert fhir.canonical_json(from_json) == fhir.canonical_json(from_xml)


def test_contained_and_bundle_inputs_map_to_the_same_resources(settings: Settings) -> None:
    """Contained, urn:uuid Bundle and relative-reference Bundle shapes yield the same output."""
    outputs = {
        fhir.canonical_json(wor_bridge.translate(case_input(n), None, settings).bundle)
        for n in (
            "accepted-contained",
            "accepted-bundle-transaction-urn",
            "accepted-bundle-collection-relative",
        )
    }
    assert len(outputs) == 1
