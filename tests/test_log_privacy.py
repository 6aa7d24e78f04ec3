"""No patient value reaches the service's logs, the operator CLI's output or the metrics.

One module-wide run drives the real service through the whole path: every fixture (JSON and XML,
accepted, duplicate and refused), pushes without a key, with a read-only key and over the size
limit, receiver failures (503 with retry, 400 to a dead letter and ``outbox retry``), a receiver
that echoes the payload in its error diagnostics, Task reads and metrics. Then every captured
line is scanned for each value in ``tests.cases.PATIENT_VALUES``. Failures name the value by its
index only, never the value or the text around it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from tests.cases import FIXTURES, PATIENT_VALUES, case_input, case_names
from tests.service_harness import (
    ADMIN_KEY,
    FHIR_JSON,
    FHIR_XML,
    HIS_KEY,
    READER_KEY,
    ServiceProcess,
    auth,
    business_status,
    client,
    example_clients,
    metric_value,
    patient_value_hits,
    receiver,
    referral_variant,
    running_service,
    task_id_of,
    wait_until,
    write_config,
)
from wor_bridge.demo.fhir_server import SimulatedFhirServer

TIMEOUT = 10
MAX_BODY = 20_000
SETTLED = {"delivered", "delivery-failed"}


class _EchoHandler(BaseHTTPRequestHandler):
    """A receiver that refuses everything, quoting the whole request body in its diagnostics."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""

    def do_POST(self) -> None:
        """422 with an OperationOutcome that echoes the request (as careless servers do)."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        echo = body.decode("utf-8", errors="replace")
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": echo}],
        }
        data = json.dumps(outcome).encode()
        self.send_response(422)
        self.send_header("Content-Type", FHIR_JSON)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@dataclass
class Run:
    """What the driven run produced (everything but Task reads and the reveal is scanned)."""

    service: ServiceProcess
    answers: list[str] = field(default_factory=list)
    cli_outputs: list[str] = field(default_factory=list)
    metrics: str = ""
    statuses: dict[str, int] = field(default_factory=dict)
    task_states: dict[str, str] = field(default_factory=dict)
    revealed: str = ""


def _content_type(case: str) -> str:
    return FHIR_XML if (FIXTURES / case / "input.xml").exists() else FHIR_JSON


def _path(data: bytes) -> str:
    head = data[:300]
    bundle = b'"Bundle"' in head or b"<Bundle" in head
    return "/fhir/r4" if bundle else "/fhir/r4/ServiceRequest"


def _post(run: Run, data: bytes, content_type: str, key: str | None = HIS_KEY) -> requests.Response:
    headers = auth(key, content_type) if key else {"Content-Type": content_type}
    response = requests.post(
        run.service.base_url + _path(data), data=data, headers=headers, timeout=TIMEOUT
    )
    run.answers.append(response.text)
    return response


def _get(run: Run, path: str, key: str | None = HIS_KEY) -> requests.Response:
    return requests.get(run.service.base_url + path, headers=auth(key) if key else {}, timeout=10)


def _task_state(run: Run, task_id: str) -> str:
    response = _get(run, f"/fhir/r4/Task/{task_id}")
    assert response.status_code == 200
    return business_status(response.json())


def _settled(run: Run, task_ids: set[str]) -> bool:
    states = {t: _task_state(run, t) for t in task_ids}
    run.task_states.update(states)
    return set(states.values()) <= SETTLED


def _cli(run: Run, *args: str) -> Any:
    proc = run.service.cli(*args[:1], "--config", str(run.service.config), *args[1:])
    run.cli_outputs += [proc.stdout, proc.stderr]
    code = proc.returncode
    assert code == 0, f"wor-bridge {' '.join(args[:2])} exited {code}"
    return json.loads(proc.stdout)


def _drive(run: Run, sim: SimulatedFhirServer) -> None:
    """Push, deliver, fail, retry, read and inspect: the whole path."""
    sim.fail_next(503, times=2, retry_after="1")
    task_ids: set[str] = set()
    for case in case_names("accepted-"):
        response = _post(run, case_input(case), _content_type(case))
        run.statuses[case] = response.status_code
        if response.status_code in (200, 201):
            task_ids.add(task_id_of(response))
    for case in case_names("refused-"):
        run.statuses[case] = _post(run, case_input(case), _content_type(case)).status_code
    patient = case_input("accepted-contained")
    run.statuses["no-key"] = _post(run, patient, FHIR_JSON, key=None).status_code
    run.statuses["read-only-key"] = _post(run, patient, FHIR_JSON, key=READER_KEY).status_code
    too_big = patient + b" " * MAX_BODY
    run.statuses["too-large"] = _post(run, too_big, FHIR_JSON).status_code
    wait_until(lambda: _settled(run, task_ids), "every Task delivered or failed")

    # a rejected delivery: dead letter, then requeued by the operator and delivered
    sim.fail_next(400, times=1)
    response = _post(run, referral_variant("accepted-contained", "PRIVACY-1"), FHIR_JSON)
    run.statuses["rejected-then-retried"] = response.status_code
    dead_task = task_id_of(response)
    wait_until(lambda: _task_state(run, dead_task) == "delivery-failed", "the dead letter")
    _cli(run, "outbox", "list", "--state", "dead")
    _cli(run, "outbox", "retry", "--all-dead")
    task_ids.add(dead_task)
    wait_until(lambda: _task_state(run, dead_task) == "delivered", "the retried delivery")
    wait_until(lambda: _settled(run, task_ids), "every Task delivered or failed again")

    run.metrics = _get(run, "/metrics", ADMIN_KEY).text
    run.answers += [_get(run, p, None).text for p in ("/healthz", "/readyz")]
    run.answers.append(_get(run, "/metrics", HIS_KEY).text)
    run.answers.append(_get(run, "/fhir/r4/Task/unknown").text)
    # query values are never logged: a search by the patient's BSN and a name in a URL (their
    # answers are not scanned: a searchset's self link repeats the search, as FHIR says)
    bsn = "http://fhir.nl/fhir/NamingSystem/bsn|" + PATIENT_VALUES[0]
    for path in (f"/fhir/r4/Task?identifier={bsn}", f"/fhir/r4/Task/x?name={PATIENT_VALUES[4]}"):
        assert _get(run, path).status_code in (200, 404)
    entries = _cli(run, "outbox", "list", "--limit", "1000")
    for entry in entries:
        _cli(run, "outbox", "show", str(entry["id"]))
    _cli(run, "outbox", "list", "--state", "delivered")
    _cli(run, "deliver", "--once")
    run.service.stop()
    # the positive control: the same CLI with --reveal does print patient data
    shown = run.service.cli("outbox", "--config", str(run.service.config), "show", "1", "--reveal")
    run.revealed = shown.stdout


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The driven run; the service is stopped before the scans."""
    echo = ThreadingHTTPServer(("127.0.0.1", 0), _EchoHandler)
    echo.daemon_threads = True
    thread = threading.Thread(target=echo.serve_forever, daemon=True)
    thread.start()
    try:
        with receiver() as sim:
            config = write_config(
                tmp_path_factory.mktemp("privacy"),
                sim.base_url,
                endpoints={"welzijn-rivierenland": f"http://127.0.0.1:{echo.server_port}/fhir"},
                max_body_bytes=MAX_BODY,
                service={"rate_per_s": 1000.0, "burst": 1000},
                clients=[
                    *example_clients(),
                    client("reader", READER_KEY, ["task:read"], source_system="his-example"),
                ],
            )
            with running_service(config) as service:
                driven = Run(service)
                _drive(driven, sim)
                yield driven
    finally:
        echo.shutdown()
        echo.server_close()


def test_run_covered_the_whole_path(run: Run) -> None:
    """The run accepted, refused, retried, dead-lettered and delivered (the scan is not vacuous)."""
    statuses = run.statuses
    assert {statuses[c] for c in case_names("accepted-")} <= {200, 201}
    assert {statuses[c] for c in case_names("refused-")} <= {400, 422}
    assert 422 in {statuses[c] for c in case_names("refused-")}
    assert (statuses["no-key"], statuses["read-only-key"], statuses["too-large"]) == (401, 403, 413)
    states = set(run.task_states.values())
    assert states == SETTLED, "some Tasks delivered, the echo receiver's ones failed"
    results = {(e.get("event"), e.get("result")) for e in run.service.log_events() if "result" in e}
    assert {"retry", "delivered", "rejected"} <= {r for _, r in results}
    events = {e.get("event") for e in run.service.log_events()}
    assert {"referral_accepted", "referral_refused", "delivery_attempted"} <= events
    delivered = metric_value(run.metrics, 'wor_bridge_outbox_entries{state="delivered"}')
    assert delivered is not None
    assert delivered >= 5


def test_service_logs_hold_no_patient_values(run: Run) -> None:
    """No patient value in anything the service wrote to stderr (JSON logs) or stdout."""
    lines = run.service.stderr_lines + run.service.stdout_lines
    assert len(lines) > 20
    assert patient_value_hits("\n".join(lines)) == []


def test_service_logs_are_json_lines(run: Run) -> None:
    """Every non-empty line the service wrote to stderr is a JSON log record."""
    lines = [line for line in run.service.stderr_lines if line.strip()]
    assert len(run.service.log_events()) == len(lines)


def test_access_lines_cover_every_request_without_values(run: Run) -> None:
    """One ``request`` line per answered request (the scan above covers them), with the route
    template: the searches by BSN and by name in the URL left no value in any line."""
    lines = [e for e in run.service.log_events() if e.get("event") == "request"]
    assert len(lines) >= len(run.answers) + 2
    routes = {line["route"] for line in lines}
    assert {"/fhir/r4/ServiceRequest", "/fhir/r4/Task", "/fhir/r4/Task/{task_id}"} <= routes
    refused = [line for line in lines if line["status"] in (400, 422)]
    assert refused
    assert all(line["issues"] for line in refused)


def test_cli_outputs_hold_no_patient_values(run: Run) -> None:
    """``outbox list``, ``show`` (without --reveal), ``retry`` and ``deliver`` leak nothing."""
    assert len(run.cli_outputs) >= 20
    assert patient_value_hits("\n".join(run.cli_outputs)) == []


def test_metrics_hold_no_patient_values(run: Run) -> None:
    """The metrics text holds no patient value."""
    assert "wor_bridge_intake_total" in run.metrics
    assert patient_value_hits(run.metrics) == []


def test_http_answers_hold_no_patient_values(run: Run) -> None:
    """Intake answers (201, 200, every refusal), health answers and errors hold no patient data."""
    assert len(run.answers) > 30
    assert patient_value_hits("\n".join(run.answers)) == []


def test_reveal_shows_what_the_scan_looks_for(run: Run) -> None:
    """Control: ``outbox show --reveal`` does print patient values, so the scans can see them."""
    assert patient_value_hits(run.revealed) != []
