"""Retention of patient data (AVG art. 5(1)(e), storage limitation) and of the audit trail.

A referral's patient data is purged ``payload_days`` after it ended: its Task finished
(``FINISHED``), or its delivery failed for good (outbox ``dead``), and no message about it is
still pending. The purge keeps what the Task's id, state and monitoring need: the referral row
with its states and times, the idempotency key, the monitoring facts (which hold no patient
data: an opaque key, practice, municipality, sex, age band, codes and times); it removes the
Bundle (replaced by ``redact_bundle``'s skeleton), the patient id, the welfare side's free-text
reason, and the payload of every finished outbox message about the Task (``PURGED_PAYLOAD``;
feedback contents travel in those payloads).

Audit records are kept ``audit_days`` (default 1826 days, five years: NEN 7513:2018 section 8.5
sets a minimum retention of five years for the logging of access to patient data) and then
removed by the purge only.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

FINISHED: Final = frozenset({"completed", "cancelled", "rejected", "failed", "entered-in-error"})
"""Task states after which nothing more happens to the referral (FHIR R4 Task.status)."""

PURGED_PAYLOAD: Final = b'{"resourceType":"Bundle","type":"transaction","entry":[]}'
"""What a purged outbox message holds: a valid, empty transaction Bundle."""

AUDIT_MINIMUM_DAYS: Final = 1826
"""NEN 7513:2018 section 8.5: logging is kept at least five years."""

_KEPT_TYPES: Final = frozenset({"Task", "PractitionerRole", "Practitioner", "Organization"})
_KEPT_TASK: Final = frozenset(
    {
        "resourceType",
        "id",
        "meta",
        "identifier",
        "status",
        "intent",
        "code",
        "focus",
        "authoredOn",
        "lastModified",
        "requester",
        "owner",
    }
)


class RetentionSettings(BaseModel):
    """``[retention]``: how long the store keeps patient data and the audit trail, and when the
    service purges (daily at ``purge_at`` UTC plus a random delay up to ``jitter_s`` seconds)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    payload_days: int = Field(default=30, ge=1, le=3650)
    audit_days: int = Field(default=AUDIT_MINIMUM_DAYS, ge=AUDIT_MINIMUM_DAYS, le=36500)
    purge: bool = True
    purge_at: str = Field(default="03:30", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    jitter_s: float = Field(default=1800.0, ge=0, le=43200)


def cutoffs(settings: RetentionSettings, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """(payload cut-off, audit cut-off): what ended, or was recorded, before them goes."""
    return (
        now - dt.timedelta(days=settings.payload_days),
        now - dt.timedelta(days=settings.audit_days),
    )


def next_run(now: dt.datetime, purge_at: str, delay_s: float) -> dt.datetime:
    """The next ``purge_at`` (HH:MM UTC) strictly after ``now``, plus ``delay_s`` seconds."""
    hour, minute = (int(part) for part in purge_at.split(":"))
    today = now.astimezone(dt.UTC).replace(hour=hour, minute=minute, second=0, microsecond=0)
    moment = today if today > now else today + dt.timedelta(days=1)
    return moment + dt.timedelta(seconds=delay_s)


def redact_bundle(stored: bytes) -> bytes:
    """The skeleton of a stored referral Bundle that remains after the purge: the Task (only
    the elements in ``_KEPT_TASK``: ids, states, dates, requester, owner; not ``for``, notes or
    inputs) and the care providers it names (PractitionerRole, Practitioner, Organization);
    no Patient, ServiceRequest, Consent or other resource. Unreadable input gives an empty
    Bundle."""
    try:
        bundle = json.loads(stored)
        entries = [e for e in bundle.get("entry") or [] if isinstance(e, dict)]
    except (ValueError, AttributeError):
        return PURGED_PAYLOAD
    kept: list[dict[str, Any]] = []
    for entry in entries:
        resource = entry.get("resource")
        if not isinstance(resource, dict) or resource.get("resourceType") not in _KEPT_TYPES:
            continue
        if resource["resourceType"] == "Task":
            resource = {k: v for k, v in resource.items() if k in _KEPT_TASK}
        kept.append({"fullUrl": entry.get("fullUrl"), "resource": resource})
    skeleton = {"resourceType": "Bundle", "type": bundle.get("type", "transaction"), "entry": kept}
    return json.dumps(skeleton, separators=(",", ":"), ensure_ascii=False).encode()
