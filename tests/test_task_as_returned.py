"""Both sides can use the Task as GET returns it: read-modify-write with PUT or PATCH, the bridge's
delivery codes are no milestones, every change the GP can read moves the ETag, and a welfare
client cannot push referrals (403). In-process (httpx over ASGI), simulated receivers on loopback.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cases import case_input
from tests.loopback_bridge import FHIR_JSON, HIS, WELFARE, Bridge

REASON = {
    "coding": [
        {"system": "https://wor-bridge.nl/fhir/CodeSystem/closure-reason", "code": "declined"}
    ],
    "text": "de patient wil niet meer",
}
BUSINESS = "https://wor-bridge.nl/fhir/CodeSystem/task-business-status"


def business(task: dict[str, Any]) -> str | None:
    """The businessStatus code of a Task (None when absent)."""
    codings = (task.get("businessStatus") or {}).get("coding") or [{}]
    return codings[0].get("code")


def test_gp_put_of_the_task_as_get_returns_it_cancels(bridge: Bridge) -> None:
    """A GP PUT of the GET'ed delivered Task with status cancelled and a reason works."""
    task_id = bridge.push()
    bridge.deliver()
    got = bridge.get(task_id)
    task = got.json()
    assert (task["status"], business(task)) == ("requested", "delivered")
    answer = bridge.put(
        task_id, {**task, "status": "cancelled", "statusReason": REASON}, got.headers["ETag"]
    )
    assert answer.status_code == 200, answer.json()
    assert answer.json()["status"] == "cancelled"
    bridge.deliver()
    [held] = bridge.welfare.resources("Task")
    assert held["status"] == "cancelled"


def test_gp_patch_of_the_task_as_get_returns_it_cancels(bridge: Bridge) -> None:
    """The README's JSON Patch (replace status, add statusReason) on the Task as GET returns it."""
    task_id = bridge.push()
    bridge.deliver()
    etag = bridge.get(task_id).headers["ETag"]
    patch = [
        {"op": "replace", "path": "/status", "value": "cancelled"},
        {"op": "add", "path": "/statusReason", "value": REASON},
    ]
    answer = bridge.call(
        "PATCH",
        f"/fhir/r4/Task/{task_id}",
        content=json.dumps(patch).encode(),
        headers={**HIS, "Content-Type": "application/json-patch+json", "If-Match": etag},
    )
    assert answer.status_code == 200, answer.json()
    assert answer.json()["status"] == "cancelled"


def test_gp_side_sends_back_the_welfare_milestone_unchanged(bridge: Bridge) -> None:
    """The GP side withdraws a Task in progress with its GET'ed milestone unchanged."""
    task_id = bridge.push()
    bridge.deliver()
    got = bridge.get(task_id, WELFARE)
    moved = {**got.json(), "status": "in-progress", "businessStatus": _code("first-contact")}
    assert bridge.put(task_id, moved, got.headers["ETag"], WELFARE).status_code == 200
    got = bridge.get(task_id)
    task = got.json()
    assert business(task) == "first-contact"
    changed = {
        **task,
        "status": "cancelled",
        "statusReason": REASON,
        "businessStatus": _code("closed"),
    }
    refused = bridge.put(task_id, changed, got.headers["ETag"])
    assert refused.status_code == 422
    assert "milestones" in refused.json()["issue"][0]["diagnostics"]
    answer = bridge.put(
        task_id, {**task, "status": "cancelled", "statusReason": REASON}, got.headers["ETag"]
    )
    assert answer.status_code == 200, answer.json()


def _code(code: str) -> dict[str, Any]:
    return {"coding": [{"system": BUSINESS, "code": code}]}


@pytest.mark.parametrize("code", ["delivered", "queued", "delivery-failed", "sent"])
def test_welfare_side_cannot_report_delivery_codes_as_milestones(bridge: Bridge, code: str) -> None:
    """A bridge delivery code from the welfare side is ignored, never a GP-record milestone."""
    task_id = bridge.push()
    bridge.deliver()
    got = bridge.get(task_id, WELFARE)
    body = {**got.json(), "status": "accepted", "businessStatus": _code(code)}
    answer = bridge.put(task_id, body, got.headers["ETag"], WELFARE)
    assert answer.status_code == 200, answer.json()
    bridge.deliver()
    [task] = [t for t in bridge.gp.resources("Task") if t["id"] == task_id]
    assert task["status"] == "accepted"
    assert "businessStatus" not in task
    [note] = bridge.gp.resources("Communication")
    assert code not in note["payload"][0]["contentString"]
    again = bridge.get(task_id, WELFARE)
    repeat = bridge.put(
        task_id, {**again.json(), "businessStatus": _code(code)}, again.headers["ETag"], WELFARE
    )
    assert repeat.status_code == 200
    assert len(bridge.gp.resources("Communication")) == 1  # nothing new travelled


def test_every_change_the_gp_can_read_moves_version_and_etag(bridge: Bridge) -> None:
    """Queued, delivered and failed each have their own version and ETag; a stale one: 412."""
    task_id = bridge.push("ETAG-1")
    queued = bridge.get(task_id)
    bridge.deliver()
    delivered = bridge.get(task_id)
    assert (business(queued.json()), business(delivered.json())) == ("queued", "delivered")
    assert queued.headers["ETag"] != delivered.headers["ETag"]
    assert delivered.json()["meta"]["versionId"] == delivered.headers["ETag"][3:-1]
    stale = bridge.put(
        task_id,
        {**queued.json(), "status": "cancelled", "statusReason": REASON},
        queued.headers["ETag"],
    )
    assert stale.status_code == 412
    bridge.welfare.fail_next(400)
    failed_id = bridge.push("ETAG-2")
    before = bridge.get(failed_id)
    bridge.deliver()
    failed = bridge.get(failed_id)
    assert (failed.json()["status"], business(failed.json())) == ("failed", "delivery-failed")
    assert failed.headers["ETag"] != before.headers["ETag"]


def test_welfare_client_pushing_a_referral_gets_403(bridge: Bridge) -> None:
    """A welfare client pushing a ServiceRequest or referral Bundle gets 403, feedback works."""
    headers = {**WELFARE, "Content-Type": FHIR_JSON}
    request = bridge.call(
        "POST", "/fhir/r4/ServiceRequest", content=case_input("accepted-contained"), headers=headers
    )
    assert request.status_code == 403
    assert request.json()["issue"][0]["code"] == "forbidden"
    bundle = case_input("accepted-bundle-transaction-urn")
    assert bridge.call("POST", "/fhir/r4", content=bundle, headers=headers).status_code == 403
    task_id = bridge.push()
    bridge.deliver()
    task = bridge.get(task_id, WELFARE).json()
    feedback = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": {**task, "status": "accepted"}}],
    }
    answer = bridge.call("POST", "/fhir/r4", content=json.dumps(feedback).encode(), headers=headers)
    assert answer.status_code == 200, answer.json()
