"""Routes of the way back: the welfare side updates Tasks and posts feedback.

- ``PUT /fhir/r4/Task/{id}`` and ``PATCH`` (JSON Patch), with ``If-Match: W/"<version>"``;
- ``POST /fhir/r4/Observation`` (one item) and Bundles of Tasks/Observations (from the intake);
- ``POST /feedback/{connector}``: signed JSON from systems without FHIR (``webhook_routes``).

Every refusal is an OperationOutcome; nothing here echoes a value from the body. Every request
is audited (``access``): a Task the client may not see is answered as unknown (404), free text
over its limit (``core.free_text``) with 422 and its location. Each route reads its body with its
own byte limit (``[limits]``, 413) and does everything else with it (parse within the structural
limits, validate, apply) in one worker thread, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonpatch
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from wor_bridge.bootstrap import Components
from wor_bridge.config import ClientSettings
from wor_bridge.connectors import fhir_feedback
from wor_bridge.core import feedback as fb
from wor_bridge.core import fhir, free_text, jsonscan
from wor_bridge.core.outcome import operation_outcome
from wor_bridge.core.task import Refusal
from wor_bridge.errors import InboundError, Issue
from wor_bridge.metrics import Metrics
from wor_bridge.records import TaskRecord
from wor_bridge.service import create_answer
from wor_bridge.service.access import AccessLog, Attempt, caller_of
from wor_bridge.service.auth import Denied
from wor_bridge.service.bodies import read_body, too_large
from wor_bridge.service.conventions import if_match_version
from wor_bridge.service.webhook_routes import WebhookRoute
from wor_bridge.usecases import task_search, task_view, way_back

Authorise = Callable[[Request, str], ClientSettings | Denied]
Respond = Callable[..., Response]


def _may_update(client: ClientSettings) -> bool:
    return "task:update" in client.scopes or "admin" in client.scopes


class FeedbackRoutes:
    """Holds what the routes share; ``add`` registers them on the app."""

    def __init__(
        self,
        components: Components,
        metrics: Metrics,
        authorise: Authorise,
        respond: Respond,
        outcome: Callable[..., Response],
        *,
        denied: Callable[[Denied], Response],
        trail: AccessLog,
    ) -> None:
        self.c = components
        self.denied = denied
        self.trail = trail
        self.metrics = metrics
        self.authorise = authorise
        self.respond = respond
        self.outcome = outcome

    def _now(self) -> str:
        return self.c.clock.now().isoformat(timespec="seconds")

    def not_found(self) -> Response:
        """The answer for an unknown Task and for one the caller may not see: the same."""
        return self.outcome(404, "not-found", "no Task with this id", "Task.id")

    def too_long(self, feedback: fb.Feedback, where: free_text.Places) -> Issue | None:
        """Free text over its configured limit (422 with the location), or None."""
        return free_text.too_long(feedback, self.c.config.core.feedback, where)

    def authorised(
        self, request: Request, scope: str, attempt: Attempt
    ) -> ClientSettings | Response:
        """The client allowed ``scope`` (noted on ``attempt``), or the refusal."""
        client = self.authorise(request, scope)
        if isinstance(client, Denied):
            attempt.user = client.user
            return self.denied(client)
        attempt.by(client)
        return client

    def read_task(self, task_id: str, request: Request, attempt: Attempt) -> Response:
        """``GET /fhir/r4/Task/{id}``: the Task, for a client that may see it (audited)."""
        attempt.task = self.trail.task(task_id)
        client = self.authorised(request, "task:read", attempt)
        if isinstance(client, Response):
            return client
        if self.trail.visible(client, attempt.task) is None:
            return self.not_found()
        task = task_view.read_task(
            self.c.store,
            self.c.clock,
            task_id,
            caller_of(client, attempt.task),
            client.destination,
        )
        if isinstance(task, Refusal):
            return self.not_found()
        return self.respond(task, headers={"ETag": f'W/"{task["meta"]["versionId"]}"'})

    def result(
        self,
        result: way_back.Applied | Refusal,
        channel: str,
        task_id: str,
        attempt: Attempt,
    ) -> Response:
        if isinstance(result, Refusal):
            self.metrics.feedback.labels(channel, "refused").inc()
            if result.http_status == 404:
                return self.not_found()
            return self.outcome(result.http_status, result.code, result.message, "Task")
        self.metrics.feedback.labels(channel, "applied" if result.changed else "repeat").inc()
        if not result.changed:
            attempt.outcome = "no-change"
        if result.dropped:
            self.metrics.feedback_withheld.inc(result.dropped)
        task = self.c.store.get_task(task_id)
        record = self.c.store.get_referral(task_id)
        if task is None or record is None:
            return self.not_found()
        body = task_view.task_resource(
            task, record.state, frozenset(self.c.store.known_items(task_id))
        )
        return self.respond(body, headers={"ETag": f'W/"{task.version}"'})

    def apply(
        self,
        feedback: fb.Feedback,
        client: ClientSettings,
        channel: str,
        expected_version: int | None = None,
        task: TaskRecord | None = None,
    ) -> way_back.Applied | Refusal:
        """Apply through the use case, as this client's side (acting on ``task``)."""
        return way_back.apply_feedback(
            self.c.store,
            self.c.config.core,
            self.c.clock,
            feedback,
            side="welfare" if client.destination else "gp",
            caller=caller_of(client, task),
            destination=client.destination,
            expected_version=expected_version,
        )

    async def read(self, request: Request, limit: int, setting: str) -> bytes:
        """The body within the route's byte limit (raises the 413 ``BodyRefused``)."""
        body = await read_body(request, limit)
        if body is None:
            raise too_large(limit, setting)
        return body

    def parse(self, body: bytes) -> Any:
        """The JSON of a body within the structural limits (raises InboundError; CPU work:
        call it in a worker thread)."""
        return jsonscan.load(body, self.c.config.core.limits)

    def refused(self, err: InboundError) -> Response:
        """The 400 answer of a body the JSON pass refused."""
        return self.respond(operation_outcome(list(err.issues)), status_code=400)

    async def put_task(self, task_id: str, request: Request, patch: bool) -> Response:
        """PUT or PATCH a Task: the welfare side reports status (or the GP side cancels)."""
        attempt = Attempt("task_update", "U", task_id)
        return await self.trail.answer(
            attempt, lambda: self._put_task(task_id, request, patch, attempt)
        )

    async def _put_task(
        self, task_id: str, request: Request, patch: bool, attempt: Attempt
    ) -> Response:
        attempt.task = await run_in_threadpool(self.trail.task, task_id)
        client = self.authorised(request, "task:update", attempt)
        if isinstance(client, Response):
            return client
        task = self.trail.visible(client, attempt.task)
        if task is None:  # before anything else: no answer may tell unknown from hidden
            return self.not_found()
        version = if_match_version(request.headers.get("if-match"))
        if version is None:
            return self.outcome(428, "required", 'If-Match: W/"<versionId>" is required')
        body = await self.read(request, self.c.config.core.limits.task_bytes, "limits.task_bytes")
        return await run_in_threadpool(
            self._update_task,
            task,
            body,
            patch=patch,
            client=client,
            version=version,
            attempt=attempt,
        )

    def _update_task(  # noqa: PLR0911 - one early answer per refusal reason
        self,
        task: TaskRecord,
        body: bytes,
        *,
        patch: bool,
        client: ClientSettings,
        version: int,
        attempt: Attempt,
    ) -> Response:
        """``put_task`` once the body is read (runs in a worker thread)."""
        task_id = task.task_id
        try:
            data = self.parse(body)
        except InboundError as err:
            return self.refused(err)
        if patch:
            record = self.c.store.get_referral(task_id)
            if record is None:
                return self.not_found()
            try:
                data = jsonpatch.apply_patch(
                    task_view.task_resource(
                        task, record.state, frozenset(self.c.store.known_items(task_id))
                    ),
                    data,
                )
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError):
                return self.outcome(422, "invalid", "must be a JSON Patch that applies", "(body)")
        if not isinstance(data, dict) or data.get("resourceType") != "Task":
            return self.outcome(400, "not-supported", "must be a Task", "resourceType")
        if data.get("id") not in (None, task_id):
            return self.outcome(400, "invalid", "must carry the id of the URL", "Task.id")
        issues = fhir.validate(data, "Task")
        if issues:
            return self.respond(operation_outcome(issues), status_code=400)
        try:
            feedback = fhir_feedback.task_feedback(task_id, data, self._now())
        except fhir_feedback.FeedbackFormatError as err:
            return self.outcome(422, "invalid", str(err).split(": ", 1)[-1], err.location)
        long = self.too_long(feedback, free_text.task())
        if long is not None:
            return self.respond(operation_outcome([long]), status_code=422)
        result = self.apply(feedback, client, "fhir", version, task)
        return self.result(result, "fhir", task_id, attempt)

    def _task_of(self, resource: dict[str, Any]) -> TaskRecord | None:
        """The known Task a Task or Observation resource is about (for the audit record)."""
        try:
            if resource.get("resourceType") == "Task":
                task_id = resource.get("id")
            else:
                request_id, task_ref = fhir_feedback.referenced_ids(resource)
                task_id = task_ref or self.c.store.task_for_request(request_id or "")
        except (AttributeError, TypeError):
            return None
        return self.trail.task(task_id) if isinstance(task_id, str) else None

    def observations(
        self, client: ClientSettings, resources: list[tuple[str, dict[str, Any]]]
    ) -> tuple[list[Issue], int]:
        """Apply Observations (and Tasks) from a welfare client: one issue per resource, and the
        HTTP status of the first refusal (200 when none). Each resource is audited."""
        out: list[Issue] = []
        status = 200
        for where, res in resources:
            entry = Attempt("task_update", "U", user=client.id, client=client)
            entry.task = self._task_of(res)
            with self.trail.current(entry):
                issues, answer = self._entry(client, where, res, entry)
            if not entry.recorded:
                self.trail.record(entry, answer)
            out += issues
            status = answer if status == 200 else status
        return out, status

    def _entry(  # noqa: PLR0911 - one answer per refusal reason
        self, client: ClientSettings, where: str, res: dict[str, Any], entry: Attempt
    ) -> tuple[list[Issue], int]:
        """One Task or Observation of a welfare client: its issues and HTTP status."""
        issues = fhir.validate(res, where)
        if issues:
            return issues, 400
        if res["resourceType"] == "Task" and not _may_update(client):
            return [Issue("forbidden", where, "changing a Task needs the task:update scope")], 403
        try:
            if res["resourceType"] == "Task":
                task_id = str(res.get("id") or "")
                feedback = fhir_feedback.task_feedback(task_id, res, self._now())
                places = free_text.task(where)
            else:
                request_id, task_id_ref = fhir_feedback.referenced_ids(res)
                task_id = task_id_ref or self.c.store.task_for_request(request_id or "") or ""
                item = fhir_feedback.observation_item(res, where)
                feedback = fb.Feedback(task_id=task_id, occurred_at=item.effective, items=(item,))
                places = free_text.observation(where)
        except fhir_feedback.FeedbackFormatError as err:
            return [Issue("invalid", err.location, str(err).split(": ", 1)[-1])], 422
        long = self.too_long(feedback, places)
        if long is not None:
            return [long], 422
        result = self.apply(feedback, client, "fhir", task=entry.task)
        if isinstance(result, Refusal):
            self.metrics.feedback.labels("fhir", "refused").inc()
            if result.http_status == 404:
                return [Issue("not-found", where, "no Task with this id")], 404
            return [Issue(result.code, where, result.message)], result.http_status  # type: ignore[arg-type]
        self.metrics.feedback.labels("fhir", "applied" if result.changed else "repeat").inc()
        self.metrics.feedback_withheld.inc(result.dropped)
        if not result.changed:
            entry.outcome = "no-change"
        note = "recorded" if result.changed else "already recorded"
        return [Issue("informational", where, note, severity="information")], 200

    async def post_observation(self, request: Request) -> Response:
        """One feedback Observation (basedOn the ServiceRequest, or focus the Task)."""
        attempt = Attempt("task_update", "U")
        return await self.trail.answer(attempt, lambda: self._post_observation(request, attempt))

    async def _post_observation(self, request: Request, attempt: Attempt) -> Response:
        client = self.authorised(request, "feedback:write", attempt)
        if isinstance(client, Response):
            return client
        limit = self.c.config.core.limits.observation_bytes
        body = await self.read(request, limit, "limits.observation_bytes")
        return await run_in_threadpool(self._observation, client, body, attempt, request)

    def _observation(
        self, client: ClientSettings, body: bytes, attempt: Attempt, request: Request
    ) -> Response:
        """``post_observation`` once the body is read (runs in a worker thread; ``request``
        only for its headers)."""
        try:
            data = self.parse(body)
        except InboundError as err:
            return self.refused(err)
        if not isinstance(data, dict) or data.get("resourceType") != "Observation":
            return self.outcome(400, "not-supported", "must be an Observation", "resourceType")
        issues, status = self.observations(client, [("Observation", data)])
        attempt.recorded = True  # per resource, in ``observations``
        if status != 200:
            return self.respond(operation_outcome(issues), status_code=status)
        key, held = self._held(data)
        repeat = issues[0].diagnostics == "already recorded"
        return create_answer.observation_answer(
            self.c, self.respond, request, key=key, held=held, issues=issues, repeat=repeat
        )

    def _held(self, data: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
        """The id of an applied Observation's item and the Observation the bridge holds."""
        request_id, task_ref = fhir_feedback.referenced_ids(data)
        task_id = task_ref or self.c.store.task_for_request(request_id or "") or ""
        key = fb.item_key(task_id, fhir_feedback.observation_item(data, "Observation"))
        gp = self.c.config.core.feedback.gp_record
        held = task_search.held_observation(self.c.store, task_id, key, gp)
        return key, held

    def post_bundle(
        self, client: ClientSettings, data: dict[str, Any], attempt: Attempt
    ) -> Response:
        """A Bundle of Tasks and Observations from a welfare client (the intake's other half,
        parsed within the limits by ``welfare_intake``; runs in a worker thread)."""
        entries = [
            (f"Bundle.entry[{i}].resource", e["resource"])
            for i, e in enumerate(data.get("entry") or [])
            if isinstance(e, dict) and isinstance(e.get("resource"), dict)
        ]
        unknown = [w for w, r in entries if r.get("resourceType") not in ("Task", "Observation")]
        if unknown or not entries:
            where = unknown[0] if unknown else "Bundle.entry"
            return self.outcome(400, "not-supported", "must hold Tasks and Observations", where)
        entries.sort(key=lambda e: e[1]["resourceType"] != "Task")  # status first, then items
        issues, status = self.observations(client, entries)
        attempt.recorded = True  # per entry, in ``observations``
        return self.respond(operation_outcome(issues), status_code=status)

    def add(self, app: FastAPI) -> None:
        """Register the routes."""

        @app.put("/fhir/r4/Task/{task_id}", tags=["feedback"])
        async def put_task(task_id: str, request: Request) -> Response:
            """Update a Task (If-Match required): status, businessStatus, statusReason."""
            return await self.put_task(task_id, request, patch=False)

        @app.patch("/fhir/r4/Task/{task_id}", tags=["feedback"])
        async def patch_task(task_id: str, request: Request) -> Response:
            """JSON Patch a Task (If-Match required)."""
            return await self.put_task(task_id, request, patch=True)

        @app.post("/fhir/r4/Observation", status_code=201, tags=["feedback"])
        async def post_observation(request: Request) -> Response:
            """Post one feedback Observation (201 with its Location, 200 for a repeat)."""
            return await self.post_observation(request)

        WebhookRoute(self).add(app)
