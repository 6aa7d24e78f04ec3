"""The routes that say how the process is: ``/healthz`` (alive), ``/readyz`` (a write
acknowledged now is durable, the dispatcher runs: ``readiness``) and ``/metrics`` (Prometheus
text for a client with ``metrics:read``, in its own rate bucket). None of them touches patient
data; the readiness gate lets them through.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from wor_bridge.metrics import Metrics
from wor_bridge.service.auth import Authenticator, Denied, presented_key
from wor_bridge.service.dispatcher import Dispatcher
from wor_bridge.service.readiness import EXPLAIN, Readiness
from wor_bridge.service.tls import client_cert_sha256


def add(
    app: FastAPI,
    readiness: Readiness,
    dispatcher: Dispatcher | None,
    auth: Authenticator,
    denied: Callable[[Denied], Response],
) -> None:
    """Add ``/healthz``, ``/readyz`` and ``/metrics`` to ``app`` (its ``state.metrics``);
    ``dispatcher`` is None when the service runs none; ``denied`` answers a refused scrape."""
    metrics: Metrics = app.state.metrics

    @app.get("/healthz", tags=["health"])
    async def healthz() -> Response:
        """The process is alive (answered on the event loop: no worker thread needed)."""
        return JSONResponse({"status": "ok"})

    @app.get("/readyz", tags=["health"])
    def readyz() -> Response:
        """Ready when a write acknowledged now is durable and the dispatcher runs; else 503
        naming the failed checks (``readiness.EXPLAIN``), never a path."""
        failed = []
        try:
            readiness.store.ping()
        except Exception:  # noqa: BLE001 - any store failure means not ready
            failed.append("store-unreachable")
        check = None if failed else readiness.problem()
        if check is not None:
            failed.append(check)
        if dispatcher is not None and not dispatcher.alive:
            failed.append("dispatcher-stopped")
        if failed:
            problems = [EXPLAIN.get(name, "the dispatcher does not run") for name in failed]
            body = {"status": "not ready", "checks": failed, "problems": problems}
            headers = {"Retry-After": str(readiness.retry_after_s)}
            return JSONResponse(body, status_code=503, headers=headers)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", tags=["health"])
    def metrics_endpoint(request: Request) -> Response:
        """Prometheus text format: scope ``metrics:read`` (or admin), in the client's own
        metrics bucket, so scraping takes nothing from its API rate."""
        key = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
        cert = client_cert_sha256(request.scope)
        client = auth.check(key, "metrics:read", cert, bucket="metrics")
        if isinstance(client, Denied):
            return denied(client)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
