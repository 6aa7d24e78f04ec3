"""FHIR REST answers in-process (issue 18): a push answers 201/200 with the absolute Location and
ETag of its Task and the body Prefer asks for, a transaction a transaction-response; 405 with
Allow; 415 for XML on a JSON-only route; the base with a trailing slash; _pretty, _summary and
_elements on reads; 412/428 as OperationOutcomes. No body is printed (patient data)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.cases import case_input
from tests.inprocess import FHIR_JSON, HIS, WELFARE, World, make_world, task_body

BASE = "http://127.0.0.1:8080/fhir/r4"  # the example configuration's pull.base_url


@pytest.fixture
def world(tmp_path: Path) -> World:
    """The app with the patient's two referrals (voorbeeld, viplive) of the GP system."""
    return make_world(tmp_path)


def _push(world: World, number: int, prefer: str | None = None, **headers: str) -> httpx.Response:
    body = case_input("accepted-contained").replace(
        b"VW-2026-0001", f"VW-2026-{number:04d}".encode()
    )
    if prefer:
        headers["Prefer"] = prefer
    return world.call(
        "POST",
        "/fhir/r4/ServiceRequest",
        HIS,
        content=body,
        headers={"Content-Type": FHIR_JSON, **headers},
    )


def test_push_answers_201_with_absolute_location_and_etag(world: World) -> None:
    """New: 201, no body, Location [base]/Task/{id}/_history/1 from the configuration."""
    answer = _push(world, 7, Host="evil.example")
    assert answer.status_code == 201
    assert answer.content == b""
    location = answer.headers["location"]
    assert location.startswith(f"{BASE}/Task/")
    assert location.endswith("/_history/1")
    assert answer.headers["etag"] == 'W/"1"'
    assert "content-location" not in answer.headers


def test_push_body_follows_prefer(world: World) -> None:
    """return=representation: the Task (queued); OperationOutcome: the note; again: 200."""
    task = _push(world, 8, "return=representation")
    assert task.status_code == 201
    body = task.json()
    assert (body["resourceType"], body["status"]) == ("Task", "requested")
    assert body["businessStatus"]["coding"][0]["code"] == "queued"
    assert task.headers["location"] == f"{BASE}/Task/{body['id']}/_history/1"
    again = _push(world, 8, "return=OperationOutcome")
    assert again.status_code == 200
    assert (
        again.json()["issue"][0]["diagnostics"] == "referral already received; no second delivery"
    )
    assert again.headers["location"] == task.headers["location"]
    assert _push(world, 8, "return=minimal").content == b""


def test_transaction_gets_a_transaction_response(world: World) -> None:
    """A transaction Bundle: 200 and one response entry per request entry, in order."""
    data = case_input("accepted-bundle-transaction-urn").replace(b"VW-2026-0001", b"VW-2026-0009")
    pushed = json.loads(data)
    for path in ("/fhir/r4", "/fhir/r4/"):
        answer = world.call("POST", path, HIS, content=data, headers={"Content-Type": FHIR_JSON})
        assert answer.status_code == 200
        bundle = answer.json()
        assert bundle["type"] == "transaction-response"
        assert len(bundle["entry"]) == len(pushed["entry"])
        [request] = [e["response"] for e in bundle["entry"] if "location" in e["response"]]
        assert request["location"].startswith(f"{BASE}/ServiceRequest/")
        assert answer.headers["location"].startswith(f"{BASE}/Task/")
    statuses = [e["response"]["status"] for e in bundle["entry"]]
    assert "201 Created" not in statuses, "the second push is the same referral"


def test_wrong_method_is_405_with_allow(world: World) -> None:
    """A known path with a method it does not have: 405, Allow lists every route's methods."""
    task = world.call("DELETE", f"/fhir/r4/Task/{world.voorbeeld}", HIS)
    assert task.status_code == 405
    assert task.headers["allow"] == "GET, PATCH, PUT"
    assert task.json()["resourceType"] == "OperationOutcome"
    meta = world.call("POST", "/fhir/r4/metadata")
    assert (meta.status_code, meta.headers["allow"]) == (405, "GET")


@pytest.mark.parametrize(
    ("method", "path"),
    [("PUT", "/fhir/r4/Task/x"), ("PATCH", "/fhir/r4/Task/x"), ("POST", "/fhir/r4/Observation")],
)
def test_xml_body_on_a_json_only_route_is_415(world: World, method: str, path: str) -> None:
    """PUT/PATCH Task and POST Observation read JSON only: an XML body is 415."""
    answer = world.call(
        method, path, WELFARE, content=b"<Task/>", headers={"Content-Type": "application/fhir+xml"}
    )
    assert answer.status_code == 415
    assert answer.json()["issue"][0]["location"] == ["(content-type)"]


def test_trailing_slash_base_is_the_base_without_redirect(world: World) -> None:
    """GET [base]/metadata works, and [base]/ is [base]: no redirect anywhere."""
    answer = world.call(
        "POST", "/fhir/r4/", HIS, content=b"{}", headers={"Content-Type": FHIR_JSON}
    )
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert world.call("GET", "/fhir/r4/metadata").status_code == 200


def test_reads_take_pretty_summary_and_elements(world: World) -> None:
    """_pretty indents; _elements and _summary=true subset the read and tag it SUBSETTED."""
    url = f"/fhir/r4/Task/{world.voorbeeld}"
    plain = world.call("GET", url, HIS)
    pretty = world.call("GET", f"{url}?_pretty=true", HIS)
    assert b"\n  " in pretty.content
    assert b"\n" not in plain.content
    same = pretty.json() == plain.json()  # compared, never printed
    assert same
    subset = world.call("GET", f"{url}?_elements=focus", HIS).json()
    assert set(subset) == {"resourceType", "id", "meta", "focus", "status", "intent"}
    assert subset["meta"]["tag"][0]["code"] == "SUBSETTED"
    summary = world.call("GET", f"{url}?_summary=true", HIS).json()
    assert "restriction" not in summary
    same_focus = summary["focus"] == plain.json()["focus"]
    assert same_focus
    assert world.call("GET", f"{url}?_summary=text", HIS).status_code == 400


def test_versioned_update_answers_as_fhir_clients_expect(world: World) -> None:
    """No If-Match: 428; a stale one: 412; both OperationOutcomes; the right one: 200 + ETag."""
    url = f"/fhir/r4/Task/{world.voorbeeld}"
    body = task_body(world.voorbeeld, "accepted")
    missing = world.call("PUT", url, WELFARE, json=body)
    assert (missing.status_code, missing.json()["resourceType"]) == (428, "OperationOutcome")
    stale = world.call("PUT", url, WELFARE, json=body, headers={"If-Match": 'W/"9"'})
    assert (stale.status_code, stale.json()["resourceType"]) == (412, "OperationOutcome")
    ok = world.call("PUT", url, WELFARE, json=body, headers={"If-Match": 'W/"1"'})
    assert (ok.status_code, ok.headers["etag"]) == (200, 'W/"2"')


def test_the_service_request_id_of_a_conditionally_created_referral_comes_from_its_full_url() -> (
    None
):
    """A mapping that creates conditionally leaves resources without ids: the answer takes the
    ServiceRequest's id from its ``urn:uuid:`` fullUrl instead of failing (it answered 500)."""
    from wor_bridge.service.create_answer import _request_id  # noqa: PLC0415 - the helper itself

    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"fullUrl": "urn:uuid:p", "resource": {"resourceType": "Patient"}},
            {
                "fullUrl": "urn:uuid:0f8fad5b-d9cb-469f-a165-70867728950e",
                "resource": {"resourceType": "ServiceRequest"},
            },
        ],
    }
    assert _request_id(json.dumps(bundle).encode()) == "0f8fad5b-d9cb-469f-a165-70867728950e"
