"""Notified pull on the bridge: the token endpoint and the read/update STU3 endpoint.

- ``POST /oauth/token``: client credentials (secret or private-key JWT) plus ``resource`` (RFC
  8707), the Task the token is for: ``urn:uuid:<task id>`` (the notification Task's identifier) or
  ``{base_url}/fhir/stu3/Task/<task id>``. Only a ``referral:pull`` client of the Task's
  destination gets one, only while the Task allows access. Refusals follow RFC 6749 section 5.2
  (``error``, ``error_description``): that is what OAuth client libraries read.
- ``GET /fhir/stu3/{type}/{id}``: with that token, exactly the referral's pullable resources and
  its Task, while the Task is ``requested``, ``received``, ``accepted``, ``ready``, ``in-progress``
  or ``on-hold``; never after it ended (rejected, cancelled, entered-in-error, but also completed or
  failed: nothing more to pull once the work is done).
- ``PUT /fhir/stu3/Task/{id}`` and ``POST /fhir/stu3/Observation``: the receiver's status and
  feedback, converted to R4 and applied as any welfare channel; a pull token works for its own
  Task only, and a welfare client's API key (``task:update`` / ``feedback:write``) works as on R4.

Every token request and every pull, served or refused, is an audit record with the client.
Refusals on ``/fhir/stu3`` are OperationOutcomes; none echoes a presented value.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import urllib.parse
import uuid
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from wor_bridge.bootstrap import Components
from wor_bridge.config import ClientSettings
from wor_bridge.connectors import fhir_feedback, notified_pull
from wor_bridge.core import fhir, stu3
from wor_bridge.core.fhir import JsonDict, canonical_json
from wor_bridge.core.outcome import operation_outcome
from wor_bridge.core.task import Refusal
from wor_bridge.errors import Issue
from wor_bridge.ports import AuditEvent, TaskRecord
from wor_bridge.reporting import task_resource
from wor_bridge.service.auth import Authenticator, Denied, presented_key
from wor_bridge.service.feedback_routes import FeedbackRoutes
from wor_bridge.service.tls import client_cert_sha256
from wor_bridge.service.tokens import (
    JWT_BEARER,
    Grant,
    TokenProblem,
    TokenService,
    load_public_keys,
)

STU3_JSON: Final = "application/fhir+json; fhirVersion=3.0"
PULL_ALLOWED: Final = frozenset(
    {"requested", "received", "accepted", "ready", "in-progress", "on-hold"}
)
_FORM_LIMIT: Final = 16_384


class Stu3Response(Response):
    """STU3 FHIR JSON."""

    media_type = STU3_JSON

    def render(self, content: Any) -> bytes:
        """Canonical FHIR JSON bytes."""
        return canonical_json(content)


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="wor-bridge"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def _outcome(status: int, code: Any, message: str, where: str = "(request)") -> Stu3Response:
    response = Stu3Response(operation_outcome([Issue(code, where, message)]), status_code=status)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="wor-bridge"'
    return response


def _form(body: bytes) -> dict[str, str] | None:
    """A form body with each parameter once (RFC 6749: parameters must not repeat)."""
    try:
        pairs = urllib.parse.parse_qsl(body.decode("ascii"), strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError):
        return None
    form: dict[str, str] = {}
    for key, value in pairs:
        if key in form:
            return None
        form[key] = value
    return form


def _basic(header: str | None) -> tuple[str, str] | None:
    if not header or header[:6].lower() != "basic ":
        return None
    try:
        user, _, secret = (
            base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
        )
    except (ValueError, UnicodeDecodeError):
        return None
    return urllib.parse.unquote_plus(user), urllib.parse.unquote_plus(secret)


class Stu3Routes:
    """Holds what the routes share; ``add`` registers them."""

    def __init__(
        self, components: Components, auth: Authenticator, feedback: FeedbackRoutes
    ) -> None:
        self.c = components
        self.auth = auth
        self.feedback = feedback
        config = components.config
        pull = config.core.pull
        key = pull.token_key.get_secret_value().encode() if pull.token_key else None
        self.tokens = TokenService(key, pull.base_url, pull.token_ttl_s)
        self.clients = {c.id: c for c in config.clients}
        self.public_keys = load_public_keys(config.clients, config.path.parent)

    def _now(self) -> float:
        return self.c.clock.now().timestamp()

    def _audit(
        self,
        event: str,
        outcome: str,
        user: str,
        task: TaskRecord | None,
        detail: str,
        *,
        action: str = "R",
        object_ref: tuple[str, str] | None = None,
    ) -> None:
        kind, oid = object_ref or ("Task", task.task_id if task else "")
        self.c.store.audit(
            AuditEvent(
                event=event,
                action=action,
                outcome=outcome,
                user=user,
                responsible=task.destination if task else "",
                source_system=task.source_system if task else "",
                patient_id=task.patient_id if task else "",
                object_type=kind,
                object_id=oid,
                detail=detail,
            ),
            self.c.clock.now(),
        )

    # --- POST /oauth/token --------------------------------------------------------------------

    def _client(self, request: Request, form: dict[str, str]) -> ClientSettings | str:
        """The authenticated client, or why not (never which part of the credentials failed)."""
        if "client_assertion" in form or "client_assertion_type" in form:
            if form.get("client_assertion_type") != JWT_BEARER:
                return "client_assertion_type must be jwt-bearer"
            assertion = form.get("client_assertion", "")
            client = self.clients.get(self.tokens.assertion_issuer(assertion) or "")
            pem = self.public_keys.get(client.id) if client else None
            if client is None or pem is None:
                return "unknown client or no key configured for it"
            problem = self.tokens.verify_assertion(assertion, client.id, pem, self._now())
            return problem.message if problem else client
        basic = _basic(request.headers.get("authorization"))
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        client = self.clients.get(client_id)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if client is None or not client.key_sha256 or not secret:
            return "unknown client or wrong secret"
        if not hmac.compare_digest(client.key_sha256, digest):
            return "unknown client or wrong secret"
        return client

    def _task_of(self, resource: str) -> str | None:
        text = resource.strip()
        prefix = f"{self.tokens.audience}/Task/"
        if text.startswith("urn:uuid:"):
            text = text[9:]
        elif text.startswith(prefix):
            text = text[len(prefix) :]
        else:
            return None
        try:
            return str(uuid.UUID(text))
        except ValueError:
            return None

    async def token(self, request: Request) -> Response:  # noqa: PLR0911 - one answer per refusal
        """Client credentials for one Task; refusals per RFC 6749 and audited."""
        body = await request.body()
        form = _form(body) if len(body) <= _FORM_LIMIT else None
        if form is None:
            self._audit("pull_token", "refused", "(unknown)", None, "malformed request")
            return _oauth_error(400, "invalid_request", "must be a form, each parameter once")
        if form.get("grant_type") != "client_credentials":
            self._audit("pull_token", "refused", "(unknown)", None, "grant type")
            return _oauth_error(400, "unsupported_grant_type", "grant_type client_credentials")
        client = self._client(request, form)
        if isinstance(client, str):
            self._audit("pull_token", "refused", "(unknown)", None, client)
            return _oauth_error(401, "invalid_client", client)
        cert = client_cert_sha256(request.scope)
        if client.cert_sha256 and (
            cert is None or not hmac.compare_digest(cert, client.cert_sha256)
        ):
            self._audit("pull_token", "refused", client.id, None, "client certificate")
            return _oauth_error(
                401, "invalid_client", "the client certificate is not this client's"
            )
        if "referral:pull" not in client.scopes or client.destination is None:
            self._audit("pull_token", "refused", client.id, None, "no referral:pull scope")
            return _oauth_error(400, "unauthorized_client", "the client may not pull referrals")
        task_id = self._task_of(form.get("resource", ""))
        task = self.c.store.get_task(task_id) if task_id else None
        if task is None or task.destination != client.destination or not self._pulled(task):
            self._audit("pull_token", "refused", client.id, None, "no such Task for this client")
            return _oauth_error(
                400, "invalid_target", "resource must name a Task notified to this client"
            )
        if task.status not in PULL_ALLOWED:
            self._audit("pull_token", "refused", client.id, task, f"Task {task.status}")
            return _oauth_error(400, "invalid_grant", f"access ended: the Task is {task.status}")
        token = self.tokens.issue(client.id, task.task_id, cert, self._now())
        self._audit("pull_token", "issued", client.id, task, "token issued", action="E")
        return JSONResponse(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.tokens.ttl_s,
                "scope": f"task/{task.task_id}",
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def _pulled(self, task: TaskRecord) -> bool:
        destination = next(
            (d for d in self.c.config.core.destinations if d.id == task.destination), None
        )
        return destination is not None and destination.type == "notified-pull-stu3"

    # --- the STU3 endpoint --------------------------------------------------------------------

    def _grant(self, request: Request) -> tuple[Grant, ClientSettings] | Response:
        """The grant of a pull token (with the client it was issued to), or the refusal."""
        presented = presented_key(request.headers.get("authorization"), None)
        if not presented:
            return _outcome(401, "login", "a bearer token from /oauth/token is required")
        cert = client_cert_sha256(request.scope)
        grant = self.tokens.verify(presented, cert, self._now())
        client = self.clients.get(grant.client_id) if isinstance(grant, Grant) else None
        if isinstance(grant, TokenProblem) or client is None:
            message = grant.message if isinstance(grant, TokenProblem) else "unknown client"
            code = "expired" if isinstance(grant, TokenProblem) and grant.expired else "login"
            self._audit("referral_pull", "refused", "(unknown)", None, message)
            return _outcome(401, code, message)
        if client.cert_sha256 and (
            cert is None or not hmac.compare_digest(cert, client.cert_sha256)
        ):
            self._audit("referral_pull", "refused", client.id, None, "client certificate")
            return _outcome(403, "forbidden", "the client certificate is not this client's")
        return grant, client

    def _served(self, task: TaskRecord) -> dict[str, JsonDict]:
        """The STU3 resources of a Task's referral, and its Task, by ``Type/id``."""
        bundle = json.loads(task.bundle)
        resources = notified_pull.pullable(bundle)
        record = self.c.store.get_referral(task.task_id)
        if record is not None:
            r4_task = task_resource(
                task, record.state, frozenset(self.c.store.known_items(task.task_id))
            )
            entries = notified_pull.referral_entries(bundle)
            targets = notified_pull.reference_targets(entries, lambda e: e.key)
            local = {f"{e.resource['resourceType']}/{e.id}": e.key for e in entries}
            converted = stu3.to_stu3(r4_task).resource
            resources[f"Task/{task.task_id}"] = notified_pull.retarget(
                converted, {**targets, **local}
            )
        return resources

    def read(self, rtype: str, rid: str, request: Request) -> Response:
        """One resource of the referral the token is for."""
        granted = self._grant(request)
        if isinstance(granted, Response):
            return granted
        grant, client = granted
        task = self.c.store.get_task(grant.task_id)
        if task is None or task.destination != client.destination:
            self._audit("referral_pull", "refused", client.id, None, "Task gone")
            return _outcome(403, "forbidden", "the token's Task is not available")
        where = (rtype, rid)
        if task.status not in PULL_ALLOWED:
            self._audit(
                "referral_pull", "refused", client.id, task, f"Task {task.status}", object_ref=where
            )
            return _outcome(
                403, "forbidden", f"access ended: the Task is {task.status}", "Task.status"
            )
        resource = self._served(task).get(f"{rtype}/{rid}")
        if resource is None:
            self._audit(
                "referral_pull", "refused", client.id, task, "not this Task's", object_ref=where
            )
            return _outcome(403, "forbidden", "not a resource of the Task this token is for")
        self._audit("referral_pull", "served", client.id, task, "read", object_ref=where)
        return Stu3Response(resource)

    def _writer(self, request: Request, scope: str) -> tuple[ClientSettings, str | None] | Response:
        """The writing client and, for a pull token, the one Task it may write; or the refusal.

        A pull token (a JWT) or a welfare client's API key with ``scope``.
        """
        presented = presented_key(
            request.headers.get("authorization"), request.headers.get("x-api-key")
        )
        if presented and presented.count(".") == 2:
            granted = self._grant(request)
            if isinstance(granted, Response):
                return granted
            return granted[1], granted[0].task_id
        client = self.auth.check(presented, scope)
        if isinstance(client, Denied):
            return _outcome(client.status, client.code, client.message)
        return client, None

    async def _stu3_body(self, request: Request, rtype: str) -> JsonDict | Response:
        data = await self.feedback.read_json(request)
        if not isinstance(data, dict) or data.get("resourceType") != rtype:
            return _outcome(400, "not-supported", f"must be an STU3 {rtype}", "resourceType")
        issues = fhir.validate_stu3(data, rtype)
        if issues:
            return Stu3Response(operation_outcome(issues), status_code=400)
        return stu3.to_r4(data).resource

    async def put_task(  # noqa: PLR0911 - one early answer per refusal reason
        self, task_id: str, request: Request
    ) -> Response:
        """The receiver's new Task status (If-Match optional here: STU3 platforms omit it)."""
        writer = self._writer(request, "task:update")
        if isinstance(writer, Response):
            return writer
        client, bound = writer
        if bound is not None and bound != task_id:
            return _outcome(403, "forbidden", "the token is for another Task", "Task.id")
        data = await self._stu3_body(request, "Task")
        if isinstance(data, Response):
            return data
        if data.get("id") not in (None, task_id):
            return _outcome(400, "invalid", "must carry the id of the URL", "Task.id")
        header = request.headers.get("if-match")
        version = None
        if header is not None:
            text = header.strip().removeprefix("W/").strip('"')
            version = int(text) if text.isdigit() else -1
        try:
            feedback = fhir_feedback.task_feedback(
                task_id, data, self.c.clock.now().isoformat(timespec="seconds")
            )
        except fhir_feedback.FeedbackFormatError as err:
            return _outcome(422, "invalid", str(err).split(": ", 1)[-1], err.location)
        result = await run_in_threadpool(self.feedback.apply, feedback, client, "stu3", version)
        if isinstance(result, Refusal):
            self.feedback.metrics.feedback.labels("stu3", "refused").inc()
            return _outcome(result.http_status, result.code, result.message, "Task")
        self.feedback.metrics.feedback.labels(
            "stu3", "applied" if result.changed else "repeat"
        ).inc()
        task = self.c.store.get_task(task_id)
        if task is None:
            return _outcome(404, "not-found", "no Task with this id", "Task.id")
        body = self._served(task).get(f"Task/{task_id}")
        return Stu3Response(body, headers={"ETag": f'W/"{task.version}"'})

    async def post_observation(self, request: Request) -> Response:
        """One STU3 feedback Observation (``basedOn`` the ReferralRequest)."""
        writer = self._writer(request, "feedback:write")
        if isinstance(writer, Response):
            return writer
        client, bound = writer
        data = await self._stu3_body(request, "Observation")
        if isinstance(data, Response):
            return data
        request_id, task_ref = fhir_feedback.referenced_ids(data)
        task_id = task_ref or self.c.store.task_for_request(request_id or "")
        if bound is not None and bound != task_id:
            where = "Observation.basedOn"
            return _outcome(403, "forbidden", "the token is for another referral", where)
        issues, status = await run_in_threadpool(
            self.feedback.observations, client, [("Observation", data)]
        )
        return Stu3Response(operation_outcome(issues), status_code=201 if status == 200 else status)

    def add(self, app: FastAPI) -> None:
        """Register the routes."""

        @app.post("/oauth/token", tags=["notified pull"])
        async def token(request: Request) -> Response:
            """OAuth2 client credentials for one Task (``resource``); secret or private-key JWT."""
            return await self.token(request)

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
            return self.read(rtype, rid, request)
