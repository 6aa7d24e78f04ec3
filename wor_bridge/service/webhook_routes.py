"""``POST /feedback/{connector}``: signed JSON from a welfare system without FHIR.

The signature (``connectors.webhook.verify``) is checked before the body is read as JSON; a
request whose signature fails is recorded without a patient (its body is not trusted), one whose
signature holds with the patient of the Task it names. The mapping file turns the JSON into the
same ``Feedback`` as the FHIR channel, applied as the webhook's organisation. The body is read
within ``limits.webhook_bytes`` (413) and the deadline of every body (408: the sender is not
authenticated until it has arrived); everything after that runs in one worker thread.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from wor_bridge.config import ClientSettings
from wor_bridge.connectors import fhir_feedback, webhook
from wor_bridge.core import free_text
from wor_bridge.core.outcome import operation_outcome
from wor_bridge.errors import InboundError
from wor_bridge.service.access import Attempt

if TYPE_CHECKING:
    from wor_bridge.service.feedback_routes import FeedbackRoutes


class WebhookRoute:
    """The webhook route over what the feedback routes share."""

    def __init__(self, routes: FeedbackRoutes) -> None:
        self.r = routes
        config = routes.c.config
        self.hooks = {h.id: h for h in config.webhooks}
        self.mappings = {
            h.id: webhook.load_mapping(
                config.mappings_dir / "feedback" / f"{h.mapping}.json", config.core.codes
            )
            for h in config.webhooks
        }

    def _referral_of(self, connector: str, data: Any) -> str | None:
        """The Task id a signed JSON body names (the mapping's ``referral`` field), if any."""
        for part in self.mappings[connector].fields.referral.split("."):
            data = data.get(part) if isinstance(data, dict) else None
        return data if isinstance(data, str) else None

    async def post_webhook(self, connector: str, request: Request) -> Response:
        """Signed JSON from a welfare system without FHIR."""
        attempt = Attempt("task_update", "U")
        return await self.r.trail.answer(
            attempt, lambda: self._post_webhook(connector, request, attempt)
        )

    async def _post_webhook(self, connector: str, request: Request, attempt: Attempt) -> Response:
        hook = self.hooks.get(connector)
        if hook is None:
            return self.r.outcome(404, "not-found", "no such feedback connector")
        attempt.user = f"unverified:webhook-{hook.id}"
        limit = self.r.c.config.core.limits.webhook_bytes
        body = await self.r.read(request, limit, "limits.webhook_bytes")
        headers = {k.lower(): v for k, v in request.headers.items()}
        return await run_in_threadpool(self._apply, connector, headers, body, attempt)

    def _apply(
        self, connector: str, headers: dict[str, str], body: bytes, attempt: Attempt
    ) -> Response:
        """``post_webhook`` once the body is read (runs in a worker thread)."""
        hook = self.hooks[connector]
        problem = webhook.verify(
            hook.secret.get_secret_value().encode(),
            headers,
            body,
            time.time(),
            hook.replay_window_s,
        )
        if problem is not None:  # the body is not read before the signature holds
            self.r.metrics.feedback.labels("webhook", "bad-signature").inc()
            return self.r.outcome(401, "security", problem)
        client = ClientSettings(
            id=f"webhook-{hook.id}",
            scopes=("feedback:write",),
            destination=hook.destination,
        )
        attempt.by(client)
        try:
            data = self.r.parse(body)
        except InboundError as err:
            return self.r.refused(err)
        try:
            feedback = webhook.from_json(self.mappings[connector], data)
        except fhir_feedback.FeedbackFormatError as err:
            attempt.task = self.r.trail.task(self._referral_of(connector, data))
            return self.r.outcome(422, "invalid", str(err).split(": ", 1)[-1], err.location)
        attempt.task = self.r.trail.task(feedback.task_id)
        fields = self.mappings[connector].fields
        places = free_text.Places(str(fields.reason), str(fields.coach), str(fields.note))
        long = self.r.too_long(feedback, places)
        if long is not None:
            return self.r.respond(operation_outcome([long]), status_code=422)
        result = self.r.apply(feedback, client, "webhook", None, attempt.task)
        return self.r.result(result, "webhook", feedback.task_id, attempt)

    def add(self, app: FastAPI) -> None:
        """Register the route."""

        @app.post("/feedback/{connector}", tags=["feedback"])
        async def post_feedback(connector: str, request: Request) -> Response:
            """Signed JSON feedback (HMAC-SHA256 over timestamp and body)."""
            return await self.post_webhook(connector, request)
