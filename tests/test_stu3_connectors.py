"""STU3 connectors: the notified-pull notification Task and the ZorgDomein-style document Bundle."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cases import PATIENT_VALUES, REPO
from wor_bridge.connectors import notified_pull, zorgdomein
from wor_bridge.core import fhir

Json = dict[str, Any]
GOLDENS = REPO / "fixtures" / "stu3-connectors"
CASES = ("accepted-contained", "accepted-route-by-practice-bsn-ageband")
ALL_ACCEPTED = sorted(p.name for p in (REPO / "fixtures" / "referral").glob("accepted-*"))
BASE_URL = "https://bridge.example.org"
TASK_ID = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
BUNDLE_ID = "5b0c3a1e-4d2f-4f7a-9c1b-2e3d4f5a6b7c"
NOW = "2026-11-02T10:20:00+01:00"
RECEIVER_AGB = "02000001"
SENDER_AGB = "01099990"
# Patient elements that are coding structure, not personal values.
NOT_PERSONAL_KEYS = frozenset({"system", "use", "url", "id", "profile", "source", "code", "unit"})


def _bundle(case: str) -> Json:
    path = REPO / "fixtures" / "referral" / case / "expected.bundle.json"
    loaded: Json = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def _task(case: str) -> Json:
    return notified_pull.notification_task(
        _bundle(case),
        task_id=TASK_ID,
        receiver=RECEIVER_AGB,
        sender=SENDER_AGB,
        base_url=BASE_URL,
    )


def _document(case: str) -> Json:
    return zorgdomein.document_bundle(_bundle(case), bundle_id=BUNDLE_ID, now=NOW)


def _write_or_compare(path: Path, produced: Json, update: bool) -> None:
    text = fhir.canonical_json(produced, pretty=True) + b"\n"
    if update or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
        if not update:
            pytest.fail(f"{path.parent.name}: golden {path.name} was missing; written, review it")
    assert text == path.read_bytes(), f"{path.parent.name}: output differs from {path.name}"


def _strings(node: Any, key: str = "") -> Iterator[str]:
    """Every string leaf of ``node`` outside the coding-structure keys."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, k)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v, key)
    elif isinstance(node, str) and key not in NOT_PERSONAL_KEYS:
        yield node


def _patient_values(bundle: Json) -> set[str]:
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    personal = {k: v for k, v in patient.items() if k not in ("resourceType", "meta", "id")}
    # The bridge's own uuid identifier is no personal value (it is the pull URL's id).
    personal["identifier"] = [
        i for i in patient.get("identifier", []) if i.get("system") != "urn:ietf:rfc:3986"
    ]
    return set(_strings(personal))


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "reference" and isinstance(v, str):
                yield v
            else:
                yield from _references(v)
    elif isinstance(node, list):
        for v in node:
            yield from _references(v)


# --- goldens ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_notification_task_golden(case: str, update_goldens: bool) -> None:
    """The notification Task equals its reviewed golden."""
    _write_or_compare(GOLDENS / case / "notification.task.json", _task(case), update_goldens)


@pytest.mark.parametrize("case", CASES)
def test_document_bundle_golden(case: str, update_goldens: bool) -> None:
    """The document Bundle equals its reviewed golden."""
    _write_or_compare(GOLDENS / case / "document.bundle.json", _document(case), update_goldens)


@pytest.mark.parametrize("case", CASES)
def test_golden_folder_has_a_two_line_case(case: str) -> None:
    """Each golden folder explains itself in a two-line case.md."""
    lines = (GOLDENS / case / "case.md").read_text(encoding="utf-8").strip().splitlines()
    assert len(lines) == 2


# --- notified pull ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ALL_ACCEPTED)
def test_notification_task_and_pullable_resources_are_valid_stu3(case: str) -> None:
    """The Task and every pullable resource validate against the STU3 models."""
    assert fhir.validate_stu3(_task(case), "Task") == []
    for key, resource in notified_pull.pullable(_bundle(case)).items():
        assert fhir.validate_stu3(resource, key) == []


@pytest.mark.parametrize("case", ALL_ACCEPTED)
def test_notification_task_carries_no_patient_value(case: str) -> None:
    """No string of the input Patient (name, phone, address, birth date, BSN) is in the Task."""
    text = fhir.canonical_json(_task(case)).decode("utf-8")
    assert _leaked(text, _patient_values(_bundle(case)) | set(PATIENT_VALUES)) == []


def _leaked(text: str, values: set[str]) -> list[str]:
    """The values found in ``text`` as whole words ("ten" inside "Patient" is no leak)."""
    return sorted(v for v in values if re.search(rf"(?<!\w){re.escape(v)}(?!\w)", text))


def test_privacy_scan_finds_a_planted_value() -> None:
    """The scan reports a BSN or birth date put into the Task (negative control)."""
    task = _task("accepted-route-by-practice-bsn-ageband")
    task["note"] = [{"text": "999990020 1952-03-14"}]
    text = fhir.canonical_json(task).decode("utf-8")
    assert _leaked(text, {"999990020", "1952-03-14", "ten"}) == ["1952-03-14", "999990020"]


def test_privacy_scan_covers_the_bsn_and_the_personal_elements() -> None:
    """The scanned Patient values include the BSN, name, phone, address and birth date."""
    values = _patient_values(_bundle("accepted-route-by-practice-bsn-ageband"))
    assert {"999990020", "Jansen", "Pieter", "06-00000001", "Voorbeeldstraat 1"} <= values
    assert "1952-03-14" in _patient_values(_bundle("accepted-contained"))


@pytest.mark.parametrize("case", ALL_ACCEPTED)
def test_notification_task_has_no_personal_elements(case: str) -> None:
    """The Task has no narrative, note, description, display of a party nor contained resource."""
    task = _task(case)
    assert not {"text", "note", "description", "contained", "reason"} & set(task)
    assert "display" not in json.dumps([task["requester"], task["owner"], task["input"]])


@pytest.mark.parametrize("case", ALL_ACCEPTED)
def test_every_input_reference_resolves_in_pullable(case: str) -> None:
    """Each input is an absolute STU3 read URL whose ``Type/id`` the endpoint serves."""
    task = _task(case)
    served = notified_pull.pullable(_bundle(case))
    prefix = f"{BASE_URL}/fhir/stu3/"
    inputs = [i["valueReference"]["reference"] for i in task["input"]]
    assert all(ref.startswith(prefix) for ref in inputs)
    assert sorted(ref.removeprefix(prefix) for ref in inputs) == sorted(served)
    for ref in (task["focus"]["reference"], task["for"]["reference"]):
        assert ref.removeprefix(prefix) in served


def test_notification_task_identifies_parties_by_agb_oid() -> None:
    """Owner is the receiver AGB, requester agent and onBehalfOf the sender AGB, in OID form."""
    task = _task("accepted-contained")
    oid = "urn:oid:2.16.840.1.113883.2.4.6.1"
    assert task["owner"] == {"identifier": {"system": oid, "value": RECEIVER_AGB}}
    sender = {"identifier": {"system": oid, "value": SENDER_AGB}}
    assert task["requester"] == {"agent": sender, "onBehalfOf": sender}
    assert task["identifier"] == [{"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{TASK_ID}"}]
    assert (task["status"], task["intent"]) == ("requested", "order")


def test_pullable_uses_fullurl_uuid_for_resources_without_id() -> None:
    """POST-mode entries without id are served under the uuid of their fullUrl."""
    bundle = _bundle("accepted-route-by-practice-bsn-ageband")
    served = notified_pull.pullable(bundle)
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Task":
            continue
        assert "id" not in resource
        rtype = {"ServiceRequest": "ReferralRequest"}.get(resource["resourceType"])
        key = f"{rtype or resource['resourceType']}/{entry['fullUrl'].removeprefix('urn:uuid:')}"
        assert served[key]["id"] == key.split("/")[1]


@pytest.mark.parametrize("case", CASES)
def test_pullable_references_are_relative_and_served(case: str) -> None:
    """References between pulled resources point at other served ``Type/id`` keys."""
    served = notified_pull.pullable(_bundle(case))
    refs = [ref for resource in served.values() for ref in _references(resource)]
    assert refs
    assert [ref for ref in refs if ref not in served] == []


def test_notification_task_refuses_malformed_arguments() -> None:
    """A non-uuid task id, a non-AGB code or a relative base URL raise ValueError."""
    bundle = _bundle("accepted-contained")
    good = {"task_id": TASK_ID, "receiver": RECEIVER_AGB, "sender": SENDER_AGB}
    with pytest.raises(ValueError):
        notified_pull.notification_task(bundle, **{**good, "task_id": "x"}, base_url=BASE_URL)
    with pytest.raises(ValueError):
        notified_pull.notification_task(bundle, **{**good, "receiver": "1"}, base_url=BASE_URL)
    with pytest.raises(ValueError):
        notified_pull.notification_task(bundle, **good, base_url="bridge.example.org")


# --- ZorgDomein-style document ------------------------------------------------------------------


@pytest.mark.parametrize("case", ALL_ACCEPTED)
def test_document_bundle_is_valid_stu3(case: str) -> None:
    """The document Bundle validates against the STU3 models."""
    assert fhir.validate_stu3(_document(case), "Bundle") == []


@pytest.mark.parametrize("case", ALL_ACCEPTED)
def test_document_composition_first_and_its_references_resolve(case: str) -> None:
    """The Composition is first and every reference in it is an entry fullUrl."""
    document = _document(case)
    assert document["type"] == "document"
    composition = document["entry"][0]["resource"]
    assert composition["resourceType"] == "Composition"
    assert composition["type"]["coding"][0]["code"] == "57133-1"
    full_urls = {e["fullUrl"] for e in document["entry"]}
    refs = list(_references(composition))
    assert len(refs) >= 5  # subject, author (+ role extension), referral and consent sections
    assert [ref for ref in refs if ref not in full_urls] == []


@pytest.mark.parametrize("case", CASES)
def test_document_every_reference_resolves_inside_the_bundle(case: str) -> None:
    """All references of all entries resolve to an entry fullUrl (the document is closed)."""
    document = _document(case)
    full_urls = {e["fullUrl"] for e in document["entry"]}
    assert [ref for ref in _references(document) if ref not in full_urls] == []


def test_document_sections_author_identifier_and_date() -> None:
    """Sections reference the ReferralRequest and Consent; the author is the referrer."""
    document = _document("accepted-contained")
    by_url = {e["fullUrl"]: e["resource"] for e in document["entry"]}
    composition = document["entry"][0]["resource"]
    section_types = [
        by_url[ref["reference"]]["resourceType"]
        for section in composition["section"]
        for ref in section["entry"]
    ]
    assert section_types == ["ReferralRequest", "Consent", "Task"]
    author = composition["author"][0]
    assert by_url[author["reference"]]["resourceType"] == "Practitioner"
    role = author["extension"][0]["valueReference"]["reference"]
    assert by_url[role]["resourceType"] == "PractitionerRole"
    assert by_url[composition["subject"]["reference"]]["resourceType"] == "Patient"
    assert (composition["date"], document["meta"]["lastUpdated"]) == (NOW, NOW)
    assert document["identifier"] == {
        "system": "urn:ietf:rfc:3986",
        "value": f"urn:uuid:{BUNDLE_ID}",
    }
    assert not any("request" in e for e in document["entry"])
