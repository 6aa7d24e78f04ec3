"""Connector for welfare systems without FHIR: signed JSON posted to ``/feedback/{connector}``.

The sender signs ``<timestamp>.<body>`` with HMAC-SHA256 and a shared secret and sends
``X-WoR-Timestamp: <unix seconds>`` and ``X-WoR-Signature: sha256=<hex>``. A signature that does
not match, or a timestamp outside the replay window, is refused before the body is read as JSON.
A declarative mapping file (``mappings/feedback/<id>.json``) names the sender's fields and
translates its words (status, milestones, activity categories, roles, closure reasons) into the
project's codes, so the same internal ``Feedback`` comes out as from any other channel.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wor_bridge.connectors.fhir_feedback import FeedbackFormatError
from wor_bridge.core import feedback as fb
from wor_bridge.core.task import FINISHED
from wor_bridge.errors import ConfigError

SIGNATURE_HEADER = "x-wor-signature"
TIMESTAMP_HEADER = "x-wor-timestamp"


class Fields(BaseModel):
    """Where the sender puts each fact (dotted paths into its JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    referral: str
    occurred_at: str
    status: str | None = None
    milestone: str | None = None
    reason: str | None = None
    closure_reason: str | None = None
    conversations: str | None = None
    activity_category: str | None = None
    activity_role: str | None = None
    first_contact: str | None = None
    follow_up_months: str | None = None
    note: str | None = None
    coach: str | None = None


class WebhookMapping(BaseModel):
    """A sender's vocabulary, translated to the project's codes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    description: str = ""
    fields: Fields
    status: dict[str, str] = Field(default_factory=dict)
    milestone: dict[str, str] = Field(default_factory=dict)
    activity_category: dict[str, str] = Field(default_factory=dict)
    activity_role: dict[str, str] = Field(default_factory=dict)
    closure_reason: dict[str, str] = Field(default_factory=dict)

    @property
    def ref(self) -> str:
        """``id@version``."""
        return f"{self.id}@{self.version}"


def load_mapping(path: Path, codes: dict[str, frozenset[str]]) -> WebhookMapping:
    """Read a webhook mapping file; every translated code must exist in the local CodeSystems."""
    try:
        mapping = WebhookMapping.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as exc:
        raise ConfigError(f"{path}: not a valid webhook mapping ({type(exc).__name__})") from None
    tables = {
        "milestone": (mapping.milestone, f"{fb.CS}task-business-status"),
        "activity_category": (mapping.activity_category, fb.ACTIVITY_CATEGORY),
        "activity_role": (mapping.activity_role, fb.ACTIVITY_ROLE),
        "closure_reason": (mapping.closure_reason, fb.CLOSURE_REASON),
    }
    for name, (table, system) in tables.items():
        known = codes.get(system, frozenset())
        unknown = sorted(set(table.values()) - known)
        if unknown:
            raise ConfigError(f"{path}: {name} translates to codes not in {system}: {unknown}")
    return mapping


def verify(
    secret: bytes,
    headers: dict[str, str],
    body: bytes,
    now_s: float,
    window_s: float,
) -> str | None:
    """None when the signature and timestamp are good; otherwise why not (no secret in it)."""
    stamp = headers.get(TIMESTAMP_HEADER, "")
    given = headers.get(SIGNATURE_HEADER, "")
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        return f"{TIMESTAMP_HEADER} must be UNIX seconds"
    if not given.isascii():
        return f"{SIGNATURE_HEADER} does not match the body"
    if abs(now_s - int(stamp)) > window_s:
        return f"{TIMESTAMP_HEADER} is outside the replay window of {window_s:.0f} s"
    expected = (
        "sha256=" + hmac.new(secret, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )
    if not hmac.compare_digest(expected.encode(), given.encode()):
        return f"{SIGNATURE_HEADER} does not match the body"
    return None


def sign(secret: bytes, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers a sender adds (used by the demo and the tests)."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-WoR-Timestamp": str(timestamp), "X-WoR-Signature": f"sha256={digest}"}


def _get(data: Any, path: str | None) -> Any:
    if path is None:
        return None
    for part in path.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _translate(table: dict[str, str], value: Any, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or value not in table:
        raise FeedbackFormatError(field, f"must be one of {sorted(table)}")
    return table[value]


def parse(mapping: WebhookMapping, body: bytes) -> fb.Feedback:
    """The sender's JSON as internal Feedback; FeedbackFormatError names the field."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise FeedbackFormatError("(body)", "must be a JSON object") from None
    return from_json(mapping, data)


def from_json(mapping: WebhookMapping, data: Any) -> fb.Feedback:
    """``parse`` of an already decoded body (the service decodes within its limits)."""
    if not isinstance(data, dict):
        raise FeedbackFormatError("(body)", "must be a JSON object")
    f = mapping.fields
    task_id = _get(data, f.referral)
    when = _get(data, f.occurred_at)
    if not isinstance(task_id, str) or not task_id:
        raise FeedbackFormatError(f.referral, "must be the referral's Task id")
    if not isinstance(when, str) or len(when) < 10:
        raise FeedbackFormatError(f.occurred_at, "must be an ISO date-time")
    status = _translate(mapping.status, _get(data, f.status), str(f.status))
    milestone = _translate(mapping.milestone, _get(data, f.milestone), str(f.milestone))
    closure = _translate(
        mapping.closure_reason, _get(data, f.closure_reason), str(f.closure_reason)
    )
    items = _items(mapping, data, when=when, milestone=milestone, status=status, closure=closure)
    if milestone is None and status in FINISHED:
        milestone = "closed"  # a finished trajectory is closed, whether or not the sender says so
    reason = _get(data, f.reason)
    coach = _get(data, f.coach)
    return fb.Feedback(
        task_id=task_id,
        occurred_at=when,
        status=status,
        business_status=milestone,
        reason_code=closure,
        reason_text=reason if isinstance(reason, str) else None,
        items=items,
        coach=fb.Coach(name=coach) if isinstance(coach, str) and coach else None,
    )


def _items(
    mapping: WebhookMapping,
    data: dict[str, Any],
    *,
    when: str,
    milestone: str | None,
    status: str | None,
    closure: str | None,
) -> tuple[fb.FeedbackItem, ...]:
    f = mapping.fields
    items: list[fb.FeedbackItem] = []
    if milestone == "first-contact":
        first = _get(data, f.first_contact)
        items.append(
            fb.FeedbackItem("first-contact", when, first if isinstance(first, str) else None)
        )
    if milestone == "intake-done":
        items.append(fb.FeedbackItem("intake-done", when, True))
    if milestone == "activity-started":
        category = _translate(
            mapping.activity_category, _get(data, f.activity_category), str(f.activity_category)
        )
        role = _translate(mapping.activity_role, _get(data, f.activity_role), str(f.activity_role))
        if category is None:
            raise FeedbackFormatError(str(f.activity_category), "must name the activity category")
        items.append(fb.FeedbackItem("activity-started", when, None, category, role))
    if closure is not None and milestone in ("closed", None):
        items.append(fb.FeedbackItem("closed", when, closure))
    count = _get(data, f.conversations)
    if count is not None:
        if not isinstance(count, int) or isinstance(count, bool):
            raise FeedbackFormatError(str(f.conversations), "must be an integer")
        items.append(fb.FeedbackItem("conversation-count", when, count))
    months = _get(data, f.follow_up_months)
    if months is not None:
        if months not in (3, 6):
            raise FeedbackFormatError(str(f.follow_up_months), "must be 3 or 6")
        items.append(fb.FeedbackItem("follow-up", when, months))
    note = _get(data, f.note)
    if isinstance(note, str) and note.strip():
        items.append(fb.FeedbackItem("note", when, note.strip()))
    return tuple(items)
