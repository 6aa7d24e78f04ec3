"""Hostile bodies on every body route: clean 4xx refusals that never repeat a value or an
unknown property name from the body; free text from the welfare side over its limit is a 422
with the location. Bodies are never printed (they stand in for patient data)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cases import case_input
from tests.inprocess import (
    FHIR_JSON,
    HIS,
    PULL_SECRET,
    WELFARE,
    World,
    hook_payload,
    make_world,
    signed,
    task_body,
)

MARK = "ZzLeak"  # stands in for a patient value; it must never come back
Json = dict[str, Any]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One app with the patient's referrals (refusals change nothing, so it is shared)."""
    made = make_world(tmp_path_factory.mktemp("hostile"))
    made.prepared["token"] = made.token(made.viplive)
    return made


def _hostile(resource_type: str) -> list[Json]:
    """Resources of one type with the mark in unknown names, wrong types and unknown codes."""
    return [
        {"resourceType": resource_type, f"{MARK}Name": f"{MARK} value"},
        {"resourceType": resource_type, "status": {f"{MARK}": [MARK]}},
        {"resourceType": resource_type, "status": f"{MARK}-status", "intent": MARK},
        {"resourceType": resource_type, "identifier": [{"system": 7, f"{MARK}2": MARK}]},
        {"resourceType": resource_type, "extension": [{"url": MARK, f"value{MARK}": MARK}]},
        {"resourceType": f"{MARK}Type", "id": MARK},
        {"resourceType": resource_type, "meta": {"profile": [MARK]}, "id": f"{MARK}!"},
    ]


Send = Callable[[World, bytes], httpx.Response]


def _json_route(method: str, path: str, key: str, **headers: str) -> Send:
    def send(world: World, body: bytes) -> httpx.Response:
        url = path.format(voorbeeld=world.voorbeeld, viplive=world.viplive)
        writer = world.prepared["token"] if key == "token" else key
        all_headers = {"Content-Type": FHIR_JSON, **headers}
        return world.call(method, url, writer, content=body, headers=all_headers)

    return send


def _webhook(world: World, body: bytes) -> httpx.Response:
    raw, headers = signed(body)
    return world.call("POST", "/feedback/welzijn-json", content=raw, headers=headers)


def _token(world: World, body: bytes) -> httpx.Response:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return world.call("POST", "/oauth/token", content=body, headers=headers)


def _bodies(kind: str) -> list[bytes]:
    if kind == "patch":
        ops = [
            [{"op": MARK, "path": f"/{MARK}", "value": MARK}],
            [{"op": "add", "path": f"/{MARK}", "value": MARK}],
            [{"op": "replace", "path": "/status", "value": {MARK: MARK}}],
            {MARK: MARK},
        ]
        return [json.dumps(o).encode() for o in ops]
    if kind == "webhook":
        payloads = [
            hook_payload(MARK, status=MARK),
            {f"{MARK}": MARK},
            hook_payload(MARK, mijlpaal=MARK, aantal_gesprekken=MARK),
            [MARK],
        ]
        return [json.dumps(p).encode() for p in payloads]
    if kind == "form":
        return [
            f"grant_type=client_credentials&client_id={MARK}&client_secret={MARK}".encode(),
            (
                "grant_type=client_credentials&client_id=viplive-receiver&client_secret="
                f"{PULL_SECRET}&resource=urn:uuid:{MARK}"
            ).encode(),
            f"grant_type={MARK}".encode(),
            f"{MARK}=1&{MARK}=2".encode(),
        ]
    if kind == "xml":
        xml = case_input("accepted-xml-contained").decode()
        inner = f'<{MARK} value="{MARK}"/><status value="{MARK}"/>'
        return [xml.replace("<status", inner + "<status", 1).encode(), f"<{MARK}/>".encode()]
    bundle = [{"resourceType": "Bundle", "type": "batch", "entry": [{"resource": r}]} for r in
              _hostile("Task") + _hostile("Observation")]  # fmt: skip
    resources = bundle if kind == "Bundle" else _hostile(kind)
    return [json.dumps(r).encode() for r in resources]


IF_MATCH = {"If-Match": 'W/"1"'}
ROUTES: list[tuple[str, Send, str]] = [
    ("intake ServiceRequest", _json_route("POST", "/fhir/r4/ServiceRequest", HIS),
     "ServiceRequest"),
    ("intake Bundle", _json_route("POST", "/fhir/r4", HIS), "Bundle"),
    ("intake XML", _json_route("POST", "/fhir/r4", HIS, **{"Content-Type": "application/fhir+xml"}),
     "xml"),
    ("welfare Bundle", _json_route("POST", "/fhir/r4", WELFARE), "Bundle"),
    ("R4 PUT Task", _json_route("PUT", "/fhir/r4/Task/{voorbeeld}", WELFARE, **IF_MATCH), "Task"),
    ("R4 PATCH Task", _json_route("PATCH", "/fhir/r4/Task/{voorbeeld}", WELFARE,
     **{"If-Match": 'W/"1"', "Content-Type": "application/json-patch+json"}), "patch"),
    ("R4 Observation", _json_route("POST", "/fhir/r4/Observation", WELFARE), "Observation"),
    ("webhook", _webhook, "webhook"),
    ("token", _token, "form"),
    ("STU3 PUT Task", _json_route("PUT", "/fhir/stu3/Task/{viplive}", "token"), "Task"),
    ("STU3 Observation", _json_route("POST", "/fhir/stu3/Observation", "token"), "Observation"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "send", "kind"), ROUTES, ids=[r[0] for r in ROUTES])
def test_hostile_bodies_are_refused_without_echo(
    world: World, name: str, send: Send, kind: str
) -> None:
    """Each hostile body gets a clean 4xx that repeats no value and no unknown name from it."""
    for n, body in enumerate(_bodies(kind)):
        answer = send(world, body)
        assert 400 <= answer.status_code < 500, (name, n, answer.status_code)
        echoed = MARK.lower() in (answer.text + str(answer.headers)).lower()
        assert not echoed, (name, n)
        payload = answer.json()
        if kind == "form":
            assert "error" in payload, (name, n)
        else:
            assert payload["resourceType"] == "OperationOutcome", (name, n)


# --- free text from the welfare side -------------------------------------------------------------


def _reason(world: World, length: int) -> Json:
    return task_body(world.voorbeeld, "rejected", "r" * length)


def _note(world: World, length: int, location: str = "focus") -> Json:
    target = {"reference": f"Task/{world.voorbeeld}"}
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [
                {"system": "https://wor-bridge.nl/fhir/CodeSystem/feedback-item", "code": "note"}
            ]
        },
        location: [target],
        "effectiveDateTime": "2026-11-26T10:00:00+01:00",
        "valueString": "n" * length,
    }


def _put(world: World, body: Json) -> httpx.Response:
    path = f"/fhir/r4/Task/{world.voorbeeld}"
    return world.call("PUT", path, WELFARE, json=body, headers={"If-Match": 'W/"1"'})


def _bundle(world: World, body: Json) -> httpx.Response:
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": body}]}
    return world.call("POST", "/fhir/r4", WELFARE, json=bundle)


def _hook(world: World, fields: Json) -> httpx.Response:
    body, headers = signed(hook_payload(world.voorbeeld, status="afgewezen", **fields))
    return world.call("POST", "/feedback/welzijn-json", content=body, headers=headers)


LIMITS: list[tuple[str, Callable[[World, int], httpx.Response], int, str]] = [
    ("R4 Task statusReason", lambda w, n: _put(w, _reason(w, n)), 200, "Task.statusReason.text"),
    ("R4 Observation note",
     lambda w, n: w.call("POST", "/fhir/r4/Observation", WELFARE, json=_note(w, n)), 500,
     "Observation.valueString"),
    ("welfare Bundle statusReason", lambda w, n: _bundle(w, _reason(w, n)), 200,
     "Bundle.entry[0].resource.statusReason.text"),
    ("webhook reason", lambda w, n: _hook(w, {"reden": "r" * n}), 200, "reden"),
    ("webhook coach", lambda w, n: _hook(w, {"reden": "r", "coach": "c" * n}), 100, "coach"),
    ("webhook note", lambda w, n: _hook(w, {"reden": "r", "toelichting": "t" * n}), 500,
     "toelichting"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "send", "limit", "where"), LIMITS, ids=[x[0] for x in LIMITS])
def test_free_text_over_its_limit_is_a_422_with_the_location(
    tmp_path: Path, name: str, send: Any, limit: int, where: str
) -> None:
    """One character over the limit is a 422 too-long at its location; at the limit it is taken."""
    world = make_world(tmp_path)
    over = send(world, limit + 1)
    assert over.status_code == 422, name
    [issue] = over.json()["issue"]
    assert (issue["code"], issue["expression"]) == ("too-long", [where])
    assert f"got {limit + 1} characters" in issue["diagnostics"]
    assert "rrrrrrrrrr" not in over.text
    assert "nnnnnnnnnn" not in over.text
    assert world.call("GET", f"/fhir/r4/Task/{world.voorbeeld}", HIS).json()["status"] == (
        "requested"
    )
    assert send(world, limit).status_code in (200, 201), name
