"""R4 ⇄ STU3 conversion: goldens per type, STU3 validity, round trips, the listed losses."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.cases import PATIENT_VALUES, REPO
from wor_bridge.core import fhir
from wor_bridge.core.stu3 import consent as stu3_consent
from wor_bridge.core.stu3 import convert as stu3

Json = dict[str, Any]
GOLDENS = REPO / "fixtures" / "stu3"
REFERRAL = "fixtures/referral/accepted-contained/expected.bundle.json"
DUTCH_NAMES = "fixtures/referral/accepted-dutch-name-prefixes/expected.bundle.json"
PG_SCORES = "fixtures/feedback/pg-scores/expected.gp-bundle.json"

# golden folder -> (project output it is taken from, first entry of this type, expected losses).
# Losses: R4 Meta.source and Reference.type have no STU3 element; STU3 states a Consent's base
# rule by its policyRule (opt-in), so the root provision.type has no place either.
CASES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "patient": (DUTCH_NAMES, "Patient", ("Patient.meta.source",)),
    "practitioner": (REFERRAL, "Practitioner", ("Practitioner.meta.source",)),
    "organization": (REFERRAL, "Organization", ("Organization.meta.source",)),
    "practitionerrole": (REFERRAL, "PractitionerRole", ("PractitionerRole.meta.source",)),
    "consent": (REFERRAL, "Consent", ("Consent.meta.source", "Consent.provision.type")),
    "servicerequest": (REFERRAL, "ServiceRequest", ("ServiceRequest.meta.source",)),
    "task": (REFERRAL, "Task", ("Task.meta.source",)),
    "observation": (
        PG_SCORES,
        "Observation",
        (
            "Observation.meta.source",
            "Observation.basedOn[0].type",
            "Observation.subject.type",
            "Observation.performer[0].type",
        ),
    ),
    "communication": (
        PG_SCORES,
        "Communication",
        (
            "Communication.meta.source",
            "Communication.basedOn[0].type",
            "Communication.subject.type",
            "Communication.recipient[0].type",
            "Communication.sender.type",
        ),
    ),
}
CORPORA = REPO.parent / "shared" / "corpora"
NINE = ("Patient", "Practitioner", "PractitionerRole", "Organization", "Consent", "Task")
NINE += ("Observation", "Communication", "ServiceRequest")
CORPUS = sorted(
    path
    for folder in ("fhir-r4-examples", "sdohcc-examples")
    for kind in NINE
    for path in (CORPORA / folder).glob(f"{kind}-*.json")
)
REFERRAL_BUNDLES = sorted((REPO / "fixtures" / "referral").glob("accepted-*/expected.bundle.json"))
GP_BUNDLES = sorted((REPO / "fixtures").glob("**/expected.gp-bundle.json"))


def _load(path: Path | str) -> Json:
    loaded: Json = json.loads((REPO / path).read_text(encoding="utf-8"))
    return loaded


def _source(name: str) -> Json:
    bundle, rtype, _ = CASES[name]
    entries = _load(bundle)["entry"]
    resource: Json = next(e["resource"] for e in entries if e["resource"]["resourceType"] == rtype)
    return resource


def _steps(path: str) -> list[str | int]:
    """``Task.output[2].valueReference.type`` -> ``["output", 2, "valueReference", "type"]``."""
    steps: list[str | int] = []
    for part in path.split(".")[1:]:
        found = re.fullmatch(r"([^\[]+)((?:\[\d+\])*)", part)
        assert found is not None, path
        steps += [found[1], *(int(i) for i in re.findall(r"\d+", found[2]))]
    return steps


def _delete(node: Any, steps: list[str | int], parent_key: str = "") -> None:
    """Delete one path; items of a primitive's ``_x`` list become null to keep alignment."""
    head, rest = steps[0], steps[1:]
    if isinstance(node, dict) and isinstance(head, str) and head in node:
        if rest:
            _delete(node[head], rest, head)
        else:
            del node[head]
    elif isinstance(node, list) and isinstance(head, int) and head < len(node):
        if rest:
            _delete(node[head], rest, parent_key)
        elif parent_key.startswith("_"):
            node[head] = None
        else:
            del node[head]


def _pruned(node: Any) -> Any:
    """Drop objects and arrays left empty (FHIR JSON has none) after deleting lost paths."""
    if isinstance(node, dict):
        kept = {k: _pruned(v) for k, v in node.items()}
        return {k: v for k, v in kept.items() if v not in ({}, []) and v is not None}
    if isinstance(node, list):
        items = [_pruned(v) for v in node]
        return [] if all(i is None for i in items) else [i for i in items if i not in ({}, [])]
    return node


def without(resource: Json, paths: tuple[str, ...]) -> Json:
    """``resource`` minus the elements at ``paths`` (higher indices first), emptied parents too."""
    out = copy.deepcopy(resource)
    for steps in sorted((_steps(p) for p in paths), key=_order, reverse=True):
        _delete(out, steps)
    pruned: Json = _pruned(out)
    return pruned


def _order(steps: list[str | int]) -> list[tuple[int, Any]]:
    return [(0, s) if isinstance(s, int) else (1, s) for s in steps]


def assert_same_but_lost(original: Json, round_trip: Json, lost: tuple[str, ...]) -> None:
    """The round trip equals the original without the lost paths.

    A lost list item is simply absent after the round trip (later items move up), so only the
    original loses it; a lost single element may come back as a default (R4 requires
    ``Consent.scope``), so both sides lose those.
    """
    singles = tuple(path for path in lost if not path.endswith("]"))
    assert without(round_trip, singles) == without(original, lost)


def _write_or_compare(path: Path, produced: Json, update: bool) -> None:
    text = fhir.canonical_json(produced, pretty=True) + b"\n"
    if update or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
        if not update:
            pytest.fail(f"{path.parent.name}: golden {path.name} was missing; written, review it")
    assert text == path.read_bytes(), f"{path.parent.name}: output differs from {path.name}"


# --- goldens ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_r4_is_the_project_output(name: str, update_goldens: bool) -> None:
    """Each golden's R4 side is exactly the resource the bridge emits in its source fixture."""
    _write_or_compare(GOLDENS / name / "r4.json", _source(name), update_goldens)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_converts_to_its_stu3_side(name: str, update_goldens: bool) -> None:
    """R4 -> STU3 gives exactly the reviewed STU3 golden and lists exactly the expected losses."""
    converted = stu3.to_stu3(_load(GOLDENS / name / "r4.json"))
    _write_or_compare(GOLDENS / name / "stu3.json", converted.resource, update_goldens)
    assert converted.lost == CASES[name][2]


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_stu3_side_is_valid_stu3(name: str) -> None:
    """Every STU3 golden validates against the STU3 models."""
    assert fhir.validate_stu3(_load(GOLDENS / name / "stu3.json"), name) == []


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_round_trip_keeps_all_but_the_listed(name: str) -> None:
    """R4 -> STU3 -> R4 equals the original except the listed paths, and is valid R4."""
    original = _load(GOLDENS / name / "r4.json")
    there = stu3.to_stu3(original)
    back = stu3.to_r4(there.resource)
    assert back.lost == ()
    assert fhir.validate(back.resource, name) == []
    assert_same_but_lost(original, back.resource, there.lost)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_folder_has_a_two_line_case(name: str) -> None:
    """Each golden folder explains itself in a two-line case.md."""
    lines = (GOLDENS / name / "case.md").read_text(encoding="utf-8").strip().splitlines()
    assert len(lines) == 2


def test_goldens_cover_the_nine_types() -> None:
    """There is one golden per supported type, ReferralRequest standing in for ServiceRequest."""
    types = {_load(GOLDENS / n / "stu3.json")["resourceType"] for n in CASES}
    assert types == {
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Consent",
        "Task",
        "Observation",
        "Communication",
        "ReferralRequest",
    }


# --- whole Bundles --------------------------------------------------------------------------------


def _assert_bundle_round_trip(bundle: Json) -> None:
    there = stu3.bundle_to_stu3(bundle)
    assert fhir.validate_stu3(there.resource, "Bundle") == []
    back = stu3.bundle_to_r4(there.resource)
    assert back.lost == ()
    assert fhir.validate(back.resource, "Bundle") == []
    assert_same_but_lost(bundle, back.resource, there.lost)


@given(data=st.data())
@hsettings(max_examples=60, deadline=None)
def test_referral_bundles_convert_validate_and_round_trip(data: st.DataObject) -> None:
    """Any subset and order of an accepted referral Bundle's entries converts and round-trips."""
    bundle = _load(data.draw(st.sampled_from(REFERRAL_BUNDLES)))
    order = data.draw(st.permutations(range(len(bundle["entry"]))))
    keep = data.draw(st.integers(min_value=1, max_value=len(order)))
    bundle["entry"] = [bundle["entry"][i] for i in order[:keep]]
    _assert_bundle_round_trip(bundle)
    lost = stu3.bundle_to_stu3(bundle).lost
    allowed = r"Bundle\.entry\[\d+\]\.resource\.(meta\.source|provision\.type|locationCode)"
    assert all(re.fullmatch(allowed, path) for path in lost)


@pytest.mark.parametrize("path", GP_BUNDLES, ids=lambda p: p.parent.name)
def test_feedback_bundles_convert_validate_and_round_trip(path: Path) -> None:
    """Every feedback Bundle for the GP record converts to valid STU3 and round-trips."""
    _assert_bundle_round_trip(_load(path))


def test_bundle_request_urls_and_references_use_the_stu3_type() -> None:
    """ServiceRequest becomes ReferralRequest in request.url and every reference, nothing else."""
    bundle = _load(REFERRAL)
    task = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
    task["focus"] = {"reference": "ServiceRequest/abc"}
    converted = stu3.bundle_to_stu3(bundle).resource
    assert "ServiceRequest" not in json.dumps(converted)
    assert '"ReferralRequest/abc"' in json.dumps(converted)
    for before, after in zip(bundle["entry"], converted["entry"], strict=True):
        expected = before["request"]["url"].replace("ServiceRequest/", "ReferralRequest/")
        assert after["request"]["url"] == expected
        assert after["fullUrl"] == before["fullUrl"]


def test_conversion_is_deterministic_and_repeats_no_patient_value_in_losses() -> None:
    """Converting twice gives the same bytes; lost paths are names and indices only."""
    for path in [*REFERRAL_BUNDLES, *GP_BUNDLES]:
        bundle = _load(path)
        first, second = stu3.bundle_to_stu3(bundle), stu3.bundle_to_stu3(bundle)
        assert fhir.canonical_json(first.resource) == fhir.canonical_json(second.resource)
        assert first.lost == second.lost
        assert not any(value in " ".join(first.lost) for value in PATIENT_VALUES)


@pytest.mark.parametrize("path", CORPUS or [None], ids=lambda p: getattr(p, "name", "missing"))
def test_official_examples_convert_validate_and_round_trip(path: Path | None) -> None:
    """Official R4/SDOHCC examples of the nine types become valid STU3 and round-trip."""
    assert path is not None, f"../shared/corpora is required beside the repository ({CORPORA})"
    resource = _load(path)
    if resource["resourceType"] not in NINE or fhir.validate(resource, path.name):
        return  # another type under a matching name, or an example the R4 models reject
    if any(c["resourceType"] not in NINE for c in resource.get("contained", [])):
        with pytest.raises(ValueError, match="does not support resource type"):
            stu3.to_stu3(resource)
        return
    there = stu3.to_stu3(resource)
    assert fhir.validate_stu3(there.resource, path.name) == []
    back = stu3.to_r4(there.resource)
    assert back.lost == ()
    assert fhir.validate(back.resource, path.name) == []
    assert_same_but_lost(resource, back.resource, there.lost)


# --- the differences, one by one ------------------------------------------------------------------


def test_unsupported_types_raise_naming_the_type() -> None:
    """A type outside the nine (or a Bundle given to to_stu3) raises ValueError with its name."""
    for resource in ({"resourceType": "Condition"}, {"resourceType": "Bundle"}, {}):
        with pytest.raises(ValueError, match=repr(resource.get("resourceType"))):
            stu3.to_stu3(resource)
    with pytest.raises(ValueError, match="'ServiceRequest'"):
        stu3.to_r4({"resourceType": "ServiceRequest"})
    with pytest.raises(ValueError, match="'Patient'"):
        stu3.bundle_to_stu3({"resourceType": "Patient"})
    entry = {"resource": {"resourceType": "Condition"}}
    with pytest.raises(ValueError, match="'Condition'"):
        stu3.bundle_to_r4({"resourceType": "Bundle", "type": "collection", "entry": [entry]})


@pytest.mark.parametrize(
    ("r4", "stu3_ref"),
    [
        ("ServiceRequest/1", "ReferralRequest/1"),
        ("https://gp.example/fhir/ServiceRequest/1", "https://gp.example/fhir/ReferralRequest/1"),
        ("ServiceRequest/1/_history/2", "ReferralRequest/1/_history/2"),
        ("ServiceRequest?identifier=x|1", "ReferralRequest?identifier=x|1"),
        ("urn:uuid:0090d0e9-472d-5089-9ea4-392c2cb83699", None),
        ("Task/ServiceRequest", None),
        ("MyServiceRequest/1", None),
    ],
)
def test_reference_strings_change_only_the_resource_type(r4: str, stu3_ref: str | None) -> None:
    """Only the type segment of a ServiceRequest reference is renamed, and renamed back."""
    task = {
        "resourceType": "Task",
        "status": "draft",
        "intent": "order",
        "focus": {"reference": r4},
    }
    there = stu3.to_stu3(task).resource
    assert there["focus"]["reference"] == (stu3_ref or r4)
    assert stu3.to_r4(there).resource["focus"]["reference"] == r4


def test_request_status_and_intent_codes_follow_the_version() -> None:
    """on-hold/revoked are suspended/cancelled in STU3; the R4-only intent directive is lost."""
    request = {"resourceType": "ServiceRequest", "status": "on-hold", "intent": "directive"}
    request["subject"] = {"reference": "Patient/1"}
    there = stu3.to_stu3(request)
    assert there.resource["status"] == "suspended"
    assert there.lost == ("ServiceRequest.intent",)
    assert stu3.to_r4({**there.resource, "status": "cancelled"}).resource["status"] == "revoked"


def test_stu3_requester_on_behalf_of_and_referral_text_are_listed_towards_r4() -> None:
    """A VIPLive-style Task and a ReferralRequest keep the agent and list what R4 cannot hold."""
    task = {"resourceType": "Task", "status": "requested", "intent": "order"}
    task["requester"] = {"agent": {"reference": "Practitioner/1"}, "onBehalfOf": {"display": "x"}}
    back = stu3.to_r4(task)
    assert back.resource["requester"] == {"reference": "Practitioner/1"}
    assert back.lost == ("Task.requester.onBehalfOf",)
    referral = {"resourceType": "ReferralRequest", "status": "active", "intent": "order"}
    referral |= {"subject": {"reference": "Patient/1"}, "description": "x"}
    referral |= {"serviceRequested": [{"text": "x"}], "context": {"reference": "EpisodeOfCare/1"}}
    converted = stu3.to_r4(referral)
    assert fhir.validate(converted.resource, "ServiceRequest") == []
    assert converted.lost == (
        "ReferralRequest.description",
        "ReferralRequest.serviceRequested",
        "ReferralRequest.context",
    )


def test_communication_not_done_round_trips_through_not_done_flag() -> None:
    """R4 not-done is STU3 notDone with its reason; a reason without not-done is lost."""
    reason = {"text": "niet bereikbaar"}
    done = {"resourceType": "Communication", "status": "not-done", "statusReason": reason}
    there = stu3.to_stu3(done)
    assert there.resource["notDone"] is True
    assert there.resource["notDoneReason"] == reason
    assert fhir.validate_stu3(there.resource, "Communication") == []
    assert stu3.to_r4(there.resource).resource == done
    stopped = stu3.to_stu3({**done, "status": "stopped"})
    assert stopped.resource["status"] == "aborted"
    assert stopped.lost == ("Communication.statusReason",)


def test_observation_integers_notes_and_related_have_stu3_forms() -> None:
    """valueInteger is a unity Quantity, the first note the comment, members are related."""
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    obs |= {"valueInteger": 7, "note": [{"text": "a"}, {"text": "b"}]}
    obs |= {"hasMember": [{"reference": "Observation/1"}], "derivedFrom": [{"display": "d"}]}
    obs |= {"component": [{"code": {"text": "c"}, "valueBoolean": True}], "focus": [{}]}
    there = stu3.to_stu3(obs)
    assert there.resource["valueQuantity"] == {
        "value": 7,
        "system": "http://unitsofmeasure.org",
        "code": "1",
    }
    assert there.resource["comment"] == "a"
    assert [r["type"] for r in there.resource["related"]] == ["has-member", "derived-from"]
    assert fhir.validate_stu3(there.resource, "Observation") == []
    assert there.lost == (
        "Observation.note[1]",
        "Observation.component[0]",
        "Observation.focus",
    )
    back = stu3.to_r4(there.resource)
    assert_same_but_lost(obs, back.resource, there.lost)


def test_consent_policy_scope_and_exceptions_follow_the_stu3_model() -> None:
    """Opt-out and URI policies map both ways; other scopes and multi-coding codes are listed."""
    consent = _source("consent") | {"policyRule": {"coding": [{"system": "x", "code": "y"}]}}
    consent["scope"] = {"coding": [{"code": "research"}]}
    consent["provision"]["provision"][0]["code"].append({"coding": [{"code": "a"}, {"code": "b"}]})
    there = stu3.to_stu3(consent)
    assert set(there.lost) >= {
        "Consent.scope",
        "Consent.policyRule",
        "Consent.provision.provision[0].code[1]",
    }
    opt_out = "http://hl7.org/fhir/ConsentPolicy/opt-out"
    own = "https://example.org/policy"
    for uri, coding in [
        (opt_out, {"system": stu3_consent.V3_ACT_CODE, "code": "OPTOUT"}),
        (own, {"system": "urn:ietf:rfc:3986", "code": own}),
    ]:
        back = stu3.to_r4({**there.resource, "policyRule": uri})
        assert back.resource["policyRule"] == {"coding": [coding]}
        assert back.resource["scope"] == stu3_consent.PRIVACY_SCOPE


def test_r4_only_data_type_elements_are_lost_and_stu3_only_ones_too() -> None:
    """An extension with an R4-only value type and STU3 Patient.animal are listed as lost."""
    patient = {"resourceType": "Patient", "extension": [{"url": "u", "valueUuid": "urn:uuid:1"}]}
    assert stu3.to_stu3(patient).lost == ("Patient.extension[0]",)
    assert stu3.to_stu3(patient).resource == {"resourceType": "Patient"}
    animal = {"resourceType": "Patient", "animal": {"species": {"text": "dog"}}}
    assert stu3.to_r4(animal).lost == ("Patient.animal",)
