"""Notified pull and the STU3 endpoint in-process (httpx over ASGI, a real SQLite store, a real
receiver on loopback for the notification): tokens bound to one Task, access by Task status,
audited pulls, STU3 status updates and feedback."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pytest_httpserver import HTTPServer

from tests.cases import REPO, case_input
from tests.service_harness import patient_value_hits
from wor_bridge import bootstrap
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.config import load_app
from wor_bridge.core import fhir
from wor_bridge.demo.credentials import demo_configuration
from wor_bridge.service.app import create_app
from wor_bridge.service.dispatcher import Dispatcher
from wor_bridge.service.tokens import JWT_BEARER

PULL_SECRET = "example-pull-secret"
BASE_URL = "https://bridge.example.org"
START = dt.datetime(2026, 11, 3, 9, 0, tzinfo=dt.UTC)


@dataclasses.dataclass
class World:
    """The app, its components, the receiver and the private key of the JWT client."""

    app: Any
    components: Any
    receiver: HTTPServer
    clock: FixedClock
    private_key: ec.EllipticCurvePrivateKey
    store_path: Path

    def call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, url, **kw)

        return asyncio.run(go())


@pytest.fixture
def world(tmp_path: Path, httpserver: HTTPServer) -> World:
    """The example configuration with the notified-pull destination at a loopback receiver and a
    second receiver client that authenticates with a private-key JWT."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "receiver.pem").write_bytes(pem)
    text = demo_configuration()
    text = text.replace('mappings_dir = "../mappings"', f'mappings_dir = "{REPO / "mappings"}"')
    text = text.replace('path = "wor-bridge.sqlite"', f'path = "{tmp_path / "s.sqlite"}"')
    text = text.replace('base_url = "http://127.0.0.1:8080"', f'base_url = "{BASE_URL}"')
    text = text.replace("http://127.0.0.1:8093/fhir", httpserver.url_for("/fhir"))
    text = text.replace("http://127.0.0.1:8094/fhir", httpserver.url_for("/fhir"))
    text += (
        '\n[[clients]]\nid = "viplive-jwt"\njwt_public_key_file = "receiver.pem"\n'
        'scopes = ["referral:pull", "task:update"]\ndestination = "welzijn-viplive"\n'
    )
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    clock = FixedClock(START)
    components = dataclasses.replace(bootstrap.build(load_app(path)), clock=clock)
    app = create_app(components, start_dispatcher=False)
    return World(app, components, httpserver, clock, key, tmp_path / "s.sqlite")


def _push(world: World, district: str = "Culemborg", number: int = 1) -> str:
    body = case_input("accepted-contained").replace(b'"Utrecht"', f'"{district}"'.encode())
    body = body.replace(b"VW-2026-0001", f"VW-2026-{number:04d}".encode())
    response = world.call(
        "POST",
        "/fhir/r4/ServiceRequest",
        content=body,
        headers={
            "Authorization": "Bearer example-his-key",
            "Content-Type": "application/fhir+json",
        },
    )
    assert response.status_code == 201
    return response.headers["Location"].split("/_history/")[0].rsplit("/", 1)[-1]


def _token(world: World, task_id: str, **form: str) -> httpx.Response:
    data = {
        "grant_type": "client_credentials",
        "client_id": "viplive-receiver",
        "client_secret": PULL_SECRET,
        "resource": f"urn:uuid:{task_id}",
        **form,
    }
    return world.call("POST", "/oauth/token", data={k: v for k, v in data.items() if v})


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _audit(world: World, event: str) -> list[tuple[str, str]]:
    with sqlite3.connect(world.store_path) as db:
        rows = db.execute("SELECT outcome, user FROM audit WHERE event = ?", (event,)).fetchall()
    return [(str(a), str(b)) for a, b in rows]


def test_notification_is_delivered_without_patient_data(world: World) -> None:
    """The dispatcher POSTs an STU3 notification Task to the receiver; no patient value in it."""
    task_id = _push(world)
    world.receiver.expect_request("/fhir/Task", method="POST").respond_with_json(
        {"resourceType": "Task"}, status=201
    )
    attempts = Dispatcher(world.components).run_once()
    assert [a.destination for a in attempts] == ["welzijn-viplive"]
    request, _ = world.receiver.log[0]
    body = request.get_data()
    assert request.headers["If-None-Exist"].endswith(f"urn:uuid:{task_id}")
    assert patient_value_hits(body.decode("utf-8")) == []  # indices only, never the values
    task = json.loads(body)
    assert fhir.validate_stu3(task, "Task") == []
    assert task["owner"]["identifier"] == {
        "system": "urn:oid:2.16.840.1.113883.2.4.6.1",
        "value": "98000001",
    }
    assert task["focus"]["reference"].startswith(f"{BASE_URL}/fhir/stu3/ReferralRequest/")


def test_token_reads_exactly_its_referral(world: World) -> None:
    """A token for one Task reads that referral's resources; another's is answered as unknown."""
    first, second = _push(world), _push(world, number=2)
    token = _token(world, first).json()["access_token"]
    task = world.call("GET", f"/fhir/stu3/Task/{first}", headers=_bearer(token))
    assert task.status_code == 200
    focus = task.json()["focus"]["reference"]
    referral = world.call("GET", f"/fhir/stu3/{focus}", headers=_bearer(token))
    assert referral.status_code == 200
    assert referral.json()["resourceType"] == "ReferralRequest"
    for served in (task.json(), referral.json()):
        assert fhir.validate_stu3(served, served["resourceType"]) == []
    assert _audit(world, "pull_token") == [("issued", "viplive-receiver")]
    other = world.call("GET", f"/fhir/stu3/Task/{second}", headers=_bearer(token))
    assert other.status_code == 404
    assert other.json()["resourceType"] == "OperationOutcome"
    outcomes = [o for o, _ in _audit(world, "referral_pull")]
    assert outcomes.count("served") == 2
    assert outcomes.count("refused") == 1


def test_token_refused_for_wrong_secret_other_destination_and_after_cancel(world: World) -> None:
    """No token with a wrong secret, for another organisation's Task, or once cancelled."""
    task_id = _push(world)
    assert _token(world, task_id, client_secret="wrong").status_code == 401
    elsewhere = _push(world, "Utrecht", number=2)
    refused = _token(world, elsewhere)
    assert refused.status_code == 400
    assert refused.json()["error"] == "invalid_target"
    token = _token(world, task_id).json()["access_token"]
    cancel = world.call(
        "PUT",
        f"/fhir/r4/Task/{task_id}",
        json={
            "resourceType": "Task",
            "id": task_id,
            "status": "cancelled",
            "intent": "order",
            "statusReason": {"text": "patient changed their mind"},
        },
        headers={**_bearer("example-his-key"), "If-Match": 'W/"1"'},
    )
    assert cancel.status_code == 200, cancel.text
    after = world.call("GET", f"/fhir/stu3/Task/{task_id}", headers=_bearer(token))
    assert after.status_code == 403
    assert _token(world, task_id).json()["error"] == "invalid_grant"
    assert ("refused", "viplive-receiver") in _audit(world, "referral_pull")


def test_expired_token_is_refused(world: World) -> None:
    """A token past its lifetime is refused with an OperationOutcome coded expired."""
    task_id = _push(world)
    token = _token(world, task_id).json()["access_token"]
    world.clock.advance(301)
    response = world.call("GET", f"/fhir/stu3/Task/{task_id}", headers=_bearer(token))
    assert response.status_code == 401
    assert response.json()["issue"][0]["code"] == "expired"


def test_private_key_jwt_client_gets_a_token_once_per_assertion(world: World) -> None:
    """A private-key JWT assertion gets one token, here and in another process on the store."""
    task_id = _push(world)
    now = int(START.timestamp())
    assertion = jwt.encode(
        {
            "iss": "viplive-jwt",
            "sub": "viplive-jwt",
            "aud": f"{BASE_URL}/oauth/token",
            "exp": now + 60,
            "jti": str(uuid.uuid4()),
        },
        world.private_key,
        algorithm="ES256",
    )
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        "resource": f"{BASE_URL}/fhir/stu3/Task/{task_id}",
    }
    assert world.call("POST", "/oauth/token", data=form).status_code == 200
    again = world.call("POST", "/oauth/token", data=form)
    assert again.status_code == 401
    assert again.json()["error"] == "invalid_client"
    # another process on the same store (or this one after a restart) refuses it as well
    fresh = bootstrap.build(load_app(world.store_path.parent / "c.toml"))
    restarted = create_app(dataclasses.replace(fresh, clock=world.clock), start_dispatcher=False)
    replayed = dataclasses.replace(world, app=restarted).call("POST", "/oauth/token", data=form)
    assert (replayed.status_code, replayed.json()["error"]) == (401, "invalid_client")


def test_stu3_status_update_and_feedback_reach_the_task(world: World) -> None:
    """PUT of the STU3 Task and a STU3 Observation move the bridge's Task and record feedback."""
    task_id = _push(world)
    token = _token(world, task_id).json()["access_token"]
    task = world.call("GET", f"/fhir/stu3/Task/{task_id}", headers=_bearer(token)).json()
    accepted = world.call(
        "PUT",
        f"/fhir/stu3/Task/{task_id}",
        json={**task, "status": "accepted"},
        headers=_bearer(token),
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "accepted"
    request_id = task["focus"]["reference"].rsplit("/", 1)[-1]
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {
            "coding": [
                {
                    "system": "https://wor-bridge.nl/fhir/CodeSystem/feedback-item",
                    "code": "first-contact",
                }
            ]
        },
        "basedOn": [{"reference": f"ReferralRequest/{request_id}"}],
        "effectiveDateTime": "2026-11-04T10:00:00+01:00",
    }
    posted = world.call("POST", "/fhir/stu3/Observation", json=observation, headers=_bearer(token))
    assert posted.status_code == 201, posted.text
    current = world.call("GET", f"/fhir/stu3/Task/{task_id}", headers=_bearer(token)).json()
    assert current["status"] == "accepted"
    assert current.get("output")


def test_zorgdomein_document_with_bearer_and_status_put_back(world: World) -> None:
    """A ZorgDomein-style destination gets one STU3 document Bundle with its bearer token, and
    its API key PUTs the STU3 Task (the id from the document) at the bridge."""
    task_id = _push(world, "Buren")
    world.receiver.expect_request("/fhir/Bundle", method="POST").respond_with_json(
        {"resourceType": "Bundle"}, status=201
    )
    attempts = Dispatcher(world.components).run_once()
    assert [a.destination for a in attempts] == ["welzijn-zorgdomein"]
    request, _ = world.receiver.log[0]
    assert request.headers["Authorization"] == "Bearer example-zorgdomein-token"
    assert request.headers["Content-Type"].endswith("fhirVersion=3.0")
    document = json.loads(request.get_data())
    assert fhir.validate_stu3(document, "Bundle") == []
    assert document["type"] == "document"
    assert document["entry"][0]["resource"]["resourceType"] == "Composition"
    task = next(e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == "Task")
    assert task["id"] == task_id
    key = {"Authorization": "Bearer example-zorgdomein-key"}
    put = world.call(
        "PUT", f"/fhir/stu3/Task/{task_id}", json={**task, "status": "accepted"}, headers=key
    )
    assert put.status_code == 200, put.text
    assert put.json()["status"] == "accepted"
    other = _push(world, number=2)  # a notified-pull referral: not this platform's
    refused = world.call("PUT", f"/fhir/stu3/Task/{other}", json={**task, "id": other}, headers=key)
    assert refused.status_code == 404  # not this platform's: answered as unknown
    assert refused.json()["resourceType"] == "OperationOutcome"


def test_token_guessing_is_rate_limited_per_client(world: World) -> None:
    """Wrong secrets for a known client hit its rate limit (429, Retry-After), audited."""
    task_id = _push(world)
    answers = [_token(world, task_id, client_secret=f"guess-{n}") for n in range(30)]
    codes = {a.status_code for a in answers}
    assert codes == {401, 429}
    limited = next(a for a in answers if a.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert ("refused", "unverified:viplive-receiver") in _audit(world, "pull_token")


def test_oversized_token_request_is_refused_without_reading_it_all(world: World) -> None:
    """A token request body over limits.token_bytes is 413 invalid_request, audited; no token."""
    answer = world.call(
        "POST",
        "/oauth/token",
        content=b"grant_type=client_credentials&x=" + b"a" * 20_000,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 413
    assert answer.json()["error"] == "invalid_request"
    assert _audit(world, "pull_token") == [("refused", "(unknown)")]
