"""Routes that find and read back what the bridge holds (issue 18), and ``GET [base]/metadata``.

- ``GET /fhir/r4/Task?...`` and ``POST /fhir/r4/Task/_search`` (form body): searchset Bundles
  (``core.search``), paged with absolute ``self``/``previous``/``next`` links on the configured
  public base (``pull.base_url``), never on the ``Host`` header;
- ``GET /fhir/r4/Task/{id}/_history/{vid}``: the current version; an older one is 410 (the
  bridge keeps the current version only), a later or malformed one 404;
- ``GET /fhir/r4/ServiceRequest/{id}`` (and ``/_history/1``), ``GET /fhir/r4/Observation/{id}``
  (and ``/_history/{vid}`` of the current version: 2 once retracted): the referral's
  ServiceRequest and the feedback Observations the bridge sent to the GP record;
- ``GET /fhir/r4/metadata``, ``GET /fhir/stu3/metadata``: the CapabilityStatement (no auth).

Every route but ``metadata`` is audited (``access``) and keeps to the caller's tenancy: a hidden
Task, and what belongs to it, is answered exactly like an unknown one (404).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from wor_bridge.config import ClientSettings
from wor_bridge.core import search, shape
from wor_bridge.core.fhir import canonical_json
from wor_bridge.core.media import Version
from wor_bridge.core.outcome import operation_outcome
from wor_bridge.core.task import Refusal
from wor_bridge.service import capability
from wor_bridge.service.access import Attempt, caller_of
from wor_bridge.service.bodies import read_body, too_large
from wor_bridge.service.feedback_routes import FeedbackRoutes
from wor_bridge.usecases import task_search

JsonDict = dict[str, Any]
FORM = "application/x-www-form-urlencoded"


def _form_pairs(body: bytes) -> list[tuple[str, str]]:
    return parse_qsl(body.decode("utf-8"), keep_blank_values=True)


class SearchRoutes:
    """Search, read-back and metadata routes, over what ``FeedbackRoutes`` shares."""

    def __init__(self, routes: FeedbackRoutes) -> None:
        self.r = routes
        self.c = routes.c
        self.base_url = self.c.config.core.pull.base_url.rstrip("/")

    @property
    def r4(self) -> str:
        """The absolute R4 base."""
        return f"{self.base_url}/fhir/r4"

    def metadata(self, version: Version) -> Response:
        """The CapabilityStatement of one base."""
        body = capability.statement(
            version,
            self.base_url,
            mutual_tls=self.c.config.service.tls is not None
            and self.c.config.service.tls.client_ca_file is not None,
            today=self.c.clock.now().date(),
        )
        if version == "STU3":
            return Response(
                canonical_json(body), media_type="application/fhir+json; fhirVersion=3.0"
            )
        return self.r.respond(body)

    async def search(self, request: Request, post: bool) -> Response:
        """A Task search (GET query, or POST form plus query)."""
        attempt = Attempt("task_search", "R")
        return await self.r.trail.answer(attempt, lambda: self._search(request, post, attempt))

    async def _search(self, request: Request, post: bool, attempt: Attempt) -> Response:
        client = self.r.authorised(request, "task:read", attempt)
        if isinstance(client, Response):
            return client
        params = list(request.query_params.multi_items())
        body = b""
        if post:
            ctype = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
            limit = self.c.config.core.limits.search_bytes
            read = await read_body(request, limit)
            if read is None:
                raise too_large(limit, "limits.search_bytes")
            if read and ctype != FORM:
                return self.r.outcome(415, "not-supported", f"must be {FORM}", "(content-type)")
            body = read
        prefer = shape.prefer(request.headers.get("prefer"))
        return await run_in_threadpool(self._found, client, params, body, prefer)

    def _found(
        self,
        client: ClientSettings,
        params: list[tuple[str, str]],
        body: bytes,
        prefer: dict[str, str],
    ) -> Response:
        """The searchset (runs in a worker thread: the form and the parameters are parsed here)."""
        params = _form_pairs(body) + params if body else params
        parsed = search.parse(params, strict=prefer.get("handling") == "strict", base=self.r4)
        if isinstance(parsed, list):
            return self.r.respond(operation_outcome(parsed), status_code=400)
        found = task_search.search_tasks(
            self.c.store,
            self.c.clock,
            parsed,
            caller_of(client),
            client.destination,
            behalf=lambda task: caller_of(client, task),
        )
        entries = [
            (f"{self.r4}/Task/{t['id']}", shape.subset(t, parsed.summary, parsed.elements))
            for t in found.tasks
        ]
        links = search.links(f"{self.r4}/Task", parsed, found.total)
        return self.r.respond(shape.searchset(found.total, entries, links))

    def read_version(self, task_id: str, vid: str, request: Request) -> Response:
        """``GET Task/{id}/_history/{vid}``: the current version only (older ones are gone)."""
        attempt = Attempt("task_read", "R", task_id)

        def handle() -> Response:
            attempt.task = self.r.trail.task(task_id)
            client = self.r.authorised(request, "task:read", attempt)
            if isinstance(client, Response):
                return client
            task = self.r.trail.visible(client, attempt.task)
            if task is None:
                return self.r.not_found()
            if not vid.isdigit() or int(vid) > task.version or int(vid) < 1:
                return self.r.outcome(404, "not-found", "no such version of this Task", "Task")
            if int(vid) < task.version:
                return self.r.outcome(
                    410,
                    "deleted",
                    "this version was superseded; the bridge keeps the current version only "
                    f"({task.version})",
                    "Task.meta.versionId",
                )
            return self.r.read_task(task_id, request, attempt)

        return self.r.trail.answer_sync(attempt, handle)

    def read_other(self, kind: str, rid: str, vid: str | None, request: Request) -> Response:
        """``GET ServiceRequest/{id}`` or ``Observation/{id}`` (``/_history/1``), audited."""
        event = "referral_read" if kind == "ServiceRequest" else "feedback_read"
        attempt = Attempt(event, "R", object_type=kind)

        def handle() -> Response:
            store = self.c.store
            task_id = (
                store.task_for_request(rid) if kind == "ServiceRequest" else (store.item_task(rid))
            )
            attempt.task = self.r.trail.task(task_id)
            client = self.r.authorised(request, "task:read", attempt)
            if isinstance(client, Response):
                return client
            caller = caller_of(client, attempt.task)
            found: JsonDict | Refusal
            if kind == "ServiceRequest":
                found = task_search.read_service_request(
                    store, self.c.clock, rid, caller, client.destination
                )
            else:
                found = task_search.read_observation(
                    store,
                    self.c.clock,
                    rid,
                    caller,
                    client.destination,
                    gp_record=self.c.config.core.feedback.gp_record,
                )
            version = "1" if isinstance(found, Refusal) else found["meta"]["versionId"]
            if isinstance(found, Refusal) or (vid is not None and vid != version):
                return self.r.outcome(404, "not-found", f"no {kind} with this id", f"{kind}.id")
            return self.r.respond(found, headers={"ETag": f'W/"{version}"'})

        return self.r.trail.answer_sync(attempt, handle)

    def add(self, app: FastAPI) -> None:
        """Register the routes."""

        @app.get("/fhir/r4/metadata", tags=["capabilities"])
        def r4_metadata() -> Response:
            """The CapabilityStatement of the R4 base."""
            return self.metadata("R4")

        @app.get("/fhir/stu3/metadata", tags=["capabilities"])
        def stu3_metadata() -> Response:
            """The CapabilityStatement of the STU3 base."""
            return self.metadata("STU3")

        @app.get("/fhir/r4/Task", tags=["status"])
        async def search_get(request: Request) -> Response:
            """Search Tasks: a searchset Bundle, paged."""
            return await self.search(request, post=False)

        @app.post("/fhir/r4/Task/_search", tags=["status"])
        async def search_post(request: Request) -> Response:
            """Search Tasks with the parameters in a form body."""
            return await self.search(request, post=True)

        @app.get("/fhir/r4/Task/{task_id}/_history/{vid}", tags=["status"])
        def task_version(task_id: str, vid: str, request: Request) -> Response:
            """One version of a Task (the current one)."""
            return self.read_version(task_id, vid, request)

        for kind, name in (("ServiceRequest", "request_id"), ("Observation", "observation_id")):
            _add_reads(app, self, kind, name)


def _add_reads(app: FastAPI, routes: SearchRoutes, kind: str, name: str) -> None:
    def read(request: Request) -> Response:
        return routes.read_other(kind, request.path_params[name], None, request)

    def vread(request: Request) -> Response:
        params = request.path_params
        return routes.read_other(kind, params[name], params["vid"], request)

    read.__doc__ = f"The {kind} the bridge holds."
    vread.__doc__ = f"The {kind} the bridge holds, version 1."
    app.add_api_route(f"/fhir/r4/{kind}/{{{name}}}", read, methods=["GET"], tags=["status"])
    app.add_api_route(
        f"/fhir/r4/{kind}/{{{name}}}/_history/{{vid}}", vread, methods=["GET"], tags=["status"]
    )
