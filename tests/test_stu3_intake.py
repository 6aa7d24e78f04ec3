"""STU3 intake (core): STU3 referrals give the R4 Bundle of their R4 equivalent (goldens), refusals
are STU3 OperationOutcomes at STU3 elements, an STU3 opt-out is refused, lost elements are named."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from lxml import etree

import wor_bridge
from tests.stu3_intake_cases import (
    R4_FIXTURES,
    STU3_PATIENT_VALUES,
    stu3_case,
    stu3_case_names,
    stu3_input,
    with_equivalent,
)
from wor_bridge.core import fhir, fhirxml
from wor_bridge.core.settings import Settings
from wor_bridge.core.stu3 import intake
from wor_bridge.errors import InboundError, MappingError, RefusedError

ACCEPTED = stu3_case_names("accepted-")
REFUSED = stu3_case_names("refused-")
UNREADABLE = {  # 400: not STU3 the bridge can read; every other refusal is 422 (the gates)
    "refused-invalid-stu3",
    "refused-invalid-stu3-status",
    "refused-r4-servicerequest",
    "refused-unsupported-resource",
}
OPT_OUT = "http://hl7.org/fhir/ConsentPolicy/opt-out"
Json = dict[str, Any]


def _compare(name: str, produced: bytes, expected_name: str, update: bool) -> None:
    path = stu3_case(name) / expected_name
    if update or not path.exists():
        path.write_bytes(produced + b"\n")
        if not update:
            pytest.fail(f"{name}: golden {expected_name} was missing; written, review it")
    assert produced + b"\n" == path.read_bytes(), f"{name}: output differs from {expected_name}"


def _refusal(name: str, settings: Settings) -> RefusedError:
    with pytest.raises(RefusedError) as caught:
        intake.translate(stu3_input(name), None, settings)
    return caught.value


def _stu3_document(name: str) -> Json:
    """The STU3 input as FHIR JSON (XML read by the STU3 element model)."""
    data = stu3_input(name)
    if data.lstrip().startswith(b"<"):
        read = fhirxml.read(etree.fromstring(data), "STU3")
        assert isinstance(read, dict)
        return read
    loaded: Json = json.loads(data)
    return loaded


def _names_stu3_elements(expression: str, root: Json) -> bool:
    """Every name in ``expression`` is an element of its STU3 parent in ``root`` (indices only
    where STU3 repeats the element)."""
    if expression == "resourceType":
        return True
    first, *parts = expression.split(".")
    type_name: str | None = first
    node: Any = root
    if first != root.get("resourceType"):
        return False
    for part in parts:
        name, indices = re.fullmatch(r"(\w+)((?:\[\d+\])*)", part).groups()  # type: ignore[union-attr]
        info = fhir.stu3_elements(type_name).get(name) if type_name else None
        if info is None or (indices and not info.is_list):
            return False
        node = node.get(name) if isinstance(node, dict) else None
        for index in re.findall(r"\d+", indices):
            node = node[int(index)] if isinstance(node, list) else None
        if info.kind == "resource":
            type_name = node.get("resourceType") if isinstance(node, dict) else None
        else:
            type_name = info.type_name if info.kind == "complex" else None
    return True


@pytest.mark.parametrize("name", ACCEPTED)
def test_accepted_stu3_case_matches_golden_bundle(
    name: str, settings: Settings, update_goldens: bool
) -> None:
    """An accepted STU3 case maps to exactly its golden R4 transaction Bundle."""
    result = intake.translate(stu3_input(name), None, settings)
    _compare(
        name,
        fhir.canonical_json(result.bundle, pretty=True),
        "expected.bundle.json",
        update_goldens,
    )


@pytest.mark.parametrize("name", with_equivalent(ACCEPTED))
def test_stu3_case_gives_the_bundle_of_its_equivalent_r4_input(
    name: str, settings: Settings
) -> None:
    """An STU3 referral and the R4 referral with the same content give byte-identical Bundles."""
    r4 = (stu3_case(name) / "equivalent.r4.json").read_bytes()
    from_r4 = wor_bridge.translate(r4, None, settings)
    from_stu3 = intake.translate(stu3_input(name), None, settings)
    assert fhir.canonical_json(from_stu3.bundle) == fhir.canonical_json(from_r4.bundle)
    assert from_stu3.ids == from_r4.ids
    assert from_stu3.destination == from_r4.destination


@pytest.mark.parametrize(
    "name", [n for n in ACCEPTED if (R4_FIXTURES / n / "expected.bundle.json").exists()]
)
def test_stu3_golden_is_the_reviewed_r4_golden_of_the_same_case(name: str) -> None:
    """Where an R4 fixture has the same name, the STU3 golden is its reviewed golden, byte for
    byte (the R4 fixture carries the WoR marker in category, the STU3 one in type)."""
    stu3_golden = (stu3_case(name) / "expected.bundle.json").read_bytes()
    assert stu3_golden == (R4_FIXTURES / name / "expected.bundle.json").read_bytes()


def test_xml_and_json_stu3_inputs_map_identically(settings: Settings) -> None:
    """The same STU3 referral as JSON and as XML (contained and Bundle) gives the same Bundle."""
    for json_case, xml_case in (
        ("accepted-contained", "accepted-xml-contained"),
        ("accepted-bundle-transaction-urn", "accepted-xml-transaction-urn"),
    ):
        from_json = intake.translate(stu3_input(json_case), None, settings).bundle
        from_xml = intake.translate(stu3_input(xml_case), "application/fhir+xml", settings).bundle
        assert from_json == from_xml


@pytest.mark.parametrize("name", REFUSED)
def test_refused_stu3_case_matches_golden_outcome(
    name: str, settings: Settings, update_goldens: bool
) -> None:
    """A refused STU3 case gives exactly its golden OperationOutcome, as 400 or 422."""
    err = _refusal(name, settings)
    assert isinstance(err, InboundError if name in UNREADABLE else MappingError)
    outcome = fhir.canonical_json(wor_bridge.operation_outcome(err.issues), pretty=True)
    _compare(name, outcome, "expected.outcome.json", update_goldens)


@pytest.mark.parametrize("name", REFUSED)
def test_stu3_refusal_is_stu3_at_stu3_elements_and_never_patient_values(
    name: str, settings: Settings
) -> None:
    """Refusals validate as STU3 OperationOutcomes, name STU3 elements only, leak no value."""
    err = _refusal(name, settings)
    outcome = wor_bridge.operation_outcome(err.issues)
    assert fhir.validate_stu3(outcome, "OperationOutcome") == []
    text = json.dumps(outcome, ensure_ascii=False) + str(err)
    leaks = [n for n, value in enumerate(STU3_PATIENT_VALUES) if value in text]
    assert not leaks, f"patient values #{leaks} in the refusal"
    for issue in err.issues:
        assert issue.severity == "error"
        assert "ServiceRequest" not in issue.expression
        assert issue.expression.startswith("(") or _names_stu3_elements(
            issue.expression, _stu3_document(name)
        ), name


def test_opt_out_consent_is_refused_at_its_policy_rule(settings: Settings) -> None:
    """An STU3 opt-out Consent (with a permit exception for feedback) is refused at policyRule."""
    err = _refusal("refused-consent-optout", settings)
    assert [(i.code, i.expression) for i in err.issues] == [
        ("business-rule", "ReferralRequest.contained[4].policyRule")
    ]
    assert "opt-out" in err.issues[0].diagnostics


def test_opt_out_in_any_shape_is_refused_where_opt_in_is_accepted(settings: Settings) -> None:
    """Each accepted STU3 case turned opt-out (JSON, XML, contained, Bundle) is refused (422)."""
    for name in ACCEPTED:
        data = stu3_input(name)
        opt_in = b"http://hl7.org/fhir/ConsentPolicy/opt-in"
        assert opt_in in data, name
        with pytest.raises(MappingError) as caught:
            intake.translate(data.replace(opt_in, OPT_OUT.encode()), None, settings)
        assert any(i.expression.endswith(".policyRule") for i in caught.value.issues), name


def test_stu3_consent_without_a_known_base_rule_is_refused_at_its_policy_rule(
    settings: Settings,
) -> None:
    """No policyRule, or a policy URI the bridge does not know: refused (fail closed), never
    read as consent."""
    consent = json.loads(stu3_input("accepted-contained"))["contained"][4]
    assert consent["resourceType"] == "Consent"
    for change in ("drop", "https://example.org/policy/regional"):
        referral = json.loads(stu3_input("accepted-contained"))
        if change == "drop":
            referral["contained"][4].pop("policyRule")
        else:
            referral["contained"][4]["policyRule"] = change
        with pytest.raises(MappingError) as caught:
            intake.translate(json.dumps(referral).encode(), None, settings)
        where = [i.expression for i in caught.value.issues]
        assert where == ["ReferralRequest.contained[4].policyRule"], change
        assert "provision" not in caught.value.issues[0].diagnostics


def test_stu3_base_rule_is_stated_as_the_r4_root_provision_type() -> None:
    """Opt-in becomes a root permit and opt-out a root deny; another policy states no type."""
    data = stu3_input("accepted-contained")
    cases = {
        b"http://hl7.org/fhir/ConsentPolicy/opt-in": "permit",
        OPT_OUT.encode(): "deny",
        b"https://example.org/policy/regional": None,
    }
    for policy, root_type in cases.items():
        converted = intake.convert_input(
            data.replace(b"http://hl7.org/fhir/ConsentPolicy/opt-in", policy),
            None,
            max_bytes=1 << 20,
        )
        consent = next(r for r in converted.r4_root["contained"] if r["resourceType"] == "Consent")
        assert consent["provision"].get("type") == root_type
        assert consent["scope"]["coding"][0]["code"] == "patient-privacy"


def test_stu3_elements_without_r4_counterpart_are_listed_and_change_nothing(
    settings: Settings,
) -> None:
    """description, serviceRequested, onBehalfOf, sourceIdentifier: listed as lost, same Bundle."""
    converted = intake.convert_input(
        stu3_input("accepted-stu3-only-elements"), None, max_bytes=1 << 20
    )
    assert sorted(converted.lost) == [
        "ReferralRequest.contained[4].sourceIdentifier",
        "ReferralRequest.description",
        "ReferralRequest.requester.onBehalfOf",
        "ReferralRequest.serviceRequested",
    ]
    plain = intake.translate(stu3_input("accepted-contained"), None, settings).bundle
    extra = intake.translate(stu3_input("accepted-stu3-only-elements"), None, settings).bundle
    assert plain == extra
