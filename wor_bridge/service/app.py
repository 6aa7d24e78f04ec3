"""The FastAPI app: FHIR REST intake for the GP side, Task status, health and metrics.

Routes read raw bytes and call the use cases; every answer that is not a resource is an
OperationOutcome, and no answer ever carries a stack trace.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from wor_bridge import console
from wor_bridge.bootstrap import Components
from wor_bridge.config import AppConfig, ClientSettings
from wor_bridge.core.fhir import canonical_json
from wor_bridge.core.outcome import operation_outcome
from wor_bridge.core.settings import Settings
from wor_bridge.errors import Issue, RefusedError
from wor_bridge.metrics import Metrics
from wor_bridge.service import capability, create_answer, health_routes, openapi, welfare_intake
from wor_bridge.service.access import AccessLog, Attempt, MarkingStore, caller_of
from wor_bridge.service.admission import Admission, Slots
from wor_bridge.service.auth import Authenticator, Denied, presented_key
from wor_bridge.service.bodies import BodyDeadline, BodyRefused, read_body, too_large
from wor_bridge.service.conventions import FhirConventions, allowed_methods
from wor_bridge.service.dispatcher import Dispatcher
from wor_bridge.service.feedback_routes import FeedbackRoutes
from wor_bridge.service.headers import SecurityHeaders
from wor_bridge.service.negotiation import FhirNegotiation
from wor_bridge.service.readiness import Readiness, ReadinessGate, not_ready_answer
from wor_bridge.service.refusals import denied_answer, refusal_status
from wor_bridge.service.report_routes import ReportRoutes
from wor_bridge.service.request_log import RequestLog
from wor_bridge.service.search_routes import SearchRoutes
from wor_bridge.service.stu3_intake_routes import Stu3Intake
from wor_bridge.service.stu3_routes import Stu3Routes
from wor_bridge.service.stu3_search import Stu3Search
from wor_bridge.service.tls import client_cert_sha256
from wor_bridge.usecases import intake
from wor_bridge.usecases.directory_sync import DirectorySync
from wor_bridge.usecases.polling import Poller
from wor_bridge.usecases.retention import Purger

FHIR_JSON = "application/fhir+json"
log = structlog.get_logger("wor_bridge.service")


class FhirResponse(Response):
    """A FHIR JSON response serialised with the project's one serializer."""

    media_type = FHIR_JSON

    def render(self, content: Any) -> bytes:
        """Canonical FHIR JSON bytes."""
        return canonical_json(content)


def _outcome(status: int, code: Any, message: str, where: str = "(request)") -> FhirResponse:
    return FhirResponse(operation_outcome([Issue(code, where, message)]), status_code=status)


def _denied(denied: Denied) -> Response:
    return denied_answer(denied, FhirResponse)


def _body_refused(err: BodyRefused) -> FhirResponse:
    response = _outcome(err.status, err.code, err.message, err.location)
    response.headers.update(err.headers)
    return response


class _CatchAll:
    """Outermost-but-one ASGI layer: an unexpected error becomes a 500 OperationOutcome and one
    log line with its type. Starlette's own handler would re-raise, and the server would print
    the traceback (whose message may quote input) to stderr. When the store fails its write
    probe right then (a full disk, a lock held too long), the answer is the readiness 503 with
    ``Retry-After`` instead: nothing was acknowledged, the client should retry."""

    def __init__(self, app: Any, readiness: Readiness | None = None) -> None:
        self.app = app
        self.readiness = readiness

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = False

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if message.get("type") == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:  # noqa: BLE001 - the last line of defence; type only
            log.error("request_failed", error=type(exc).__name__)  # noqa: TRY400 - no traceback
            if scope.get("type") != "http" or started:
                return
            check = None
            if self.readiness is not None:
                check = await run_in_threadpool(self.readiness.problem, force=True)
            if check is not None and self.readiness is not None:
                body, headers = not_ready_answer(scope["path"], check, self.readiness.retry_after_s)
                await send({"type": "http.response.start", "status": 503, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                return
            response = _outcome(500, "exception", "internal error")
            await response(scope, receive, send)


def _largest_body(core: Settings) -> int:
    """The largest body any route takes: the bound of gzip/deflate decoding."""
    limits = core.limits
    return max(
        core.max_body_bytes,
        limits.task_bytes,
        limits.observation_bytes,
        limits.feedback_bundle_bytes,
        limits.token_bytes,
        limits.webhook_bytes,
        limits.search_bytes,
    )


def _add_layers(app: FastAPI, config: AppConfig, readiness: Readiness, auth: Authenticator) -> None:
    """The ASGI layers, innermost first (the last added is the outermost): bodies in work, body
    deadline, FHIR conventions, readiness, negotiation, the catch-all, the security headers and
    the access line."""
    service, core = config.service, config.core
    app.add_middleware(
        Admission, slots=Slots(service.max_validations, service.max_validations_per_client)
    )
    app.add_middleware(BodyDeadline, timeout_s=service.body_timeout_s)
    app.add_middleware(FhirConventions)  # inside the negotiation: shaped before XML
    app.add_middleware(ReadinessGate, readiness=readiness)  # 503 before a body is read
    app.add_middleware(FhirNegotiation, max_body_bytes=_largest_body(core))
    app.add_middleware(_CatchAll, readiness=readiness)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestLog, router=app.router, auth=auth)  # added last: the outermost


def create_app(components: Components, *, start_dispatcher: bool | None = None) -> FastAPI:  # noqa: PLR0915 - the one place routes are wired, read top to bottom
    """The ASGI app for ``components``; the dispatcher runs inside it unless disabled."""
    components = dataclasses.replace(components, store=MarkingStore(components.store))
    config = components.config
    store = components.store
    metrics = Metrics(lambda: store.stats(components.clock.now()))
    auth = Authenticator(config.clients, config.service.rate_per_s, config.service.burst)
    dispatcher = Dispatcher(components, metrics)
    run_dispatcher = config.service.dispatcher if start_dispatcher is None else start_dispatcher

    polled = run_dispatcher and any(d.poll for d in config.core.destinations)
    poller = Poller(components, metrics) if polled else None
    synced = run_dispatcher and components.directory is not None
    directory_sync = DirectorySync(components) if synced else None
    purging = run_dispatcher and config.retention.purge  # the daily retention purge
    purger = Purger(store, config.retention, components.clock) if purging else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if run_dispatcher:
            dispatcher.start()
        if poller is not None:
            poller.start()
        if directory_sync is not None:
            directory_sync.start()
        if purger is not None:
            purger.start()
        log.info("workers_started", dispatcher=run_dispatcher, clients=len(config.clients))
        yield
        dispatcher.stop()
        if poller is not None:
            poller.stop()
        if directory_sync is not None:
            directory_sync.stop()
        if purger is not None:
            purger.stop()

    app = FastAPI(
        title="wor_bridge",
        version="0.1.0",
        summary="Welzijn op Recept referrals from GP systems to welfare organisations (FHIR R4)",
        lifespan=lifespan,
        docs_url=None,  # Swagger UI and ReDoc load scripts and fonts from third-party CDNs
        redoc_url=None,
        redirect_slashes=False,  # a redirect would be built from the Host header
    )
    app.state.dispatcher = dispatcher
    app.state.metrics = metrics
    readiness = Readiness(
        store,
        min_free_bytes=config.service.min_free_disk_mb * 1024 * 1024,
        probe_every_s=config.service.readiness_probe_s,
    )
    _add_layers(app, config, readiness, auth)
    trail = AccessLog(store, components.clock, _body_refused)

    def authorise(request: Request, scope: str) -> ClientSettings | Denied:
        key = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
        return auth.check(key, scope, client_cert_sha256(request.scope))

    routes = FeedbackRoutes(
        components, metrics, authorise, FhirResponse, _outcome, denied=_denied, trail=trail
    )
    routes.add(app)
    stu3 = Stu3Routes(components, auth, routes)
    stu3.add(app)
    Stu3Search(stu3).add(app)  # TA query-available-resources
    Stu3Intake(components, metrics, auth, trail, dispatcher.wake if run_dispatcher else None).add(
        app
    )
    SearchRoutes(routes).add(app)
    ReportRoutes(components, authorise, trail, _outcome, _denied).add(app)  # monitoring
    console.install(app, components)  # the browser console and inbox, when enabled

    intake = _Intake(
        components, metrics, auth, dispatcher, run_dispatcher=run_dispatcher, routes=routes
    ).handle

    @app.post("/fhir/r4/ServiceRequest", status_code=201, tags=["intake"])
    async def post_service_request(request: Request) -> Response:
        """Push a referral: a ServiceRequest with its resources contained."""
        return await intake(request, bundle_route=False)

    @app.post("/fhir/r4", status_code=201, tags=["intake"])
    async def post_bundle(request: Request) -> Response:
        """Push a referral as a Bundle (transaction, batch or collection)."""
        return await intake(request, bundle_route=True)

    @app.get("/fhir/r4/Task/{task_id}", tags=["status"])
    def get_task(task_id: str, request: Request) -> Response:
        """The bridge's current Task: status and businessStatus reflect delivery."""
        attempt = Attempt("task_read", "R", task_id)
        return trail.answer_sync(attempt, lambda: routes.read_task(task_id, request, attempt))

    health_routes.add(app, readiness, dispatcher if run_dispatcher else None, auth, _denied)
    _add_error_handlers(app)
    openapi.install(app)
    capability.check(app)  # the CapabilityStatement's table must name exactly these routes
    return app


class _Intake:
    """``POST /fhir/r4/ServiceRequest`` and ``POST /fhir/r4``."""

    def __init__(
        self,
        components: Components,
        metrics: Metrics,
        auth: Authenticator,
        dispatcher: Dispatcher,
        *,
        run_dispatcher: bool,
        routes: FeedbackRoutes,
    ) -> None:
        self.c = components
        self.metrics = metrics
        self.auth = auth
        self.dispatcher = dispatcher
        self.run_dispatcher = run_dispatcher
        self.routes = routes

    async def handle(self, request: Request, *, bundle_route: bool) -> Response:
        """GP side: a referral; welfare side: a Bundle of feedback (audited either way).

        A welfare-side client (one with a ``destination``) posting anything but a Bundle of
        Tasks and Observations is pushing a referral: that needs ``referral:write`` (403)."""
        attempt = Attempt("referral_intake", "C")
        return await self.routes.trail.answer(
            attempt, lambda: self._handle(request, attempt, bundle_route=bundle_route)
        )

    async def _handle(self, request: Request, attempt: Attempt, *, bundle_route: bool) -> Response:
        key = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
        cert = client_cert_sha256(request.scope)
        welfare = self.auth.client(key)
        body = None
        if welfare is not None and welfare.destination is not None and bundle_route:
            client = await welfare_intake.welfare_post(
                self.auth,
                self.routes,
                request,
                key=key,
                cert=cert,
                attempt=attempt,
            )
            if isinstance(client, Response):
                return client
            body = request.state.body
        else:
            client = self.auth.check(key, "referral:write", cert)
        if isinstance(client, Denied):
            attempt.user = client.user
            return _denied(client)
        attempt.by(client)
        if body is None:
            body = await read_body(request, self.c.config.core.max_body_bytes)
        if body is None:
            self.metrics.intake.labels("too_large").inc()
            return _body_refused(too_large(self.c.config.core.max_body_bytes, "max_body_bytes"))
        started = time.perf_counter()
        try:
            accepted = await run_in_threadpool(
                lambda: intake.accept_referral(
                    self.c.store,
                    self.c.config.core,
                    self.c.clock,
                    data=body,
                    content_type=request.headers.get("content-type") or None,
                    caller=caller_of(client),
                )
            )
        except RefusedError as err:
            self.metrics.intake.labels("refused").inc()
            return FhirResponse(operation_outcome(err.issues), status_code=refusal_status(err))
        self.metrics.intake_seconds.observe(time.perf_counter() - started)
        outcome = "accepted" if accepted.created else "amended" if accepted.amended else "duplicate"
        self.metrics.intake.labels(outcome).inc()
        if (accepted.created or accepted.amended) and self.run_dispatcher:
            self.dispatcher.wake()
        return await run_in_threadpool(
            lambda: create_answer.referral_answer(
                self.c,
                FhirResponse,
                request,
                task_id=accepted.task_id,
                created=accepted.created,
                body=body,
                amended=accepted.amended,
            )
        )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = "not-found" if exc.status_code == 404 else "not-supported"
        response = _outcome(exc.status_code, code, "no such endpoint or method")
        if exc.status_code == 405:  # every method of every route at this path, not just one's
            response.headers["Allow"] = allowed_methods(app, request.url.path)
        return response

    @app.exception_handler(BodyRefused)
    async def body_refused(_request: Request, exc: BodyRefused) -> Response:
        return _body_refused(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, _exc: RequestValidationError) -> Response:
        return _outcome(400, "invalid", "the request is not valid for this endpoint")

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exc: Exception) -> Response:
        log.error("request_failed", error=type(exc).__name__)
        return _outcome(500, "exception", "internal error")
