"""The real service's log lines: every line on stderr is a JSON object, and the operating events.

One module-wide run of ``wor-bridge serve`` on a free loopback port: start, a push, refusals, a
Task read with a query string, a search by a value, a delivery to a receiver that records the
``X-Request-Id`` it gets, a malformed HTTP request (uvicorn's own warning), then SIGTERM. The
tests read the lines the process wrote and parse each as JSON.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.service_harness import (
    ADMIN_KEY,
    FHIR_JSON,
    HIS_KEY,
    ServiceProcess,
    auth,
    referral_variant,
    running_service,
    task_id_of,
    wait_until,
    write_config,
)

TIMEOUT = 10
BSN = "999990007"


class _Recorder(BaseHTTPRequestHandler):
    """A receiver that records each request's ``X-Request-Id`` and answers 503 (retry)."""

    protocol_version = "HTTP/1.1"
    seen: list[str]

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""

    def do_POST(self) -> None:
        """Record, then 503 with Retry-After 0 (the bridge retries)."""
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append(self.headers.get("X-Request-Id") or "")
        self.send_response(503)
        self.send_header("Retry-After", "0")
        self.send_header("Content-Length", "0")
        self.end_headers()


@dataclass
class Run:
    """What the run did and what the service wrote."""

    service: ServiceProcess
    task_id: str = ""
    answered_ids: list[str] = field(default_factory=list)
    received_ids: list[str] = field(default_factory=list)

    def events(self, name: str) -> list[dict[str, Any]]:
        """The parsed lines with ``event`` == ``name``."""
        return [e for e in self.service.log_events() if e.get("event") == name]


def _raw_request(port: int, data: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
        sock.sendall(data)
        sock.recv(4096)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """Drive the service, then stop it with SIGTERM (so ``service_stopped`` is written)."""
    recorder = type("Recorder", (_Recorder,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), recorder)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}/fhir"
    config = write_config(tmp_path_factory.mktemp("logs"), base)
    try:
        with running_service(config) as service:
            done = Run(service)
            url = service.base_url
            data = referral_variant("accepted-contained", "LOGS-1")
            pushed = requests.post(
                f"{url}/fhir/r4/ServiceRequest",
                data=data,
                headers=auth(HIS_KEY, FHIR_JSON),
                timeout=TIMEOUT,
            )
            assert pushed.status_code == 201
            done.task_id = task_id_of(pushed)
            done.answered_ids.append(pushed.headers["X-Request-Id"])
            refused = requests.post(
                f"{url}/fhir/r4/ServiceRequest",
                data=b'{"resourceType": "Patient"}',
                headers=auth(HIS_KEY, FHIR_JSON),
                timeout=TIMEOUT,
            )
            assert refused.status_code in (400, 422)
            done.answered_ids.append(refused.headers["X-Request-Id"])
            requests.get(
                f"{url}/fhir/r4/Task/{done.task_id}?_format=xml&_summary=true",
                headers=auth(HIS_KEY),
                timeout=TIMEOUT,
            )
            requests.get(
                f"{url}/fhir/r4/Task",
                params={"identifier": f"http://fhir.nl/fhir/NamingSystem/bsn|{BSN}"},
                headers=auth(HIS_KEY),
                timeout=TIMEOUT,
            )
            requests.get(f"{url}/metrics", headers=auth(ADMIN_KEY), timeout=TIMEOUT)
            requests.get(f"{url}/fhir/r4/Nothing/{BSN}", headers=auth(HIS_KEY), timeout=TIMEOUT)
            _raw_request(service.port, b"NOT HTTP AT ALL\r\n\r\n")
            wait_until(lambda: len(recorder.seen) >= 2, "two delivery attempts")
            wait_until(lambda: len(done.events("delivery_attempted")) >= 2, "their log lines")
            done.received_ids = list(recorder.seen)
            service.stop()
            yield done
    finally:
        server.shutdown()
        server.server_close()


def test_every_stderr_line_is_a_json_object(run: Run) -> None:
    """Every non-empty stderr line parses as a JSON object (uvicorn's included); stdout is empty."""
    lines = [line for line in run.service.stderr_lines if line.strip()]
    assert len(lines) > 10
    for line in lines:
        assert isinstance(json.loads(line), dict)
    assert [line for line in run.service.stdout_lines if line.strip()] == []


def test_service_started_after_bind_with_address_and_version(run: Run) -> None:
    """``service_started`` names host, the port actually bound and the version, after the
    workers started; ``service_stopped`` is the last line after SIGTERM."""
    events = [e.get("event") for e in run.service.log_events()]
    (started,) = run.events("service_started")
    assert started["host"] == "127.0.0.1"
    assert started["port"] == run.service.port
    assert started["version"] not in ("", None)
    assert started["tls"] is False
    assert events.index("workers_started") < events.index("service_started")
    assert events[-1] == "service_stopped"
    first_request = events.index("request")
    assert events.index("service_started") < first_request


def test_one_access_line_per_request_with_route_template(run: Run) -> None:
    """Each request has one ``request`` line: method, route template (no id, no query), status,
    duration in ms, client id and the request id answered in ``X-Request-Id``."""
    lines = run.events("request")
    by_id = {line["request_id"]: line for line in lines}
    assert len(by_id) == len(lines), "one line per request"
    pushed = by_id[run.answered_ids[0]]
    assert pushed["route"] == "/fhir/r4/ServiceRequest"
    assert (pushed["method"], pushed["status"], pushed["client"]) == ("POST", 201, "his-example")
    assert isinstance(pushed["duration_ms"], float)
    read = [line for line in lines if line["route"] == "/fhir/r4/Task/{task_id}"]
    assert [line["status"] for line in read] == [200]
    text = "\n".join(run.service.stderr_lines)
    assert run.task_id not in json.dumps(read)
    assert "_summary" not in text
    assert BSN not in text
    metrics = [line for line in lines if line["route"] == "/metrics"]
    assert metrics[0]["client"] == "ops"  # the example configuration's admin client
    unmatched = [line for line in lines if line["status"] == 404]
    assert unmatched[0]["route"] == "(none)"


def test_refusals_carry_status_and_issue_codes(run: Run) -> None:
    """A refused push's line has its status and the OperationOutcome issue codes, no text."""
    line = next(x for x in run.events("request") if x["request_id"] == run.answered_ids[1])
    assert line["status"] in (400, 422)
    assert line["issues"]
    assert all(isinstance(code, str) and " " not in code for code in line["issues"])
    assert "diagnostics" not in json.dumps(line)


def test_request_id_is_bound_to_the_request_s_other_lines(run: Run) -> None:
    """Lines written while a request is answered (the intake's own) carry its request id."""
    accepted = run.events("referral_accepted")
    assert accepted
    assert accepted[0]["request_id"] == run.answered_ids[0]


def test_delivery_attempt_line_names_the_outbound_request_id(run: Run) -> None:
    """The ``X-Request-Id`` the receiver got is the one on the ``delivery_attempted`` line."""
    logged = [e["request_id"] for e in run.events("delivery_attempted")]
    assert run.received_ids
    assert set(run.received_ids) <= set(logged)
    assert all(len(rid) == 32 for rid in run.received_ids)


def test_uvicorn_warnings_are_json_lines(run: Run) -> None:
    """uvicorn's own warning about a malformed request is a JSON line with its logger name."""
    lines = [e for e in run.service.log_events() if str(e.get("logger", "")).startswith("uvicorn")]
    assert lines, "uvicorn wrote nothing for a malformed request"
    assert lines[0]["level"] == "warning"
    assert "traceback" not in json.dumps(lines).lower()


def test_log_lines_hold_no_config_path(run: Run) -> None:
    """No line names the configuration's directory (where the store lives)."""
    folder = str(Path(run.service.config).parent)
    assert folder not in "\n".join(run.service.stderr_lines)
