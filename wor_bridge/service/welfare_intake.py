"""A welfare-side client (one with a ``destination``) posting to the intake base ``/fhir/r4``.

Its Bundle of Tasks and Observations is feedback (the way back); anything else it posts is an
attempt to push a referral, which needs ``referral:write`` like any push: without it the answer
is 403 (never a 400 about the body of a request it may not make at all). The body is read within
``max_body_bytes`` (it may be a referral); a feedback Bundle must also fit
``limits.feedback_bundle_bytes`` (413), and telling which it is parses it within the structural
limits in a worker thread: a body too costly to tell is refused as such (400 ``too-costly``).
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from wor_bridge.config import ClientSettings
from wor_bridge.core import jsonscan
from wor_bridge.core.limits import InputLimits
from wor_bridge.errors import InboundError
from wor_bridge.service.access import Attempt
from wor_bridge.service.auth import Authenticator, Denied
from wor_bridge.service.bodies import read_body, too_large
from wor_bridge.service.feedback_routes import FeedbackRoutes


async def welfare_post(
    auth: Authenticator,
    routes: FeedbackRoutes,
    request: Request,
    *,
    key: str | None,
    cert: str | None,
    attempt: Attempt,
) -> Response | ClientSettings | Denied:
    """Feedback: the answer. A referral push: the client that may push, or why not (403
    without ``referral:write``). The body read is kept in ``request.state.body``."""
    attempt.event, attempt.action = "task_update", "U"
    checked = auth.check(key, "feedback:write", cert)
    if isinstance(checked, Denied) and checked.status != 403:
        return checked  # unknown key, wrong certificate, over the rate
    core = routes.c.config.core
    body = request.state.body = await read_body(request, core.max_body_bytes)
    if not isinstance(checked, Denied):
        limit, setting = (
            (core.max_body_bytes, "max_body_bytes")
            if _may_push(checked)
            else (core.limits.feedback_bundle_bytes, "limits.feedback_bundle_bytes")
        )
        if body is None or len(body) > limit:
            raise too_large(limit, setting)
    try:
        feedback: dict[str, Any] | InboundError | None = await run_in_threadpool(
            feedback_bundle, body, core.limits
        )
    except InboundError as err:  # too costly to tell what it is: refused as such
        feedback = err
    if feedback is not None:
        return await _feedback(routes, checked, feedback, len(body or b""), attempt)
    attempt.event, attempt.action = "referral_intake", "C"  # a referral push after all
    if isinstance(checked, Denied):  # no token taken yet: the referral check takes one
        return auth.check(key, "referral:write", cert)
    lacks = Denied(403, "forbidden", "the client lacks the scope referral:write", user=checked.id)
    return checked if _may_push(checked) else lacks


def _may_push(client: ClientSettings) -> bool:
    return "referral:write" in client.scopes or "admin" in client.scopes


async def _feedback(
    routes: FeedbackRoutes,
    checked: ClientSettings | Denied,
    feedback: dict[str, Any] | InboundError,
    size: int,
    attempt: Attempt,
) -> Response | Denied:
    """A feedback Bundle (or one too costly to read) from a client that may send feedback."""
    if isinstance(checked, Denied):
        return checked
    attempt.by(checked)
    if isinstance(feedback, InboundError):
        return routes.refused(feedback)
    limit = routes.c.config.core.limits.feedback_bundle_bytes
    if size > limit:
        raise too_large(limit, "limits.feedback_bundle_bytes")
    return await run_in_threadpool(routes.post_bundle, checked, feedback, attempt)


def feedback_bundle(body: bytes | None, limits: InputLimits) -> dict[str, Any] | None:
    """The body as a Bundle of Tasks and Observations only (a welfare client's feedback), or
    None when it is anything else (then it is an attempt to push a referral). Parsed within
    ``limits``: a body over a structural limit raises its InboundError (CPU work: call it in a
    worker thread)."""
    try:
        bundle = jsonscan.load(body, limits) if body is not None else None
    except InboundError as err:
        if any(issue.code == "too-costly" for issue in err.issues):
            raise
        return None
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return None
    entries = bundle.get("entry")
    types = (
        [
            e.get("resource", {}).get("resourceType") if isinstance(e, dict) else None
            for e in entries or []
        ]
        if isinstance(entries, list)
        else []
    )
    if not types or any(t not in ("Task", "Observation") for t in types):
        return None
    return bundle
