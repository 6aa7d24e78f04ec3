"""Reading request bodies: a size limit that holds while streaming (no unbounded read), and UTF-8
only (FHIR JSON and XML on the wire are UTF-8; anything else is refused, never guessed)."""

from __future__ import annotations

import re
from typing import Final

from fastapi import Request

_XML_DECLARATION: Final = re.compile(rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([^\"']*)[\"']")
_UTF8_NAMES: Final = frozenset({"utf-8", "utf8"})


class BodyRefused(Exception):  # noqa: N818 - a refusal, answered as an OperationOutcome
    """The body is refused before anything reads it: HTTP status, issue code, location, why."""

    def __init__(self, status: int, code: str, location: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.location = location
        self.message = message


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
    if text:
        check_utf8(body, request.headers.get("content-type"))
    return body
