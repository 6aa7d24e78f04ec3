"""Monitoring facts: what a referral and its Task changes tell, with no patient data. Pure.

At intake one ``ReferralFacts`` row is recorded: the practice (AGB/URA), the referrer type, the
welfare organisation (destination id), the municipality (address district, else the configured
postcode ranges), sex, an age band at the referral date (never the birth date), the reason codes
and the referral date. Each Task or feedback change adds a ``Progress``: the status, milestone
times (set once), the reason *code* (never free text), conversations and activities.

The facts are keyed by ``monitoring_key(task_id)``, a one-way uuid5 of the Task id: the monitoring
tables hold no BSN, name, address, birth date or referral number, so they survive purging the
referral payloads, and nothing in them leads back to the patient once those are gone.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Final

from wor_bridge.core import identifiers as ids
from wor_bridge.core.feedback import FeedbackItem
from wor_bridge.core.gates import codings, identifiers_in
from wor_bridge.core.monitoring_settings import MonitoringSettings
from wor_bridge.core.routing import home_addresses
from wor_bridge.core.settings import REFERRAL_REASON_SYSTEM, REFERRER_TYPE_SYSTEM
from wor_bridge.core.task import TaskState
from wor_bridge.core.translation import Translated

NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://wor-bridge.nl/ns/monitoring")
UNKNOWN: Final = "onbekend"
SEXES: Final = frozenset({"male", "female", "other", "unknown"})
WAITING: Final = frozenset({"waiting-list", "no-coach-available"})
CLOSED: Final = frozenset({"completed", "cancelled", "rejected", "failed", "entered-in-error"})


def monitoring_key(task_id: str) -> str:
    """The opaque key of a referral's monitoring facts (one-way from the Task id)."""
    return str(uuid.uuid5(NAMESPACE, task_id))


@dataclass(frozen=True, slots=True)
class ReferralFacts:
    """One referral as monitoring sees it (no patient identifiers)."""

    key: str
    received_at: dt.datetime
    authored_on: dt.date
    practice: str
    source_system: str
    referrer_type: str
    welfare: str
    municipality: str
    sex: str
    age_band: str
    reasons: tuple[str, ...]
    deadline_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class Progress:
    """What one Task/feedback change adds to a referral's monitoring facts.

    Milestone times are kept the first time they are reported (an update never moves them);
    ``conversations`` keeps the highest count; activities are a set."""

    at: dt.datetime
    status: str
    business_status: str | None = None
    reason_code: str | None = None
    accepted_at: dt.datetime | None = None
    first_contact_at: dt.datetime | None = None
    intake_at: dt.datetime | None = None
    activity_at: dt.datetime | None = None
    closed_at: dt.datetime | None = None
    follow_up_at: dt.datetime | None = None
    waiting_since: dt.datetime | None = None
    waiting_until: dt.datetime | None = None
    conversations: int | None = None
    activities: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Trajectory:
    """A referral's facts and progress as the store hands them to the figures."""

    facts: ReferralFacts
    status: str = "requested"
    reason_code: str | None = None
    accepted_at: dt.datetime | None = None
    first_contact_at: dt.datetime | None = None
    intake_at: dt.datetime | None = None
    activity_at: dt.datetime | None = None
    closed_at: dt.datetime | None = None
    follow_up_at: dt.datetime | None = None
    waiting_since: dt.datetime | None = None
    waiting_until: dt.datetime | None = None
    conversations: int | None = None
    feedback_at: dt.datetime | None = None
    delivery_failed_at: dt.datetime | None = None
    activities: tuple[tuple[str, str], ...] = ()


def age_band(birth_date: Any, on: dt.date, edges: tuple[int, ...]) -> str:
    """``"65-74"`` style band of the age at ``on`` (``"85+"`` above the last edge)."""
    if not isinstance(birth_date, str) or len(birth_date) < 10:
        return UNKNOWN
    try:
        born = dt.date.fromisoformat(birth_date[:10])
    except ValueError:
        return UNKNOWN
    age = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    if age < 0:
        return UNKNOWN
    low = 0
    for edge in edges:
        if age < edge:
            return f"{low}-{edge - 1}"
        low = edge
    return f"{low}+"


def municipality_of(
    addresses: list[Any], settings: MonitoringSettings, known: tuple[str, ...] = ()
) -> str:
    """The municipality of the first of ``addresses`` (the current home addresses routing uses)
    that names one: its district (spelled as ``known`` spells it), else the configured postcode
    ranges; else unknown. Only the name is returned."""
    spelled = {k.strip().lower(): k for k in known}
    for address in addresses:
        if not isinstance(address, dict):
            continue
        district = address.get("district")
        if isinstance(district, str) and district.strip():
            return spelled.get(district.strip().lower(), district.strip().title())
        postcode = str(address.get("postalCode") or "").replace(" ", "")[:4]
        if postcode.isdigit() and len(postcode) == 4:
            for rule in settings.postcodes:
                if rule.low <= int(postcode) <= rule.high:
                    return rule.municipality
    return UNKNOWN


def _practice(resource: dict[str, Any]) -> str:
    found = identifiers_in(resource, ids.PRACTICE_IDENTIFYING_SYSTEMS)
    if not found:
        return UNKNOWN
    system, value = found[0]
    return f"{'agb' if system == ids.AGB else 'ura'}:{value}"


def referral_facts(
    translated: Translated,
    settings: MonitoringSettings,
    *,
    task_id: str,
    source_system: str,
    received_at: dt.datetime,
    deadline_at: dt.datetime | None,
    municipalities: tuple[str, ...] = (),
) -> ReferralFacts:
    """The monitoring facts of an accepted referral (read from the gated input and its Bundle)."""
    referral = translated.referral
    patient = referral.patient.resource
    types = [c for s, c in codings(referral.role.resource.get("code")) if s == REFERRER_TYPE_SYSTEM]
    sr_out = next(
        e["resource"]
        for e in translated.bundle["entry"]
        if e["resource"]["resourceType"] == "ServiceRequest"
    )
    reasons = [
        c
        for s, c in codings(referral.service_request.resource.get("reasonCode"))
        + codings(sr_out.get("reasonCode"))
        if s == REFERRAL_REASON_SYSTEM
    ]
    sex = patient.get("gender")
    return ReferralFacts(
        key=monitoring_key(task_id),
        received_at=received_at,
        authored_on=referral.authored_date,
        practice=_practice(referral.practice.resource),
        source_system=source_system,
        referrer_type=types[0] if types else UNKNOWN,
        welfare=translated.destination.id,
        municipality=municipality_of(
            home_addresses(patient.get("address"), referral.at), settings, municipalities
        ),
        sex=sex if isinstance(sex, str) and sex in SEXES else "unknown",
        age_band=age_band(patient.get("birthDate"), referral.authored_date, settings.age_bands),
        reasons=tuple(sorted(set(reasons))),
        deadline_at=deadline_at,
    )


def _moment(text: str | None, now: dt.datetime) -> dt.datetime:
    """A reported time as aware UTC, never after ``now`` (``now`` when it cannot be read)."""
    if not text:
        return now
    try:
        moment = (
            dt.datetime.fromisoformat(text)
            if len(text) > 10
            else dt.datetime.combine(dt.date.fromisoformat(text), dt.time(12), tzinfo=dt.UTC)
        )
    except ValueError:
        return now
    moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return min(moment.astimezone(dt.UTC), now)


def progress_of(
    current: TaskState,
    new: TaskState,
    items: tuple[FeedbackItem, ...],
    *,
    occurred_at: str | None,
    now: dt.datetime,
) -> Progress:
    """The monitoring facts of one applied Task/feedback change (codes and times only)."""
    when = _moment(occurred_at, now)
    kinds = {i.kind: i for i in items}
    milestone = new.business_status

    def seen(kind: str, *milestones: str) -> dt.datetime | None:
        item = kinds.get(kind)
        if item is not None:
            return _moment(item.effective, now)
        return when if milestone in milestones else None

    first = seen("first-contact", "first-contact", "intake-done", "conversations")
    activity = seen("activity-started", "activity-started")
    intake = seen("intake-done", "intake-done")
    closed = seen("closed", "closed")
    if new.status in CLOSED and new.status != current.status:
        closed = closed or when
    if new.status == "completed":
        first = first or when
    counts = [
        int(i.value)
        for i in items
        if i.kind == "conversation-count" and isinstance(i.value, int) and i.value >= 0
    ]
    closure = next((str(i.value) for i in items if i.kind == "closed" and i.value), None)
    reason = closure or (new.reason.code if new.reason and new.reason.code else None)
    if reason is None and new.reason is not None and new.status in CLOSED:
        reason = "zonder-code"  # a free-text reason only: its text is never kept
    waiting = milestone in WAITING
    return Progress(
        at=now,
        status=new.status,
        business_status=milestone,
        reason_code=reason,
        accepted_at=when if new.status == "accepted" and current.status != "accepted" else None,
        first_contact_at=first,
        intake_at=intake,
        activity_at=activity,
        closed_at=closed,
        follow_up_at=seen("follow-up", "follow-up"),
        waiting_since=when if waiting else None,
        waiting_until=when if not waiting and current.business_status in WAITING else None,
        conversations=max(counts) if counts else None,
        activities=tuple(
            sorted(
                {
                    (str(i.category or UNKNOWN), str(i.role or UNKNOWN))
                    for i in items
                    if i.kind == "activity-started"
                }
            )
        ),
    )
