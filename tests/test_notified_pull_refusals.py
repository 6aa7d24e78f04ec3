"""Refusals found in review of notified pull, in-process: the rate limit cannot lock others out,
hostile assertion times, write scopes and revocation for pull tokens, audit attribution, the
cancellation Task without free text, and a pull client's secret that is no API key."""

from __future__ import annotations

import json
import sqlite3
import uuid
from typing import Any

import jwt
from pytest_httpserver import HTTPServer

from tests import test_notified_pull_inprocess as base
from tests.cases import PATIENT_VALUES, case_input
from tests.service_harness import patient_value_hits
from tests.test_notified_pull_inprocess import (
    BASE_URL,
    PULL_SECRET,
    START,
    World,
    _bearer,
    _push,
    _token,
)
from wor_bridge.core.fhir import canonical_json
from wor_bridge.service.dispatcher import Dispatcher
from wor_bridge.service.tokens import JWT_BEARER

world = base.world  # the same fixture: the example configuration on a loopback receiver
FEEDBACK_ITEM = "https://wor-bridge.nl/fhir/CodeSystem/feedback-item"
OTHER_BSN = b"999990020"  # synthetic, passes the 11-test
HIS = {"Authorization": "Bearer example-his-key", "Content-Type": "application/fhir+json"}


def _assertion_form(world: World, task_id: str, **claims: Any) -> dict[str, str]:
    now = int(START.timestamp())
    body = {
        "iss": "viplive-jwt",
        "sub": "viplive-jwt",
        "aud": f"{BASE_URL}/oauth/token",
        "exp": now + 60,
        "jti": str(uuid.uuid4()),
        **claims,
    }
    header = {"alg": "ES256", "typ": "JWT"}
    # PyJWT's encode refuses a NaN claim, so the token is put together and signed by hand
    signing_input = (
        jwt.utils.base64url_encode(json.dumps(header).encode())
        + b"."
        + jwt.utils.base64url_encode(json.dumps(body).encode())
    )
    algorithm = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256)
    signature = algorithm.sign(signing_input, world.private_key)
    assertion = (signing_input + b"." + jwt.utils.base64url_encode(signature)).decode()
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": JWT_BEARER,
        "client_assertion": assertion,
        "resource": f"urn:uuid:{task_id}",
    }


def _audit_rows(world: World, event: str) -> list[dict[str, Any]]:
    with sqlite3.connect(world.store_path) as db:
        db.row_factory = sqlite3.Row
        return [dict(r) for r in db.execute("SELECT * FROM audit WHERE event = ?", (event,))]


def _observation(request_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": FEEDBACK_ITEM, "code": "first-contact"}]},
        "basedOn": [{"reference": f"ReferralRequest/{request_id}"}],
        "effectiveDateTime": "2026-11-04T10:00:00+01:00",
    }


def _cancel(world: World, task_id: str, text: str | None = None) -> None:
    reason: dict[str, Any] = {
        "coding": [
            {
                "system": "https://wor-bridge.nl/fhir/CodeSystem/closure-reason",
                "code": "gp-withdrew",
            }
        ]
    }
    if text:
        reason["text"] = text
    current = world.call("GET", f"/fhir/r4/Task/{task_id}", headers=_bearer("example-his-key"))
    answer = world.call(
        "PUT",
        f"/fhir/r4/Task/{task_id}",
        json={
            "resourceType": "Task",
            "id": task_id,
            "status": "cancelled",
            "intent": "order",
            "statusReason": reason,
        },
        headers={**_bearer("example-his-key"), "If-Match": current.headers["ETag"]},
    )
    assert answer.status_code == 200


def test_token_guessing_does_not_throttle_the_claimed_clients_api(world: World) -> None:
    """Wrong secrets claiming the GP system's id hit the token endpoint's limit, not its intake."""
    task_id = _push(world)
    for n in range(30):
        _token(world, task_id, client_id="his-example", client_secret=f"guess-{n}")
    again = _push(world, number=2)
    assert again


def test_assertion_with_non_numeric_or_future_times_is_refused(world: World) -> None:
    """exp NaN, exp a string and nbf an hour ahead are refused 401, never a token or a 500."""
    task_id = _push(world)
    now = int(START.timestamp())
    for claims in ({"exp": float("nan")}, {"exp": "abc"}, {"nbf": now + 3600}):
        answer = world.call("POST", "/oauth/token", data=_assertion_form(world, task_id, **claims))
        assert answer.status_code == 401, claims
        assert answer.json()["error"] == "invalid_client"


def test_pull_token_writes_need_the_scope_and_stop_after_withdrawal(world: World) -> None:
    """A token of a client without feedback:write posts no Observation; after the GP withdraws,
    a token cannot report either (403, audited)."""
    task_id = _push(world)
    jwt_token = world.call("POST", "/oauth/token", data=_assertion_form(world, task_id)).json()
    bearer = _bearer(jwt_token["access_token"])
    task = world.call("GET", f"/fhir/stu3/Task/{task_id}", headers=bearer).json()
    request_id = task["focus"]["reference"].rsplit("/", 1)[-1]
    posted = world.call(
        "POST", "/fhir/stu3/Observation", json=_observation(request_id), headers=bearer
    )
    assert posted.status_code == 403
    token = _token(world, task_id).json()["access_token"]
    _cancel(world, task_id)
    late = world.call(
        "POST", "/fhir/stu3/Observation", json=_observation(request_id), headers=_bearer(token)
    )
    assert late.status_code == 403
    assert late.json()["resourceType"] == "OperationOutcome"
    refused = [r for r in _audit_rows(world, "referral_write") if r["outcome"] == "refused"]
    assert {r["user"] for r in refused} == {"viplive-jwt", "viplive-receiver"}


def test_cross_referral_read_is_audited_against_the_other_patient(world: World) -> None:
    """A token for A asking for B's Task (another patient) is recorded with B's patient, never
    A's (values compared, never printed)."""
    first = _push(world)
    body = case_input("accepted-contained").replace(b'"Utrecht"', b'"Culemborg"')
    body = body.replace(b"VW-2026-0001", b"VW-2026-0002").replace(b"999990007", OTHER_BSN)
    pushed = world.call("POST", "/fhir/r4/ServiceRequest", content=body, headers=HIS)
    assert pushed.status_code == 201
    second = pushed.headers["Location"].split("/_history/")[0].rsplit("/", 1)[-1]
    token = _token(world, first).json()["access_token"]
    answer = world.call("GET", f"/fhir/stu3/Task/{second}", headers=_bearer(token))
    assert answer.status_code == 404
    rows = [r for r in _audit_rows(world, "referral_pull") if r["outcome"] == "refused"]
    assert [r["object_id"] for r in rows] == [second]
    store = world.components.store
    patient_a, patient_b = store.get_task(first).patient_id, store.get_task(second).patient_id
    distinct, recorded_b = patient_a != patient_b, rows[0]["patient_id"] == patient_b
    assert distinct, "the two referrals must be about different patients"
    assert recorded_b, "the refused read must be recorded with the other referral's patient"


def test_cancellation_sent_to_the_receiver_carries_codes_not_free_text(world: World) -> None:
    """The GP's free-text reason stays home: the cancellation Task has the codes only."""
    task_id = _push(world)
    receiver: HTTPServer = world.receiver
    receiver.expect_request("/fhir/Task", method="POST").respond_with_json({}, status=201)
    receiver.expect_request("/fhir/Task", method="PUT").respond_with_json({}, status=200)
    Dispatcher(world.components).run_once()
    text = f"{PATIENT_VALUES[0]} moved away"
    _cancel(world, task_id, text)
    Dispatcher(world.components).run_once()
    put = next(r for r, _ in receiver.log if r.method == "PUT")
    body = put.get_data()
    assert json.loads(body)["status"] == "cancelled"
    assert "text" not in json.loads(body)["statusReason"]
    assert patient_value_hits(body.decode("utf-8")) == []  # indices only, never the values


def test_pull_clients_secret_is_no_api_key(world: World) -> None:
    """The receiver's secret opens /oauth/token only: as a bearer on the data routes it is 401."""
    task_id = _push(world)
    body = {"resourceType": "Task", "id": task_id, "status": "accepted", "intent": "order"}
    for path in (f"/fhir/stu3/Task/{task_id}", f"/fhir/r4/Task/{task_id}"):
        answer = world.call(
            "PUT",
            path,
            content=canonical_json(body),
            headers={**_bearer(PULL_SECRET), "If-Match": 'W/"1"'},
        )
        assert answer.status_code == 401, path


def test_token_request_form_rules(world: World) -> None:
    """No grant_type is invalid_request; two authentication methods at once are refused."""
    task_id = _push(world)
    missing = world.call("POST", "/oauth/token", data={"resource": f"urn:uuid:{task_id}"})
    assert missing.json()["error"] == "invalid_request"
    both = world.call(
        "POST",
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_secret": PULL_SECRET,
            "resource": f"urn:uuid:{task_id}",
        },
        auth=("viplive-receiver", PULL_SECRET),
    )
    assert both.status_code == 400
    assert both.json()["error"] == "invalid_request"
