"""Notified pull on the bridge: the read/update STU3 endpoint (the token endpoint is in
``oauth_routes``).

- ``GET /fhir/stu3/{type}/{id}``: with a token from ``/oauth/token``, exactly the referral's
  pullable resources and its Task, while the Task is open (``pull_context.PULL_ALLOWED``); never
  after it ended (rejected, cancelled, entered-in-error, but also completed or failed: nothing
  more to pull once the work is done).
- ``PUT /fhir/stu3/Task/{id}`` and ``POST /fhir/stu3/Observation``: the receiver's status and
  feedback, converted to R4 and applied as any welfare channel; a pull token works for its own
  Task only, and a welfare client's API key (``task:update`` / ``feedback:write``) works as on R4
  (the ZorgDomein-style platforms PUT the Task this way).

Every pull and every write, served or refused, is an audit record with the client. Refusals are
OperationOutcomes; none echoes a presented value. A resource or Task the caller may not reach is
answered exactly like one that does not exist (404).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from wor_bridge.bootstrap import Components
from wor_bridge.config import ClientSettings
from wor_bridge.connectors import fhir_feedback, notified_pull, ta_notified_pull
from wor_bridge.core import fhir, free_text
from wor_bridge.core.fhir import JsonDict, canonical_json
from wor_bridge.core.outcome import operation_outcome
from wor_bridge.core.stu3 import convert as stu3
from wor_bridge.core.task import Refusal
from wor_bridge.errors import InboundError, Issue
from wor_bridge.records import TaskRecord
from wor_bridge.service.access import Attempt
from wor_bridge.service.auth import Authenticator, Denied, presented_key
from wor_bridge.service.conventions import if_match_version
from wor_bridge.service.feedback_routes import FeedbackRoutes
from wor_bridge.service.oauth_routes import TokenEndpoint
from wor_bridge.service.pull_context import PULL_ALLOWED, PullContext
from wor_bridge.service.tls import client_cert_sha256
from wor_bridge.service.tokens import Grant, TokenProblem
from wor_bridge.usecases.task_view import task_resource

STU3_JSON: Final = "application/fhir+json; fhirVersion=3.0"


class Stu3Response(Response):
    """STU3 FHIR JSON."""

    media_type = STU3_JSON

    def render(self, content: Any) -> bytes:
        """Canonical FHIR JSON bytes."""
        return canonical_json(content)


def outcome(status: int, code: Any, message: str, where: str = "(request)") -> Stu3Response:
    """An STU3 OperationOutcome answer (401 with its ``WWW-Authenticate``)."""
    response = Stu3Response(operation_outcome([Issue(code, where, message)]), status_code=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="wor-bridge"'
    return response


def _not_found(what: str = "Task") -> Stu3Response:
    """The answer for an unknown resource and for one the caller may not reach: the same."""
    return outcome(404, "not-found", f"no {what} with this id for this caller", f"{what}.id")


REVOKED: Final = frozenset({"rejected", "cancelled", "entered-in-error"})
"""Statuses after which a pull token writes nothing more (DOMAIN: access is revoked). After
``completed`` or ``failed`` the receiver may still report (a follow-up); the table decides."""


@dataclass(frozen=True, slots=True)
class WriteAccess:
    """A writer: the client, and the Task its pull token is bound to (None for an API key)."""

    client: ClientSettings
    task_id: str | None


class Stu3Routes:
    """Holds what the routes share; ``add`` registers them."""

    def __init__(
        self, components: Components, auth: Authenticator, feedback: FeedbackRoutes
    ) -> None:
        self.c = components
        self.auth = auth
        self.feedback = feedback
        self.ctx = PullContext(components)
        self.tokens = self.ctx.tokens
        self.trail = feedback.trail

    def _grant(self, request: Request) -> tuple[Grant, ClientSettings] | Response:
        """The grant of a pull token (with the client it was issued to), or the refusal."""
        presented = presented_key(request.headers.get("authorization"), None)
        if not presented:
            self.ctx.audit("referral_pull", "refused", "(unknown)", None, "no bearer token")
            return outcome(401, "login", "a bearer token from /oauth/token is required")
        cert = client_cert_sha256(request.scope)
        grant = self.tokens.verify(presented, cert, self.ctx.now())
        client = self.ctx.clients.get(grant.client_id) if isinstance(grant, Grant) else None
        if isinstance(grant, TokenProblem) or client is None:
            message = grant.message if isinstance(grant, TokenProblem) else "unknown client"
            code = "expired" if isinstance(grant, TokenProblem) and grant.expired else "login"
            subject = grant.client_id if isinstance(grant, TokenProblem) else None
            self.ctx.audit("referral_pull", "refused", subject or "(unknown)", None, message)
            return outcome(401, code, message)
        if not self.ctx.cert_ok(client, cert):
            self.ctx.audit("referral_pull", "refused", client.id, None, "client certificate")
            return outcome(403, "forbidden", "the client certificate is not this client's")
        if "referral:pull" not in client.scopes:  # the configuration changed since
            self.ctx.audit("referral_pull", "refused", client.id, None, "no referral:pull scope")
            return outcome(403, "forbidden", "the client may not pull referrals")
        return grant, client

    def _resource(self, task: TaskRecord, key: str) -> JsonDict | None:
        """One STU3 resource of a Task's referral (or its Task) by ``Type/id``; only that one is
        converted, since a receiver pulls them one by one."""
        bundle = json.loads(task.bundle)
        if key != f"Task/{task.task_id}":
            return notified_pull.pull_one(bundle, key)
        record = self.c.store.get_referral(task.task_id)
        if record is None:
            return None
        known = frozenset(self.c.store.known_items(task.task_id))
        converted = stu3.to_stu3(task_resource(task, record.state, known)).resource
        entries = notified_pull.referral_entries(bundle)
        targets = notified_pull.reference_targets(entries, lambda e: e.key)
        local = {f"{e.resource['resourceType']}/{e.id}": e.key for e in entries}
        served: JsonDict = notified_pull.retarget(converted, {**targets, **local})
        core = self.c.config.core
        destination = next((d for d in core.destinations if d.id == task.destination), None)
        if destination is not None and destination.pull_mode == "ta-np":  # Twiin-03
            base = core.pull.base_url
            served = ta_notified_pull.workflow_task(served, task.task_id, bundle, destination, base)
        return served

    def _owner_of(self, rtype: str, rid: str) -> TaskRecord | None:
        """The Task whose referral a ``Task`` or ``ReferralRequest`` id belongs to, if any."""
        if rtype == "Task":
            return self.c.store.get_task(rid)
        if rtype == "ReferralRequest":
            task_id = self.c.store.task_for_request(rid)
            return self.c.store.get_task(task_id) if task_id else None
        return None

    def pull_access(
        self, request: Request, where: tuple[str, str]
    ) -> tuple[TaskRecord, ClientSettings] | Response:
        """The open Task a pull token is for, with its client; or the refusal (audited)."""
        granted = self._grant(request)
        if isinstance(granted, Response):
            return granted
        grant, client = granted
        task = self.c.store.get_task(grant.task_id)
        if task is None or task.destination != client.destination:
            self.ctx.audit("referral_pull", "refused", client.id, None, "Task gone")
            return outcome(403, "forbidden", "the token's Task is not available")
        if task.status not in PULL_ALLOWED:
            self.ctx.audit(
                "referral_pull", "refused", client.id, task, f"Task {task.status}", object_ref=where
            )
            return outcome(
                403, "forbidden", f"access ended: the Task is {task.status}", "Task.status"
            )
        return task, client

    def read(self, rtype: str, rid: str, request: Request) -> Response:
        """One resource of the referral the token is for."""
        where = (rtype, rid)
        access = self.pull_access(request, where)
        if isinstance(access, Response):
            return access
        task, client = access
        resource = self._resource(task, f"{rtype}/{rid}")
        if resource is None:
            # recorded against the patient whose data was asked for, when the bridge can tell
            owner = self._owner_of(rtype, rid)
            self.ctx.audit(
                "referral_pull",
                "refused",
                client.id,
                owner,
                f"not a resource of Task {task.task_id}",
                object_ref=where,
                responsible=client.destination,
            )
            return _not_found("resource")
        self.ctx.audit("referral_pull", "served", client.id, task, "read", object_ref=where)
        return Stu3Response(resource)

    def _writer(
        self, request: Request, scope: str, task_id: str | None, attempt: Attempt
    ) -> WriteAccess | Response:
        """Who writes, and for a pull token the one Task it may write; or the refusal (audited).

        A welfare client's API key with ``scope`` (never a notified-pull client's secret: those
        clients write through tokens only), or a pull token of a client that has ``scope``, for
        a Task of its destination that the GP side has not withdrawn. ``task_id`` is the Task
        the request names (None when the body has to tell).
        """
        presented = presented_key(
            request.headers.get("authorization"), request.headers.get("x-api-key")
        )
        if (
            presented is None
            or self.auth.client(presented) is not None
            or presented.count(".") != 2
        ):
            client = self.auth.check(presented, scope, client_cert_sha256(request.scope))
            if isinstance(client, Denied):
                attempt.user = client.user
                return outcome(client.status, client.code, client.message)
            attempt.by(client)
            return WriteAccess(client, None)
        granted = self._grant(request)
        if isinstance(granted, Response):
            return granted
        grant, client = granted
        attempt.by(client)
        task = self.c.store.get_task(grant.task_id)
        problem = None
        if scope not in client.scopes:
            problem = f"the client lacks the scope {scope}"
        elif task is None or task.destination != client.destination or not self.ctx.pulled(task):
            problem = "the token's Task is not available"
        elif task.status in REVOKED:
            problem = f"access ended: the Task is {task.status}"
        elif task_id is not None and task_id != grant.task_id:
            problem = "the token is for another Task"
        if problem is not None:
            owner = self.c.store.get_task(task_id) if task_id else task
            self.ctx.audit(
                "referral_write",
                "refused",
                client.id,
                owner,
                problem,
                action="U",
                responsible=client.destination,
            )
            if problem == "the token is for another Task":  # as for a Task that does not exist
                return _not_found()
            return outcome(403, "forbidden", problem)
        return WriteAccess(client, grant.task_id)

    async def _body(self, request: Request, rtype: str) -> bytes:
        """The body within its route's byte limit (raises the 413 ``BodyRefused``)."""
        limits = self.c.config.core.limits
        if rtype == "Task":
            return await self.feedback.read(request, limits.task_bytes, "limits.task_bytes")
        limit = limits.observation_bytes
        return await self.feedback.read(request, limit, "limits.observation_bytes")

    def _converted(self, body: bytes, rtype: str) -> JsonDict | Response:
        """Parse an STU3 body within the limits, validate it and convert it to R4 (CPU work:
        runs in a worker thread)."""
        try:
            data = self.feedback.parse(body)
        except InboundError as err:
            return Stu3Response(operation_outcome(list(err.issues)), status_code=400)
        if not isinstance(data, dict) or data.get("resourceType") != rtype:
            return outcome(400, "not-supported", f"must be an STU3 {rtype}", "resourceType")
        issues = fhir.validate_stu3(data, rtype)
        if issues:
            return Stu3Response(operation_outcome(issues), status_code=400)
        return stu3.to_r4(data).resource

    async def put_task(self, task_id: str, request: Request) -> Response:
        """The receiver's new Task status (If-Match optional here: STU3 platforms omit it)."""
        attempt = Attempt("referral_write", "U", task_id)
        return await self.trail.answer(attempt, lambda: self._put_task(task_id, request, attempt))

    async def _put_task(self, task_id: str, request: Request, attempt: Attempt) -> Response:
        attempt.task = await run_in_threadpool(self.trail.task, task_id)
        writer = await run_in_threadpool(self._writer, request, "task:update", task_id, attempt)
        if isinstance(writer, Response):
            return writer
        if writer.task_id is None and self.trail.visible(writer.client, attempt.task) is None:
            return _not_found()
        body = await self._body(request, "Task")
        version = if_match_version(request.headers.get("if-match"))
        return await run_in_threadpool(self._update, task_id, body, writer.client, version, attempt)

    def _update(  # noqa: PLR0911 - one early answer per refusal reason
        self,
        task_id: str,
        body: bytes,
        client: ClientSettings,
        version: int | None,
        attempt: Attempt,
    ) -> Response:
        """``put_task`` once the body is read (runs in a worker thread)."""
        data = self._converted(body, "Task")
        if isinstance(data, Response):
            return data
        if data.get("id") not in (None, task_id):
            return outcome(400, "invalid", "must carry the id of the URL", "Task.id")
        try:
            feedback = fhir_feedback.task_feedback(
                task_id, data, self.c.clock.now().isoformat(timespec="seconds")
            )
        except fhir_feedback.FeedbackFormatError as err:
            return outcome(422, "invalid", str(err).split(": ", 1)[-1], err.location)
        long = self.feedback.too_long(feedback, free_text.task())
        if long is not None:
            return Stu3Response(operation_outcome([long]), status_code=422)
        result = self.feedback.apply(feedback, client, "stu3", version, attempt.task)
        if isinstance(result, Refusal):
            self.feedback.metrics.feedback.labels("stu3", "refused").inc()
            if result.http_status == 404:
                return _not_found()
            return outcome(result.http_status, result.code, result.message, "Task")
        self.feedback.metrics.feedback.labels(
            "stu3", "applied" if result.changed else "repeat"
        ).inc()
        if not result.changed:
            attempt.outcome = "no-change"
        task = self.c.store.get_task(task_id)
        if task is None:
            return _not_found()
        resource = self._resource(task, f"Task/{task_id}")
        return Stu3Response(resource, headers={"ETag": f'W/"{task.version}"'})

    async def post_observation(self, request: Request) -> Response:
        """One STU3 feedback Observation (``basedOn`` the ReferralRequest)."""
        attempt = Attempt("referral_write", "U")
        return await self.trail.answer(attempt, lambda: self._post_observation(request, attempt))

    async def _post_observation(self, request: Request, attempt: Attempt) -> Response:
        writer = await run_in_threadpool(self._writer, request, "feedback:write", None, attempt)
        if isinstance(writer, Response):
            return writer
        body = await self._body(request, "Observation")
        return await run_in_threadpool(self._observation, writer, body, attempt)

    def _observation(self, writer: WriteAccess, body: bytes, attempt: Attempt) -> Response:
        """``post_observation`` once the body is read (runs in a worker thread)."""
        data = self._converted(body, "Observation")
        if isinstance(data, Response):
            return data
        request_id, task_ref = fhir_feedback.referenced_ids(data)
        task_id = task_ref or self.c.store.task_for_request(request_id or "")
        if writer.task_id is not None and writer.task_id != task_id:
            owner = self.c.store.get_task(task_id) if task_id else None
            self.ctx.audit(
                "referral_write",
                "refused",
                writer.client.id,
                owner,
                "the token is for another referral",
                action="U",
                responsible=writer.client.destination,
            )
            return _not_found("ReferralRequest")  # as for a referral that does not exist
        issues, status = self.feedback.observations(writer.client, [("Observation", data)])
        attempt.recorded = True  # per resource, in ``observations``
        return Stu3Response(operation_outcome(issues), status_code=201 if status == 200 else status)

    def add(self, app: FastAPI) -> None:
        """Register the routes (and the token endpoint)."""
        service = self.c.config.service
        TokenEndpoint(self.ctx, service.rate_per_s, service.burst).add(app)

        @app.put("/fhir/stu3/Task/{task_id}", tags=["notified pull"])
        async def put_task(task_id: str, request: Request) -> Response:
            """The receiver's Task status, as STU3."""
            return await self.put_task(task_id, request)

        @app.post("/fhir/stu3/Observation", status_code=201, tags=["notified pull"])
        async def post_observation(request: Request) -> Response:
            """One STU3 feedback Observation."""
            return await self.post_observation(request)

        @app.get("/fhir/stu3/{rtype}/{rid}", tags=["notified pull"])
        def read(rtype: str, rid: str, request: Request) -> Response:
            """Read one resource of the referral the bearer token is for."""
            attempt = Attempt("referral_pull", "R", rid, rtype)
            return self.trail.answer_sync(attempt, lambda: self.read(rtype, rid, request))
