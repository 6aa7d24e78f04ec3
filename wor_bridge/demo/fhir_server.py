"""Shipped fakes: a simulated welfare-side FHIR R4 server on loopback (for the demo and tests).

``SimulatedFhirServer`` is a real HTTP server (stdlib ``ThreadingHTTPServer``) that keeps what it
receives in memory with FHIR semantics close enough to prove exactly-once *effect*:

- ``POST [base]`` with a transaction Bundle: entries with ``PUT Type/id`` create or update that
  id, ``PUT Type?identifier=system|value`` updates the resource with that identifier (conditional
  update); entries with ``POST Type`` and ``ifNoneExist: identifier=system|value`` create only
  when no stored resource of that type has the identifier; answers a ``transaction-response``;
- ``PUT [base]/Type/id`` creates or updates; ``GET [base]/Type/id`` reads; ``GET [base]/Type``
  answers a searchset of everything of that type;
- ``POST [base]/Type`` creates (only once per identifier with ``If-None-Exist``) and ``PUT
  [base]/Type?identifier=system|value`` updates conditionally: the STU3 REST calls of notified
  pull and ZorgDomein-style delivery (any FHIR version: the server does not validate);
- ``on_write(rtype, resource)`` is called after each stored write (the demo's receivers react);
- ``authorizations()`` lists the ``Authorization`` header of each write (None when absent);
- ``fail_next(status, times, retry_after)`` scripts failures for the next requests;
- ``drop_next(times, how)`` applies the next write requests and then loses the answer: ``close``
  closes the connection without a byte, ``partial`` sends the status line, the headers and half
  the body and then closes (a receiver killed mid-answer). The sender cannot tell whether the
  request took effect: exactly the case a retry must survive with one effect.

It stores patient data in memory only and never prints it.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass
class _State:
    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    versions: dict[tuple[str, str], int] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    failures: list[tuple[int, str | None]] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _identifier_match(resource: dict[str, Any], query: str) -> bool:
    if not query.startswith("identifier="):
        return False
    system, _, value = query[len("identifier=") :].partition("|")
    found = resource.get("identifier") or []
    idents = [found] if isinstance(found, dict) else found  # Bundle.identifier is not a list
    return any(
        isinstance(i, dict) and i.get("system") == system and i.get("value") == value
        for i in idents
    )


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms stall

    drop: str | None = None

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default access log (it would go to stderr)."""

    def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        if self.drop is not None:
            self._lose_answer(status, data)
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _lose_answer(self, status: int, data: bytes) -> None:
        """The request took effect; the answer never arrives whole."""
        self.close_connection = True
        if self.drop == "partial":
            body = data or b'{"resourceType":"OperationOutcome","issue":[]}'
            head = (
                f"HTTP/1.1 {status} OK\r\nContent-Type: application/fhir+json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            self.wfile.write(head.encode() + body[: len(body) // 2])
            self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)

    def _path(self) -> list[str]:
        path = urlsplit(self.path).path
        base = self.server.base_path
        rest = path[len(base) :] if path.startswith(base) else path
        return [p for p in rest.split("/") if p]

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def _scripted_failure(self) -> bool:
        if self.server.latency_s > 0:  # a receiver across a network, or a slow one
            time.sleep(self.server.latency_s)
        state = self.server.state
        with state.lock:
            state.requests.append((self.command, urlsplit(self.path).path))
            state.authorizations.append(self.headers.get("Authorization"))
            if not state.failures:
                self.drop = state.drops.pop(0) if state.drops else None
                return False
            status, retry_after = state.failures.pop(0)
        self._reply(status, None, {"Retry-After": retry_after} if retry_after else None)
        return True

    def do_POST(self) -> None:
        """Transaction Bundle at the base, or create at ``[base]/Type``."""
        body = self._body()
        if self._scripted_failure():
            return
        parts = self._path()
        if len(parts) == 1 and isinstance(body, dict) and body.get("resourceType") == parts[0]:
            request = {"method": "POST", "ifNoneExist": self.headers.get("If-None-Exist") or ""}
            answer = self.server.apply_entry({"request": request, "resource": body})["response"]
            self._reply(int(answer["status"][:3]), None, {"Location": answer["location"]})
            return
        if parts or not isinstance(body, dict) or body.get("type") != "transaction":
            self._reply(HTTPStatus.BAD_REQUEST, _outcome("invalid"))
            return
        responses = [self.server.apply_entry(entry) for entry in body.get("entry") or []]
        self._reply(
            HTTPStatus.OK,
            {"resourceType": "Bundle", "type": "transaction-response", "entry": responses},
        )

    def do_PUT(self) -> None:
        """Create or update Type/id."""
        body = self._body()
        if self._scripted_failure():
            return
        parts = self._path()
        query = unquote(urlsplit(self.path).query)
        if len(parts) == 1 and query and isinstance(body, dict):
            request = {"method": "PUT", "url": f"{parts[0]}?{query}"}
            answer = self.server.apply_entry({"request": request, "resource": body})["response"]
            self._reply(int(answer["status"][:3]), None, {"Location": answer["location"]})
            return
        if len(parts) != 2 or not isinstance(body, dict) or body.get("id") != parts[1]:
            self._reply(HTTPStatus.BAD_REQUEST, _outcome("invalid"))
            return
        status = self.server.put(parts[0], parts[1], body)
        self._reply(status, body)

    def do_GET(self) -> None:
        """Read Type/id or list Type."""
        parts = self._path()
        state = self.server.state
        with state.lock:
            if len(parts) == 2 and (parts[0], parts[1]) in state.resources:
                self._reply(HTTPStatus.OK, state.resources[(parts[0], parts[1])])
                return
            if len(parts) == 1:
                found = [r for (t, _), r in state.resources.items() if t == parts[0]]
                self._reply(
                    HTTPStatus.OK,
                    {
                        "resourceType": "Bundle",
                        "type": "searchset",
                        "total": len(found),
                        "entry": [{"resource": r} for r in found],
                    },
                )
                return
        self._reply(HTTPStatus.NOT_FOUND, _outcome("not-found"))


def _outcome(code: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code}]}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        base_path: str,
        on_write: Callable[[str, dict[str, Any]], None] | None = None,
        latency_s: float = 0.0,
    ) -> None:
        super().__init__(address, _Handler)
        self.base_path = base_path.rstrip("/")
        self.state = _State()
        self.on_write = on_write
        self.latency_s = latency_s

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A peer gone mid-answer (killed, or the answer dropped on purpose) is no error of
        this server: no traceback on stderr. Anything else is reported as usual."""
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)

    def put(self, rtype: str, rid: str, resource: dict[str, Any]) -> int:
        with self.state.lock:
            key = (rtype, rid)
            created = key not in self.state.resources
            self.state.resources[key] = resource
            self.state.versions[key] = self.state.versions.get(key, 0) + 1
        if self.on_write is not None:
            self.on_write(rtype, resource)
        return HTTPStatus.CREATED if created else HTTPStatus.OK

    def apply_entry(self, entry: dict[str, Any]) -> dict[str, Any]:
        request = entry.get("request") or {}
        resource = dict(entry.get("resource") or {})
        rtype = resource.get("resourceType", "")
        url = str(request.get("url", ""))
        if request.get("method") == "PUT" and "?" in url:  # conditional update by identifier
            query = url.split("?", 1)[1]
            with self.state.lock:
                found = [
                    rid
                    for (t, rid), stored in self.state.resources.items()
                    if t == rtype and _identifier_match(stored, query)
                ]
            rid = found[0] if found else str(uuid.uuid4())
            resource["id"] = rid
            status = self.put(rtype, rid, resource)
            return {"response": {"status": f"{int(status)}", "location": f"{rtype}/{rid}"}}
        if request.get("method") == "PUT":
            rid = url.rsplit("/", maxsplit=1)[-1]
            resource["id"] = rid
            status = self.put(rtype, rid, resource)
            return {"response": {"status": f"{int(status)}", "location": f"{rtype}/{rid}"}}
        with self.state.lock:
            query = request.get("ifNoneExist") or ""
            for (t, rid), stored in self.state.resources.items():
                if t == rtype and query and _identifier_match(stored, query):
                    return {"response": {"status": "200 OK", "location": f"{rtype}/{rid}"}}
        rid = str(uuid.uuid4())
        resource["id"] = rid
        self.put(rtype, rid, resource)
        return {"response": {"status": "201 Created", "location": f"{rtype}/{rid}"}}


class SimulatedFhirServer:
    """A FHIR R4 welfare endpoint on 127.0.0.1 that remembers what it received; ``latency_s``
    (seconds, default 0) delays every write answer, as a receiver across a network would."""

    def __init__(
        self,
        base_path: str = "/fhir",
        port: int = 0,
        on_write: Callable[[str, dict[str, Any]], None] | None = None,
        latency_s: float = 0.0,
    ) -> None:
        self._server = _Server(("127.0.0.1", port), base_path, on_write, latency_s)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        """The FHIR base URL, e.g. ``http://127.0.0.1:41234/fhir``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}{self._server.base_path}"

    def start(self) -> SimulatedFhirServer:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next ``times`` write requests with ``status`` (and Retry-After)."""
        with self._server.state.lock:
            self._server.state.failures.extend([(status, retry_after)] * times)

    def drop_next(self, times: int = 1, how: str = "close") -> None:
        """Apply the next ``times`` write requests, then lose each answer (``close``: no byte of
        it; ``partial``: cut off halfway through the body, as if the receiver died)."""
        if how not in ("close", "partial"):
            raise ValueError("how must be close or partial")
        with self._server.state.lock:
            self._server.state.drops.extend([how] * times)

    def reset(self) -> None:
        """Forget everything received (resources, requests, scripted failures and drops)."""
        state = self._server.state
        with state.lock:
            for store in (state.resources, state.versions):
                store.clear()
            for log in (state.requests, state.authorizations, state.failures, state.drops):
                log.clear()

    def resources(self, rtype: str) -> list[dict[str, Any]]:
        """Stored resources of one type."""
        with self._server.state.lock:
            return [r for (t, _), r in self._server.state.resources.items() if t == rtype]

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every write request received, failures included."""
        with self._server.state.lock:
            return list(self._server.state.requests)

    def authorizations(self) -> list[str | None]:
        """The ``Authorization`` header of every write request received (None when absent)."""
        with self._server.state.lock:
            return list(self._server.state.authorizations)


@contextmanager
def simulated_fhir_server(base_path: str = "/fhir") -> Iterator[SimulatedFhirServer]:
    """A started SimulatedFhirServer, stopped afterwards."""
    server = SimulatedFhirServer(base_path).start()
    try:
        yield server
    finally:
        server.stop()
