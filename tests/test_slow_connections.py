"""Connections against the real service on a free loopback port: idle, slow-header and slow-body
connections are closed within a bounded time (408 where a route waited for the body), the number
of connections is bounded, and /healthz answers while a large body is validated.

Each test's duration is bounded: every socket read has a timeout, and the slow cases run side by
side. What is asserted is order and state (closed, answered first), never a speed."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.cases import case_input
from tests.service_harness import ServiceProcess, running_service, task_id_of, write_config

DEADLINE_S = 1.0  # header, body and keep-alive deadlines of the service under test
BOUND_S = 8.0  # a connection still open after this long fails the test
UNREACHABLE = "http://127.0.0.1:9/fhir"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The service with one-second deadlines and room for eight connections."""
    tmp = tmp_path_factory.mktemp("slow")
    config = write_config(
        tmp,
        UNREACHABLE,
        service={
            "header_timeout_s": DEADLINE_S,
            "body_timeout_s": DEADLINE_S,
            "keep_alive_s": DEADLINE_S,
            "max_connections": 8,
            "dispatcher": False,
        },
    )
    with running_service(config) as running:
        yield running


def _connect(service: ServiceProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=BOUND_S)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _trickle(sock: socket.socket, data: bytes, step_s: float = 0.2) -> None:
    """Send ``data`` a byte at a time (a slowloris client) until it is sent or refused."""
    for byte in data:
        try:
            sock.send(bytes([byte]))
        except OSError:
            return
        time.sleep(step_s)


def _until_closed(sock: socket.socket) -> tuple[float, bytes]:
    """Seconds until the service closed the connection, and what it sent (status line only)."""
    started = time.monotonic()
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the connection was still open after {BOUND_S} s")
    finally:
        sock.close()
    return time.monotonic() - started, received.split(b"\r\n", 1)[0]


def _readable(sock: socket.socket) -> bool:
    """Whether the service has sent anything on ``sock`` yet (without waiting)."""
    timeout = sock.gettimeout()
    sock.settimeout(0)  # a socket with a timeout would wait for data before peeking
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.settimeout(timeout)


def _head(method: str, path: str, length: int, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: bridge", f"Content-Length: {length}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


HIS = "Authorization: Bearer example-his-key"
FHIR_JSON = "Content-Type: application/fhir+json"
CASES: dict[str, tuple[bytes, bytes, bytes]] = {
    # name: (sent at once, then trickled, expected status line prefix; b"" = closed unanswered)
    "idle": (b"", b"", b""),
    "slow-header": (b"", b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n" * 8, b""),
    "slow-body-intake": (
        _head("POST", "/fhir/r4/ServiceRequest", 4000, HIS, FHIR_JSON) + b"{",
        b" " * 200,
        b"HTTP/1.1 408",
    ),
    "slow-body-token": (
        _head("POST", "/oauth/token", 4000, "Content-Type: application/x-www-form-urlencoded"),
        b"a" * 200,
        b"HTTP/1.1 408",
    ),
    "slow-body-webhook": (
        _head("POST", "/feedback/welzijn-json", 4000, "Content-Type: application/json") + b"{",
        b" " * 200,
        b"HTTP/1.1 408",
    ),
    "unread-body-after-401": (
        _head("POST", "/fhir/r4/ServiceRequest", 4000, FHIR_JSON) + b"{",
        b" " * 200,
        b"HTTP/1.1 401",
    ),
    "idle-keep-alive": (b"GET /healthz HTTP/1.1\r\nHost: bridge\r\n\r\n", b"", b"HTTP/1.1 200"),
}


def _one_case(service: ServiceProcess, first: bytes, slowly: bytes) -> tuple[float, bytes]:
    sock = _connect(service)
    if first:
        sock.sendall(first)
    if slowly:
        threading.Thread(target=_trickle, args=(sock, slowly), daemon=True).start()
    return _until_closed(sock)


def test_idle_slow_header_and_slow_body_connections_are_closed(service: ServiceProcess) -> None:
    """Every slow or idle connection is closed by the service (408 when a route waited)."""
    with ThreadPoolExecutor(len(CASES)) as pool:
        futures = {
            name: pool.submit(_one_case, service, first, slowly)
            for name, (first, slowly, _) in CASES.items()
        }
        results = {name: future.result() for name, future in futures.items()}
    for name, (_, _, expected) in CASES.items():
        _, status_line = results[name]
        assert status_line.startswith(expected), (name, status_line)
        assert expected or status_line == b"", name


def test_other_clients_are_served_while_slow_connections_are_open(
    service: ServiceProcess,
) -> None:
    """With slowloris connections open, /healthz is still answered on a new connection."""
    slow = [_connect(service) for _ in range(3)]
    for sock in slow:
        sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    probe = _connect(service)
    probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n")
    _, status_line = _until_closed(probe)
    assert status_line.startswith(b"HTTP/1.1 200")
    for sock in slow:
        sock.close()


def test_connections_beyond_the_bound_are_answered_503(service: ServiceProcess) -> None:
    """Beyond service.max_connections a request is answered 503 at once, and served later."""
    held = [_connect(service) for _ in range(10)]
    time.sleep(0.2)  # the service has accepted them
    probe = _connect(service)
    probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n")
    _, refused = _until_closed(probe)
    for sock in held:
        sock.close()
    time.sleep(0.3)
    probe = _connect(service)
    probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n")
    _, served = _until_closed(probe)
    assert refused.startswith(b"HTTP/1.1 503")
    assert served.startswith(b"HTTP/1.1 200")


def test_healthz_answers_while_a_large_valid_body_is_validated(tmp_path: Path) -> None:
    """While a large valid Task body is validated, /healthz is answered before that answer."""
    config = write_config(
        tmp_path,
        UNREACHABLE,
        service={"dispatcher": False},
        limits={
            "max_elements": 1_000_000,
            "max_array_items": 1_000_000,
            "task_bytes": 4_000_000,
        },
    )
    task = {"resourceType": "Task", "status": "requested", "intent": "order"}
    body = json.dumps({**task, "identifier": [{}] * 200_000}, separators=(",", ":")).encode()
    with running_service(config) as running:
        pushed = requests.post(
            f"{running.base_url}/fhir/r4/ServiceRequest",
            data=case_input("accepted-contained"),
            headers={
                "Authorization": "Bearer example-his-key",
                "Content-Type": "application/fhir+json",
            },
            timeout=BOUND_S,
        )
        big = _connect(running)
        big.sendall(
            _head(
                "PUT",
                f"/fhir/r4/Task/{task_id_of(pushed)}",
                len(body),
                "Authorization: Bearer example-welfare-key",
                'If-Match: W/"1"',
                FHIR_JSON,
                "Connection: close",
            )
            + body
        )
        time.sleep(0.5)  # the body is in and being validated (about two seconds here)
        probe = _connect(running)
        probe.sendall(b"GET /healthz HTTP/1.1\r\nHost: bridge\r\nConnection: close\r\n\r\n")
        _, health = _until_closed(probe)
        big_answered_first = _readable(big)
        _, big_status = _until_closed(big)
    assert health.startswith(b"HTTP/1.1 200")
    assert not big_answered_first, "the large body was answered before /healthz"
    assert big_status.startswith(b"HTTP/1.1 4"), big_status
