"""Both sides can use the Task as GET returns it: read-modify-write with PUT or PATCH, the bridge's
delivery codes are no milestones, every change the GP can read moves the ETag, and a welfare
client cannot push referrals (403). In-process (httpx over ASGI), simulated receivers on loopback.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cases import case_input
from tests.service_harness import write_config
from wor_bridge import bootstrap
from wor_bridge.demo.fhir_server import SimulatedFhirServer
from wor_bridge.service.app import create_app

HIS = {"Authorization": "Bearer example-his-key"}
WELFARE = {"Authorization": "Bearer example-welfare-key"}
FHIR_JSON = "application/fhir+json"
REASON = {
    "coding": [
        {"system": "https://wor-bridge.nl/fhir/CodeSystem/closure-reason", "code": "declined"}
    ],
    "text": "de patient wil niet meer",
}
BUSINESS = "https://wor-bridge.nl/fhir/CodeSystem/task-business-status"


@dataclass
class Bridge:
    """The app (dispatcher run by hand), the welfare receiver and the GP record."""

    app: Any
    welfare: SimulatedFhirServer
    gp: SimulatedFhirServer

    def call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """One request to the app."""

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, url, **kw)

        return asyncio.run(go())

    def deliver(self) -> None:
        """Dispatcher rounds until nothing is due."""
        while self.app.state.dispatcher.run_once():
            pass

    def push(self, ref: str = "AS-GET-1") -> str:
        """Push the contained fixture under HIS number ``ref``; its Task id."""
        document = json.loads(case_input("accepted-contained"))
        document["identifier"][0]["value"] = ref
        answer = self.call(
            "POST",
            "/fhir/r4/ServiceRequest",
            content=json.dumps(document).encode(),
            headers={**HIS, "Content-Type": FHIR_JSON},
        )
        assert answer.status_code == 202
        return str(answer.headers["content-location"].rsplit("/", 1)[-1])

    def get(self, task_id: str, headers: dict[str, str] = HIS) -> httpx.Response:
        """GET the Task."""
        answer = self.call("GET", f"/fhir/r4/Task/{task_id}", headers=headers)
        assert answer.status_code == 200
        return answer

    def put(
        self, task_id: str, body: dict[str, Any], etag: str, headers: dict[str, str] = HIS
    ) -> httpx.Response:
        """PUT the Task with If-Match."""
        return self.call(
            "PUT",
            f"/fhir/r4/Task/{task_id}",
            content=json.dumps(body).encode(),
            headers={**headers, "Content-Type": FHIR_JSON, "If-Match": etag},
        )


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[SimulatedFhirServer, SimulatedFhirServer]]:
    """A welfare receiver and a GP record, started once for the module."""
    welfare = SimulatedFhirServer("/fhir").start()
    gp = SimulatedFhirServer("/gp").start()
    try:
        yield welfare, gp
    finally:
        welfare.stop()
        gp.stop()


@pytest.fixture
def bridge(tmp_path: Path, receivers: tuple[SimulatedFhirServer, SimulatedFhirServer]) -> Bridge:
    """Every destination at the (emptied) welfare receiver, the GP record at the other."""
    welfare, gp = receivers
    for server in receivers:
        server.reset()
    config = write_config(tmp_path, welfare.base_url, endpoints={"gp-record": gp.base_url})
    return Bridge(create_app(bootstrap.load(config), start_dispatcher=False), welfare, gp)


def business(task: dict[str, Any]) -> str | None:
    """The businessStatus code of a Task (None when absent)."""
    codings = (task.get("businessStatus") or {}).get("coding") or [{}]
    return codings[0].get("code")


def test_gp_put_of_the_task_as_get_returns_it_cancels(bridge: Bridge) -> None:
    """The GP side GETs the delivered Task, sets status cancelled and a reason, PUTs it back:
    200 (the bridge's ``delivered`` code it carries is ignored), and the receiver hears of it."""
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
    """A Task in progress (milestone first-contact) can be withdrawn with the GET'ed body; a
    milestone the GP side changes is still refused (422)."""
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
    """The welfare side PUTs the Task back with a bridge-owned code as businessStatus: the
    status change is taken, the code ignored; the GP record gets no such milestone."""
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
    """Queued, delivered, failed (a dead letter): each delivery state the GET shows has its own
    version and ETag, and a PUT with the ETag of an earlier state gets 412."""
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
    """A welfare client without referral:write posting a ServiceRequest, or a referral Bundle
    to the base, gets 403 (not 400); its Bundle of Tasks and Observations still works."""
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
