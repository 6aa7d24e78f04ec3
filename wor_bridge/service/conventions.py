"""FHIR REST conventions around the routes of ``/fhir/r4`` and ``/fhir/stu3`` (an ASGI layer,
inside the content negotiation so that what it shapes is then turned into XML when asked):

- the base with a trailing slash (``[base]/``, as ``fhirclient`` posts a transaction) is the
  base: no redirect, nothing built from the ``Host`` header;
- an XML body on a route that reads JSON only (``capability.ROUTES``) is 415 at
  ``(content-type)``, before anything else;
- ``_summary`` (``true``, ``false``, ``data``; ``count`` on searches) and ``_elements`` shape the
  resource a read answers (searches shape their Bundles themselves); another ``_summary`` is 400;
- ``_pretty=true`` indents FHIR JSON answers.

``allowed_methods`` gives the ``Allow`` header of a 405: every method of every route at the path.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import parse_qs

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.routing import Match

from wor_bridge.core import fhir, media, shape
from wor_bridge.core.outcome import operation_outcome
from wor_bridge.errors import Issue
from wor_bridge.service import capability

_BASES: Final = tuple(capability.BASES.values())
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_XML: Final = frozenset({"application/fhir+xml", "application/xml", "text/xml"})
_SUMMARIES: Final = frozenset({"true", "false", "data", "count"})


def allowed_methods(app: FastAPI, path: str) -> str:
    """The ``Allow`` header for ``path``: the methods of every route that matches it."""
    methods: set[str] = set()
    scope = {"type": "http", "path": path, "method": "GET", "root_path": ""}
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def _refuse(send: Any, status: int, issue: Issue) -> None:
    body = fhir.canonical_json(operation_outcome([issue]))
    headers = [
        (b"content-type", b"application/fhir+json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _Shaping:
    """``send`` that shapes and/or indents a FHIR JSON answer."""

    def __init__(self, send: Any, summary: str, elements: tuple[str, ...], pretty: bool) -> None:
        self.send = send
        self.summary = summary
        self.elements = elements
        self.pretty = pretty
        self.start: Any = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            ctype = Headers(raw=message.get("headers", [])).get("content-type", "")
            if media.parse(ctype).type == "application/fhir+json":
                self.start = message
                return
        elif message["type"] == "http.response.body" and self.start is not None:
            self.chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = b"".join(self.chunks)
            if body:
                body = await run_in_threadpool(self._shape, body, self.start["status"])
            raw = [(k, v) for k, v in self.start.get("headers", []) if k != b"content-length"]
            raw.append((b"content-length", str(len(body)).encode()))
            await self.send({**self.start, "headers": raw})
            await self.send({"type": "http.response.body", "body": body})
            return
        await self.send(message)

    def _shape(self, body: bytes, status: int) -> bytes:
        resource = json.loads(body)
        kind = resource.get("resourceType")
        if status == 200 and kind not in ("Bundle", "OperationOutcome", "CapabilityStatement"):
            resource = shape.subset(resource, self.summary, self.elements)
        return fhir.canonical_json(resource, pretty=self.pretty)


class FhirConventions:
    """The ASGI layer (see the module docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Apply the conventions, then run the route."""
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(_BASES):
            await self.app(scope, receive, send)
            return
        if path.endswith("/") and path.rstrip("/") in _BASES:
            path = path.rstrip("/")
            scope = {**scope, "path": path, "raw_path": path.encode()}
        method = scope["method"]
        ctype = media.parse(Headers(scope=scope).get("content-type", "")).type
        if method in _BODY_METHODS and ctype in _XML and capability.json_only(method, path):
            issue = Issue("not-supported", "(content-type)", "this route reads FHIR JSON only")
            await _refuse(send, 415, issue)
            return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        summary = (query.get("_summary") or ["false"])[-1]
        if method == "GET" and summary not in _SUMMARIES:
            issue = Issue("not-supported", "(query)", "_summary must be true, false, data or count")
            await _refuse(send, 400, issue)
            return
        elements = tuple(
            e.strip() for v in query.get("_elements", []) for e in v.split(",") if e.strip()
        )
        pretty = (query.get("_pretty") or ["false"])[-1] == "true"
        shaped = method == "GET" and (summary == "true" or bool(elements))
        if shaped or pretty:
            if method != "GET":
                summary, elements = "false", ()
            send = _Shaping(send, summary, elements, pretty)
        await self.app(scope, receive, send)


def if_match_version(header: str | None) -> int | None:
    """The version of ``If-Match: W/"<n>"`` (-1 when malformed, None when absent)."""
    if header is None:
        return None
    text = header.strip().removeprefix("W/").strip('"')
    return int(text) if text.isdigit() else -1
