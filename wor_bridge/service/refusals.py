"""The refusals every FHIR route answers alike, in the route's own response class (R4 or STU3):
an authentication or rate refusal with its headers, and the HTTP status of a refused input."""

from __future__ import annotations

from typing import cast

from fastapi.responses import Response

from wor_bridge.core.outcome import operation_outcome
from wor_bridge.errors import InboundError, Issue, IssueCode, RefusedError
from wor_bridge.service.auth import Denied


def refusal_status(err: RefusedError) -> int:
    """415 for a media type the route does not read, 400 for unreadable input, 422 the gates."""
    if err.issues[0].expression == "(content-type)":
        return 415
    return 400 if isinstance(err, InboundError) else 422


def denied_answer(denied: Denied, respond: type[Response]) -> Response:
    """401 (with ``WWW-Authenticate``), 403 or 429 (with ``Retry-After``) as an OperationOutcome
    rendered by ``respond`` (``FhirResponse`` or ``Stu3Response``)."""
    issue = Issue(cast(IssueCode, denied.code), "(request)", denied.message)
    response: Response = respond(operation_outcome([issue]), status_code=denied.status)
    if denied.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="wor-bridge"'
    if denied.retry_after_s is not None:
        response.headers["Retry-After"] = str(max(1, round(denied.retry_after_s)))
    return response
