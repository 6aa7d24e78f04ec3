"""Reading request bodies: a size limit that holds while streaming (no unbounded read), UTF-8
only (FHIR JSON and XML on the wire are UTF-8; anything else is refused, never guessed), and a
deadline for the whole body (``BodyDeadline``, an ASGI layer in front of every route).

A route waits for its body only until ``service.body_timeout_s`` after the request started: a
client that sends a body slowly (or declares more than it sends) is answered 408 ``timeout`` and
its connection is closed, whoever it claims to be. That is what keeps the routes that must read
before they can authenticate (``/oauth/token``, ``/feedback/{connector}``) from waiting without
end. The connection layer (``service.server``) closes a connection whose body nobody reads.
"""

from __future__ import annotations

import re
from typing import Any, Final

import anyio
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from wor_bridge.core.fhir import canonical_json
from wor_bridge.core.outcome import operation_outcome
from wor_bridge.errors import Issue

_XML_DECLARATION: Final = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")
_UTF8_NAMES: Final = frozenset({"utf-8", "utf8"})
BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
_ON_THE_LOOP: Final = 65_536  # smaller bodies are checked in place (a thread hop costs more)


class BodyRefused(Exception):  # noqa: N818 - a refusal, answered as an OperationOutcome
    """The body is refused before anything reads it: HTTP status, issue code, location, why,
    and the headers the answer carries (``Retry-After``, ``Connection: close``)."""

    def __init__(
        self,
        status: int,
        code: str,
        location: str,
        message: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.location = location
        self.message = message
        self.headers = headers or {}

    def answer(self) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """The OperationOutcome bytes and raw headers (for an ASGI layer that answers itself)."""
        issue = Issue(self.code, self.location, self.message)  # type: ignore[arg-type]
        body = canonical_json(operation_outcome([issue]))
        headers = [
            (b"content-type", b"application/fhir+json"),
            (b"content-length", str(len(body)).encode()),
            *((k.lower().encode(), v.encode()) for k, v in self.headers.items()),
        ]
        return body, headers


def too_large(limit: int, setting: str) -> BodyRefused:
    """The refusal of a body over its route's byte limit (413, naming the setting)."""
    return BodyRefused(413, "too-costly", "(body)", f"must be at most {limit} bytes ({setting})")


def check_utf8(body: bytes, content_type: str | None) -> None:
    """Raise ``BodyRefused`` unless the body is UTF-8 (declared charset, bytes, XML declaration).

    A ``charset`` other than UTF-8 is an unsupported media type (415); bytes that are not UTF-8
    (UTF-16 and UTF-32 included, with or without a byte order mark) and an XML declaration that
    names another encoding are unreadable input (400).
    """
    params = (content_type or "").split(";")[1:]
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            _UTF8_NAMES
        ):
            raise BodyRefused(415, "not-supported", "(content-type)", "charset must be utf-8")
    try:
        body.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BodyRefused(
            400, "structure", "(body)", "must be UTF-8 encoded (got undecodable bytes)"
        ) from None
    declared = _XML_DECLARATION.match(body.removeprefix(b"\xef\xbb\xbf")[:200])
    if declared and declared.group(1).decode("ascii", "replace").lower() not in _UTF8_NAMES:
        raise BodyRefused(
            400, "structure", "(body)", "must be UTF-8: the XML declaration names another encoding"
        )


async def read_body(request: Request, limit: int, *, text: bool = True) -> bytes | None:
    """The body, or None when it is larger than ``limit`` (checked while streaming).

    With ``text`` (every FHIR and JSON route) a body that is not UTF-8 raises ``BodyRefused``.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    body = b"".join(chunks)
    if text and len(body) > _ON_THE_LOOP:  # decoding a large body is CPU work: off the loop
        await run_in_threadpool(check_utf8, body, request.headers.get("content-type"))
    elif text:
        check_utf8(body, request.headers.get("content-type"))
    return body


class BodyTimeout(BodyRefused):
    """The body did not arrive before its deadline (408; the connection is closed)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            408,
            "timeout",
            "(body)",
            f"must arrive within {timeout_s:g} s of the request (service.body_timeout_s)",
            {"Connection": "close"},
        )


class BodyDeadline:
    """Every request body must have arrived ``timeout_s`` after the request started.

    ``receive`` raises ``BodyTimeout`` at the deadline; the route's handler for ``BodyRefused``
    answers it (and audits it); this layer answers when nothing else did.
    """

    def __init__(self, app: Any, timeout_s: float) -> None:
        self.app = app
        self.timeout_s = timeout_s

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """Run the request with a ``receive`` that gives up at the deadline."""
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.timeout_s
        done = False
        started = False

        async def bounded_receive() -> Any:
            nonlocal done
            if done:
                return await receive()
            try:
                with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout(self.timeout_s) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                done = True
            return message

        async def tracked_send(message: Any) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracked_send)
        except BodyTimeout as late:
            if started:
                raise
            body, headers = late.answer()
            await send({"type": "http.response.start", "status": 408, "headers": headers})
            await send({"type": "http.response.body", "body": body})
