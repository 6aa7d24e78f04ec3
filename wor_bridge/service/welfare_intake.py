"""A welfare-side client (one with a ``destination``) posting to the intake base ``/fhir/r4``.

Its Bundle of Tasks and Observations is feedback (the way back); anything else it posts is an
attempt to push a referral, which needs ``referral:write`` like any push: without it the answer
is 403 (never a 400 about the body of a request it may not make at all).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from wor_bridge.config import ClientSettings
from wor_bridge.service.access import Attempt
from wor_bridge.service.auth import Authenticator, Denied
from wor_bridge.service.bodies import read_body
from wor_bridge.service.feedback_routes import FeedbackRoutes


async def welfare_post(
    auth: Authenticator,
    routes: FeedbackRoutes,
    request: Request,
    *,
    key: str | None,
    cert: str | None,
    attempt: Attempt,
    outcome: Callable[..., Response],
) -> Response | ClientSettings | Denied:
    """Feedback: the answer. A referral push: the client that may push, or why not (403
    without ``referral:write``). The body read is kept in ``request.state.body``."""
    attempt.event, attempt.action = "task_update", "U"
    checked = auth.check(key, "feedback:write", cert)
    if isinstance(checked, Denied) and checked.status != 403:
        return checked  # unknown key, wrong certificate, over the rate
    limit = routes.c.config.core.max_body_bytes
    request.state.body = await read_body(request, limit)
    if request.state.body is None and not isinstance(checked, Denied):
        return outcome(413, "too-costly", f"must be at most {limit} bytes", "(body)")
    feedback = feedback_bundle(request.state.body)
    if feedback is not None:
        if isinstance(checked, Denied):
            return checked
        attempt.by(checked)
        return await routes.post_bundle(checked, feedback, attempt)
    attempt.event, attempt.action = "referral_intake", "C"  # a referral push after all
    if isinstance(checked, Denied):  # no token taken yet: the referral check takes one
        return auth.check(key, "referral:write", cert)
    may_push = "referral:write" in checked.scopes or "admin" in checked.scopes
    lacks = Denied(403, "forbidden", "the client lacks the scope referral:write", user=checked.id)
    return checked if may_push else lacks


def feedback_bundle(body: bytes | None) -> dict[str, Any] | None:
    """The body as a Bundle of Tasks and Observations only (a welfare client's feedback), or
    None when it is anything else (then it is an attempt to push a referral)."""
    try:
        bundle = json.loads(body) if body is not None else None
    except (ValueError, RecursionError):
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
