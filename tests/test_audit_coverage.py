"""NEN 7513 coverage: each operation of the README's endpoint table, allowed and refused, on a
known patient's referral leaves its audit rows: event, time, patient, client, on-behalf-of,
source system and outcome. Patient identifiers are compared, never printed."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.cases import case_input
from tests.inprocess import (
    ADMIN,
    FHIR_JSON,
    HIS,
    OTHER_WELFARE,
    PULL_SECRET,
    READER,
    WELFARE,
    ZORGDOMEIN,
    World,
    hook_payload,
    make_world,
    observation,
    signed,
    stu3_observation,
    task_body,
)
from tests.stu3_intake_cases import stu3_input

REFERRER = "http://fhir.nl/fhir/NamingSystem/agb-z|01000001"  # the fixture's practitioner
FHIR_XML = "application/fhir+xml"
PATIENT, NONE = True, False
Call = Callable[[World], httpx.Response]


@dataclass(frozen=True)
class Case:
    """One operation of the endpoint table, allowed or refused, and the rows it must leave."""

    operation: str
    variant: str
    call: Call
    status: int
    rows: int
    event: str
    outcome: str
    user: str
    patient: bool
    responsible: str = ""


def _contained() -> bytes:
    return case_input("accepted-contained")


def _as_bundle(world: World) -> httpx.Response:
    request = json.loads(_contained())
    bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"fullUrl": "urn:uuid:5f0e3c52-8d1e-4c55-9a51-8c1a0b2f7e11", "resource": request}
        ],
    }
    return world.call("POST", "/fhir/r4", HIS, json=bundle, headers={"Content-Type": FHIR_JSON})


def _push_again(world: World, key: str) -> httpx.Response:
    return world.call(
        "POST",
        "/fhir/r4/ServiceRequest",
        key,
        content=_contained(),
        headers={"Content-Type": FHIR_JSON},
    )


def _stu3_push(world: World, key: str | None, bundle: bool = False) -> httpx.Response:
    """The patient's first referral again, as STU3: contained JSON, or an XML Bundle."""
    if bundle:
        body, path, ctype = stu3_input("accepted-xml-transaction-urn"), "/fhir/stu3", FHIR_XML
    else:
        body, path, ctype = (
            stu3_input("accepted-contained"),
            "/fhir/stu3/ReferralRequest",
            FHIR_JSON,
        )
    return world.call("POST", path, key, content=body, headers={"Content-Type": ctype})


def _put(world: World, key: str, *, if_match: bool = True, task: str = "") -> httpx.Response:
    task_id = task or world.voorbeeld
    headers = {"If-Match": 'W/"1"'} if if_match else {}
    body = task_body(task_id, "accepted")
    return world.call("PUT", f"/fhir/r4/Task/{task_id}", key, json=body, headers=headers)


def _patch(world: World, key: str) -> httpx.Response:
    ops = [{"op": "replace", "path": "/status", "value": "accepted"}]
    headers = {"If-Match": 'W/"1"', "Content-Type": "application/json-patch+json"}
    return world.call("PATCH", f"/fhir/r4/Task/{world.voorbeeld}", key, json=ops, headers=headers)


def _welfare_bundle(world: World, key: str) -> httpx.Response:
    entries = [task_body(world.voorbeeld, "accepted"), observation(world.voorbeeld)]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"resource": e} for e in entries],
    }
    return world.call("POST", "/fhir/r4", key, json=bundle)


def _hook(world: World, secret: bytes = b"example-webhook-secret") -> httpx.Response:
    body, headers = signed(hook_payload(world.voorbeeld, status="aangenomen"), secret)
    return world.call("POST", "/feedback/welzijn-json", content=body, headers=headers)


def _token(world: World, task_id: str) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_id": "viplive-receiver",
        "client_secret": PULL_SECRET,
        "resource": f"urn:uuid:{task_id}",
    }
    return world.call("POST", "/oauth/token", data=form)


def _prepare(world: World) -> None:
    """What the cases need made before the count starts: a third referral of the patient (to
    the ZorgDomein-style platform), a pull token for the notified-pull one, request ids."""
    world.prepared["zorgdomein"] = world.push("Buren", 3)
    world.prepared["token"] = world.token(world.viplive)
    for task_id in (world.voorbeeld, world.viplive):
        world.prepared[task_id] = world.request_id(task_id)
    held = world.call(
        "POST", "/fhir/r4/Observation", ZORGDOMEIN, json=observation(world.prepared["zorgdomein"])
    )
    world.prepared["observation"] = held.json()["id"]


def _read(world: World, path: str, key: str) -> httpx.Response:
    ids = {"sr": world.prepared[world.voorbeeld], "obs": world.prepared["observation"]}
    return world.call("GET", path.format(task=world.voorbeeld, **ids), key)


def _pull(world: World, task_id: str) -> httpx.Response:
    return world.call("GET", f"/fhir/stu3/Task/{task_id}", world.prepared["token"])


def _search(world: World, query: str) -> httpx.Response:
    return world.call("GET", f"/fhir/stu3/Consent{query}", world.prepared["token"])


def _stu3_put(world: World, task_id: str, key: str = "") -> httpx.Response:
    writer = key or world.prepared["token"]
    body = task_body(task_id, "accepted")
    return world.call("PUT", f"/fhir/stu3/Task/{task_id}", writer, json=body)


def _stu3_observation(world: World, task_id: str) -> httpx.Response:
    body = stu3_observation(world.prepared[task_id])
    return world.call("POST", "/fhir/stu3/Observation", world.prepared["token"], json=body)


def _zorgdomein_put(world: World) -> httpx.Response:
    return _stu3_put(world, world.prepared["zorgdomein"], ZORGDOMEIN)


LONG_NOTE = {"valueString": "x" * 501}
INTAKE, READ, UPDATE = "referral_intake", "task_read", "task_update"
SEARCH, REQUEST, FEEDBACK = "task_search", "referral_read", "feedback_read"
PULL, WRITE, TOKEN = "referral_pull", "referral_write", "pull_token"
V, W = "welzijn-voorbeeld", "welzijn-viplive"
CASES = [
    Case("POST /fhir/r4/ServiceRequest", "allowed", lambda w: _push_again(w, HIS), 200, 1,
         INTAKE, "duplicate", "his-example", PATIENT, REFERRER),
    Case("POST /fhir/r4/ServiceRequest", "refused", lambda w: _push_again(w, READER), 403, 1,
         INTAKE, "refused", "reader", NONE),
    Case("POST /fhir/r4", "allowed", _as_bundle, 200, 1, INTAKE, "duplicate", "his-example",
         PATIENT, REFERRER),
    Case("POST /fhir/r4", "refused", lambda w: _push_again(w, "no-such-key"), 401, 1, INTAKE,
         "refused", "(unknown)", NONE),
    Case("POST /fhir/stu3/ReferralRequest", "allowed", lambda w: _stu3_push(w, HIS), 200, 1,
         INTAKE, "duplicate", "his-example", PATIENT, REFERRER),
    Case("POST /fhir/stu3/ReferralRequest", "refused", lambda w: _stu3_push(w, READER), 403, 1,
         INTAKE, "refused", "reader", NONE),
    Case("POST /fhir/stu3", "allowed", lambda w: _stu3_push(w, HIS, bundle=True), 200, 1,
         INTAKE, "duplicate", "his-example", PATIENT, REFERRER),
    Case("POST /fhir/stu3", "refused", lambda w: _stu3_push(w, None, bundle=True), 401, 1,
         INTAKE, "refused", "(unknown)", NONE),
    Case("GET /fhir/r4/Task/{id}", "allowed",
         lambda w: w.call("GET", f"/fhir/r4/Task/{w.voorbeeld}", HIS), 200, 1, READ, "success",
         "his-example", PATIENT, REFERRER),
    Case("GET /fhir/r4/Task/{id}", "refused",
         lambda w: w.call("GET", f"/fhir/r4/Task/{w.voorbeeld}", OTHER_WELFARE), 404, 1, READ,
         "refused", "rivierenland", PATIENT, "welzijn-rivierenland"),
    Case("GET /fhir/r4/Task", "allowed", lambda w: _read(w, "/fhir/r4/Task?_id={task}", HIS),
         200, 1, SEARCH, "success", "his-example", PATIENT, REFERRER),
    Case("GET /fhir/r4/Task", "refused", lambda w: _read(w, "/fhir/r4/Task", "no-such-key"),
         401, 1, SEARCH, "refused", "(unknown)", NONE),
    Case("GET /fhir/r4/Task/{id}/_history/{vid}", "allowed",
         lambda w: _read(w, "/fhir/r4/Task/{task}/_history/1", HIS), 200, 1, READ, "success",
         "his-example", PATIENT, REFERRER),
    Case("GET /fhir/r4/Task/{id}/_history/{vid}", "refused",
         lambda w: _read(w, "/fhir/r4/Task/{task}/_history/1", OTHER_WELFARE), 404, 1, READ,
         "refused", "rivierenland", PATIENT, "welzijn-rivierenland"),
    Case("GET /fhir/r4/ServiceRequest/{id}", "allowed",
         lambda w: _read(w, "/fhir/r4/ServiceRequest/{sr}", HIS), 200, 1, REQUEST, "success",
         "his-example", PATIENT, REFERRER),
    Case("GET /fhir/r4/ServiceRequest/{id}", "refused",
         lambda w: _read(w, "/fhir/r4/ServiceRequest/{sr}", OTHER_WELFARE), 404, 1, REQUEST,
         "refused", "rivierenland", PATIENT, "welzijn-rivierenland"),
    Case("GET /fhir/r4/Observation/{id}", "allowed",
         lambda w: _read(w, "/fhir/r4/Observation/{obs}", HIS), 200, 1, FEEDBACK, "success",
         "his-example", PATIENT, REFERRER),
    Case("GET /fhir/r4/Observation/{id}", "refused",
         lambda w: _read(w, "/fhir/r4/Observation/{obs}", OTHER_WELFARE), 404, 1, FEEDBACK,
         "refused", "rivierenland", PATIENT, "welzijn-rivierenland"),
    Case("PUT /fhir/r4/Task/{id}", "allowed", lambda w: _put(w, WELFARE), 200, 1, UPDATE,
         "success", "welzijn-voorbeeld-system", PATIENT, V),
    Case("PUT /fhir/r4/Task/{id}", "refused", lambda w: _put(w, WELFARE, if_match=False), 428, 1,
         UPDATE, "refused", "welzijn-voorbeeld-system", PATIENT, V),
    Case("PATCH /fhir/r4/Task/{id}", "allowed", lambda w: _patch(w, WELFARE), 200, 1, UPDATE,
         "success", "welzijn-voorbeeld-system", PATIENT, V),
    Case("PATCH /fhir/r4/Task/{id}", "refused", lambda w: _patch(w, OTHER_WELFARE), 404, 1,
         UPDATE, "refused", "rivierenland", PATIENT, "welzijn-rivierenland"),
    Case("POST /fhir/r4/Observation", "allowed",
         lambda w: w.call("POST", "/fhir/r4/Observation", WELFARE, json=observation(w.voorbeeld)),
         201, 1, UPDATE, "success", "welzijn-voorbeeld-system", PATIENT, V),
    Case("POST /fhir/r4/Observation", "refused",
         lambda w: w.call("POST", "/fhir/r4/Observation", WELFARE,
                          json=observation(w.voorbeeld, "note", **LONG_NOTE)),
         422, 1, UPDATE, "refused", "welzijn-voorbeeld-system", PATIENT, V),
    Case("POST /fhir/r4 (welfare client)", "allowed", lambda w: _welfare_bundle(w, WELFARE), 200,
         2, UPDATE, "success", "welzijn-voorbeeld-system", PATIENT, V),
    Case("POST /fhir/r4 (welfare client)", "refused",
         lambda w: _welfare_bundle(w, OTHER_WELFARE), 404, 2, UPDATE, "refused", "rivierenland",
         PATIENT, "welzijn-rivierenland"),
    Case("POST /feedback/{connector}", "allowed", _hook, 200, 1, UPDATE, "success",
         "webhook-welzijn-json", PATIENT, V),
    Case("POST /feedback/{connector}", "refused", lambda w: _hook(w, b"wrong"), 401, 1, UPDATE,
         "refused", "unverified:webhook-welzijn-json", NONE),
    Case("POST /oauth/token", "allowed", lambda w: _token(w, w.viplive), 200, 1, TOKEN, "issued",
         "viplive-receiver", PATIENT, W),
    Case("POST /oauth/token", "refused", lambda w: _token(w, w.voorbeeld), 400, 1, TOKEN,
         "refused", "viplive-receiver", PATIENT, W),
    Case("GET /fhir/stu3/{type}/{id}", "allowed", lambda w: _pull(w, w.viplive), 200, 1, PULL,
         "served", "viplive-receiver", PATIENT, W),
    Case("GET /fhir/stu3/{type}/{id}", "refused", lambda w: _pull(w, w.voorbeeld), 404, 1, PULL,
         "refused", "viplive-receiver", PATIENT, W),
    Case("GET /fhir/stu3/{type}", "allowed", lambda w: _search(w, ""), 200, 1, PULL, "served",
         "viplive-receiver", PATIENT, W),
    Case("GET /fhir/stu3/{type}", "refused", lambda w: _search(w, "?status=active"), 400, 1, PULL,
         "refused", "viplive-receiver", PATIENT, W),
    Case("PUT /fhir/stu3/Task/{id}", "allowed (pull token)", lambda w: _stu3_put(w, w.viplive),
         200, 1, UPDATE, "success", "viplive-receiver", PATIENT, W),
    Case("PUT /fhir/stu3/Task/{id}", "refused (pull token)", lambda w: _stu3_put(w, w.voorbeeld),
         404, 1, WRITE, "refused", "viplive-receiver", PATIENT, W),
    Case("PUT /fhir/stu3/Task/{id}", "allowed (API key)", _zorgdomein_put, 200, 1, UPDATE,
         "success", "zorgdomein-system", PATIENT, "welzijn-zorgdomein"),
    Case("PUT /fhir/stu3/Task/{id}", "refused (API key)",
         lambda w: _stu3_put(w, w.voorbeeld, ZORGDOMEIN), 404, 1, WRITE, "refused",
         "zorgdomein-system", PATIENT, "welzijn-zorgdomein"),
    Case("POST /fhir/stu3/Observation", "allowed",
         lambda w: _stu3_observation(w, w.viplive), 201, 1, UPDATE, "success",
         "viplive-receiver", PATIENT, W),
    Case("POST /fhir/stu3/Observation", "refused",
         lambda w: _stu3_observation(w, w.voorbeeld), 404, 1, WRITE, "refused",
         "viplive-receiver", PATIENT, W),
    Case("GET /reports/monitoring", "allowed", lambda w: w.call("GET", "/reports/monitoring",
         ADMIN), 200, 1, "monitoring_report", "success", "ops", NONE, "ops"),
    Case("GET /reports/monitoring", "refused", lambda w: w.call("GET", "/reports/monitoring",
         HIS), 403, 1, "monitoring_report", "refused", "his-example", NONE),
    Case("GET /reports/monitoring/dictionary.csv", "allowed", lambda w: w.call("GET",
         "/reports/monitoring/dictionary.csv", ADMIN), 200, 1, "monitoring_report", "success",
         "ops", NONE, "ops"),
    Case("GET /reports/monitoring/dictionary.csv", "refused", lambda w: w.call("GET",
         "/reports/monitoring/dictionary.csv", WELFARE), 403, 1, "monitoring_report", "refused",
         "welzijn-voorbeeld-system", NONE),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[f"{c.operation} {c.variant}" for c in CASES])
def test_operation_leaves_its_audit_rows(tmp_path: Path, case: Case) -> None:
    """Each operation leaves exactly its rows: event, time, client, behalf, outcome, patient."""
    world = make_world(tmp_path)
    _prepare(world)
    mark = world.last_audit_id()
    answer = case.call(world)
    assert answer.status_code == case.status
    rows = world.audit(mark)
    assert len(rows) == case.rows
    patient = world.patient_of(world.voorbeeld)  # the same patient in all referrals
    for row in rows:
        assert (row["event"], row["outcome"], row["user"]) == (case.event, case.outcome, case.user)
        assert row["at"] > 0
        assert row["responsible"] == case.responsible
        named = row["patient_id"] == (patient if case.patient else "")  # never printed
        assert named, "the row must name the referral's patient exactly when known"
        assert row["source_system"] == ("his-example" if case.patient else "")


def test_every_operation_of_the_endpoint_table_is_covered_allowed_and_refused() -> None:
    """Each patient-data row of the README's endpoint table has an allowed and a refused case."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Endpoints", 1)[1].split("\n\n", 2)[1]
    operations = {
        line.split("`")[1] + (" (welfare client)" if "(welfare client)" in line else "")
        for line in table.splitlines()
        if line.startswith("| `")
    }
    no_patient_data = {"GET /healthz", "GET /readyz", "GET /metrics", "GET /openapi.json"}
    no_patient_data |= {"GET /fhir/r4/metadata", "GET /fhir/stu3/metadata"}
    # the browser console's rows: signed-in people, not API clients; their audit records (the
    # user, the organisation, the patient; refusals too) are checked in tests/test_console_*.py
    console = {o for o in operations if o.split(" ")[1].startswith("/console")}
    assert console == {"GET /console/login", "GET /console/inbox", "GET /console/outbox"}
    covered = {c.operation for c in CASES}
    assert operations - no_patient_data - console == covered
    for operation in covered:
        variants = {c.variant.split(" ")[0] for c in CASES if c.operation == operation}
        assert variants == {"allowed", "refused"}, operation
    assert sum(c.rows for c in CASES) == 46


def test_undecodable_compressed_body_is_recorded_as_the_refusal_it_gets(tmp_path: Path) -> None:
    """A gzip body that does not decode is a 400 and one refused record with the patient."""
    world = make_world(tmp_path)
    mark = world.last_audit_id()
    answer = world.call(
        "PUT",
        f"/fhir/r4/Task/{world.voorbeeld}",
        WELFARE,
        content=b"\x1f\x8b\x08\x00 not gzip",
        headers={"Content-Type": FHIR_JSON, "Content-Encoding": "gzip", "If-Match": 'W/"1"'},
    )
    assert answer.status_code == 400
    [row] = world.audit(mark)
    assert (row["event"], row["outcome"], row["detail"]) == (UPDATE, "refused", "HTTP 400")
    named = row["patient_id"] == world.patient_of(world.voorbeeld)  # never printed
    assert named
