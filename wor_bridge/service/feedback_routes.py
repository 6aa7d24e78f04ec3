"""Routes of the way back: the welfare side updates Tasks and posts feedback.

- ``PUT /fhir/r4/Task/{id}`` and ``PATCH`` (JSON Patch), with ``If-Match: W/"<version>"``;
- ``POST /fhir/r4/Observation`` (one feedback item) and Bundles of Tasks/Observations, which the
  intake route hands over when the caller is a welfare-side client;
- ``POST /feedback/{connector}``: signed JSON from systems without FHIR.

Every refusal is an OperationOutcome; nothing here echoes a value from the body.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import jsonpatch
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from wor_bridge.bootstrap import Components
from wor_bridge.config import ClientSettings
from wor_bridge.connectors import fhir_feedback, webhook
from wor_bridge.core import feedback as fb
from wor_bridge.core import fhir
from wor_bridge.core.outcome import operation_outcome
from wor_bridge.core.task import Refusal
from wor_bridge.errors import Issue
from wor_bridge.metrics import Metrics
from wor_bridge.service.auth import Denied
from wor_bridge.service.bodies import read_body
from wor_bridge.usecases import task_view, way_back
from wor_bridge.usecases.caller import Caller

Authorise = Callable[[Request, str], ClientSettings | Denied]
Respond = Callable[..., Response]


def if_match_version(header: str | None) -> int | None:
    """The version of ``If-Match: W/"<n>"`` (-1 when malformed, None when absent)."""
    if header is None:
        return None
    text = header.strip().removeprefix("W/").strip('"')
    return int(text) if text.isdigit() else -1


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
    ) -> None:
        self.c = components
        self.denied = denied
        self.metrics = metrics
        self.authorise = authorise
        self.respond = respond
        self.outcome = outcome
        config = components.config
        self.hooks = {h.id: h for h in config.webhooks}
        self.hook_mappings = {
            h.id: webhook.load_mapping(
                config.mappings_dir / "feedback" / f"{h.mapping}.json", config.core.codes
            )
            for h in config.webhooks
        }

    def _now(self) -> str:
        return self.c.clock.now().isoformat(timespec="seconds")

    def _result(self, result: way_back.Applied | Refusal, channel: str, task_id: str) -> Response:
        if isinstance(result, Refusal):
            self.metrics.feedback.labels(channel, "refused").inc()
            return self.outcome(result.http_status, result.code, result.message, "Task")
        self.metrics.feedback.labels(channel, "applied" if result.changed else "repeat").inc()
        if result.dropped:
            self.metrics.feedback_withheld.inc(result.dropped)
        task = self.c.store.get_task(task_id)
        record = self.c.store.get_referral(task_id)
        if task is None or record is None:
            return self.outcome(404, "not-found", "no Task with this id", "Task.id")
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
    ) -> way_back.Applied | Refusal:
        """Apply through the use case, as this client's side."""
        return way_back.apply_feedback(
            self.c.store,
            self.c.config.core,
            self.c.clock,
            feedback,
            side="welfare" if client.destination else "gp",
            caller=Caller(client.id, client.source_system, client.on_behalf_of),
            destination=client.destination,
            expected_version=expected_version,
        )

    async def read_json(self, request: Request) -> Any:
        body = await read_body(request, self.c.config.core.max_body_bytes)
        if body is None:
            return None
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            return None

    async def put_task(  # noqa: PLR0911 - one early answer per refusal reason
        self, task_id: str, request: Request, patch: bool
    ) -> Response:
        """PUT or PATCH a Task: the welfare side reports status (or the GP side cancels)."""
        client = self.authorise(request, "task:update")
        if isinstance(client, Denied):
            return self.denied(client)
        version = if_match_version(request.headers.get("if-match"))
        if version is None:
            return self.outcome(428, "required", 'If-Match: W/"<versionId>" is required')
        data = await self.read_json(request)
        if data is None:
            return self.outcome(400, "structure", "must be a JSON body", "(body)")
        if patch:
            task = self.c.store.get_task(task_id)
            record = self.c.store.get_referral(task_id)
            if task is None or record is None:
                return self.outcome(404, "not-found", "no Task with this id", "Task.id")
            caller = Caller(client.id, client.source_system, client.on_behalf_of)
            denied = way_back.access(task, caller, client.destination)
            if denied is not None:  # before the patch: a `test` op must not probe others' Tasks
                return self.outcome(denied.http_status, denied.code, denied.message, "Task")
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
        result = await run_in_threadpool(self.apply, feedback, client, "fhir", version)
        return self._result(result, "fhir", task_id)

    def observations(
        self, client: ClientSettings, resources: list[tuple[str, dict[str, Any]]]
    ) -> tuple[list[Issue], int]:
        """Apply Observations (and Tasks) from a welfare client: one issue per resource, and the
        HTTP status of the first refusal (200 when none)."""
        out: list[Issue] = []
        status = 200
        for where, res in resources:
            issues = fhir.validate(res, where)
            if issues:
                out += issues
                status = 400 if status == 200 else status
                continue
            if res["resourceType"] == "Task" and not _may_update(client):
                out.append(Issue("forbidden", where, "changing a Task needs the task:update scope"))
                status = 403 if status == 200 else status
                continue
            try:
                if res["resourceType"] == "Task":
                    task_id = str(res.get("id") or "")
                    feedback = fhir_feedback.task_feedback(task_id, res, self._now())
                else:
                    request_id, task_id_ref = fhir_feedback.referenced_ids(res)
                    task_id = task_id_ref or self.c.store.task_for_request(request_id or "") or ""
                    item = fhir_feedback.observation_item(res, where)
                    feedback = fb.Feedback(
                        task_id=task_id, occurred_at=item.effective, items=(item,)
                    )
            except fhir_feedback.FeedbackFormatError as err:
                out.append(Issue("invalid", err.location, str(err).split(": ", 1)[-1]))
                status = 422 if status == 200 else status
                continue
            result = self.apply(feedback, client, "fhir")
            if isinstance(result, Refusal):
                self.metrics.feedback.labels("fhir", "refused").inc()
                out.append(Issue(result.code, where, result.message))  # type: ignore[arg-type]
                status = result.http_status if status == 200 else status
            else:
                self.metrics.feedback.labels(
                    "fhir", "applied" if result.changed else "repeat"
                ).inc()
                self.metrics.feedback_withheld.inc(result.dropped)
                note = "recorded" if result.changed else "already recorded"
                out.append(Issue("informational", where, note, severity="information"))
        return out, status

    async def post_observation(self, request: Request) -> Response:
        """One feedback Observation (basedOn the ServiceRequest, or focus the Task)."""
        client = self.authorise(request, "feedback:write")
        if isinstance(client, Denied):
            return self.denied(client)
        data = await self.read_json(request)
        if not isinstance(data, dict) or data.get("resourceType") != "Observation":
            return self.outcome(400, "not-supported", "must be an Observation", "resourceType")
        issues, status = await run_in_threadpool(self.observations, client, [("Observation", data)])
        return self.respond(operation_outcome(issues), status_code=201 if status == 200 else status)

    async def post_bundle(self, client: ClientSettings, data: dict[str, Any]) -> Response:
        """A Bundle of Tasks and Observations from a welfare client (the intake's other half)."""
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
        issues, status = await run_in_threadpool(self.observations, client, entries)
        return self.respond(operation_outcome(issues), status_code=status)

    async def post_webhook(self, connector: str, request: Request) -> Response:
        """Signed JSON from a welfare system without FHIR."""
        hook = self.hooks.get(connector)
        if hook is None:
            return self.outcome(404, "not-found", "no such feedback connector")
        body = await read_body(request, self.c.config.core.max_body_bytes)
        if body is None:
            return self.outcome(413, "too-costly", "body too large", "(body)")
        headers = {k.lower(): v for k, v in request.headers.items()}
        problem = webhook.verify(
            hook.secret.get_secret_value().encode(),
            headers,
            body,
            time.time(),
            hook.replay_window_s,
        )
        if problem is not None:
            self.metrics.feedback.labels("webhook", "bad-signature").inc()
            return self.outcome(401, "security", problem)
        try:
            feedback = webhook.parse(self.hook_mappings[connector], body)
        except fhir_feedback.FeedbackFormatError as err:
            return self.outcome(422, "invalid", str(err).split(": ", 1)[-1], err.location)
        client = ClientSettings(
            id=f"webhook-{hook.id}",
            scopes=("feedback:write",),
            destination=hook.destination,
        )
        result = await run_in_threadpool(self.apply, feedback, client, "webhook")
        return self._result(result, "webhook", feedback.task_id)

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
            """Post one feedback Observation."""
            return await self.post_observation(request)

        @app.post("/feedback/{connector}", tags=["feedback"])
        async def post_feedback(connector: str, request: Request) -> Response:
            """Signed JSON feedback (HMAC-SHA256 over timestamp and body)."""
            return await self.post_webhook(connector, request)
