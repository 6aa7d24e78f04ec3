"""One access line per request (an ASGI layer, the outermost): ``request`` on stderr as JSON.

The line says ``method``, ``route`` (the route's template, e.g. ``/fhir/r4/Task/{task_id}``,
never the raw path, and never the query string: ids and search values stay out of the logs),
``status``, ``duration_ms`` (from the request's start to the end of its answer), ``client`` (the
configured id of the client whose API key was presented, else null), and ``request_id``. A
refusal (status 400 and above) also carries ``issues``: the OperationOutcome's issue codes (or
the RFC 6749 ``error`` of the token endpoint), never its diagnostics.

``request_id`` is the service's own (a random UUID), answered in the ``X-Request-Id`` header and
bound to every other log line written while the request is answered. A client's own
``X-Request-Id`` is neither logged nor echoed: it may hold anything.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Final

import structlog
from lxml import etree
from starlette.datastructures import Headers
from starlette.routing import Match, Router

from wor_bridge.service.auth import Authenticator, presented_key

log = structlog.get_logger("wor_bridge.access")

_MAX_CAPTURE: Final = 262_144
"""Refusal bodies longer than this are not read for their issue codes."""
_FHIR_NS: Final = "{http://hl7.org/fhir}"
_XML_PARSER: Final = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
)


def route_template(router: Router, scope: Any) -> str:
    """The template of the route ``scope`` goes to (also for a wrong method), else ``(none)``."""
    probe = {"type": "http", "path": scope["path"], "method": scope["method"], "root_path": ""}
    partial = None
    for route in router.routes:
        match, _ = route.matches(probe)
        if match == Match.FULL:
            return str(getattr(route, "path", "(none)"))
        if match == Match.PARTIAL and partial is None:
            partial = str(getattr(route, "path", "(none)"))
    return partial or "(none)"


def issue_codes(body: bytes, content_type: str) -> list[str]:
    """The issue codes of an OperationOutcome (JSON or XML), or ``[error]`` of an RFC 6749
    answer; empty when the body is neither."""
    try:
        if "xml" in content_type:
            root = etree.fromstring(body, _XML_PARSER)
            return [
                str(code.get("value"))
                for code in root.iterfind(f"{_FHIR_NS}issue/{_FHIR_NS}code")
                if code.get("value")
            ]
        data = json.loads(body)
    except (ValueError, etree.XMLSyntaxError):
        return []
    if not isinstance(data, dict):
        return []
    if data.get("resourceType") == "OperationOutcome":
        issues = data.get("issue")
        return [str(i["code"]) for i in issues or [] if isinstance(i, dict) and "code" in i]
    error = data.get("error")
    return [error] if isinstance(error, str) else []


class RequestLog:
    """The ASGI layer (see the module docstring)."""

    def __init__(self, app: Any, router: Router, auth: Authenticator) -> None:
        self.app = app
        self.router = router
        self.auth = auth

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Answer the request with an ``X-Request-Id``, then write its access line."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = str(uuid.uuid4())
        status = 500  # what the client gets when nothing was sent (the server answers 500)
        media = ""
        captured = bytearray()

        async def logged_send(message: Any) -> None:
            nonlocal status, media
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                media = Headers(raw=headers).get("content-type", "")
                message = {**message, "headers": headers}
            elif status >= 400 and len(captured) <= _MAX_CAPTURE:
                captured.extend(message.get("body", b""))
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, logged_send)
            finally:
                self._line(scope, status, started, media, bytes(captured))

    def _line(self, scope: Any, status: int, started: float, media: str, body: bytes) -> None:
        headers = Headers(scope=scope)
        found = self.auth.client(
            presented_key(headers.get("authorization"), headers.get("x-api-key"))
        )
        fields: dict[str, Any] = {
            "method": scope["method"],
            "route": route_template(self.router, scope),
            "status": status,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "client": found.id if found is not None else None,
        }
        if status >= 400:
            fields["issues"] = issue_codes(body, media) if len(body) <= _MAX_CAPTURE else []
        (log.error if status >= 500 else log.info)("request", **fields)
