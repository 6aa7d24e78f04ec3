"""STU3 intake from the GP side: ``POST /fhir/stu3/ReferralRequest`` and ``POST /fhir/stu3``.

A thin route over ``usecases.stu3_intake``: the same ``referral:write`` scope, tenancy (the
client's ``source_system`` is the business key, as on R4), size limit, audit record
(``referral_intake``), metrics and answers as ``POST /fhir/r4``, but every answer is STU3: an
OperationOutcome with ``fhirVersion=3.0`` (FHIR XML by ``Accept``/``_format`` in the
negotiation layer, which also refuses a ``Content-Type`` declaring another ``fhirVersion`` with
415). 202 names the bridge's Task (``Content-Location: /fhir/r4/Task/{id}``, read with
``task:read``) and lists, as information issues, the STU3 elements the bridge did not read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from wor_bridge.bootstrap import Components
from wor_bridge.core.outcome import information, operation_outcome
from wor_bridge.errors import Issue, RefusedError
from wor_bridge.metrics import Metrics
from wor_bridge.service.access import AccessLog, Attempt, caller_of
from wor_bridge.service.auth import Authenticator, Denied, presented_key
from wor_bridge.service.bodies import BodyRefused, read_body, too_large
from wor_bridge.service.refusals import denied_answer, refusal_status
from wor_bridge.service.stu3_routes import Stu3Response
from wor_bridge.service.tls import client_cert_sha256
from wor_bridge.usecases.stu3_intake import Stu3Accepted, accept_stu3_referral

NOT_READ = "not read: FHIR R4 has no element for it, so no gate used it and it is not forwarded"


def _outcome(status: int, code: Any, message: str, where: str = "(request)") -> Stu3Response:
    return Stu3Response(operation_outcome([Issue(code, where, message)]), status_code=status)


def _denied(denied: Denied) -> Response:
    return denied_answer(denied, Stu3Response)


def accepted_outcome(result: Stu3Accepted) -> dict[str, Any]:
    """The 202 body: what happened, then one information issue per STU3 element not read."""
    message = (
        "referral accepted and stored; delivery is queued"
        if result.accepted.created
        else "referral already received; no second delivery"
    )
    body = information(message)
    body["issue"] += operation_outcome(
        Issue("informational", path, NOT_READ, "information") for path in result.lost
    )["issue"]
    return body


class Stu3Intake:
    """The two STU3 intake routes; ``add`` registers them."""

    def __init__(
        self,
        components: Components,
        metrics: Metrics,
        auth: Authenticator,
        trail: AccessLog,
        wake: Callable[[], None] | None,
    ) -> None:
        self.c = components
        self.metrics = metrics
        self.auth = auth
        self.trail = trail
        self.wake = wake
        """wakes the dispatcher after a new referral (None: no dispatcher in this process)"""

    async def handle(self, request: Request) -> Response:
        """A GP system's STU3 referral (audited whatever the answer)."""
        attempt = Attempt("referral_intake", "C")
        return await self.trail.answer(attempt, lambda: self._handle(request, attempt))

    async def _handle(self, request: Request, attempt: Attempt) -> Response:
        key = presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
        client = self.auth.check(key, "referral:write", client_cert_sha256(request.scope))
        if isinstance(client, Denied):
            attempt.user = client.user
            return _denied(client)
        attempt.by(client)
        limit = self.c.config.core.max_body_bytes
        try:
            body = await read_body(request, limit)
        except BodyRefused as err:  # not UTF-8, late (408) or no slot (429/503)
            refused = _outcome(err.status, err.code, err.message, err.location)
            refused.headers.update(err.headers)
            return refused
        if body is None:
            self.metrics.intake.labels("too_large").inc()
            over = too_large(limit, "max_body_bytes")
            return _outcome(over.status, over.code, over.message, over.location)
        started = time.perf_counter()
        try:
            result = await run_in_threadpool(
                lambda: accept_stu3_referral(
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
            return Stu3Response(operation_outcome(err.issues), status_code=refusal_status(err))
        self.metrics.intake_seconds.observe(time.perf_counter() - started)
        created = result.accepted.created
        self.metrics.intake.labels("accepted" if created else "duplicate").inc()
        if created and self.wake is not None:
            self.wake()
        task_id = result.accepted.task_id
        task = await run_in_threadpool(lambda: self.c.store.get_task(task_id))
        version = task.version if task is not None else 1
        base = f"{self.c.config.core.pull.base_url.rstrip('/')}/fhir/r4"
        return Stu3Response(
            accepted_outcome(result),
            status_code=201 if created else 200,
            headers={
                "Location": f"{base}/Task/{task_id}/_history/{version}",
                "ETag": f'W/"{version}"',
            },
        )

    def add(self, app: FastAPI) -> None:
        """Register ``POST /fhir/stu3/ReferralRequest`` and ``POST /fhir/stu3``."""

        @app.post("/fhir/stu3/ReferralRequest", status_code=201, tags=["intake"])
        async def post_referral_request(request: Request) -> Response:
            """Push a referral as STU3: a ReferralRequest with its resources contained."""
            return await self.handle(request)

        @app.post("/fhir/stu3", status_code=201, tags=["intake"])
        async def post_stu3_bundle(request: Request) -> Response:
            """Push a referral as an STU3 Bundle (transaction, batch or collection)."""
            return await self.handle(request)
