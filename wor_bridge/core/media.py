"""HTTP representation rules of FHIR REST (https://hl7.org/fhir/R4/http.html), without I/O.

- **Media types** with parameters: ``application/fhir+json; fhirVersion=4.0``. The ``fhirVersion``
  parameter (http.html#version-parameter) names the FHIR version as ``major.minor``; an endpoint
  reads its own version (``4.0.x`` is R4, ``3.0.x`` STU3) or content without the parameter, and
  answers 415 to anything else (406 when the client accepts only another version).
- **Response format**: the ``_format`` query parameter wins over ``Accept``; FHIR XML when the
  client prefers it, FHIR JSON otherwise (the default).
- **Content codings**: ``gzip`` (also ``x-gzip``) and ``deflate`` (zlib, or raw deflate as some
  clients send it) are decoded by ``Inflater`` with the size limit on the *decoded* bytes, in
  steps bounded by that limit, so a compression bomb stops after limit + 1 bytes.

Diagnostics never echo a header value except a well-formed version number or a registered
content-coding name.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Final, Literal

from wor_bridge.errors import Issue

Version = Literal["R4", "STU3"]
Format = Literal["json", "xml"]

JSON_TYPES: Final = frozenset(
    {"application/fhir+json", "application/json", "application/json+fhir"}
)
XML_TYPES: Final = frozenset(
    {"application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir"}
)
MAJOR_MINOR: Final = {"R4": "4.0", "STU3": "3.0"}
_RELEASES: Final = {"1.0": "DSTU2", "3.0": "STU3", "4.0": "R4", "4.3": "R4B", "5.0": "R5"}
_VERSION_TEXT: Final = re.compile(r"^\d{1,2}\.\d{1,2}(\.\d{1,3})?$")
_FORMATS: Final = {
    **dict.fromkeys((*JSON_TYPES, "json"), "json"),
    **dict.fromkeys((*XML_TYPES, "xml"), "xml"),
}
_WILDCARDS: Final = frozenset({"*/*", "application/*"})


@dataclass(frozen=True, slots=True)
class MediaType:
    """A media type (lower case) and its parameters (names lower case, values unquoted)."""

    type: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def quality(self) -> float:
        """The ``q`` weight (1.0 when absent, 0.0 when malformed)."""
        try:
            return min(1.0, max(0.0, float(self.params.get("q", "1"))))
        except ValueError:
            return 0.0


def parse(header: str) -> MediaType:
    """One media type with its parameters (``type/subtype; name=value; ...``)."""
    head, *rest = header.split(";")
    params = {}
    for part in rest:
        name, sep, value = part.partition("=")
        if sep:
            params[name.strip().lower()] = value.strip().strip('"')
    return MediaType(head.strip().lower(), params)


def _release(value: str) -> str:
    """A version for a diagnostic: its number (and release name) when well formed, else nothing."""
    if not _VERSION_TEXT.match(value):
        return "another value"
    major_minor = ".".join(value.split(".")[:2])
    name = _RELEASES.get(major_minor)
    return f"{value} ({name})" if name else value


def reads_version(media: MediaType, version: Version) -> bool:
    """True when the media type declares no ``fhirVersion`` or ``version``'s ``major.minor``."""
    declared = media.params.get("fhirversion")
    if declared is None:
        return True
    return ".".join(declared.split(".")[:2]) == MAJOR_MINOR[version]


def version_issue(content_type: str | None, version: Version) -> Issue | None:
    """The 415 issue when ``Content-Type`` declares another FHIR version than this endpoint's."""
    if not content_type:
        return None
    media = parse(content_type)
    if reads_version(media, version):
        return None
    got = _release(media.params["fhirversion"])
    wanted = MAJOR_MINOR[version]
    return Issue(
        "not-supported",
        "(content-type)",
        f"must be FHIR {version} content (fhirVersion={wanted}, or no fhirVersion): this "
        f"endpoint reads FHIR {version} only (got fhirVersion {got})",
    )


def response_format(
    accept: str | None, format_param: str | None, version: Version
) -> Format | Issue:
    """The format to answer in, or the 406 issue when the client accepts nothing we write.

    ``_format`` wins over ``Accept`` (http.html#mime-type); without either, FHIR JSON.
    """
    if format_param:
        media = parse(format_param)
        fmt = _FORMATS.get(media.type.replace(" ", "+"))  # '+' in a query string decodes as ' '
        if fmt is None or not reads_version(media, version):
            return Issue(
                "not-supported",
                "(_format)",
                "must be json, xml, application/fhir+json or application/fhir+xml "
                f"(for FHIR {version}; got another value)",
            )
        return "json" if fmt == "json" else "xml"
    if not accept:
        return "json"
    offered = [parse(part) for part in accept.split(",") if part.strip()]
    ours = [m for m in offered if (m.type in _FORMATS or m.type in _WILDCARDS) and m.quality > 0]
    usable = [m for m in ours if reads_version(m, version)]
    if ours and not usable:
        return Issue(
            "not-supported",
            "(accept)",
            f"must accept FHIR {version} (fhirVersion={MAJOR_MINOR[version]}, or no "
            "fhirVersion): this endpoint writes no other version",
        )
    if not usable:
        return "json"  # e.g. only text/html: the spec leaves the format open; JSON is the default
    best = max(usable, key=lambda m: m.quality)  # max keeps the first of equal weights
    return "xml" if _FORMATS.get(best.type) == "xml" else "json"


# --- content codings -------------------------------------------------------------------------

_GZIP: Final = frozenset({"gzip", "x-gzip"})
_REGISTERED: Final = frozenset(
    {"br", "compress", "x-compress", "zstd", "aes128gcm", "exi", "pack200-gzip", "dcb", "dcz"}
)


Coding = Literal["gzip", "deflate"]


def coding(header: str | None) -> Coding | Issue | None:
    """The one content coding to undo (None for ``identity`` or none), or the 415 issue."""
    codings = [c.strip().lower() for c in (header or "").split(",") if c.strip()]
    codings = [c for c in codings if c != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and (codings[0] in _GZIP or codings[0] == "deflate"):
        return "gzip" if codings[0] in _GZIP else "deflate"
    name = codings[0] if len(codings) == 1 and codings[0] in _REGISTERED else None
    got = f"{name}" if name else ("several codings" if len(codings) > 1 else "another coding")
    return Issue(
        "not-supported",
        "(content-encoding)",
        f"must be gzip, deflate or no Content-Encoding (got {got})",
    )


class InflateError(ValueError):
    """The body is not the compressed stream its Content-Encoding says it is."""


class Inflater:
    """Decode a gzip/deflate body chunk by chunk; never more than ``limit`` + 1 bytes out.

    ``over`` turns true as soon as the decoded size passes ``limit``: the caller refuses the body
    (413) without decoding the rest.
    """

    def __init__(self, coding: Coding, limit: int) -> None:
        self.coding = coding
        self.limit = limit
        self.size = 0
        self.over = False
        self._head = b""
        self._d: zlib._Decompress | None = None
        if coding == "gzip":
            self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)

    def _start_deflate(self, data: bytes) -> bytes:
        """``deflate`` is zlib-wrapped by the RFC, raw in some clients: the header tells."""
        self._head += data
        if len(self._head) < 2:
            return b""
        b0, b1 = self._head[0], self._head[1]
        zlib_header = b0 & 0x0F == 8 and (b0 << 8 | b1) % 31 == 0
        self._d = zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        data, self._head = self._head, b""
        return data

    def feed(self, data: bytes) -> bytes:
        """The decoded bytes of the next chunk (stops early once over the limit)."""
        if self._d is None:
            data = self._start_deflate(data)
        out: list[bytes] = []
        try:
            while data and not self.over and self._d is not None:
                piece = self._d.decompress(data, self.limit + 1 - self.size)
                self.size += len(piece)
                out.append(piece)
                self.over = self.size > self.limit
                data = self._d.unconsumed_tail
                if self._d.eof and self._d.unused_data:
                    if self.coding != "gzip":
                        raise InflateError("data after the end of the deflate stream")
                    data = self._d.unused_data + data  # a gzip body may hold several members
                    self._d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        except zlib.error:
            raise InflateError("not a valid stream") from None
        return b"".join(out)

    def finish(self) -> bytes:
        """The end of the body: the stream must be complete."""
        if self.over:
            return b""
        if self._d is None or not self._d.eof:
            raise InflateError("the stream ends early")
        return b""

    def issue(self) -> Issue:
        """The 400 issue for a stream that does not decode."""
        return Issue(
            "structure",
            "(body)",
            f"must be a complete {self.coding} stream, as Content-Encoding says "
            "(got bytes that do not decode)",
        )
