"""Shipped fake: a care-services directory (mCSD, GF Adressering) on loopback, for tests and demos.

``SimulatedDirectory`` is a real HTTP server (stdlib ``ThreadingHTTPServer``) with the behaviour
the GF replica rules are written against (``docs/standards/gf-adressering-mcsd.md`` section 5):

- ``GET [base]/{Type}?_count=n`` answers a ``searchset`` of the current resources, paged with
  ``next`` links, ``Bundle.meta.lastUpdated`` = the server time of the answer (L2, L5);
- ``GET [base]/{Type}/_history?_since=&_count=`` answers a ``history`` Bundle of the versions
  at or after ``_since``, newest first, with ``DELETE`` entries for deletions (S1, [FHIR]);
- every write (``put``, ``delete``) gets a new ``meta.versionId`` and a strictly increasing
  ``meta.lastUpdated`` from the server's clock; a withdrawal is a ``put`` with a new status;
- ``fail_next(status, times, retry_after)`` answers the next requests with that status
  (a ``429`` with ``Retry-After``); ``add_broken(type, entry)`` serves an unusable entry on the
  first page of that type's searches and histories; ``requests()`` lists what was asked and
  the server time each answer carried; ``on_answer(path)`` runs after each answer (a test
  writes there to change the directory in the middle of a load).

Only organisation data lives here, in memory.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit


@dataclass(frozen=True, slots=True)
class _Version:
    rtype: str
    rid: str
    number: int
    at: dt.datetime
    resource: dict[str, Any] | None  # None: deleted


@dataclass(frozen=True, slots=True)
class Seen:
    """One request: its path below the base, its query and the server time of the answer."""

    path: str
    query: dict[str, str]
    server_time: str | None


@dataclass
class _State:
    versions: list[_Version] = field(default_factory=list)
    broken: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    failures: list[tuple[int, str | None]] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    last: dt.datetime = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _stamp(when: dt.datetime) -> str:
    return when.isoformat(timespec="microseconds")


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default access log."""

    def _reply(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        """A type search or a type history."""
        split = urlsplit(self.path)
        base = self.server.base_path
        path = split.path[len(base) :] if split.path.startswith(base) else split.path
        parts = [p for p in path.split("/") if p]
        query = {k: v[0] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        state = self.server.state
        with state.lock:
            failure = state.failures.pop(0) if state.failures else None
            if failure is not None:
                state.requests.append(Seen(path, query, None))
        if failure is not None:
            status, retry_after = failure
            headers = {"Retry-After": retry_after} if retry_after else None
            self._reply(status, _outcome("throttled" if status == 429 else "transient"), headers)
            return
        self._answer(parts, query, path)
        if self.server.on_answer is not None:
            self.server.on_answer(path)

    def _answer(self, parts: list[str], query: dict[str, str], path: str) -> None:
        try:
            count = max(1, min(int(query.get("_count", "50")), 50))
            offset = int(query.get("_offset", "0"))
        except ValueError:
            self._reply(HTTPStatus.BAD_REQUEST, _outcome("invalid"))
            return
        if len(parts) == 1:
            self._reply(
                HTTPStatus.OK,
                self.server.page(parts[0], None, count, offset, path=path, query=query),
            )
        elif len(parts) == 2 and parts[1] == "_history" and "_since" in query:
            try:
                since = dt.datetime.fromisoformat(query["_since"].replace("Z", "+00:00"))
            except ValueError:
                self._reply(HTTPStatus.BAD_REQUEST, _outcome("invalid"))
                return
            self._reply(
                HTTPStatus.OK,
                self.server.page(parts[0], since, count, offset, path=path, query=query),
            )
        else:
            self._reply(HTTPStatus.NOT_FOUND, _outcome("not-found"))


def _outcome(code: str) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code}]}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], base_path: str) -> None:
        super().__init__(address, _Handler)
        self.base_path = base_path.rstrip("/")
        self.state = _State()
        self.on_answer: Callable[[str], None] | None = None

    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{self.base_path}"

    def tick(self) -> dt.datetime:
        """The server's clock, strictly increasing (call with the lock held)."""
        now = max(dt.datetime.now(dt.UTC), self.state.last + dt.timedelta(microseconds=1000))
        self.state.last = now
        return now

    def page(
        self,
        rtype: str,
        since: dt.datetime | None,
        count: int,
        offset: int,
        *,
        path: str,
        query: dict[str, str],
    ) -> Any:
        with self.state.lock:
            now = self.tick()
            self.state.requests.append(Seen(path, query, _stamp(now)))
            if since is None:
                latest: dict[str, _Version] = {}
                for version in self.state.versions:
                    if version.rtype == rtype:
                        latest[version.rid] = version
                found = sorted(
                    (v for v in latest.values() if v.resource is not None), key=lambda v: v.rid
                )
            else:
                found = sorted(
                    (v for v in self.state.versions if v.rtype == rtype and v.at >= since),
                    key=lambda v: v.at,
                    reverse=True,
                )
            broken = list(self.state.broken.get(rtype, [])) if offset == 0 else []
        chunk = found[offset : offset + count]
        entries = [self._entry(v, history=since is not None) for v in chunk] + broken
        bundle: dict[str, Any] = {
            "resourceType": "Bundle",
            "type": "searchset" if since is None else "history",
            "meta": {"lastUpdated": _stamp(now)},
            "entry": entries,
        }
        if offset + count < len(found):
            params = {"_count": str(count), "_offset": str(offset + count)}
            if since is not None:
                params["_since"] = _stamp(since)
            path = f"{rtype}/_history" if since is not None else rtype
            bundle["link"] = [
                {"relation": "next", "url": f"{self.base_url()}/{path}?{urlencode(params)}"}
            ]
        return bundle

    def _entry(self, version: _Version, *, history: bool) -> dict[str, Any]:
        full_url = f"{self.base_url()}/{version.rtype}/{version.rid}"
        if not history:
            return {"fullUrl": full_url, "resource": version.resource, "search": {"mode": "match"}}
        response = {"etag": f'W/"{version.number}"', "lastModified": _stamp(version.at)}
        url = f"{version.rtype}/{version.rid}"
        if version.resource is None:
            request = {"method": "DELETE", "url": url}
            return {
                "fullUrl": full_url,
                "request": request,
                "response": response | {"status": "204"},
            }
        method = "POST" if version.number == 1 else "PUT"
        return {
            "fullUrl": full_url,
            "resource": version.resource,
            "request": {"method": method, "url": url},
            "response": response | {"status": "201" if version.number == 1 else "200"},
        }


class SimulatedDirectory:
    """An mCSD directory on 127.0.0.1 with versioned resources and a history."""

    def __init__(self, base_path: str = "/fhir", port: int = 0) -> None:
        self._server = _Server(("127.0.0.1", port), base_path)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def base_url(self) -> str:
        """The directory's FHIR base URL."""
        return self._server.base_url()

    def start(self) -> SimulatedDirectory:
        """Serve in a background thread."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def put(self, resource: dict[str, Any]) -> str:
        """Create or update a resource: a new version with a new ``meta``; its lastUpdated."""
        return self._write(str(resource["resourceType"]), str(resource["id"]), resource)

    def delete(self, rtype: str, rid: str) -> str:
        """Delete a resource (a ``DELETE`` history entry); its lastModified."""
        return self._write(rtype, rid, None)

    def _write(self, rtype: str, rid: str, resource: dict[str, Any] | None) -> str:
        state = self._server.state
        with state.lock:
            number = 1 + sum(1 for v in state.versions if (v.rtype, v.rid) == (rtype, rid))
            at = self._server.tick()
            stored = None
            if resource is not None:
                meta = {"versionId": str(number), "lastUpdated": _stamp(at)}
                stored = {**resource, "meta": meta}
            state.versions.append(_Version(rtype, rid, number, at, stored))
        return _stamp(at)

    def now(self) -> str:
        """The server's clock now (as it would stamp a write)."""
        with self._server.state.lock:
            return _stamp(self._server.tick())

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next ``times`` requests with ``status`` (and ``Retry-After``)."""
        with self._server.state.lock:
            self._server.state.failures.extend([(status, retry_after)] * times)

    def add_broken(self, rtype: str, entry: dict[str, Any]) -> None:
        """Serve ``entry`` (unusable) on the first page of every search and history of ``rtype``."""
        with self._server.state.lock:
            self._server.state.broken.setdefault(rtype, []).append(entry)

    def requests(self) -> list[Seen]:
        """Every request received, in order (failures scripted by ``fail_next`` included)."""
        with self._server.state.lock:
            return list(self._server.state.requests)

    def on_answer(self, hook: Callable[[str], None] | None) -> None:
        """Call ``hook(path)`` after each answered request (None: stop)."""
        self._server.on_answer = hook


@contextmanager
def simulated_directory(base_path: str = "/fhir") -> Iterator[SimulatedDirectory]:
    """A started SimulatedDirectory, stopped afterwards."""
    server = SimulatedDirectory(base_path).start()
    try:
        yield server
    finally:
        server.stop()
