"""Properties of the mapping: total, deterministic, closed references, valid R4, minimal."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import wor_bridge
from tests.cases import case_input, case_names
from wor_bridge.core import fhir
from wor_bridge.core.settings import Settings

Json = dict[str, Any]
SETTINGS = wor_bridge.load_settings()
ACCEPTED = {name: case_input(name) for name in case_names("accepted-")}
CONTAINED: Json = json.loads(ACCEPTED["accepted-contained"])
BUNDLED: Json = json.loads(ACCEPTED["accepted-bundle-transaction-urn"])
ICPC1 = "http://hl7.org/fhir/sid/icpc-1-nl"

canaries = st.text(alphabet="ABCDEFGHJKLMNPQRSTUVWXYZ", min_size=8, max_size=8).map(
    lambda s: f"CANARY{s}"
)


def _references(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return found + [r for v in node.values() for r in _references(v)]
    if isinstance(node, list):
        return [r for v in node for r in _references(v)]
    return []


def _resources(root: Json) -> list[Json]:
    if root["resourceType"] == "Bundle":
        return [e["resource"] for e in root["entry"]]
    return [root, *root.get("contained", [])]


def _of_type(root: Json, rtype: str) -> Json:
    return next(r for r in _resources(root) if r["resourceType"] == rtype)


def _service_request(root: Json) -> Json:
    return _of_type(root, "ServiceRequest")


# Each extra puts the canary where the mapping must not copy it from.
def _patient_extras(c: str) -> list[tuple[str, Any]]:
    return [
        ("maritalStatus", {"text": c}),
        ("communication", [{"language": {"text": c}}]),
        ("contact", [{"name": {"family": c}}]),
        ("extension", [{"url": f"http://example.org/{c}", "valueString": c}]),
        (
            "text",
            {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{c}</div>'},
        ),
        ("photo", [{"title": c}]),
        ("generalPractitioner", [{"display": c}]),
    ]


def _request_extras(c: str) -> list[tuple[str, Any]]:
    return [
        ("note", [{"text": c}]),
        ("bodySite", [{"text": c}]),
        ("orderDetail", [{"text": c}]),
        ("patientInstruction", c),
        ("reasonReference", [{"display": c}]),
        ("specimen", [{"display": c}]),
        (
            "text",
            {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{c}</div>'},
        ),
    ]


def _nested_extras(root: Json, c: str) -> list[tuple[Json, str, Any]]:
    patient = _of_type(root, "Patient")
    name, address = patient["name"][0], patient["address"][0]
    sr = _service_request(root)
    consent = _of_type(root, "Consent")
    prac = _of_type(root, "Practitioner")
    org = _of_type(root, "Organization")
    return [
        (name, "extension", [{"url": "http://example.org/nick", "valueString": c}]),
        (name, "_family", {"extension": [{"url": "http://example.org/x", "valueString": c}]}),
        (address, "extension", [{"url": "http://example.org/geo", "valueString": c}]),
        (address, "_line", [{"extension": [{"url": "http://example.org/y", "valueString": c}]}]),
        (patient, "telecom", [*patient["telecom"], {"system": "url", "value": f"http://{c}"}]),
        (
            patient,
            "identifier",
            [*patient["identifier"], {"system": "http://example.org/mrn", "value": c}],
        ),
        (
            sr["reasonCode"][0],
            "coding",
            [*sr["reasonCode"][0]["coding"], {"system": ICPC1, "code": "P03", "display": c}],
        ),
        (sr["code"], "text", c),
        (consent, "sourceAttachment", {"title": c}),
        (
            consent["provision"]["provision"][0],  # on a permit exception: it cannot deny
            "actor",
            [{"role": {"text": c}, "reference": {"display": c}}],
        ),
        (prac, "qualification", [{"code": {"text": c}}]),
        (org, "alias", [c]),
    ]


def _clinical(c: str, patient_ref: str) -> list[Json]:
    return [
        {"resourceType": "Condition", "code": {"text": c}, "subject": {"reference": patient_ref}},
        {
            "resourceType": "MedicationStatement",
            "status": "active",
            "medicationCodeableConcept": {"text": c},
            "subject": {"reference": patient_ref},
        },
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": c},
            "valueString": c,
        },
    ]


@st.composite
def polluted_inputs(draw: st.DrawFn) -> tuple[bytes, str]:
    """A valid referral with random extra elements and clinical resources, all holding a canary."""
    canary = draw(canaries)
    root = copy.deepcopy(draw(st.sampled_from([CONTAINED, BUNDLED])))
    patient = _of_type(root, "Patient")
    sr = _service_request(root)
    for key, value in draw(
        st.lists(st.sampled_from(_patient_extras(canary)), unique_by=lambda x: x[0])
    ):
        patient[key] = value
    for key, value in draw(
        st.lists(st.sampled_from(_request_extras(canary)), unique_by=lambda x: x[0])
    ):
        sr[key] = value
    nested = _nested_extras(root, canary)
    for index in draw(st.lists(st.integers(0, len(nested) - 1), unique=True)):
        target, key, value = nested[index]
        target[key] = value
    clinical = draw(st.lists(st.sampled_from(range(3)), unique=True))
    if root["resourceType"] == "Bundle":
        ref = sr["subject"]["reference"]
        for n in clinical:
            root["entry"].insert(0, {"resource": _clinical(canary, ref)[n]})
    else:
        for n in clinical:
            root["contained"].append(dict(_clinical(canary, "#pat")[n], id=f"clin{n}"))
    return json.dumps(root, ensure_ascii=False).encode(), canary


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(polluted_inputs())
def test_extra_elements_and_clinical_resources_never_reach_the_output(
    sample: tuple[bytes, str],
) -> None:
    """Whatever else the GP system sends, only the allow-listed data is forwarded."""
    data, canary = sample
    bundle = wor_bridge.map_referral(data, None, SETTINGS)
    out = fhir.canonical_json(bundle).decode()
    assert canary not in out
    kinds = {e["resource"]["resourceType"] for e in bundle["entry"]}
    assert kinds <= {
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Consent",
        "ServiceRequest",
        "Task",
    }
    assert "P03" not in out


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_output_is_deterministic_and_references_resolve(name: str, settings: Settings) -> None:
    """Mapping twice gives the same bytes; every reference points at an entry's fullUrl."""
    first = wor_bridge.map_referral(ACCEPTED[name], None, settings)
    second = wor_bridge.map_referral(ACCEPTED[name], None, settings)
    assert fhir.canonical_json(first) == fhir.canonical_json(second)
    full_urls = {e["fullUrl"] for e in first["entry"]}
    assert len(full_urls) == len(first["entry"])
    refs = _references(first)
    assert refs
    assert set(refs) <= full_urls


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_output_round_trips_through_the_r4b_models(name: str, settings: Settings) -> None:
    """The Bundle is valid FHIR R4 and survives parse + dump through fhir.resources R4B."""
    bundle = wor_bridge.map_referral(ACCEPTED[name], None, settings)
    assert fhir.validate(bundle, "Bundle") == []
    assert fhir.round_trip(bundle) == bundle


@hsettings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_bytes_are_refused_cleanly(data: bytes) -> None:
    """Random bytes either map (never, in practice) or raise a RefusedError: nothing else."""
    try:
        wor_bridge.map_referral(data, None, SETTINGS)
    except wor_bridge.RefusedError as err:
        issues = err.issues
    else:
        issues = ()
    assert all(i.expression and i.diagnostics for i in issues)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


def _mutations(root: Json) -> list[tuple[Any, Any]]:
    """(container, key) pairs of every node in the document."""
    out: list[tuple[Any, Any]] = []
    stack: list[Any] = [root]
    while stack:
        node = stack.pop()
        items = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, list)
            else []
        )
        for key, value in items:
            out.append((node, key))
            stack.append(value)
    return out


@hsettings(max_examples=150, deadline=None)
@given(st.data())
def test_mutated_referrals_map_or_are_refused_cleanly(data: st.DataObject) -> None:
    """Replacing or deleting any node of a valid referral never crashes the mapping."""
    root = copy.deepcopy(data.draw(st.sampled_from([CONTAINED, BUNDLED])))
    for _ in range(data.draw(st.integers(1, 3))):
        spots = _mutations(root)
        container, key = spots[data.draw(st.integers(0, len(spots) - 1))]
        if isinstance(container, dict) and data.draw(st.booleans()):
            del container[key]
        else:
            container[key] = data.draw(json_values)
    try:
        bundle = wor_bridge.map_referral(json.dumps(root).encode(), None, SETTINGS)
    except wor_bridge.RefusedError as err:
        issues = err.issues
    else:
        issues = ()
        assert fhir.validate(bundle, "Bundle") == []
    assert all(i.expression and i.diagnostics for i in issues)
