"""The real ``wor-bridge serve`` in a subprocess on a free loopback port, end to end.

A ``SimulatedFhirServer`` in the test process is the welfare organisation's FHIR endpoint. Each
test uses its own referral (the ServiceRequest identifier of a fixture is varied), so tests do not
see each other's deliveries. No response body is printed: it may hold patient data.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.cases import PATIENT_VALUES, case_input
from tests.service_harness import (
    ADMIN_KEY,
    FHIR_JSON,
    FHIR_XML,
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
    referral_variant,
    running_service,
    service_requests,
    task_id_of,
    wait_until,
    write_config,
)
from wor_bridge.demo.fhir_server import SimulatedFhirServer

BSN = "http://fhir.nl/fhir/NamingSystem/bsn|999990007"
MAX_BODY = 20_000
TIMEOUT = 10
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedFhirServer]:
    """The simulated welfare FHIR endpoint."""
    with receiver() as server:
        yield server


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, sim: SimulatedFhirServer) -> Path:
    """A config with a small body limit, generous rates and a task:read-only third client."""
    return write_config(
        tmp_path_factory.mktemp("e2e"),
        sim.base_url,
        max_body_bytes=MAX_BODY,
        service={"rate_per_s": 1000.0, "burst": 1000},
        clients=[
            *example_clients(),
            client("reader", READER_KEY, ["task:read"], source_system="his-example"),
        ],
    )


@pytest.fixture(scope="module")
def service(config: Path) -> Iterator[ServiceProcess]:
    """The running service (killed at the end of the module)."""
    with running_service(config) as proc:
        yield proc


def fresh_id() -> str:
    """A ServiceRequest identifier value no other test uses."""
    return f"E2E-{next(_numbers):04d}"


def post(
    service: ServiceProcess,
    data: bytes | Iterator[bytes],
    *,
    path: str = "/fhir/r4/ServiceRequest",
    content_type: str = FHIR_JSON,
    key: str | None = HIS_KEY,
) -> requests.Response:
    """POST a referral to the service."""
    headers = auth(key, content_type) if key else {"Content-Type": content_type}
    return requests.post(service.base_url + path, data=data, headers=headers, timeout=TIMEOUT)


def get(service: ServiceProcess, path: str, key: str | None = HIS_KEY) -> requests.Response:
    """GET from the service."""
    return requests.get(service.base_url + path, headers=auth(key) if key else {}, timeout=TIMEOUT)


def task(service: ServiceProcess, task_id: str) -> dict[str, Any]:
    """The bridge's Task (must exist)."""
    response = get(service, f"/fhir/r4/Task/{task_id}")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


def wait_status(service: ServiceProcess, task_id: str, code: str) -> dict[str, Any]:
    """Poll the Task until its businessStatus is ``code``."""

    def reached() -> dict[str, Any] | None:
        current = task(service, task_id)
        return current if business_status(current) == code else None

    return wait_until(reached, f"Task businessStatus {code}")


def metrics(service: ServiceProcess) -> str:
    """The /metrics text (admin key)."""
    response = get(service, "/metrics", ADMIN_KEY)
    assert response.status_code == 200
    return response.text


def wait_idle(service: ServiceProcess) -> None:
    """Wait until no outbox entry is pending (so scripted receiver failures hit this test)."""
    wait_until(
        lambda: metric_value(metrics(service), 'wor_bridge_outbox_entries{state="pending"}') == 0,
        "an idle outbox",
    )


def assert_outcome(
    response: requests.Response, status: int, severity: str = "error"
) -> dict[str, Any]:
    """The response is ``status`` with an OperationOutcome of ``severity``; returns it."""
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith(FHIR_JSON)
    body: dict[str, Any] = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"], "an OperationOutcome needs at least one issue"
    assert {i["severity"] for i in body["issue"]} == {severity}
    traceback = "Traceback" in response.text
    assert not traceback, "no answer may carry a stack trace"
    return body


def assert_accepted(response: requests.Response, *, created: bool = True) -> str:
    """201 (new) or 200 (again) with the absolute Location and ETag of its Task; its Task id.

    A transaction Bundle gets 200 and a transaction-response whose ServiceRequest entry says."""
    location = response.headers["Location"]
    assert location.startswith("http://127.0.0.1:"), "Location must be absolute"
    assert "/fhir/r4/Task/" in location
    assert "/_history/" in location
    assert response.headers["ETag"] == f'W/"{location.rsplit("/", 1)[-1]}"'
    if response.content and response.json().get("type") == "transaction-response":
        assert response.status_code == 200
        statuses = [e["response"]["status"] for e in response.json()["entry"]]
        assert ("201 Created" in statuses) is created
    else:
        assert response.status_code == (201 if created else 200)
    return task_id_of(response)


def cli(service: ServiceProcess, *args: str) -> Any:
    """``wor-bridge outbox --config <config> <args>``: its JSON stdout (must exit 0)."""
    proc = service.cli("outbox", "--config", str(service.config), *args)
    code = proc.returncode
    assert code == 0, f"outbox {args[0]} exited {code}"
    traceback = "Traceback" in proc.stderr
    assert not traceback, "the CLI must not print a traceback"
    return json.loads(proc.stdout)


def outbox_entry(service: ServiceProcess, task_id: str) -> dict[str, Any]:
    """The ``outbox list`` summary of the entry for ``task_id``."""
    entries: list[dict[str, Any]] = cli(service, "list", "--limit", "1000")
    mine = [e for e in entries if e["task_id"] == task_id]
    assert len(mine) == 1
    return mine[0]


# --- intake ----------------------------------------------------------------------------------


def test_json_service_request_is_accepted(service: ServiceProcess) -> None:
    """A JSON ServiceRequest gets 201, the absolute Location of its Task version, no body."""
    response = post(service, referral_variant("accepted-contained", fresh_id()))
    task_id = assert_accepted(response)
    assert response.headers["Location"] == f"{service.base_url}/fhir/r4/Task/{task_id}/_history/1"
    assert response.content == b""
    assert get(service, f"/fhir/r4/Task/{task_id}").status_code == 200


def test_json_bundle_to_base_is_accepted(service: ServiceProcess) -> None:
    """A JSON transaction Bundle POSTed to /fhir/r4 gets a transaction-response and the Task."""
    response = post(
        service, referral_variant("accepted-bundle-transaction-urn", fresh_id()), path="/fhir/r4"
    )
    task_id = assert_accepted(response)
    assert task(service, task_id)["resourceType"] == "Task"


def test_xml_service_request_is_accepted(service: ServiceProcess) -> None:
    """An XML ServiceRequest (application/fhir+xml) gets 201 with the Task's Location."""
    response = post(
        service, referral_variant("accepted-xml-contained", fresh_id()), content_type=FHIR_XML
    )
    task_id = assert_accepted(response)
    assert task(service, task_id)["id"] == task_id


def test_same_referral_twice_is_delivered_once(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """Pushing one referral twice gives the same Task id and the receiver one ServiceRequest."""
    referral_id = fresh_id()
    data = referral_variant("accepted-contained", referral_id)
    first = assert_accepted(post(service, data))
    second = assert_accepted(post(service, data), created=False)
    assert first == second
    wait_status(service, first, "delivered")
    assert len(service_requests(sim, referral_id)) == 1
    third = assert_accepted(post(service, data), created=False)
    assert third == first
    deliveries = audit_rows(service.config, "referral_delivery")
    assert [r["outcome"] for r in deliveries if r["object_id"] == first] == ["delivered"]
    assert len(service_requests(sim, referral_id)) == 1


@pytest.mark.parametrize(
    "case", ["refused-no-z68", "refused-no-consent", "refused-bsn-fails-11-test"]
)
def test_refused_referral_gets_422(service: ServiceProcess, case: str) -> None:
    """A referral that fails a gate gets 422 with an error OperationOutcome and no Task."""
    response = post(service, case_input(case))
    assert_outcome(response, 422)
    assert "Location" not in response.headers


def test_malformed_json_gets_400(service: ServiceProcess) -> None:
    """Malformed JSON gets 400 with an error OperationOutcome."""
    assert_outcome(post(service, case_input("refused-malformed-json")), 400)


def test_no_credentials_gets_401(service: ServiceProcess) -> None:
    """No key (or an unknown key) gets 401 with an OperationOutcome and WWW-Authenticate."""
    for key in (None, "not-a-configured-key"):
        response = post(service, referral_variant("accepted-contained", fresh_id()), key=key)
        body = assert_outcome(response, 401)
        assert body["issue"][0]["code"] == "login"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_outcome(get(service, "/fhir/r4/Task/x", key=None), 401)


def test_key_without_referral_write_gets_403(service: ServiceProcess) -> None:
    """A client with only task:read may read Tasks but gets 403 when it pushes a referral."""
    response = post(service, referral_variant("accepted-contained", fresh_id()), key=READER_KEY)
    body = assert_outcome(response, 403)
    assert body["issue"][0]["code"] == "forbidden"
    assert get(service, "/fhir/r4/Task/no-such-task", READER_KEY).status_code == 404


def _padded(size: int) -> bytes:
    data = case_input("accepted-contained")
    return data + b" " * (size - len(data))


def test_body_over_limit_gets_413(service: ServiceProcess) -> None:
    """A body larger than max_body_bytes gets 413 whether its length is declared or chunked."""
    too_big = _padded(MAX_BODY + 1)
    assert_outcome(post(service, too_big), 413)
    chunks = iter([too_big[i : i + 4096] for i in range(0, len(too_big), 4096)])
    assert_outcome(post(service, chunks), 413)
    # just within the limit the same bytes are fine (the padding is JSON whitespace)
    assert post(service, _padded(MAX_BODY)).status_code == 201


# --- Task status -----------------------------------------------------------------------------


def test_task_is_queued_then_delivered(service: ServiceProcess, sim: SimulatedFhirServer) -> None:
    """The Task shows queued while the receiver answers 503 and delivered after it accepts."""
    wait_idle(service)
    sim.fail_next(503, times=1, retry_after="2")
    referral_id = fresh_id()
    task_id = assert_accepted(post(service, referral_variant("accepted-contained", referral_id)))
    queued = task(service, task_id)
    assert (queued["status"], business_status(queued)) == ("requested", "queued")
    delivered = wait_status(service, task_id, "delivered")
    assert delivered["status"] == "requested"
    assert len(service_requests(sim, referral_id)) == 1


def test_unknown_task_gets_404(service: ServiceProcess) -> None:
    """GET of a Task id the bridge never issued gets 404 with an OperationOutcome."""
    body = assert_outcome(get(service, "/fhir/r4/Task/0e5c4c0e-0000-5000-8000-000000000000"), 404)
    assert body["issue"][0]["code"] == "not-found"


# --- health, metrics, OpenAPI ----------------------------------------------------------------


def test_healthz_needs_no_auth(service: ServiceProcess) -> None:
    """/healthz answers 200 without credentials."""
    response = requests.get(service.base_url + "/healthz", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz(service: ServiceProcess) -> None:
    """/readyz answers 200 ready (store reachable, dispatcher running)."""
    response = requests.get(service.base_url + "/readyz", timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def test_metrics_with_admin_key(service: ServiceProcess) -> None:
    """/metrics with the admin key shows intake, delivery attempts and outbox depth."""
    task_id = assert_accepted(post(service, referral_variant("accepted-contained", fresh_id())))
    wait_status(service, task_id, "delivered")
    text = metrics(service)
    accepted = metric_value(text, 'wor_bridge_intake_total{outcome="accepted"}')
    assert accepted is not None
    assert accepted >= 1
    delivered = (
        'wor_bridge_delivery_attempts_total{destination="welzijn-voorbeeld",result="delivered"}'
    )
    assert (metric_value(text, delivered) or 0) >= 1
    assert metric_value(text, 'wor_bridge_outbox_entries{state="delivered"}') is not None
    assert "wor_bridge_outbox_entries" in text


def test_metrics_need_admin_scope(service: ServiceProcess) -> None:
    """/metrics with the HIS key gets 403, without a key 401."""
    assert_outcome(get(service, "/metrics", HIS_KEY), 403)
    assert_outcome(get(service, "/metrics", None), 401)


def test_openapi_json(service: ServiceProcess) -> None:
    """/openapi.json answers 200 and describes the intake and Task routes."""
    response = requests.get(service.base_url + "/openapi.json", timeout=TIMEOUT)
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/fhir/r4/ServiceRequest", "/fhir/r4", "/fhir/r4/Task/{task_id}"} <= set(paths)


def test_real_server_sends_no_banner_and_no_redirect(service: ServiceProcess) -> None:
    """Answers of the real server have no Server header and a trailing slash is no redirect."""
    for path in ("/healthz", "/healthz/", "/fhir/r4/Task/x/"):
        response = requests.get(
            service.base_url + path,
            headers={"Host": "evil.example"},
            timeout=TIMEOUT,
            allow_redirects=False,
        )
        assert "server" not in {k.lower() for k in response.headers}, path
        assert "location" not in {k.lower() for k in response.headers}, path
        assert response.headers["X-Content-Type-Options"] == "nosniff", path


# --- dead letters and the operator CLI -------------------------------------------------------


def test_rejected_delivery_is_dead_then_retried(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """A 400 from the receiver makes the Task failed; ``outbox retry --all-dead`` delivers it."""
    wait_idle(service)
    sim.fail_next(400, times=1)
    referral_id = fresh_id()
    task_id = assert_accepted(post(service, referral_variant("accepted-contained", referral_id)))
    failed = wait_status(service, task_id, "delivery-failed")
    assert failed["status"] == "failed"
    assert len(service_requests(sim, referral_id)) == 0
    dead = [e for e in cli(service, "list", "--state", "dead") if e["task_id"] == task_id]
    assert len(dead) == 1
    assert dead[0]["state"] == "dead"
    assert dead[0]["last_status"] == 400
    requeued = cli(service, "retry", "--all-dead")
    assert requeued["requeued"] >= 1
    wait_status(service, task_id, "delivered")
    assert len(service_requests(sim, referral_id)) == 1
    assert outbox_entry(service, task_id)["state"] == "delivered"
    assert [e for e in cli(service, "list", "--state", "dead") if e["task_id"] == task_id] == []


def test_outbox_show_hides_patient_data_unless_revealed(service: ServiceProcess) -> None:
    """``outbox show`` prints no patient value; ``--reveal`` prints the payload and is audited."""
    task_id = assert_accepted(post(service, referral_variant("accepted-contained", fresh_id())))
    entry_id = str(outbox_entry(service, task_id)["id"])
    plain = cli(service, "show", entry_id)
    assert plain["task_id"] == task_id
    assert "payload" not in plain
    assert patient_value_hits(json.dumps(plain, ensure_ascii=False)) == []
    assert reveals_of(service, task_id) == []
    shown = service.cli("outbox", "--config", str(service.config), "show", entry_id, "--reveal")
    code = shown.returncode
    assert code == 0
    # the default mapping forwards name, address and contact (not the BSN) to the receiver
    revealed = patient_value_hits(shown.stdout)
    assert PATIENT_VALUES.index("Jansen") in revealed, "--reveal must print the payload"
    reveals = reveals_of(service, task_id)
    assert [(r["action"], r["outcome"]) for r in reveals] == [("R", "success")]
    assert reveals[0]["patient_id"] == BSN


def reveals_of(service: ServiceProcess, task_id: str) -> list[dict[str, Any]]:
    """The outbox_reveal audit records about ``task_id``."""
    return [r for r in audit_rows(service.config, "outbox_reveal") if r["object_id"] == task_id]


def test_outbox_cli_accepts_config_after_action(service: ServiceProcess) -> None:
    """``wor-bridge outbox list --state dead --config FILE`` (config after the action) works."""
    proc = service.cli("outbox", "list", "--state", "dead", "--config", str(service.config))
    code = proc.returncode
    assert code == 0, "outbox list rejects --config after the action"
    listed = json.loads(proc.stdout)
    assert isinstance(listed, list)


# --- audit -----------------------------------------------------------------------------------


def test_audit_records_every_intake_and_delivery_attempt(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """Each intake and each delivery attempt is audited with the patient's BSN."""
    wait_idle(service)
    sim.fail_next(503, times=1, retry_after="1")
    data = referral_variant("accepted-contained", fresh_id())
    task_id = assert_accepted(post(service, data))
    assert_accepted(post(service, data), created=False)
    wait_status(service, task_id, "delivered")
    intakes = [
        r for r in audit_rows(service.config, "referral_intake") if r["object_id"] == task_id
    ]
    assert [r["outcome"] for r in intakes] == ["accepted", "duplicate"]
    deliveries = [
        r for r in audit_rows(service.config, "referral_delivery") if r["object_id"] == task_id
    ]
    assert [r["outcome"] for r in deliveries] == ["retry", "delivered"]
    assert all(r["patient_id"] == BSN for r in intakes + deliveries)
    assert {r["object_type"] for r in intakes + deliveries} == {"Task"}
    assert {r["user"] for r in intakes} == {"his-example"}
    assert all(r["user"].startswith("dispatcher:") for r in deliveries)


def test_refused_intake_is_audited(service: ServiceProcess) -> None:
    """A refused push is audited as a referral_intake with outcome refused."""
    before = len(audit_rows(service.config, "referral_intake"))
    assert_outcome(post(service, case_input("refused-no-z68")), 422)
    rows = audit_rows(service.config, "referral_intake")[before:]
    assert [(r["outcome"], r["user"]) for r in rows] == [("refused", "his-example")]


# --- rate limit (its own service: the limit is per service) ----------------------------------


def test_rate_limit_gets_429_with_retry_after(tmp_path: Path, sim: SimulatedFhirServer) -> None:
    """With rate 1/s and burst 2, the third quick request of a client gets 429 and Retry-After."""
    limited = write_config(tmp_path, sim.base_url, service={"rate_per_s": 1.0, "burst": 2})
    with running_service(limited) as proc:
        answers: list[requests.Response] = []
        while len(answers) < 10 and (not answers or answers[-1].status_code != 429):
            answers.append(get(proc, "/fhir/r4/Task/unknown"))
        assert [a.status_code for a in answers[:2]] == [404, 404]
        body = assert_outcome(answers[-1], 429)
        assert body["issue"][0]["code"] == "throttled"
        assert int(answers[-1].headers["Retry-After"]) >= 1
        # another client has its own bucket
        assert get(proc, "/fhir/r4/Task/unknown", ADMIN_KEY).status_code == 404
