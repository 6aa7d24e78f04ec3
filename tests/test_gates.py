"""Gates and routing on variations of the contained fixture referral."""

from __future__ import annotations

import json
from typing import Any

import pytest

import wor_bridge
from tests.cases import case_input
from wor_bridge.core.settings import Routing, Settings


def _referral() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(case_input("accepted-contained"))
    return data


def _part(sr: dict[str, Any], rtype: str) -> dict[str, Any]:
    part: dict[str, Any] = next(p for p in sr["contained"] if p["resourceType"] == rtype)
    return part


def _issues(sr: dict[str, Any], settings: Settings) -> list[tuple[str, str]]:
    with pytest.raises(wor_bridge.RefusedError) as caught:
        wor_bridge.translate(json.dumps(sr).encode(), "application/fhir+json", settings)
    return [(i.code, i.expression) for i in caught.value.issues]


def test_consent_of_another_patient_is_refused(settings: Settings) -> None:
    """A Consent whose patient is not the referred patient does not count as consent."""
    sr = _referral()
    other = dict(_part(sr, "Patient"), id="other")
    sr["contained"].append(other)
    _part(sr, "Consent")["patient"] = {"reference": "#other"}
    assert ("business-rule", "ServiceRequest.contained[4].patient") in _issues(sr, settings)


def test_consent_that_ended_before_the_referral_is_refused(settings: Settings) -> None:
    """A consent provision that ended before authoredOn is not active for this referral."""
    sr = _referral()
    _part(sr, "Consent")["provision"]["period"] = {"start": "2025-01-01", "end": "2025-12-31"}
    assert ("business-rule", "ServiceRequest.contained[4].provision.period.end") in _issues(
        sr, settings
    )


def test_consent_without_disclosure_category_or_privacy_scope_is_refused(
    settings: Settings,
) -> None:
    """A treatment consent (no IDSCL, no patient-privacy scope) is not a consent to share."""
    sr = _referral()
    consent = _part(sr, "Consent")
    consent["scope"] = {
        "coding": [
            {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "treatment"}
        ]
    }
    consent["category"] = [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}]
    assert ("business-rule", "ServiceRequest.contained[4].category") in _issues(sr, settings)


def test_unresolvable_subject_reference_is_refused(settings: Settings) -> None:
    """A subject reference that resolves to nothing in the input is named, not crashed on."""
    sr = _referral()
    sr["subject"] = {"reference": "Patient/elsewhere"}
    issues = _issues(sr, settings)
    assert ("invalid", "ServiceRequest.subject") in issues
    assert ("business-rule", "ServiceRequest.contained[4].patient") not in issues


def test_draft_or_proposal_referral_is_refused(settings: Settings) -> None:
    """Only active orders are forwarded: draft status and proposal intent are both named."""
    sr = _referral()
    sr["status"], sr["intent"] = "draft", "proposal"
    issues = _issues(sr, settings)
    assert ("business-rule", "ServiceRequest.status") in issues
    assert ("business-rule", "ServiceRequest.intent") in issues


def test_missing_referral_identifier_and_date_are_refused(settings: Settings) -> None:
    """Without the HIS referral identifier and authoredOn there are no stable ids: refused."""
    sr = _referral()
    del sr["identifier"], sr["authoredOn"]
    issues = _issues(sr, settings)
    assert ("required", "ServiceRequest.identifier") in issues
    assert ("required", "ServiceRequest.authoredOn") in issues


def test_reason_is_read_from_a_configured_field(settings: Settings) -> None:
    """With reason_paths including note.text, a help question in a note is accepted."""
    sr = _referral()
    del sr["reasonCode"][0]["text"]
    sr["note"] = [{"text": "Wil graag nieuwe mensen leren kennen"}]
    bundle = wor_bridge.map_referral(json.dumps(sr).encode(), None, settings)
    request = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"
    )
    assert request["reasonCode"][0]["text"] == "Wil graag nieuwe mensen leren kennen"
    assert "note" not in request


def test_custom_wor_marker_replaces_the_defaults(settings: Settings) -> None:
    """A configuration with its own marker refuses the default one and accepts its own."""
    custom = settings.model_copy(
        update={
            "gates": settings.gates.model_copy(
                update={
                    "wor_markers": (
                        wor_bridge.core.settings.Coding(system="urn:example:regio", code="WOR-1"),
                    )
                }
            )
        }
    )
    sr = _referral()
    assert ("business-rule", "ServiceRequest.category") in _issues(sr, custom)
    sr["category"] = [{"coding": [{"system": "urn:example:regio", "code": "WOR-1"}]}]
    assert wor_bridge.map_referral(json.dumps(sr).encode(), None, custom)["type"] == "transaction"


def test_no_route_without_catch_all_is_refused(settings: Settings) -> None:
    """Without a catch-all, a practice and postcode nobody routes is refused with a clear issue."""
    strict = settings.model_copy(
        update={"routing": Routing(practices={"01099998": "welzijn-voorbeeld"})}
    )
    issues = _issues(_referral(), strict)
    assert issues == [("business-rule", "ServiceRequest.contained[2].organization")]


def test_routing_prefers_practice_then_postcode_then_municipality(settings: Settings) -> None:
    """Practice AGB wins over postcode; postcode over municipality; else the catch-all."""
    sr = _referral()
    assert wor_bridge.translate(json.dumps(sr).encode(), None, settings).destination.id == (
        "welzijn-voorbeeld"
    )
    _part(sr, "Patient")["address"][0]["district"] = "Tiel"
    assert wor_bridge.translate(json.dumps(sr).encode(), None, settings).destination.id == (
        "welzijn-rivierenland"
    )
    _part(sr, "Patient")["address"][0]["district"] = "Utrecht"
    _part(sr, "Patient")["address"][0]["postalCode"] = "4050 AB"
    assert wor_bridge.translate(json.dumps(sr).encode(), None, settings).destination.id == (
        "welzijn-rivierenland"
    )


def test_first_contact_deadline_follows_configuration(settings: Settings) -> None:
    """Task.restriction.period.end is authoredOn plus the configured number of days."""
    three = settings.model_copy(
        update={"output": settings.output.model_copy(update={"first_contact_days": 3})}
    )
    bundle = wor_bridge.map_referral(case_input("accepted-contained"), None, three)
    task = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
    assert task["restriction"]["period"]["end"] == "2026-11-05T10:15:00+01:00"


def test_oversized_body_is_refused_before_parsing(settings: Settings) -> None:
    """A body over max_body_bytes is refused as too-costly without being read."""
    body = b"{" + b" " * settings.max_body_bytes + b"}"
    with pytest.raises(wor_bridge.InboundError) as caught:
        wor_bridge.translate(body, None, settings)
    assert caught.value.issues[0].code == "too-costly"


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("application/fhir+json", True),
        ("application/fhir+json; charset=utf-8", True),
        ("application/json", True),
        ("text/plain", False),
        ("application/fhir+xml", False),
    ],
)
def test_content_type_decides_the_parser(settings: Settings, content_type: str, ok: bool) -> None:
    """JSON media types parse JSON bytes; an XML type on JSON bytes or text/plain is refused."""
    data = case_input("accepted-contained")
    if ok:
        assert wor_bridge.map_referral(data, content_type, settings)["type"] == "transaction"
    else:
        with pytest.raises(wor_bridge.InboundError):
            wor_bridge.map_referral(data, content_type, settings)
