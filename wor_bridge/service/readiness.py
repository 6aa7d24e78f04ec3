"""Readiness: may the service acknowledge work now? ``/readyz`` and the gate in front of routes.

``Readiness`` asks the store (``OutboxStore.check_writable``): on every call the cheap checks
(the store is still the file it opened; free disk space above ``service.min_free_disk_mb``), and
at most once per ``service.readiness_probe_s`` a real write committed in its own transaction
(the probe; so ``/readyz`` polled by a load balancer is no write amplifier). Between probes the
last probe's result stands: a store that failed its probe stays not ready until one succeeds.

``ReadinessGate`` (an ASGI layer) answers every route that reads or writes the store while the
store is not ready: **503** ``transient`` with ``Retry-After`` (the probe interval) and an
OperationOutcome naming the failed check, never "201 stored durably" into a file that is gone.
Not gated: the routes that do not touch the store (``/healthz``, ``/readyz``, ``/metrics``, the
CapabilityStatements, ``/openapi.json``); the token endpoint answers RFC 6749 JSON
(``invalid_request``, as its other 503s). A gated request is not audited: the audit record could
not be stored durably either; its access log line records it.

Every change of state is logged once (``readiness_changed``, with the check, never a path).
"""

from __future__ import annotations

import json
import math
import threading
import time
from typing import Any, Final

import structlog
from starlette.concurrency import run_in_threadpool

from wor_bridge.core.fhir import canonical_json
from wor_bridge.core.outcome import operation_outcome
from wor_bridge.errors import Issue
from wor_bridge.ports import OutboxStore

log = structlog.get_logger("wor_bridge.readiness")

UNGATED: Final = frozenset(
    {"/healthz", "/readyz", "/metrics", "/openapi.json", "/fhir/r4/metadata", "/fhir/stu3/metadata"}
)
EXPLAIN: Final = {
    "store-removed": "the store file was removed under the running service (restart it)",
    "store-replaced": "the store file was replaced under the running service (restart it)",
    "disk-low": "free disk space where the store writes is below service.min_free_disk_mb",
    "store-not-writable": "the store cannot commit a write (read-only, locked or I/O error)",
    "store-unreachable": "the store does not answer",
}


class Readiness:
    """The store's readiness with a rate-limited write probe; thread-safe."""

    def __init__(self, store: OutboxStore, *, min_free_bytes: int, probe_every_s: float) -> None:
        self.store = store
        self.min_free_bytes = min_free_bytes
        self.probe_every_s = probe_every_s
        self._lock = threading.Lock()
        self._probed_at = -math.inf
        self._probing = False
        self._probed: str | None = None
        self._reported: str | None = None

    @property
    def retry_after_s(self) -> int:
        """Seconds a refused client should wait: the probe interval, at least 1."""
        return max(1, math.ceil(self.probe_every_s))

    def probe_due(self) -> bool:
        """True when the next call of ``problem`` would run the write probe."""
        return not self._probing and time.monotonic() - self._probed_at >= self.probe_every_s

    def problem(self, *, force: bool = False) -> str | None:
        """The failed check (``store-removed``, ``store-replaced``, ``disk-low``,
        ``store-not-writable``), or None when ready. Runs the probe when it is due, or with
        ``force`` (after a store error), unless another thread is running it (blocking: call it
        off the event loop then)."""
        with self._lock:
            due = not self._probing if force else self.probe_due()
            if due:
                self._probing = True
        if due:
            try:
                found = self.store.check_writable(self.min_free_bytes, probe=True)
            finally:
                with self._lock:
                    self._probing = False
            with self._lock:
                self._probed, self._probed_at = found, time.monotonic()
        else:
            found = self.store.check_writable(self.min_free_bytes, probe=False) or self._probed
        self._report(found)
        return found

    def _report(self, found: str | None) -> None:
        with self._lock:
            changed, self._reported = found != self._reported, found
        if changed:
            log.warning("readiness_changed", ready=found is None, check=found)


def not_ready_answer(path: str, check: str, retry_after_s: int) -> tuple[bytes, list[Any]]:
    """The 503 body and headers for a request refused because of ``check``."""
    why = f"the service is not ready ({check}): {EXPLAIN.get(check, check)}; retry later"
    if path == "/oauth/token":
        body = json.dumps({"error": "invalid_request", "error_description": why}).encode()
        media = b"application/json"
    else:
        body = canonical_json(operation_outcome([Issue("transient", "(request)", why)]))
        media = b"application/fhir+json"
    headers = [
        (b"content-type", media),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after_s).encode()),
    ]
    return body, headers


class ReadinessGate:
    """The ASGI layer (see the module docstring)."""

    def __init__(self, app: Any, readiness: Readiness) -> None:
        self.app = app
        self.readiness = readiness

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Answer 503 while not ready; else run the route."""
        if scope["type"] != "http" or scope["path"] in UNGATED:
            await self.app(scope, receive, send)
            return
        readiness = self.readiness
        if readiness.probe_due():
            check = await run_in_threadpool(readiness.problem)
        else:
            check = readiness.problem()  # stat and statvfs only: microseconds
        if check is None:
            await self.app(scope, receive, send)
            return
        body, headers = not_ready_answer(scope["path"], check, readiness.retry_after_s)
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
