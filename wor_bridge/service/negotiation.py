"""HTTP content negotiation as FHIR REST defines it, in one ASGI layer in front of the routes.

On ``/fhir/r4`` (FHIR R4) and ``/fhir/stu3`` (FHIR STU3):

- ``_format`` or ``Accept`` asking for FHIR XML turns every FHIR JSON answer of the route
  (refusals included) into FHIR XML; JSON stays the default. Accepting only another FHIR
  version is 406.
- A ``Content-Type`` whose ``fhirVersion`` is not the endpoint's is 415 at ``(content-type)``;
  when it names the other version the bridge reads, the diagnostic names that base
  (``fhirVersion=3.0`` on ``/fhir/r4``: STU3 referrals go to ``/fhir/stu3``). The R4 routes do
  not convert: the version a client declares picks the base it writes to (one base per FHIR
  version, as FHIR REST has it).

On every route, ``Content-Encoding`` gzip or deflate is decoded while the route reads the body,
in steps bounded by ``max_body_bytes`` (in a worker thread): the route's own size limit then
applies to the decoded bytes (413), and a compression bomb stops after ``max_body_bytes`` + 1
bytes (the largest body any route takes). Another coding
is 415 at ``(content-encoding)``; a stream that does not decode is 400. The rules themselves are
pure functions in ``core/media.py``.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import parse_qs

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers

from wor_bridge.core import fhir, media
from wor_bridge.core.outcome import operation_outcome
from wor_bridge.errors import Issue

log = structlog.get_logger("wor_bridge.service")

_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_BASES: Final[dict[media.Version, str]] = {"R4": "/fhir/r4", "STU3": "/fhir/stu3"}
_FHIR_JSON: Final = "application/fhir+json"


class BodyDecodeError(Exception):
    """The request body does not decode as its Content-Encoding says (becomes a 400)."""

    def __init__(self, issue: Issue) -> None:
        super().__init__(issue.diagnostics)
        self.issue = issue


def _version_of(path: str) -> media.Version | None:
    if path == "/fhir/r4" or path.startswith("/fhir/r4/"):
        return "R4"
    if path == "/fhir/stu3" or path.startswith("/fhir/stu3/"):
        return "STU3"
    return None


def _other_base(issue: Issue, content_type: str | None, version: media.Version) -> Issue:
    """The 415 issue, naming the base that reads the declared version when the bridge has one."""
    for other, base in _BASES.items():
        if other != version and media.reads_version(media.parse(content_type or ""), other):
            return Issue(
                issue.code,
                issue.expression,
                f"{issue.diagnostics}; FHIR {other} content goes to {base}",
            )
    return issue


def _render(resource: fhir.JsonDict, fmt: media.Format, version: media.Version | None) -> bytes:
    if fmt == "xml":
        return fhir.to_xml(resource, version or "R4")
    return fhir.canonical_json(resource)


async def _answer(
    send: Any, status: int, issue: Issue, fmt: media.Format, version: media.Version | None
) -> None:
    body = _render(operation_outcome([issue]), fmt, version)
    ctype = f"application/fhir+{fmt}" + ("; fhirVersion=3.0" if version == "STU3" else "")
    headers = [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _InflatingReceive:
    """``receive`` that hands the route decoded body chunks (at most limit + 1 bytes in all)."""

    def __init__(self, receive: Any, inflater: media.Inflater) -> None:
        self.receive = receive
        self.inflater = inflater
        self.done = False

    async def __call__(self) -> Any:
        if self.done:
            return {"type": "http.request", "body": b"", "more_body": False}
        message = await self.receive()
        if message["type"] != "http.request":
            return message
        more = bool(message.get("more_body", False))
        try:  # CPU work on the body: in a worker thread, never on the event loop
            body = await run_in_threadpool(self._inflate, message.get("body", b""), more)
        except media.InflateError:
            raise BodyDecodeError(self.inflater.issue()) from None
        if self.inflater.over:
            self.done, more = True, False  # the route sees more than its limit and answers 413
        return {"type": "http.request", "body": body, "more_body": more}

    def _inflate(self, chunk: bytes, more: bool) -> bytes:
        body = self.inflater.feed(chunk)
        return body if more else body + self.inflater.finish()


class _XmlAnswers:
    """``send`` that turns a FHIR JSON answer into FHIR XML (other answers pass unchanged)."""

    def __init__(self, send: Any, version: media.Version) -> None:
        self.send = send
        self.version = version
        self.start: Any = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Any) -> None:
        if message["type"] == "http.response.start":
            ctype = Headers(raw=message.get("headers", [])).get("content-type", "")
            if media.parse(ctype).type == _FHIR_JSON:
                self.start = message
                return
        elif message["type"] == "http.response.body" and self.start is not None:
            self.chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            await self._flush()
            return
        await self.send(message)

    async def _flush(self) -> None:
        start, body = self.start, b"".join(self.chunks)
        self.start, self.chunks = None, []
        headers = Headers(raw=start.get("headers", []))
        try:
            xml = await run_in_threadpool(self._to_xml, body) if body else b""
        except Exception as exc:  # noqa: BLE001 - answer in JSON rather than not at all
            log.error("xml_render_failed", error=type(exc).__name__)  # noqa: TRY400 - no values
            await self.send(start)
            await self.send({"type": "http.response.body", "body": body})
            return
        ctype = headers["content-type"].replace("application/fhir+json", "application/fhir+xml")
        raw = [
            (k, v)
            for k, v in start.get("headers", [])
            if k not in (b"content-type", b"content-length")
        ]
        raw += [(b"content-type", ctype.encode()), (b"content-length", str(len(xml)).encode())]
        await self.send({**start, "headers": raw})
        await self.send({"type": "http.response.body", "body": xml})

    def _to_xml(self, body: bytes) -> bytes:
        return fhir.to_xml(json.loads(body), self.version)


class FhirNegotiation:
    """The ASGI layer (see the module docstring)."""

    def __init__(self, app: Any, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Negotiate, then run the route with decoding ``receive`` and converting ``send``."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        version = _version_of(scope["path"])
        fmt: media.Format = "json"
        if version is not None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            asked = media.response_format(
                headers.get("accept"), (query.get("_format") or [None])[0], version
            )
            if isinstance(asked, Issue):
                await _answer(send, 406, asked, "json", version)
                return
            fmt = asked
            if scope["method"] in _BODY_METHODS:
                ctype = headers.get("content-type")
                wrong = media.version_issue(ctype, version)
                if wrong is not None:
                    await _answer(send, 415, _other_base(wrong, ctype, version), fmt, version)
                    return
        coding = media.coding(headers.get("content-encoding"))
        if isinstance(coding, Issue):
            await _answer(send, 415, coding, fmt, version)
            return
        if coding is not None:
            receive = _InflatingReceive(receive, media.Inflater(coding, self.max_body_bytes))
            raw = scope["headers"]
            scope = {
                **scope,
                "headers": [
                    (k, v) for k, v in raw if k not in (b"content-encoding", b"content-length")
                ],
            }
        if fmt == "xml" and version is not None:
            send = _XmlAnswers(send, version)
        try:
            await self.app(scope, receive, send)
        except BodyDecodeError as err:
            await _answer(send, 400, err.issue, fmt, version)
