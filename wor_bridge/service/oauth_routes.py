"""``POST /oauth/token``: OAuth2 client credentials for one Task (notified pull).

The receiver authenticates with its secret (HTTP Basic or form) or a private-key JWT, names the
Task in ``resource`` (RFC 8707): ``urn:uuid:<task id>`` (the notification Task's identifier) or
``{base_url}/fhir/stu3/Task/<task id>``. Only a ``referral:pull`` client of the Task's destination
gets a token, only while the Task is open, and with the client certificate it is bound to when the
client has one configured. A receiver in Twiin TA mode (``pull_mode = "ta-np"``) names the Task by
playing back the notification's **authorization base** (TA §3.3; VIPLive "3. Notify afleveren":
"in the ``authorization_base`` field" of its token request), as the form parameter
``authorization_base`` (whether the TA puts it in the form or in an assertion could not be read:
docs/standards/ta-notified-pull.md §4.3), or as the ``authorization_base`` claim of an
authorization assertion sent with ``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``
(RFC 7523 §2.1, ``assertion``: signed with the client's key, ``iss`` the client, ``aud`` this
endpoint, fresh, ``jti`` once); for its Tasks the authorization base is required.
Refusals follow RFC 6749 section 5.2 (``error``, ``error_description``): that is what OAuth client
libraries read. Every answer is audited.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import threading
import time
import urllib.parse
import uuid

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from wor_bridge.config import ClientSettings
from wor_bridge.core import ta_np
from wor_bridge.core.destination_auth import JWT_BEARER_GRANT
from wor_bridge.core.ratelimit import TokenBucket
from wor_bridge.service.bodies import BodyRefused, read_body, too_large
from wor_bridge.service.pull_context import PULL_ALLOWED, PullContext
from wor_bridge.service.tls import client_cert_sha256
from wor_bridge.service.tokens import JWT_BEARER, TokenProblem


def _oauth_error(status: int, error: str, description: str) -> JSONResponse:
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="wor-bridge"'
    return JSONResponse(
        {"error": error, "error_description": description}, status_code=status, headers=headers
    )


def _form(body: bytes) -> dict[str, str] | None:
    """A form body with each parameter once (RFC 6749: parameters must not repeat)."""
    try:
        pairs = urllib.parse.parse_qsl(body.decode("ascii"), keep_blank_values=True)
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


class TokenEndpoint:
    """The token endpoint over a ``PullContext``."""

    def __init__(self, ctx: PullContext, rate_per_s: float, burst: int) -> None:
        self.ctx = ctx
        self._rate = (rate_per_s, burst)
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def _throttle(self, request: Request, claimed: str | None) -> float:
        """Seconds to wait for this claimed client from this peer (0: go ahead).

        The token endpoint's own buckets, keyed by claim and peer: guessing a receiver's secret
        is slowed down, and no amount of it throttles that client's (or anyone's) API routes.
        """
        peer = request.client.host if request.client else "-"
        with self._lock:
            if len(self._buckets) > 10_000:  # bounded memory under a flood of peers
                self._buckets.clear()
            bucket = self._buckets.setdefault(f"{claimed}|{peer}", TokenBucket(*self._rate))
            return bucket.take(time.monotonic())

    def _claimed(self, request: Request, form: dict[str, str]) -> str | None:
        """The configured client the request claims to be (not yet verified), if any."""
        if "client_assertion" in form:
            claimed = self.ctx.tokens.assertion_issuer(form["client_assertion"])
        else:
            basic = _basic(request.headers.get("authorization"))
            claimed = basic[0] if basic else form.get("client_id")
        return claimed if claimed in self.ctx.clients else None

    def _client(self, request: Request, form: dict[str, str]) -> ClientSettings | str:
        """The authenticated client, or why not (never which part of the credentials failed)."""
        if "client_assertion" in form or "client_assertion_type" in form:
            if form.get("client_assertion_type") != JWT_BEARER:
                return "client_assertion_type must be jwt-bearer"
            assertion = form.get("client_assertion", "")
            client = self.ctx.clients.get(self.ctx.tokens.assertion_issuer(assertion) or "")
            pem = self.ctx.public_keys.get(client.id) if client else None
            if client is None or pem is None:
                return "unknown client or no key configured for it"
            problem = self.ctx.tokens.verify_assertion(assertion, client.id, pem, self.ctx.now())
            return problem.message if problem else client
        basic = _basic(request.headers.get("authorization"))
        client_id, secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        client = self.ctx.clients.get(client_id)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if client is None or not client.key_sha256 or not secret:
            return "unknown client or wrong secret"
        if not hmac.compare_digest(client.key_sha256, digest):
            return "unknown client or wrong secret"
        return client

    def _task_of(self, resource: str) -> str | None:
        text = resource.strip()
        prefix = f"{self.ctx.tokens.audience}/Task/"
        if text.startswith("urn:uuid:"):
            text = text[9:]
        elif text.startswith(prefix):
            text = text[len(prefix) :]
        else:
            return None
        try:
            canonical = str(uuid.UUID(text))
        except ValueError:
            return None
        return canonical if canonical == text else None

    def _target(self, client: ClientSettings, form: dict[str, str]) -> str | Response | None:
        """The Task the request names: by its ``authorization_base`` (TA §3.3; required for a
        TA receiver) and/or ``resource``, which must then agree; or the refusal (audited)."""
        task_id = self._task_of(form.get("resource", ""))
        played = self._played_back(client, form)
        if isinstance(played, Response):
            return played
        if played is not None:
            key = self.ctx.base_key
            based = ta_np.task_of(key, played) if key else None
            if based is None or (task_id is not None and task_id != based):
                self.ctx.audit("pull_token", "refused", client.id, None, "authorization base")
                return _oauth_error(400, "invalid_grant", "the authorization_base is not valid")
            return based
        if client.destination in self.ctx.ta_destinations:
            self.ctx.audit("pull_token", "refused", client.id, None, "no authorization base")
            return _oauth_error(
                400, "invalid_request", "authorization_base is required (TA Notified Pull §3.3)"
            )
        return task_id

    def _played_back(self, client: ClientSettings, form: dict[str, str]) -> str | Response | None:
        """The authorization base the receiver plays back: the form's ``authorization_base``
        and/or, with the jwt-bearer grant (RFC 7523 §2.1), the ``authorization_base`` claim of its
        authorization assertion (TA §3.2.2), signed with the client's key; both must agree."""
        value = form.get("authorization_base")
        if form["grant_type"] != JWT_BEARER_GRANT:
            return value
        pem = self.ctx.public_keys.get(client.id)
        claims = (
            self.ctx.tokens.authorization_claims(
                form.get("assertion", ""), client.id, pem, self.ctx.now()
            )
            if pem
            else TokenProblem("no key configured for the client")
        )
        claimed = claims.get("authorization_base") if isinstance(claims, dict) else None
        if not isinstance(claimed, str) or (value is not None and value != claimed):
            why = claims.message if isinstance(claims, TokenProblem) else "authorization_base"
            self.ctx.audit("pull_token", "refused", client.id, None, f"assertion: {why}")
            return _oauth_error(
                400, "invalid_grant", "the assertion must carry the authorization_base, signed"
            )
        return claimed

    async def token(self, request: Request) -> Response:
        """Client credentials for one Task; refusals per RFC 6749 and audited."""
        limit = self.ctx.c.config.core.limits.token_bytes
        try:  # a form: ASCII, checked below
            body = await read_body(request, limit, text=False)
        except BodyRefused as err:  # late (408) or no slot (429/503)
            return await run_in_threadpool(self._refused, err)
        if body is None:
            return await run_in_threadpool(self._refused, too_large(limit, "limits.token_bytes"))
        # store reads and audit commits (a disk flush each) stay off the event loop
        return await run_in_threadpool(self._answer, request, body)

    def _refused(self, err: BodyRefused) -> Response:
        """A body refused before it was read (RFC 6749 form, with its headers; audited)."""
        self.ctx.audit("pull_token", "refused", "(unknown)", None, f"body: HTTP {err.status}")
        response = _oauth_error(err.status, "invalid_request", err.message)
        response.headers.update(err.headers)
        return response

    def _answer(  # noqa: PLR0911 - one answer per refusal reason
        self, request: Request, body: bytes
    ) -> Response:
        """The token endpoint's answer to a read body (runs in a worker thread)."""
        form = _form(body)
        if form is None:
            self.ctx.audit("pull_token", "refused", "(unknown)", None, "malformed request")
            return _oauth_error(400, "invalid_request", "must be a form, each parameter once")
        if "grant_type" not in form:
            self.ctx.audit("pull_token", "refused", "(unknown)", None, "no grant type")
            return _oauth_error(400, "invalid_request", "grant_type is required")
        if form["grant_type"] not in ("client_credentials", JWT_BEARER_GRANT):
            self.ctx.audit("pull_token", "refused", "(unknown)", None, "grant type")
            return _oauth_error(
                400,
                "unsupported_grant_type",
                f"grant_type client_credentials or {JWT_BEARER_GRANT}",
            )
        methods = [
            _basic(request.headers.get("authorization")) is not None,
            "client_secret" in form,
            "client_assertion" in form or "client_assertion_type" in form,
        ]
        if sum(methods) > 1:  # RFC 6749 section 2.3: one authentication method per request
            self.ctx.audit("pull_token", "refused", "(unknown)", None, "several auth methods")
            return _oauth_error(400, "invalid_request", "use one client authentication method")
        claimed = self._claimed(request, form)
        wait = self._throttle(request, claimed)
        if wait > 0:  # before the credentials are checked: no guessing at speed
            user = f"unverified:{claimed}" if claimed else "(unknown)"
            self.ctx.audit("pull_token", "refused", user, None, "rate limit")
            response = _oauth_error(429, "invalid_request", "too many token requests; retry later")
            response.headers["Retry-After"] = str(max(1, round(wait)))
            return response
        client = self._client(request, form)
        if isinstance(client, str):
            user = f"unverified:{claimed}" if claimed else "(unknown)"
            self.ctx.audit("pull_token", "refused", user, None, client)
            return _oauth_error(401, "invalid_client", client)
        cert = client_cert_sha256(request.scope)
        if not self.ctx.cert_ok(client, cert):
            self.ctx.audit("pull_token", "refused", client.id, None, "client certificate")
            return _oauth_error(
                401, "invalid_client", "the client certificate is not this client's"
            )
        if "referral:pull" not in client.scopes or client.destination is None:
            self.ctx.audit("pull_token", "refused", client.id, None, "no referral:pull scope")
            return _oauth_error(400, "unauthorized_client", "the client may not pull referrals")
        task_id = self._target(client, form)
        if isinstance(task_id, Response):
            return task_id
        task = self.ctx.c.store.get_task(task_id) if task_id else None
        if task is None or task.destination != client.destination or not self.ctx.pulled(task):
            # recorded against that Task's patient when it exists (the answer does not tell)
            self.ctx.audit(
                "pull_token",
                "refused",
                client.id,
                task,
                "no such Task for this client",
                object_ref=("Task", task_id or ""),
                responsible=client.destination,
            )
            return _oauth_error(
                400, "invalid_target", "resource must name a Task notified to this client"
            )
        if task.status not in PULL_ALLOWED:
            self.ctx.audit("pull_token", "refused", client.id, task, f"Task {task.status}")
            return _oauth_error(400, "invalid_grant", f"access ended: the Task is {task.status}")
        token = self.ctx.tokens.issue(client.id, task.task_id, cert, self.ctx.now())
        self.ctx.audit("pull_token", "issued", client.id, task, "token issued", action="E")
        return JSONResponse(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": self.ctx.tokens.ttl_s,
                "scope": f"task/{task.task_id}",
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    def add(self, app: FastAPI) -> None:
        """Register the route."""

        @app.post("/oauth/token", tags=["notified pull"])
        async def token(request: Request) -> Response:
            """OAuth2 client credentials for one Task (``resource``); secret or private-key JWT."""
            return await self.token(request)
