"""Reference resolution as the R4 Bundle rules say (bundle.html#references), and ambiguity refused
(issue 10 §3): version-specific, relative, absolute, conditional and logical references."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

import wor_bridge
from tests.cases import case_input
from wor_bridge.core import graph
from wor_bridge.errors import InboundError, Issue

BASE = "https://his.example.org/fhir/"
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"


def _entry(rtype: str, rid: str, url: str | None, version: str | None = None, **extra: Any) -> Any:
    resource: dict[str, Any] = {"resourceType": rtype, "id": rid, **extra}
    if version is not None:
        resource["meta"] = {"versionId": version}
    entry: dict[str, Any] = {"resource": resource}
    if url is not None:
        entry["fullUrl"] = url
    return entry


def _bundle(subject: Any, *entries: Any, sr_url: str | None = None) -> Any:
    sr = _entry("ServiceRequest", "sr", sr_url, subject=subject)
    return {"resourceType": "Bundle", "type": "collection", "entry": [*entries, sr]}


def _subject(bundle: Any) -> graph.Located | None:
    g = graph.build(bundle)
    sr = g.service_request
    return g.resolve(sr.resource["subject"], f"{sr.location}.subject")


def _refusal(bundle: Any) -> list[Issue]:
    with pytest.raises(InboundError) as caught:
        graph.build(bundle)
    return list(caught.value.issues)


@pytest.mark.parametrize(
    ("reference", "entries", "expected"),
    [
        ("Patient/p/_history/2", [_entry("Patient", "p", BASE + "Patient/p", "2")], 0),
        (BASE + "Patient/p/_history/2", [_entry("Patient", "p", BASE + "Patient/p", "2")], 0),
        (
            "Patient/p/_history/2",
            [
                _entry("Patient", "p", BASE + "Patient/p", "1"),
                _entry("Patient", "p", BASE + "Patient/p", "2"),
            ],
            1,
        ),
        ("Patient/p/_history/3", [_entry("Patient", "p", BASE + "Patient/p", "2")], None),
        ("Patient/p", [_entry("Patient", "p", "urn:uuid:0c7d6a2e-1d7b-4f5e-9a35-3f0f1e2d4c5b")], 0),
        (
            "urn:uuid:0c7d6a2e-1d7b-4f5e-9a35-3f0f1e2d4c5b",
            [_entry("Patient", "x", "urn:uuid:0c7d6a2e-1d7b-4f5e-9a35-3f0f1e2d4c5b")],
            0,
        ),
        (
            "https://elsewhere.example/fhir/Patient/p",
            [_entry("Patient", "p", BASE + "Patient/p")],
            0,
        ),
        ("Patient/q", [_entry("Patient", "p", BASE + "Patient/p")], None),
    ],
)
def test_reference_forms_resolve_as_the_bundle_rules_say(
    reference: str, entries: list[Any], expected: int | None
) -> None:
    """Versioned, relative and absolute references find the entry the Bundle rules name, or none."""
    found = _subject(_bundle({"reference": reference}, *entries))
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert found.location == f"Bundle.entry[{expected}].resource"


def test_relative_reference_resolves_against_the_referring_entrys_base() -> None:
    """`Patient/p` from an entry at base A finds A's Patient even when base B has one too."""
    other = "https://other.example.org/fhir/"
    bundle = _bundle(
        {"reference": "Patient/p"},
        _entry("Patient", "p", other + "Patient/p"),
        _entry("Patient", "p", BASE + "Patient/p"),
        sr_url=BASE + "ServiceRequest/sr",
    )
    found = _subject(bundle)
    assert found is not None
    assert found.location == "Bundle.entry[1].resource"


def test_logical_and_conditional_references_resolve_by_identifier() -> None:
    """Logical and conditional (`Type?identifier=`) references find the entry carrying it."""
    patient = _entry(
        "Patient", "p", "urn:uuid:1", identifier=[{"system": BSN, "value": "999990007"}]
    )
    logical = {
        "type": "Patient",
        "identifier": {"system": "urn:oid:2.16.840.1.113883.2.4.6.3", "value": "999990007"},
    }
    conditional = {"reference": f"Patient?identifier={BSN}|999990007"}
    for reference in (logical, conditional):
        found = _subject(_bundle(reference, copy.deepcopy(patient)))
        assert found is not None
        assert found.location == "Bundle.entry[0].resource"


def test_reference_matching_two_entries_is_refused_at_the_reference() -> None:
    """A reference matching entries at two bases is refused 400 `multiple-matches` at it."""
    bundle = _bundle(
        {"reference": "Patient/p"},
        _entry("Patient", "p", "https://a.example/fhir/Patient/p"),
        _entry("Patient", "p", "https://b.example/fhir/Patient/p"),
    )
    issues = _refusal(bundle)
    assert [(i.code, i.expression) for i in issues] == [
        ("multiple-matches", "Bundle.entry[2].resource.subject")
    ]


def test_unversioned_reference_to_two_versions_is_refused() -> None:
    """Two versions of one fullUrl (allowed by bdl-7) make an unversioned reference ambiguous."""
    bundle = _bundle(
        {"reference": BASE + "Patient/p"},
        _entry("Patient", "p", BASE + "Patient/p", "1"),
        _entry("Patient", "p", BASE + "Patient/p", "2"),
    )
    assert [i.code for i in _refusal(bundle)] == ["multiple-matches"]


def test_logical_reference_matching_two_resources_is_refused() -> None:
    """A logical reference whose identifier two resources carry is refused, not guessed."""
    ident = [{"system": BSN, "value": "999990007"}]
    bundle = _bundle(
        {"identifier": {"system": BSN, "value": "999990007"}},
        _entry("Patient", "p1", "urn:uuid:1", identifier=ident),
        _entry("Patient", "p2", "urn:uuid:2", identifier=ident),
    )
    assert [(i.code, i.expression) for i in _refusal(bundle)] == [
        ("multiple-matches", "Bundle.entry[2].resource.subject")
    ]


@pytest.mark.parametrize(
    ("versions", "refused"),
    [((None, None), True), (("1", "1"), True), (("1", None), False), (("1", "2"), False)],
)
def test_duplicate_full_url_follows_bdl_7(
    versions: tuple[str | None, str | None], refused: bool
) -> None:
    """Two entries with one fullUrl are refused 400 (bdl-7) unless their meta.versionId differ."""
    url = BASE + "Organization/o"
    bundle = _bundle(
        {"reference": "urn:uuid:0c7d6a2e-1d7b-4f5e-9a35-3f0f1e2d4c5b"},
        _entry("Organization", "o", url, versions[0]),
        _entry("Organization", "o", url, versions[1]),
        _entry("Patient", "p", "urn:uuid:0c7d6a2e-1d7b-4f5e-9a35-3f0f1e2d4c5b"),
    )
    if refused:
        assert [(i.code, i.expression) for i in _refusal(bundle)] == [
            ("invariant", "Bundle.entry[1].fullUrl")
        ]
    else:
        assert _subject(bundle) is not None


def test_duplicate_contained_ids_are_refused() -> None:
    """Two contained resources with one id are refused 400 at the second one's id."""
    sr: dict[str, Any] = json.loads(case_input("accepted-contained"))
    sr["contained"].append(copy.deepcopy(sr["contained"][0]))
    issues = _refusal(sr)
    where = f"ServiceRequest.contained[{len(sr['contained']) - 1}].id"
    assert ("structure", where) in [(i.code, i.expression) for i in issues]


def test_handed_versioned_bundle_reference_is_mapped(settings: Any) -> None:
    """The handed versioned-bundle-reference case maps to the entries with versionId 2."""
    result = wor_bridge.translate(case_input("accepted-versioned-bundle-reference"), None, settings)
    assert result.referral.patient.location == "Bundle.entry[0].resource"
    assert result.referral.role.location == "Bundle.entry[2].resource"
