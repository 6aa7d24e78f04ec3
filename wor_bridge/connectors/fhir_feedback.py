"""Connector for welfare systems that speak FHIR R4: their Task and Observations -> ``Feedback``.

Used by the bridge's own FHIR endpoints (``PUT``/``PATCH Task``, ``POST Observation`` or a
Bundle of them) and by polling. Pure: FHIR JSON in, values or a refusal message out. Messages
name the element and the expectation, never a value.
"""

from __future__ import annotations

from typing import Any

from wor_bridge.core import feedback as fb
from wor_bridge.core.settings import BUSINESS_STATUS_SYSTEM
from wor_bridge.core.task import FINISHED, STATUSES

JsonDict = dict[str, Any]


class FeedbackFormatError(ValueError):
    """The resource does not say what the bridge needs; ``location`` names where."""

    def __init__(self, location: str, message: str) -> None:
        self.location = location
        super().__init__(f"{location}: {message}")


def _code(concept: Any, system: str) -> str | None:
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and coding.get("system") == system:
            code = coding.get("code")
            return code if isinstance(code, str) else None
    return None


def task_feedback(task_id: str, task: JsonDict, occurred_at: str) -> fb.Feedback:
    """The status, businessStatus and statusReason of a welfare-side Task."""
    status = task.get("status")
    if status not in STATUSES:
        raise FeedbackFormatError("Task.status", "must be a Task status the referral uses")
    reason = task.get("statusReason")
    reason_code = _code(reason, fb.CLOSURE_REASON)
    reason_text = reason.get("text") if isinstance(reason, dict) else None
    business = task.get("businessStatus")
    business_code = _code(business, BUSINESS_STATUS_SYSTEM)
    if business is not None and business_code is None:
        raise FeedbackFormatError(
            "Task.businessStatus", f"must be coded in {BUSINESS_STATUS_SYSTEM}"
        )
    when = task.get("lastModified") if isinstance(task.get("lastModified"), str) else occurred_at
    items: list[fb.FeedbackItem] = []
    if status in FINISHED and reason_code:
        items.append(fb.FeedbackItem("closed", str(when), reason_code))
    return fb.Feedback(
        task_id=task_id,
        occurred_at=str(when),
        status=str(status),
        business_status=business_code,
        reason_code=reason_code,
        reason_text=reason_text if isinstance(reason_text, str) else None,
        items=tuple(items),
    )


def observation_item(  # noqa: PLR0912 - one branch per feedback item kind
    observation: JsonDict, location: str = "Observation"
) -> fb.FeedbackItem:
    """One feedback item from an Observation coded with the feedback-item CodeSystem."""
    kind = _code(observation.get("code"), fb.FEEDBACK_ITEM)
    if kind is None or kind not in fb.ITEM_KINDS:
        raise FeedbackFormatError(f"{location}.code", f"must be a code of {fb.FEEDBACK_ITEM}")
    when = observation.get("effectiveDateTime") or observation.get("issued")
    if not isinstance(when, str):
        raise FeedbackFormatError(f"{location}.effectiveDateTime", "must be present")
    value: str | int | bool | None = None
    category = role = None
    if kind == "first-contact":
        value = observation.get("valueDateTime") or when
    elif kind == "intake-done":
        value = True
    elif kind in ("conversation-count", *fb.PG_DIMENSIONS):
        value = observation.get("valueInteger")
        if not isinstance(value, int) or isinstance(value, bool):
            raise FeedbackFormatError(f"{location}.valueInteger", "must be an integer")
    elif kind == "activity-started":
        category = _code(observation.get("valueCodeableConcept"), fb.ACTIVITY_CATEGORY)
        if category is None:
            raise FeedbackFormatError(
                f"{location}.valueCodeableConcept", f"must be coded in {fb.ACTIVITY_CATEGORY}"
            )
        for component in observation.get("component") or []:
            role = _code(component.get("valueCodeableConcept"), fb.ACTIVITY_ROLE) or role
    elif kind == "closed":
        value = _code(observation.get("valueCodeableConcept"), fb.CLOSURE_REASON)
        if value is None:
            raise FeedbackFormatError(
                f"{location}.valueCodeableConcept", f"must be coded in {fb.CLOSURE_REASON}"
            )
    elif kind == "follow-up":
        quantity = observation.get("valueQuantity") or {}
        value = int(quantity.get("value") or 0)
    else:
        note = observation.get("valueString")
        if not isinstance(note, str):
            raise FeedbackFormatError(f"{location}.valueString", "must be the short note")
        value = note
    retracted = observation.get("status") == "entered-in-error"
    return fb.FeedbackItem(kind, when, value, category, role, retracted=retracted)


def referenced_ids(observation: JsonDict) -> tuple[str | None, str | None]:
    """(ServiceRequest id from ``basedOn``, Task id from ``focus``) the Observation points at."""
    request = task = None
    for ref in observation.get("basedOn") or []:
        text = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(text, str) and "ServiceRequest/" in text:
            request = text.rsplit("/", 1)[-1]
    for ref in observation.get("focus") or []:
        text = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(text, str) and "Task/" in text:
            task = text.rsplit("/", 1)[-1]
    return request, task
