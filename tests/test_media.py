"""The pure HTTP representation rules (core/media.py): fhirVersion, Accept/_format, codings."""

from __future__ import annotations

import gzip
import zlib

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from wor_bridge.core import media
from wor_bridge.errors import Issue


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "application/fhir+json",
        "application/fhir+json; fhirVersion=4.0",
        "application/fhir+json;fhirVersion=4.0.1",
        'application/fhir+xml; charset=utf-8; fhirversion="4.0"',
    ],
)
def test_r4_endpoint_reads_no_version_or_4_0(content_type: str | None) -> None:
    """Content without fhirVersion, or with 4.0 / 4.0.x, is read as R4."""
    assert media.version_issue(content_type, "R4") is None


@pytest.mark.parametrize(
    ("value", "named"),
    [("3.0", "3.0 (STU3)"), ("1.0.2", "1.0.2 (DSTU2)"), ("4.3", "4.3 (R4B)"), ("5.0", "5.0 (R5)")],
)
def test_r4_endpoint_refuses_other_versions_by_name(value: str, named: str) -> None:
    """Another fhirVersion is a 415 issue at (content-type) naming both versions."""
    issue = media.version_issue(f"application/fhir+json; fhirVersion={value}", "R4")
    assert isinstance(issue, Issue)
    assert issue.expression == "(content-type)"
    assert f"got fhirVersion {named}" in issue.diagnostics
    assert "reads FHIR R4 only" in issue.diagnostics


def test_unreadable_version_is_not_echoed() -> None:
    """A fhirVersion that is no version number is refused without repeating it."""
    issue = media.version_issue("application/fhir+json; fhirVersion=Jansen", "R4")
    assert issue is not None
    assert "Jansen" not in issue.diagnostics


def test_stu3_endpoint_reads_3_0_and_refuses_4_0() -> None:
    """The STU3 routes read fhirVersion 3.0 (or none) and refuse 4.0."""
    assert media.version_issue("application/fhir+json; fhirVersion=3.0.2", "STU3") is None
    issue = media.version_issue("application/fhir+json; fhirVersion=4.0", "STU3")
    assert issue is not None
    assert "reads FHIR STU3 only" in issue.diagnostics


@pytest.mark.parametrize(
    ("accept", "fmt", "expected"),
    [
        (None, None, "json"),
        ("*/*", None, "json"),
        ("application/fhir+xml", None, "xml"),
        ("text/xml", None, "xml"),
        ("application/fhir+json;q=0.5, application/fhir+xml", None, "xml"),
        ("application/fhir+xml;q=0.1, application/fhir+json", None, "json"),
        ("application/fhir+xml; fhirVersion=4.0", None, "xml"),
        ("application/fhir+xml; fhirVersion=3.0, application/fhir+json", None, "json"),
        ("text/html", None, "json"),
        ("application/fhir+json", "xml", "xml"),
        ("application/fhir+xml", "json", "json"),
        (None, "application/fhir+xml", "xml"),
        (None, "application/fhir xml", "xml"),
    ],
)
def test_response_format_follows_format_then_accept(
    accept: str | None, fmt: str | None, expected: str
) -> None:
    """`_format` wins over `Accept`; the preferred FHIR type decides; JSON is the default."""
    assert media.response_format(accept, fmt, "R4") == expected


@pytest.mark.parametrize(
    ("accept", "fmt", "where"),
    [
        ("application/fhir+json; fhirVersion=3.0", None, "(accept)"),
        (None, "turtle", "(_format)"),
        (None, "application/fhir+json; fhirVersion=5.0", "(_format)"),
    ],
)
def test_response_format_refuses_what_it_cannot_write(
    accept: str | None, fmt: str | None, where: str
) -> None:
    """Accepting only another FHIR version, or an unknown `_format`, is a 406 issue."""
    issue = media.response_format(accept, fmt, "R4")
    assert isinstance(issue, Issue)
    assert issue.expression == where


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("identity", None),
        ("gzip", "gzip"),
        ("X-GZIP", "gzip"),
        ("deflate", "deflate"),
    ],
)
def test_content_codings_we_decode(header: str | None, expected: str | None) -> None:
    """gzip (x-gzip), deflate and identity are decoded (or nothing to do)."""
    assert media.coding(header) == expected


@pytest.mark.parametrize(
    ("header", "named"),
    [("br", "br"), ("zstd", "zstd"), ("gzip, br", "several codings"), ("Jansen", "another coding")],
)
def test_other_content_codings_are_refused(header: str, named: str) -> None:
    """Other codings are a 415 issue at (content-encoding); only registered names are repeated."""
    issue = media.coding(header)
    assert isinstance(issue, Issue)
    assert issue.expression == "(content-encoding)"
    assert f"(got {named})" in issue.diagnostics


def _feed(inflater: media.Inflater, data: bytes, size: int) -> bytes:
    out = b"".join(inflater.feed(data[i : i + size]) for i in range(0, len(data), size))
    return out + inflater.finish()


@hsettings(max_examples=50, deadline=None)
@given(
    payload=st.binary(max_size=5000),
    chunk=st.integers(1, 700),
    form=st.sampled_from(["gzip", "zlib", "raw", "gzip-members"]),
)
def test_inflater_decodes_any_chunking(payload: bytes, chunk: int, form: str) -> None:
    """Whatever the chunk sizes, gzip (one or more members), zlib and raw deflate decode exactly."""
    if form == "gzip":
        data, coding = gzip.compress(payload), "gzip"
    elif form == "gzip-members":
        data, coding = gzip.compress(payload[:10]) + gzip.compress(payload[10:]), "gzip"
    elif form == "zlib":
        data, coding = zlib.compress(payload), "deflate"
    else:
        data, coding = zlib.compress(payload)[2:-4], "deflate"
    assert _feed(media.Inflater(coding, 10_000), data, chunk) == payload  # type: ignore[arg-type]


def test_compression_bomb_stops_after_the_limit() -> None:
    """A 100 MB gzip bomb decodes no more than limit + 1 bytes before the inflater says over."""
    bomb = gzip.compress(b"\0" * 100_000_000)
    inflater = media.Inflater("gzip", 1 << 20)
    decoded = 0
    for i in range(0, len(bomb), 65536):
        decoded += len(inflater.feed(bomb[i : i + 65536]))
        if inflater.over:
            break
    assert inflater.over
    assert decoded == (1 << 20) + 1


@pytest.mark.parametrize(
    ("coding", "data"),
    [
        ("gzip", gzip.compress(b"{}" * 100)[:-9]),
        ("gzip", b"not gzip at all"),
        ("deflate", zlib.compress(b"{}") + b"trailing"),
        ("deflate", b"x"),
    ],
)
def test_streams_that_do_not_decode_raise(coding: media.Coding, data: bytes) -> None:
    """A truncated, corrupt or over-long stream raises InflateError (the service answers 400)."""
    inflater = media.Inflater(coding, 10_000)

    def decode() -> bytes:
        return inflater.feed(data) + inflater.finish()

    with pytest.raises(media.InflateError):
        decode()
