"""Feedback from the welfare side, independent of the channel, and its FHIR form for the GP record.

Every channel (FHIR on the bridge, polling, signed webhook, later notified pull) produces the same
``Feedback`` value. ``to_gp_bundle`` turns it into the transaction Bundle the GP record receives:
one ``Observation`` per item (status final, local category and code, ``basedOn`` the referral,
``subject`` the patient, ``performer`` the welfare organisation and the coach when given), the
Task update with ``output`` references, and a ``Communication`` addressed to **the person who
referred**. References point at the GP system's own records by business identifier (its referral
number, the BSN, the referrer's AGB/UZI), since the GP record never saw the bridge's ids.

An Observation reported ``entered-in-error`` retracts the earlier item with the same key: the GP
record gets that Observation again with status ``entered-in-error``.

Feedback items travel only under the referral's consent (a Consent provision with code
``consent-permission#feedback``); Positieve Gezondheid scores additionally need ``#pg-scores``.
Without permission only the status travels; dropped items are counted.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from wor_bridge.core import identifiers as ids
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.settings import LOCAL_BASE

CS: Final = f"{LOCAL_BASE}/CodeSystem/"
FEEDBACK_ITEM: Final = CS + "feedback-item"
FEEDBACK_CATEGORY: Final = CS + "feedback-category"
ACTIVITY_CATEGORY: Final = CS + "activity-category"
ACTIVITY_ROLE: Final = CS + "activity-role"
CLOSURE_REASON: Final = CS + "closure-reason"
CONSENT_PERMISSION: Final = CS + "consent-permission"
NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://wor-bridge.nl/ns/feedback")
PG_DIMENSIONS: Final = (
    "pg-lichaamsfuncties",
    "pg-mentaal-welbevinden",
    "pg-zingeving",
    "pg-kwaliteit-van-leven",
    "pg-meedoen",
    "pg-dagelijks-functioneren",
)
ITEM_KINDS: Final = frozenset(
    {
        "first-contact",
        "intake-done",
        "conversation-count",
        "activity-started",
        "closed",
        "follow-up",
        "note",
        *PG_DIMENSIONS,
    }
)
DISPLAY: Final = {
    "first-contact": "Eerste contact (datum)",
    "intake-done": "Intake gedaan",
    "conversation-count": "Aantal gesprekken",
    "activity-started": "Activiteit gestart",
    "closed": "Afgesloten (reden)",
    "follow-up": "Nazorg / follow-up",
    "note": "Korte toelichting",
}


@dataclass(frozen=True, slots=True)
class Coach:
    """The coach, when the welfare system names one (role and name only; never required)."""

    name: str | None = None
    identifier: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class FeedbackItem:
    """One fact the coach already recorded: a milestone, a count, an activity, a closure, a note."""

    kind: str
    effective: str
    value: str | int | bool | None = None
    category: str | None = None
    role: str | None = None
    retracted: bool = False
    """An Observation ``entered-in-error``: the earlier report of this same fact (same item
    key) is withdrawn, and the GP record gets the correction."""


@dataclass(frozen=True, slots=True)
class Feedback:
    """A status change and/or feedback items for one Task, whatever channel brought it."""

    task_id: str
    occurred_at: str
    status: str | None = None
    business_status: str | None = None
    reason_code: str | None = None
    reason_text: str | None = None
    items: tuple[FeedbackItem, ...] = ()
    coach: Coach | None = None


@dataclass(frozen=True, slots=True)
class ReferralContext:
    """What the GP-record Bundle needs from the stored referral."""

    task_id: str
    his_identifier: tuple[str, str]
    patient_identifier: tuple[str, str] | None
    referrer: tuple[tuple[str, str, str], ...]
    """(resource type, system, value) of the referrer's identifiers, the role's first."""
    welfare: tuple[str, str]
    welfare_name: str
    feedback_allowed: bool
    pg_allowed: bool
    first_contact_deadline: str | None = None


def _codes(provision: JsonDict) -> set[str]:
    return {
        coding["code"]
        for concept in provision.get("code") or []
        for coding in concept.get("coding") or []
        if coding.get("system") == CONSENT_PERMISSION and isinstance(coding.get("code"), str)
    }


def _permissions(provision: Any) -> set[str]:
    """Permissions a (nested) provision grants; a nested deny takes its codes away again."""
    if not isinstance(provision, dict) or provision.get("type", "permit") != "permit":
        return set()
    found = _codes(provision)
    nested = [p for p in provision.get("provision") or [] if isinstance(p, dict)]
    for sub in nested:
        found |= _permissions(sub)
    for sub in nested:
        if sub.get("type") == "deny":
            found -= _codes(sub)
    return found


def context_from_bundle(task_id: str, bundle: JsonDict, patient_id: str) -> ReferralContext:
    """Read the context out of the stored transaction Bundle and the audit patient id."""
    resources: dict[str, list[JsonDict]] = {}
    for entry in bundle["entry"]:
        resources.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    request = resources["ServiceRequest"][0]
    his = request["identifier"][0]
    people: list[tuple[str, str, str]] = []
    for rtype in ("PractitionerRole", "Practitioner"):
        for res in resources.get(rtype, []):
            people += [
                (rtype, i["system"], i["value"])
                for i in res.get("identifier") or []
                if i.get("system") in ids.PERSON_IDENTIFIER_SYSTEMS
            ]
    welfare_ref = request["performer"][0]["reference"]
    welfare = next(
        e["resource"]
        for e in bundle["entry"]
        if e["fullUrl"] == welfare_ref and e["resource"]["resourceType"] == "Organization"
    )
    consent = resources["Consent"][0]
    allowed = _permissions(consent.get("provision"))
    system, _, value = patient_id.partition("|")
    task = resources["Task"][0]
    return ReferralContext(
        task_id=task_id,
        his_identifier=(his["system"], his["value"]),
        patient_identifier=(system, value) if system == ids.BSN and value else None,
        referrer=tuple(dict.fromkeys(people)),
        welfare=(welfare["identifier"][0]["system"], welfare["identifier"][0]["value"]),
        welfare_name=str(welfare.get("name", "")),
        feedback_allowed="feedback" in allowed,
        pg_allowed="feedback" in allowed and "pg-scores" in allowed,
        first_contact_deadline=(task.get("restriction") or {}).get("period", {}).get("end"),
    )


ONCE_KINDS: Final = frozenset({"first-contact", "intake-done", "closed"})
"""Facts that happen once per trajectory: their key leaves out when they were reported."""


def item_key(task_id: str, item: FeedbackItem) -> str:
    """A stable id for an item: the same fact reported twice has the same id (idempotent)."""
    parts = (
        task_id,
        item.kind,
        "" if item.kind in ONCE_KINDS else item.effective,
        str(item.value),
        str(item.category),
        str(item.role),
    )
    return str(uuid.uuid5(NAMESPACE, "|".join(parts)))


RETRACTED: Final = "retracted:"
"""Prefix of the recorded key that marks an item as withdrawn (``entered-in-error``)."""


def retraction_key(task_id: str, item: FeedbackItem) -> str:
    """The recorded key saying the item with this fact's key was withdrawn."""
    return RETRACTED + item_key(task_id, item)


def live_keys(keys: Iterable[str]) -> set[str]:
    """The recorded items still standing: item keys, without the withdrawn ones."""
    known = set(keys)
    return {k for k in known if not k.startswith(RETRACTED) and RETRACTED + k not in known}


def allowed_items(
    context: ReferralContext, items: tuple[FeedbackItem, ...]
) -> tuple[tuple[FeedbackItem, ...], int]:
    """The items consent lets travel (each once), and how many were dropped."""
    kept: list[FeedbackItem] = []
    for item in dict.fromkeys(items):
        if not context.feedback_allowed:
            continue
        if item.kind in PG_DIMENSIONS and not context.pg_allowed:
            continue
        kept.append(item)
    return tuple(kept), len(set(items)) - len(kept)
