"""Delivery results as values: classify what the other side answered (pure, no I/O).

2xx -> Delivered. Connection errors, timeouts, 408, 425, 429 and 5xx -> RetryLater (with the
``Retry-After`` the server asked for). Any other status -> Rejected, with a *redacted* reason:
the status and the OperationOutcome issue codes only, never diagnostics (a receiver may echo the
patient's data in them).
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

RETRY_STATUSES: Final = frozenset({408, 425, 429})
_DELTA_SECONDS: Final = re.compile(r"[0-9]{1,10}")
# FHIR R4 IssueType codes: the only words of a receiver's OperationOutcome we keep.
ISSUE_TYPES: Final = frozenset(
    {
        "invalid",
        "structure",
        "required",
        "value",
        "invariant",
        "security",
        "login",
        "unknown",
        "expired",
        "forbidden",
        "suppressed",
        "processing",
        "not-supported",
        "duplicate",
        "multiple-matches",
        "not-found",
        "deleted",
        "too-long",
        "code-invalid",
        "extension",
        "too-costly",
        "business-rule",
        "conflict",
        "transient",
        "lock-error",
        "no-store",
        "exception",
        "timeout",
        "incomplete",
        "throttled",
        "informational",
    }
)


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """One HTTP request a connector wants sent (the Transport adds authentication)."""

    method: str
    url: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    grant: tuple[tuple[str, str], ...] = ()
    """Claims for the authorization assertion of a Twiin token request (``auth.type twiin``):
    who initiates (``sub``) and, when agreed, the patient; the Transport asks a token per grant."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What came back; header names are lower-case."""

    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Delivered:
    """The receiver accepted the message."""

    status: int


@dataclass(frozen=True, slots=True)
class RetryLater:
    """Try again later: a transient problem on the way or at the receiver."""

    reason: str
    status: int | None = None
    retry_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class Rejected:
    """The receiver refused the message; retrying the same bytes will not help."""

    reason: str
    status: int


Outcome = Delivered | RetryLater | Rejected


def classify_response(response: HttpResponse, now: dt.datetime) -> Outcome:
    """Classify an HTTP response by status (and Retry-After)."""
    status = response.status
    if 200 <= status < 300:
        return Delivered(status)
    if status in RETRY_STATUSES or 500 <= status < 600:
        retry_after = parse_retry_after(response.headers.get("retry-after"), now)
        return RetryLater(redacted_reason(response), status, retry_after)
    return Rejected(redacted_reason(response), status)


def classify_error(kind: str) -> RetryLater:
    """A request that got no response (``timeout``, ``connection``, ``tls``): retry later."""
    return RetryLater(f"no response ({kind})")


def parse_retry_after(value: str | None, now: dt.datetime) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date); None if absent."""
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())


def redacted_reason(response: HttpResponse) -> str:
    """``HTTP 422 (invalid, business-rule)``: the status and OperationOutcome issue codes only."""
    codes: list[str] = []
    try:
        body = json.loads(response.body) if response.body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    issues = body.get("issue") if isinstance(body, dict) else None
    if isinstance(body, dict) and body.get("resourceType") == "OperationOutcome":
        for issue in issues if isinstance(issues, list) else []:
            code = issue.get("code") if isinstance(issue, dict) else None
            if isinstance(code, str) and code in ISSUE_TYPES and code not in codes:
                codes.append(code)
    suffix = f" ({', '.join(codes[:5])})" if codes else ""
    return f"HTTP {response.status}{suffix}"
