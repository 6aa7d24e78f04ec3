"""STU3 intake through the service (in process, real SQLite store): the routes answer as STU3,
authenticate, audit and count as R4 intake does, and an STU3 push is the same referral as its R4
push. Nothing here prints a body: they may hold patient data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.inprocess import ADMIN, HIS, OTHER_HIS, READER, WELFARE, World, make_world
from tests.stu3_intake_cases import STU3_PATIENT_VALUES, stu3_input
from wor_bridge.core import fhir

STU3_JSON = "application/fhir+json; fhirVersion=3.0"
FHIR_NS = "{http://hl7.org/fhir}"
REFERRER = "http://fhir.nl/fhir/NamingSystem/agb-z|01000001"


@pytest.fixture
def world(tmp_path: Path) -> World:
    """A fresh in-process service whose patient has two referrals pushed as R4."""
    return make_world(tmp_path)


def _push(
    world: World,
    body: bytes,
    *,
    path: str = "/fhir/stu3/ReferralRequest",
    key: str | None = HIS,
    content_type: str = "application/fhir+json",
    **headers: str,
) -> Any:
    return world.call(
        "POST", path, key, content=body, headers={"Content-Type": content_type, **headers}
    )


def _fresh(name: str, number: int) -> bytes:
    """An STU3 case as a new referral (its GP-system identifier varied)."""
    data = stu3_input(name)
    assert data.count(b"VW-2026-0001") == 1
    return data.replace(b"VW-2026-0001", f"VW-2026-9{number:03d}".encode())


def _issues(answer: Any) -> list[tuple[str, str, str]]:
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome"
    assert fhir.validate_stu3(body, "OperationOutcome") == []
    return [
        (i["severity"], i["code"], (i.get("expression") or i.get("location") or [""])[0])
        for i in body["issue"]
    ]


def _no_patient_values(text: str) -> None:
    leaks = [n for n, value in enumerate(STU3_PATIENT_VALUES) if value in text]
    assert not leaks, f"patient values #{leaks} in the answer"


def test_stu3_push_of_a_referral_pushed_as_r4_is_the_same_task(world: World) -> None:
    """The same referral as STU3 after R4 (JSON contained, XML Bundle): the same Task, 200, and
    no second outbox entry."""
    before = world.audit()
    for body, path, ctype in (
        (stu3_input("accepted-contained"), "/fhir/stu3/ReferralRequest", "application/fhir+json"),
        (stu3_input("accepted-xml-transaction-urn"), "/fhir/stu3", "application/fhir+xml"),
    ):
        answer = _push(world, body, path=path, content_type=ctype)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == STU3_JSON
        assert f"/fhir/r4/Task/{world.voorbeeld}/_history/" in answer.headers["location"]
        assert "already received" in answer.json()["issue"][0]["diagnostics"]
    rows = world.audit(int(before[-1]["id"]))
    assert [(r["event"], r["outcome"]) for r in rows] == [("referral_intake", "duplicate")] * 2
    referrals = world.call("GET", "/metrics", ADMIN).text
    assert 'wor_bridge_intake_total{outcome="duplicate"} 2.0' in referrals


def test_new_stu3_referral_is_stored_audited_and_readable_like_r4(world: World) -> None:
    """A new STU3 referral: 201, a new requested Task readable with task:read, one accepted
    audit record with the patient, the referrer and the source system."""
    mark = world.last_audit_id()
    answer = _push(world, _fresh("accepted-contained", 1))
    assert answer.status_code == 201
    assert "accepted and stored" in answer.json()["issue"][0]["diagnostics"]
    task_id = answer.headers["location"].split("/_history/")[0].rsplit("/", 1)[-1]
    assert task_id not in (world.voorbeeld, world.viplive)
    task = world.call("GET", f"/fhir/r4/Task/{task_id}", HIS)
    assert task.status_code == 200
    assert task.json()["status"] == "requested"
    [row] = [r for r in world.audit(mark) if r["event"] == "referral_intake"]
    assert (row["outcome"], row["user"], row["responsible"]) == (
        "accepted",
        "his-example",
        REFERRER,
    )
    assert row["source_system"] == "his-example"
    same_patient = row["patient_id"] == world.patient_of(world.voorbeeld)  # never printed
    assert same_patient


def test_accepted_answer_lists_the_stu3_elements_not_read(world: World) -> None:
    """STU3-only elements are accepted and named (paths only) as information issues."""
    answer = _push(world, _fresh("accepted-stu3-only-elements", 2))
    assert answer.status_code == 201
    issues = _issues(answer)
    assert issues[0][:2] == ("information", "informational")
    assert sorted(where for _, _, where in issues[1:]) == [
        "ReferralRequest.contained[4].sourceIdentifier",
        "ReferralRequest.description",
        "ReferralRequest.requester.onBehalfOf",
        "ReferralRequest.serviceRequested",
    ]
    _no_patient_values(answer.text)


def test_opt_out_is_refused_as_stu3_outcome_in_json_and_xml(world: World) -> None:
    """An STU3 opt-out: 422 at the STU3 policyRule, as STU3 JSON or, asked for, STU3 XML; audited
    as a refused intake."""
    mark = world.last_audit_id()
    body = _fresh("refused-consent-optout", 3)
    answer = _push(world, body)
    assert answer.status_code == 422
    assert answer.headers["content-type"] == STU3_JSON
    assert _issues(answer) == [
        ("error", "business-rule", "ReferralRequest.contained[4].policyRule")
    ]
    as_xml = _push(world, body, Accept="application/fhir+xml")
    assert as_xml.status_code == 422
    assert as_xml.headers["content-type"] == "application/fhir+xml; fhirVersion=3.0"
    root = etree.fromstring(as_xml.content)
    assert root.tag == f"{FHIR_NS}OperationOutcome"
    where = root.find(f"{FHIR_NS}issue/{FHIR_NS}expression").get("value")  # type: ignore[union-attr]
    assert where == "ReferralRequest.contained[4].policyRule"
    rows = [r for r in world.audit(mark) if r["event"] == "referral_intake"]
    assert [(r["outcome"], r["user"]) for r in rows] == [("refused", "his-example")] * 2
    _no_patient_values(answer.text + as_xml.text)


def test_unreadable_stu3_is_400_at_the_stu3_element(world: World) -> None:
    """Invalid STU3 and an unsupported resource type are 400 at their STU3 elements."""
    invalid = _push(world, stu3_input("refused-invalid-stu3"))
    assert invalid.status_code == 400
    assert ("error", "required", "ReferralRequest.requester.agent") in _issues(invalid)
    unsupported = _push(world, stu3_input("refused-unsupported-resource"), path="/fhir/stu3")
    assert unsupported.status_code == 400
    assert _issues(unsupported) == [("error", "not-supported", "ReferralRequest.contained[5]")]


def test_stu3_intake_needs_referral_write_like_r4(world: World) -> None:
    """No key 401 (WWW-Authenticate), task:read only or a welfare client 403; each audited."""
    mark = world.last_audit_id()
    body = stu3_input("accepted-contained")
    answers = [_push(world, body, key=k) for k in (None, READER, WELFARE)]
    assert [a.status_code for a in answers] == [401, 403, 403]
    assert answers[0].headers["www-authenticate"].startswith("Bearer")
    assert all(a.headers["content-type"] == STU3_JSON for a in answers)
    rows = [r for r in world.audit(mark) if r["event"] == "referral_intake"]
    assert [(r["outcome"], r["user"]) for r in rows] == [
        ("refused", "(unknown)"),
        ("refused", "reader"),
        ("refused", "welzijn-voorbeeld-system"),
    ]


def test_another_gp_system_gets_its_own_referral_and_no_access_to_others(world: World) -> None:
    """Tenancy as on R4: another GP system's push of the same content is its own Task, which the
    first GP system cannot read."""
    answer = _push(world, stu3_input("accepted-contained"), key=OTHER_HIS)
    assert answer.status_code == 201
    assert "accepted and stored" in answer.json()["issue"][0]["diagnostics"]
    task_id = answer.headers["location"].split("/_history/")[0].rsplit("/", 1)[-1]
    assert task_id != world.voorbeeld
    assert world.call("GET", f"/fhir/r4/Task/{task_id}", HIS).status_code == 404
    assert world.call("GET", f"/fhir/r4/Task/{task_id}", OTHER_HIS).status_code == 200


def test_declared_fhir_versions_pick_the_base(world: World) -> None:
    """fhirVersion 4.0 on /fhir/stu3 is 415; 3.0 on /fhir/r4 is 415 naming /fhir/stu3; 3.0 on
    /fhir/stu3 is read."""
    body = stu3_input("accepted-contained")
    r4_on_stu3 = _push(world, body, content_type="application/fhir+json; fhirVersion=4.0")
    assert r4_on_stu3.status_code == 415
    assert _issues(r4_on_stu3) == [("error", "not-supported", "(content-type)")]
    stu3_on_r4 = _push(
        world, body, path="/fhir/r4/ServiceRequest", content_type=STU3_JSON.replace(" ", "")
    )
    assert stu3_on_r4.status_code == 415
    assert stu3_on_r4.json()["issue"][0]["diagnostics"].endswith(
        "FHIR STU3 content goes to /fhir/stu3"
    )
    assert _push(world, body, content_type=STU3_JSON).status_code in (200, 201)


def test_stu3_body_limits_and_encodings_are_those_of_r4(world: World) -> None:
    """gzip bodies are decoded; over max_body_bytes is 413; a non-UTF-8 charset 415 (STU3)."""
    body = stu3_input("accepted-contained")
    zipped = _push(world, gzip.compress(body), **{"Content-Encoding": "gzip"})
    assert zipped.status_code in (200, 201)
    big = body.replace(b'"status": "active"', b'"status": "active"' + b" " * (1 << 20), 1)
    too_large = _push(world, big)
    assert too_large.status_code == 413
    assert _issues(too_large) == [("error", "too-costly", "(body)")]
    charset = _push(world, body, content_type="application/fhir+json; charset=iso-8859-1")
    assert charset.status_code == 415
    assert charset.headers["content-type"] == STU3_JSON


def test_openapi_describes_the_stu3_intake(world: World) -> None:
    """/openapi.json documents both STU3 intake routes: referral:write, JSON and XML, 201."""
    doc: dict[str, Any] = world.call("GET", "/openapi.json").json()
    for path in ("/fhir/stu3/ReferralRequest", "/fhir/stu3"):
        operation = doc["paths"][path]["post"]
        assert "referral:write" in operation["description"]
        assert {"application/fhir+json", "application/fhir+xml"} <= set(
            operation["requestBody"]["content"]
        )
        assert {"201", "400", "401", "403", "413", "415", "422"} <= set(operation["responses"])
    assert json.dumps(doc).count("STU3") >= 1
