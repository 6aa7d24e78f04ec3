"""The way back, end to end: the real ``wor-bridge serve`` in a subprocess on a free port.

A ``SimulatedFhirServer`` is the welfare organisation's FHIR endpoint (referrals arrive there); a
``pytest_httpserver`` is the GP record, a real HTTP FHIR endpoint that keeps every transaction
Bundle the bridge sends it. The welfare side reports over the FHIR channel (``PUT``/``PATCH
Task`` with If-Match, ``POST Observation``, a Bundle to the base) and the signed JSON webhook.
Each test uses its own referral (the fixture's ServiceRequest identifier is varied). No response
body or process output is printed: they may hold patient data.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.cases import case_input
from tests.service_harness import (
    ADMIN_KEY,
    FHIR_JSON,
    HIS_KEY,
    READER_KEY,
    ServiceProcess,
    audit_rows,
    auth,
    business_status,
    client,
    example_clients,
    metric_value,
    patient_value_hits,
    receiver,
    running_service,
    service_requests,
    store_path,
    task_id_of,
    wait_until,
    write_config,
)
from wor_bridge.connectors import webhook
from wor_bridge.demo.fhir_server import SimulatedFhirServer

WELFARE_KEY = "example-welfare-key"
OTHER_WELFARE_KEY = "test-rivierenland-key"
WEBHOOK_SECRET = b"example-webhook-secret"
CS = "https://wor-bridge.nl/fhir/CodeSystem/"
BUSINESS = CS + "task-business-status"
CLOSURE = CS + "closure-reason"
FEEDBACK_ITEM = CS + "feedback-item"
HIS_SYSTEM = "urn:oid:2.16.528.1.1007.99.1234.1"
AGB = "http://fhir.nl/fhir/NamingSystem/agb-z"
BSN_SYSTEM = "http://fhir.nl/fhir/NamingSystem/bsn"
BSN = f"{BSN_SYSTEM}|999990007"
REFERRER = {"system": AGB, "value": "01000001"}
CONTAINED = "accepted-contained"
NO_FEEDBACK_CONSENT = "accepted-email-only-no-bsn"
FIXTURE_IDS = {CONTAINED: b"VW-2026-0001", NO_FEEDBACK_CONSENT: b"VW-2026-0106"}
WITHHELD = "wor_bridge_feedback_items_withheld_total"
TIMEOUT = 10
_numbers = itertools.count(1)

Json = dict[str, Any]


# --- the GP record ------------------------------------------------------------------------------


class GpRecord:
    """The GP system's FHIR endpoint: answers transactions and keeps every Bundle it receives."""

    def __init__(self) -> None:
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self._lock = threading.Lock()
        self._bundles: list[Json] = []

    def start(self) -> GpRecord:
        """Serve ``POST /fhir`` in the background."""
        self.server.expect_request("/fhir", method="POST").respond_with_handler(self._handle)
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.clear()
        if self.server.is_running():
            self.server.stop()

    @property
    def base_url(self) -> str:
        """The FHIR base the bridge posts to."""
        return self.server.url_for("/fhir")

    def _handle(self, request: Request) -> Response:
        bundle = json.loads(request.get_data())
        with self._lock:
            self._bundles.append(bundle)
        answers = [
            {
                "response": {
                    "status": "200 OK",
                    "location": f"{e['resource']['resourceType']}/{e['resource']['id']}",
                }
            }
            for e in bundle.get("entry") or []
        ]
        body = {"resourceType": "Bundle", "type": "transaction-response", "entry": answers}
        return Response(json.dumps(body), status=200, content_type=FHIR_JSON)

    def bundles(self, his_id: str) -> list[Json]:
        """The Bundles received about the referral with this HIS referral number, in order."""
        with self._lock:
            received = list(self._bundles)
        return [b for b in received if his_id in _based_on_values(b)]

    def resources(self, his_id: str, rtype: str) -> list[Json]:
        """Every resource of ``rtype`` received about the referral, in order of arrival."""
        return [
            e["resource"]
            for b in self.bundles(his_id)
            for e in b["entry"]
            if e["resource"]["resourceType"] == rtype
        ]

    def codes(self, his_id: str) -> list[str]:
        """The feedback-item codes of the Observations received about the referral."""
        return [o["code"]["coding"][0]["code"] for o in self.resources(his_id, "Observation")]


def _based_on_values(bundle: Json) -> set[str]:
    return {
        ref["identifier"]["value"]
        for e in bundle.get("entry") or []
        for ref in e["resource"].get("basedOn") or []
        if isinstance(ref.get("identifier"), dict)
    }


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedFhirServer]:
    """The simulated welfare FHIR endpoint that receives the referrals."""
    with receiver() as server:
        yield server


@pytest.fixture(scope="module")
def gp() -> Iterator[GpRecord]:
    """The GP record (real HTTP) that receives Observations and Communications."""
    record = GpRecord().start()
    try:
        yield record
    finally:
        record.stop()


def _config(
    tmp_path: Path,
    sim: SimulatedFhirServer,
    gp: GpRecord,
    deadline_s: float,
    service: dict[str, Any] | None = None,
    **extra: Any,
) -> Path:
    """A config with the GP record, a second welfare client and this deadline-check interval."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    return write_config(
        tmp_path,
        sim.base_url,
        endpoints={"gp-record": gp.base_url},
        service={"rate_per_s": 1000.0, "burst": 1000, **(service or {})},
        feedback={"deadline_check_interval_s": deadline_s},
        clients=[
            *example_clients(),
            client("reader", READER_KEY, ["task:read"], source_system="his-example"),
            client(
                "rivierenland-system",
                OTHER_WELFARE_KEY,
                ["task:read", "task:update", "feedback:write"],
                destination="welzijn-rivierenland",
            ),
        ],
        **extra,
    )


@pytest.fixture(scope="module")
def config(
    tmp_path_factory: pytest.TempPathFactory, sim: SimulatedFhirServer, gp: GpRecord
) -> Path:
    """The module's config: a GP record, a second welfare client, no deadline check meanwhile."""
    # every fixture referral is past its first-contact deadline; this service checks only at
    # start-up (empty store), so alerts do not mix into the other tests' GP-record traffic
    return _config(tmp_path_factory.mktemp("way-back"), sim, gp, 3600.0)


@pytest.fixture(scope="module")
def service(config: Path) -> Iterator[ServiceProcess]:
    """The running service (killed at the end of the module)."""
    with running_service(config) as proc:
        yield proc


# --- helpers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Referral:
    """A referral delivered to the welfare side: bridge Task id, HIS number, ServiceRequest id."""

    task_id: str
    his_id: str
    service_request_id: str


def fresh_id() -> str:
    """A HIS referral number no other test uses."""
    return f"WB-{next(_numbers):04d}"


def variant(case: str, his_id: str) -> bytes:
    """A fixture's input with its referral number replaced (so it is a distinct referral)."""
    data = case_input(case)
    assert data.count(FIXTURE_IDS[case]) == 1
    return data.replace(FIXTURE_IDS[case], his_id.encode())


def push(service: ServiceProcess, case: str = CONTAINED) -> tuple[str, str]:
    """Push a referral as the HIS; (Task id, HIS referral number)."""
    his_id = fresh_id()
    response = requests.post(
        f"{service.base_url}/fhir/r4/ServiceRequest",
        data=variant(case, his_id),
        headers=auth(HIS_KEY, FHIR_JSON),
        timeout=TIMEOUT,
    )
    assert response.status_code == 201
    return task_id_of(response), his_id


def deliver(service: ServiceProcess, sim: SimulatedFhirServer, case: str = CONTAINED) -> Referral:
    """Push a referral as the HIS and wait until the welfare endpoint holds it."""
    task_id, his_id = push(service, case)
    wait_until(lambda: business_status(read(service, task_id, HIS_KEY)) == "delivered", "delivery")
    [request] = wait_until(lambda: service_requests(sim, his_id), "the delivered ServiceRequest")
    return Referral(task_id, his_id, str(request["id"]))


def task_url(service: ServiceProcess, task_id: str) -> str:
    """The bridge's URL of a Task."""
    return f"{service.base_url}/fhir/r4/Task/{task_id}"


def get_task(service: ServiceProcess, task_id: str, key: str = WELFARE_KEY) -> requests.Response:
    """GET the Task."""
    return requests.get(task_url(service, task_id), headers=auth(key), timeout=TIMEOUT)


def read(service: ServiceProcess, task_id: str, key: str = WELFARE_KEY) -> Json:
    """The Task (must be readable)."""
    response = get_task(service, task_id, key)
    assert response.status_code == 200
    body: Json = response.json()
    return body


def etag(service: ServiceProcess, task_id: str) -> str:
    """The Task's current ETag, as the welfare side reads it."""
    response = get_task(service, task_id)
    assert response.status_code == 200
    return response.headers["ETag"]


def task_body(
    task_id: str, status: str, business: str | None = None, reason: str | None = None
) -> Json:
    """A welfare-side Task for PUT."""
    body: Json = {"resourceType": "Task", "id": task_id, "status": status, "intent": "order"}
    if business:
        body["businessStatus"] = {"coding": [{"system": BUSINESS, "code": business}]}
    if reason:
        body["statusReason"] = {"coding": [{"system": CLOSURE, "code": reason}]}
    return body


def put(
    service: ServiceProcess,
    task_id: str,
    body: Json,
    if_match: str | None,
    key: str | None = WELFARE_KEY,
) -> requests.Response:
    """PUT a Task (with If-Match unless None)."""
    headers = auth(key, FHIR_JSON) if key else {"Content-Type": FHIR_JSON}
    if if_match is not None:
        headers["If-Match"] = if_match
    return requests.put(task_url(service, task_id), json=body, headers=headers, timeout=TIMEOUT)


def patch(
    service: ServiceProcess,
    task_id: str,
    ops: list[Json],
    if_match: str | None,
    key: str | None = WELFARE_KEY,
) -> requests.Response:
    """PATCH a Task with a JSON Patch (with If-Match unless None)."""
    content_type = "application/json-patch+json"
    headers = auth(key, content_type) if key else {"Content-Type": content_type}
    if if_match is not None:
        headers["If-Match"] = if_match
    data = json.dumps(ops).encode()
    return requests.patch(task_url(service, task_id), data=data, headers=headers, timeout=TIMEOUT)


def observation(service_request_id: str, kind: str, when: str, **value: Any) -> Json:
    """A welfare-side feedback Observation basedOn the delivered ServiceRequest."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "basedOn": [{"reference": f"ServiceRequest/{service_request_id}"}],
        "code": {"coding": [{"system": FEEDBACK_ITEM, "code": kind}]},
        "effectiveDateTime": when,
        **value,
    }


def post_observation(
    service: ServiceProcess, body: Json, key: str | None = WELFARE_KEY
) -> requests.Response:
    """POST one Observation to the bridge (asking for the outcome rather than the Observation)."""
    headers = auth(key, FHIR_JSON) if key else {"Content-Type": FHIR_JSON}
    headers["Prefer"] = "return=OperationOutcome"
    url = f"{service.base_url}/fhir/r4/Observation"
    return requests.post(url, json=body, headers=headers, timeout=TIMEOUT)


def signed(
    payload: Json, *, secret: bytes = WEBHOOK_SECRET, at: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The webhook body and its headers (signed now, or at ``at``)."""
    body = json.dumps(payload).encode()
    stamp = int(time.time()) if at is None else at
    return body, {"Content-Type": "application/json", **webhook.sign(secret, stamp, body)}


def hook(service: ServiceProcess, body: bytes, headers: dict[str, str]) -> requests.Response:
    """POST signed JSON to the welzijn-json connector."""
    url = f"{service.base_url}/feedback/welzijn-json"
    return requests.post(url, data=body, headers=headers, timeout=TIMEOUT)


def hook_payload(task_id: str, when: str, **fields: Any) -> Json:
    """A welzijn-json message about one referral."""
    return {"verwijzing_id": task_id, "tijdstip": when, **fields}


FIRST_CONTACT = {
    "status": "bezig",
    "mijlpaal": "eerste_contact",
    "eerste_contact_datum": "2026-11-24T10:00:00+01:00",
}
ACTIVITY = {
    "mijlpaal": "activiteit_gestart",
    "activiteit": {"categorie": "bewegen", "rol": "deelnemer"},
}
COMPLETED = {"status": "afgerond", "afsluitreden": "afgerond_activiteit"}


def outcome(response: requests.Response, status: int, severity: str = "error") -> Json:
    """The response is ``status`` with an OperationOutcome of ``severity``; returns it."""
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith(FHIR_JSON)
    body: Json = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"]
    assert {i["severity"] for i in body["issue"]} == {severity}
    assert "Traceback" not in response.text
    return body


def metrics(service: ServiceProcess) -> str:
    """The /metrics text."""
    response = requests.get(f"{service.base_url}/metrics", headers=auth(ADMIN_KEY), timeout=TIMEOUT)
    assert response.status_code == 200
    return response.text


def gp_outbox_keys(config: Path, task_id: str) -> list[str]:
    """Idempotency keys of the outbox messages for the GP record about one Task."""
    with contextlib.closing(sqlite3.connect(store_path(config), timeout=10)) as conn:
        rows = conn.execute(
            "SELECT idempotency_key FROM outbox WHERE destination = 'gp-record' AND task_id = ?"
            " ORDER BY id",
            (task_id,),
        ).fetchall()
    return [str(r[0]) for r in rows]


def task_audits(config: Path, task_id: str) -> list[Json]:
    """The task_update audit records about one Task."""
    return [r for r in audit_rows(config, "task_update") if r["object_id"] == task_id]


def assert_unchanged(service: ServiceProcess, task_id: str, before: Json) -> None:
    """The Task reads exactly as before (status, businessStatus, reason, version)."""
    now = read(service, task_id)
    for key in ("status", "businessStatus", "statusReason", "meta"):
        assert now.get(key) == before.get(key), key


def assert_addressed(resource: Json, his_id: str) -> None:
    """Based on the HIS referral number."""
    assert resource["basedOn"] == [
        {"type": "ServiceRequest", "identifier": {"system": HIS_SYSTEM, "value": his_id}}
    ]


def assert_to_referrer(gp: GpRecord, his_id: str) -> None:
    """Every Communication about the referral goes to the referrer (AGB 01000001)."""
    comms = gp.resources(his_id, "Communication")
    assert comms
    for comm in comms:
        assert_addressed(comm, his_id)
        assert [r["identifier"] for r in comm["recipient"]] == [REFERRER]


# --- the FHIR channel ---------------------------------------------------------------------------


def test_fhir_channel_put_patch_and_observation_reach_the_gp_record(
    service: ServiceProcess, sim: SimulatedFhirServer, gp: GpRecord
) -> None:
    """PUT accepted, PATCH in-progress/first-contact, POST Observation: all reach the GP record."""
    ref = deliver(service, sim)
    response = put(
        service, ref.task_id, task_body(ref.task_id, "accepted"), etag(service, ref.task_id)
    )
    assert response.status_code == 200
    assert response.json()["status"] == "accepted"
    assert response.headers["ETag"] == f'W/"{response.json()["meta"]["versionId"]}"'

    ops: list[Json] = [
        {"op": "replace", "path": "/status", "value": "in-progress"},
        {
            "op": "replace",
            "path": "/businessStatus",
            "value": {"coding": [{"system": BUSINESS, "code": "first-contact"}]},
        },
    ]
    patched = patch(service, ref.task_id, ops, response.headers["ETag"])
    assert patched.status_code == 200
    assert (patched.json()["status"], business_status(patched.json())) == (
        "in-progress",
        "first-contact",
    )

    count = observation(
        ref.service_request_id, "conversation-count", "2026-11-26T10:00:00+01:00", valueInteger=2
    )
    outcome(post_observation(service, count), 201, "information")

    wait_until(lambda: len(gp.bundles(ref.his_id)) >= 3, "three Bundles at the GP record")
    tasks = gp.resources(ref.his_id, "Task")
    assert [
        (t["status"], t.get("businessStatus", {}).get("coding", [{}])[0].get("code")) for t in tasks
    ] == [
        ("accepted", None),
        ("in-progress", "first-contact"),
        ("in-progress", "first-contact"),
    ]
    [obs] = gp.resources(ref.his_id, "Observation")
    assert obs["code"]["coding"][0]["system"] == FEEDBACK_ITEM
    assert obs["code"]["coding"][0]["code"] == "conversation-count"
    assert obs["valueInteger"] == 2
    assert obs["status"] == "final"
    assert obs["subject"] == {
        "type": "Patient",
        "identifier": {"system": BSN_SYSTEM, "value": "999990007"},
    }
    assert_addressed(obs, ref.his_id)
    assert tasks[-1]["output"] == [
        {
            "type": {"coding": [{"system": CS + "feedback-category", "code": "wor-feedback"}]},
            "valueReference": {"reference": f"urn:uuid:{obs['id']}"},
        }
    ]
    assert_to_referrer(gp, ref.his_id)
    # the bridge's Task refers to the same Observation by identifier
    outputs = read(service, ref.task_id)["output"]
    assert [o["valueReference"]["identifier"]["value"] for o in outputs] == [
        f"urn:uuid:{obs['id']}"
    ]


def test_welfare_bundle_to_the_base_is_feedback(
    service: ServiceProcess, sim: SimulatedFhirServer, gp: GpRecord
) -> None:
    """A welfare client's Bundle of a Task and an Observation to /fhir/r4 is applied as feedback."""
    ref = deliver(service, sim)
    intake = observation(ref.service_request_id, "intake-done", "2026-11-27T11:00:00+01:00")
    intake["valueBoolean"] = True
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": intake},
            {"resource": task_body(ref.task_id, "in-progress", "intake-done")},
        ],
    }
    response = requests.post(
        f"{service.base_url}/fhir/r4",
        json=bundle,
        headers=auth(WELFARE_KEY, FHIR_JSON),
        timeout=TIMEOUT,
    )
    body = outcome(response, 200, "information")
    assert len(body["issue"]) == 2
    task = read(service, ref.task_id)
    assert (task["status"], business_status(task)) == ("in-progress", "intake-done")
    wait_until(lambda: "intake-done" in gp.codes(ref.his_id), "the intake Observation")
    assert gp.codes(ref.his_id) == ["intake-done"]
    assert [t["status"] for t in gp.resources(ref.his_id, "Task")] == ["in-progress", "in-progress"]
    assert_to_referrer(gp, ref.his_id)


# --- the webhook channel ------------------------------------------------------------------------


def test_webhook_channel_reaches_the_gp_record(
    service: ServiceProcess, sim: SimulatedFhirServer, gp: GpRecord
) -> None:
    """First contact, activity (Bewegen & sporten, participant), completion: three Observations."""
    ref = deliver(service, sim)
    steps = [
        (hook_payload(ref.task_id, "2026-11-24T10:30:00+01:00", **FIRST_CONTACT), "in-progress"),
        (hook_payload(ref.task_id, "2026-11-30T09:30:00+01:00", **ACTIVITY), "in-progress"),
        (hook_payload(ref.task_id, "2026-12-14T16:00:00+01:00", **COMPLETED), "completed"),
    ]
    for payload, status in steps:
        response = hook(service, *signed(payload))
        assert response.status_code == 200
        assert response.json()["status"] == status
        assert response.headers["ETag"].startswith('W/"')
    final = read(service, ref.task_id)
    assert final["statusReason"]["coding"] == [{"system": CLOSURE, "code": "completed-activity"}]

    wait_until(lambda: len(gp.bundles(ref.his_id)) >= 3, "three Bundles at the GP record")
    assert gp.codes(ref.his_id) == ["first-contact", "activity-started", "closed"]
    by_code = {o["code"]["coding"][0]["code"]: o for o in gp.resources(ref.his_id, "Observation")}
    activity = by_code["activity-started"]
    assert activity["valueCodeableConcept"]["coding"] == [
        {"system": CS + "activity-category", "code": "bewegen-sporten"}
    ]
    assert activity["component"][0]["valueCodeableConcept"]["coding"] == [
        {"system": CS + "activity-role", "code": "participant"}
    ]
    assert by_code["closed"]["valueCodeableConcept"]["coding"] == [
        {"system": CLOSURE, "code": "completed-activity"}
    ]
    assert by_code["first-contact"]["valueDateTime"] == "2026-11-24T10:00:00+01:00"
    for obs in by_code.values():
        assert_addressed(obs, ref.his_id)
    last_task = gp.resources(ref.his_id, "Task")[-1]
    assert last_task["status"] == "completed"
    assert last_task["statusReason"]["coding"] == [
        {"system": CLOSURE, "code": "completed-activity"}
    ]
    assert_to_referrer(gp, ref.his_id)


def test_same_webhook_twice_has_one_effect(
    service: ServiceProcess, sim: SimulatedFhirServer, gp: GpRecord
) -> None:
    """The same signed message twice: one Task version, one outbox message, one Observation."""
    ref = deliver(service, sim)
    body, headers = signed(hook_payload(ref.task_id, "2026-11-24T10:30:00+01:00", **FIRST_CONTACT))
    first = hook(service, body, headers)
    again = hook(service, body, headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.headers["ETag"] == first.headers["ETag"]
    assert len(gp_outbox_keys(service.config, ref.task_id)) == 1
    # a later, different update is delivered after anything the repeat could have queued
    later = hook(
        service, *signed(hook_payload(ref.task_id, "2026-11-30T09:30:00+01:00", **ACTIVITY))
    )
    assert later.status_code == 200
    wait_until(lambda: "activity-started" in gp.codes(ref.his_id), "the later Observation")
    firsts = [
        o
        for o in gp.resources(ref.his_id, "Observation")
        if o["code"]["coding"][0]["code"] == "first-contact"
    ]
    assert len({o["id"] for o in firsts}) == 1
    assert len(gp.bundles(ref.his_id)) == 2
    outcomes = [r["outcome"] for r in task_audits(service.config, ref.task_id)]
    assert (outcomes.count("success"), outcomes.count("no-change")) == (2, 1)


def test_same_observation_twice_has_one_effect(
    service: ServiceProcess, sim: SimulatedFhirServer, gp: GpRecord
) -> None:
    """The same Observation posted twice: 201, then 200 'already recorded'; one effect."""
    ref = deliver(service, sim)
    count = observation(
        ref.service_request_id, "conversation-count", "2026-11-26T10:00:00+01:00", valueInteger=3
    )
    first = outcome(post_observation(service, count), 201, "information")
    again = outcome(post_observation(service, count), 200, "information")
    assert first["issue"][0]["diagnostics"] == "recorded"
    assert again["issue"][0]["diagnostics"] == "already recorded"
    assert len(gp_outbox_keys(service.config, ref.task_id)) == 1
    wait_until(lambda: gp.codes(ref.his_id), "the Observation at the GP record")
    assert gp.codes(ref.his_id) == ["conversation-count"]


# --- refusals -----------------------------------------------------------------------------------


def test_update_after_completion_is_refused_with_409(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """in-progress after completed: 409 naming both statuses, over either channel; no change."""
    ref = deliver(service, sim)
    for payload in (
        hook_payload(ref.task_id, "2026-11-24T10:30:00+01:00", **FIRST_CONTACT),
        hook_payload(ref.task_id, "2026-12-14T16:00:00+01:00", **COMPLETED),
    ):
        assert hook(service, *signed(payload)).status_code == 200
    before = read(service, ref.task_id)
    keys = gp_outbox_keys(service.config, ref.task_id)
    late = put(
        service, ref.task_id, task_body(ref.task_id, "in-progress"), etag(service, ref.task_id)
    )
    body = outcome(late, 409)
    message = body["issue"][0]["diagnostics"]
    assert "completed" in message
    assert "in-progress" in message
    late_hook = hook(
        service,
        *signed(hook_payload(ref.task_id, "2026-11-30T09:30:00+01:00", status="bezig")),
    )
    assert "in-progress" in outcome(late_hook, 409)["issue"][0]["diagnostics"]
    assert_unchanged(service, ref.task_id, before)
    assert gp_outbox_keys(service.config, ref.task_id) == keys
    refused = [r for r in task_audits(service.config, ref.task_id) if r["outcome"] == "refused"]
    assert len(refused) == 2


def test_bad_signature_gets_401_and_stores_nothing(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """A wrong secret, or a body changed after signing: 401; Task, outbox and audit unchanged."""
    ref = deliver(service, sim)
    before = read(service, ref.task_id)
    payload = hook_payload(ref.task_id, "2026-11-24T10:30:00+01:00", **FIRST_CONTACT)
    wrong_secret = hook(service, *signed(payload, secret=b"not-the-secret"))
    assert outcome(wrong_secret, 401)["issue"][0]["code"] == "security"
    body, headers = signed(payload)
    tampered = body.replace(b"bezig", b"afgerond")
    assert tampered != body
    outcome(hook(service, tampered, headers), 401)
    unsigned = hook(service, body, {"Content-Type": "application/json"})
    outcome(unsigned, 401)
    assert_unchanged(service, ref.task_id, before)
    assert gp_outbox_keys(service.config, ref.task_id) == []
    assert task_audits(service.config, ref.task_id) == []


def test_stale_or_future_timestamp_gets_401(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """A correctly signed message outside the 300 s replay window (either side) gets 401."""
    ref = deliver(service, sim)
    before = read(service, ref.task_id)
    payload = hook_payload(ref.task_id, "2026-11-24T10:30:00+01:00", **FIRST_CONTACT)
    for offset in (-3600, -400, 3600):
        response = hook(service, *signed(payload, at=int(time.time()) + offset))
        assert "replay window" in outcome(response, 401)["issue"][0]["diagnostics"]
    assert_unchanged(service, ref.task_id, before)
    assert gp_outbox_keys(service.config, ref.task_id) == []
    # the same message signed now is taken: the refusals were about the timestamp only
    assert hook(service, *signed(payload)).status_code == 200


def test_welfare_client_of_another_organisation_gets_404(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """A welfare client for welzijn-rivierenland reads, PUTs or PATCHes this Task as if unknown."""
    ref = deliver(service, sim)
    before = read(service, ref.task_id)
    tag = etag(service, ref.task_id)
    outcome(get_task(service, ref.task_id, OTHER_WELFARE_KEY), 404)
    body = task_body(ref.task_id, "accepted")
    assert (
        outcome(put(service, ref.task_id, body, tag, OTHER_WELFARE_KEY), 404)["issue"][0]["code"]
        == "not-found"
    )
    ops = [{"op": "replace", "path": "/status", "value": "accepted"}]
    outcome(patch(service, ref.task_id, ops, tag, OTHER_WELFARE_KEY), 404)
    assert_unchanged(service, ref.task_id, before)
    assert gp_outbox_keys(service.config, ref.task_id) == []


def test_observation_for_another_organisations_task_gets_404(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """POST Observation about a referral routed to another organisation: 404, not stored."""
    ref = deliver(service, sim)
    count = observation(
        ref.service_request_id, "conversation-count", "2026-11-26T10:00:00+01:00", valueInteger=1
    )
    outcome(post_observation(service, count, OTHER_WELFARE_KEY), 404)
    assert gp_outbox_keys(service.config, ref.task_id) == []
    assert "output" not in read(service, ref.task_id)


def test_failed_without_reason_gets_422(service: ServiceProcess, sim: SimulatedFhirServer) -> None:
    """failed without statusReason: 422 (required); with not-reachable it is taken."""
    ref = deliver(service, sim)
    before = read(service, ref.task_id)
    tag = etag(service, ref.task_id)
    body = outcome(put(service, ref.task_id, task_body(ref.task_id, "failed"), tag), 422)
    assert body["issue"][0]["code"] == "required"
    assert "statusReason" in body["issue"][0]["diagnostics"]
    assert_unchanged(service, ref.task_id, before)
    taken = put(service, ref.task_id, task_body(ref.task_id, "failed", reason="not-reachable"), tag)
    assert taken.status_code == 200
    assert taken.json()["statusReason"]["coding"] == [{"system": CLOSURE, "code": "not-reachable"}]


def test_if_match_missing_gets_428_and_stale_gets_412(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """PUT and PATCH need If-Match (428 without); an older version gets 412; nothing changes."""
    ref = deliver(service, sim)
    old = etag(service, ref.task_id)
    accepted = task_body(ref.task_id, "accepted")
    ops = [{"op": "replace", "path": "/status", "value": "accepted"}]
    outcome(put(service, ref.task_id, accepted, None), 428)
    outcome(patch(service, ref.task_id, ops, None), 428)
    assert put(service, ref.task_id, accepted, old).status_code == 200
    before = read(service, ref.task_id)
    progress = task_body(ref.task_id, "in-progress", "appointment-planned")
    outcome(put(service, ref.task_id, progress, old), 412)
    outcome(patch(service, ref.task_id, [{**ops[0], "value": "in-progress"}], old), 412)
    assert_unchanged(service, ref.task_id, before)
    assert len(gp_outbox_keys(service.config, ref.task_id)) == 1


def _way_back_calls(service: ServiceProcess, ref: Referral, key: str | None) -> list[Any]:
    """PUT Task, PATCH Task and POST Observation with ``key`` (None: no credentials)."""
    tag = etag(service, ref.task_id)
    ops = [{"op": "replace", "path": "/status", "value": "accepted"}]
    count = observation(
        ref.service_request_id, "conversation-count", "2026-11-26T10:00:00+01:00", valueInteger=1
    )
    return [
        put(service, ref.task_id, task_body(ref.task_id, "accepted"), tag, key),
        patch(service, ref.task_id, ops, tag, key),
        post_observation(service, count, key),
    ]


def test_way_back_routes_need_credentials(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """PUT/PATCH Task and POST Observation: 401 without or with an unknown key; 403 read-only."""
    ref = deliver(service, sim)
    for key in (None, "not-a-configured-key"):
        for response in _way_back_calls(service, ref, key):
            assert outcome(response, 401)["issue"][0]["code"] == "login"
    for response in _way_back_calls(service, ref, READER_KEY):
        assert outcome(response, 403)["issue"][0]["code"] == "forbidden"
    assert read(service, ref.task_id)["status"] == "requested"
    assert gp_outbox_keys(service.config, ref.task_id) == []


def test_way_back_401_carries_www_authenticate(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """A 401 from PUT/PATCH Task and POST Observation names the Bearer scheme, like intake's."""
    ref = deliver(service, sim)
    for response in _way_back_calls(service, ref, None):
        assert response.status_code == 401
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer")


# --- consent, audit ------------------------------------------------------------------------------


def test_without_feedback_consent_only_the_status_travels(
    service: ServiceProcess, sim: SimulatedFhirServer, gp: GpRecord
) -> None:
    """Consent without feedback: statuses reach the GP record, items do not (they are counted)."""
    ref = deliver(service, sim, NO_FEEDBACK_CONSENT)
    withheld_before = metric_value(metrics(service), WITHHELD) or 0.0
    for payload in (
        hook_payload(ref.task_id, "2026-11-24T10:30:00+01:00", **FIRST_CONTACT),
        hook_payload(ref.task_id, "2026-12-14T16:00:00+01:00", **COMPLETED),
    ):
        assert hook(service, *signed(payload)).status_code == 200
    wait_until(lambda: len(gp.bundles(ref.his_id)) >= 2, "two Bundles at the GP record")
    assert gp.resources(ref.his_id, "Observation") == []
    tasks = gp.resources(ref.his_id, "Task")
    assert [t["status"] for t in tasks] == ["in-progress", "completed"]
    assert all("output" not in t and "for" not in t for t in tasks)
    assert tasks[-1]["statusReason"]["coding"] == [
        {"system": CLOSURE, "code": "completed-activity"}
    ]
    assert_to_referrer(gp, ref.his_id)
    assert all("subject" not in c for c in gp.resources(ref.his_id, "Communication"))
    assert (metric_value(metrics(service), WITHHELD) or 0.0) - withheld_before == 2


def test_task_updates_are_audited_with_the_bsn(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """Each taken or refused update is a task_update audit record with the patient's BSN."""
    ref = deliver(service, sim)
    assert (
        put(
            service, ref.task_id, task_body(ref.task_id, "accepted"), etag(service, ref.task_id)
        ).status_code
        == 200
    )
    tag = etag(service, ref.task_id)
    assert put(service, ref.task_id, task_body(ref.task_id, "requested"), tag).status_code == 422
    payload = hook_payload(ref.task_id, "2026-11-24T10:30:00+01:00", **FIRST_CONTACT)
    assert hook(service, *signed(payload)).status_code == 200
    rows = task_audits(service.config, ref.task_id)
    assert [(r["event"], r["action"], r["outcome"], r["user"]) for r in rows] == [
        ("task_update", "U", "success", "welzijn-voorbeeld-system"),
        ("task_update", "U", "refused", "welzijn-voorbeeld-system"),
        ("task_update", "U", "success", "webhook-welzijn-json"),
    ]
    assert {r["patient_id"] for r in rows} == {BSN}
    assert {r["object_type"] for r in rows} == {"Task"}
    assert rows[0]["responsible"] == "welzijn-voorbeeld"


# --- the first-contact deadline (its own service: the check runs often) --------------------------


def _alerts(gp: GpRecord, his_id: str) -> set[str]:
    return {c["id"] for c in gp.resources(his_id, "Communication") if c.get("priority") == "urgent"}


def test_first_contact_deadline_alerts_the_referrer_once_across_restarts(
    tmp_path: Path, sim: SimulatedFhirServer, gp: GpRecord
) -> None:
    """Past the deadline without first contact: one urgent Communication, also after a restart."""
    store = {"path": str(tmp_path / "store.sqlite")}
    # run 1 has no dispatcher, so no deadline check: two referrals, one gets its first contact
    quiet = _config(tmp_path / "quiet", sim, gp, 0.2, store=store, service={"dispatcher": False})
    # runs 2 and 3 deliver and check every 0.2 s, on the same store
    checking = _config(tmp_path / "checking", sim, gp, 0.2, store=store)
    first, second = ServiceProcess(quiet), ServiceProcess(checking)
    try:
        first.start()
        overdue_task, overdue = push(first)
        contacted_task, contacted = push(first)
        payload = hook_payload(contacted_task, "2026-11-24T10:30:00+01:00", **FIRST_CONTACT)
        assert hook(first, *signed(payload)).status_code == 200
        assert first.stop() is not None

        second.start()
        wait_until(lambda: _alerts(gp, overdue), "the deadline alert")
        [comm] = gp.resources(overdue, "Communication")
        assert comm["priority"] == "urgent"
        assert [r["identifier"] for r in comm["recipient"]] == [REFERRER]
        assert_addressed(comm, overdue)
        assert "eerste contact" in comm["payload"][0]["contentString"]
        assert second.stop() is not None

        second.start()
        # a referral pushed after the restart is alerted, so the check has run since then
        later = deliver(second, sim)
        wait_until(lambda: _alerts(gp, later.his_id), "the alert after the restart")
        time.sleep(0.5)  # a few more check rounds
        assert len(_alerts(gp, overdue)) == 1
        assert len(_alerts(gp, later.his_id)) == 1
        assert _alerts(gp, contacted) == set()
        rows = [
            r
            for r in audit_rows(checking, "first_contact_overdue")
            if r["object_id"] == overdue_task
        ]
        assert len(rows) == 1
        assert rows[0]["patient_id"] == BSN
        for proc in (first, second):
            output = "\n".join(proc.stderr_lines + proc.stdout_lines)
            assert patient_value_hits(output) == []
    finally:
        first.kill()
        second.kill()


# --- logs (keep last: it reads the whole run of the module's service) ---------------------------


def test_service_logs_hold_no_patient_values(service: ServiceProcess) -> None:
    """Over the whole run, the service's output repeats no patient value."""
    events = service.log_events()
    assert any(e.get("event") == "task_updated" for e in events), "the run must have updated Tasks"
    output = "\n".join(service.stderr_lines + service.stdout_lines)
    assert patient_value_hits(output) == []
