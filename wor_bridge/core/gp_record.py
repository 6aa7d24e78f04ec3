"""The GP record's side of feedback: the transaction Bundles the GP system receives.

``to_gp_bundle`` turns channel-independent ``Feedback`` into Observations (status final, local
category and code, ``basedOn`` the referral and ``subject`` the patient by business identifier,
``performer`` the welfare organisation and the coach), the Task update with ``output``, and a
``Communication`` addressed to the person who referred. ``alert_bundle`` is the first-contact
deadline alert; ``welfare_task_update`` carries a GP-side withdrawal to the welfare side.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Final

from wor_bridge.core import identifiers as ids
from wor_bridge.core.feedback import (
    ACTIVITY_CATEGORY,
    ACTIVITY_ROLE,
    CLOSURE_REASON,
    CS,
    DISPLAY,
    FEEDBACK_CATEGORY,
    FEEDBACK_ITEM,
    NAMESPACE,
    PG_DIMENSIONS,
    Feedback,
    FeedbackItem,
    ReferralContext,
    allowed_items,
    item_key,
)
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.settings import BUSINESS_STATUS_SYSTEM, LOCAL_BASE
from wor_bridge.core.task import TaskState

_GP_REASON: Final = {"cancelled": "gp-withdrew", "entered-in-error": "entered-in-error"}
"""The closure-reason code a GP-side status travels with when the GP gave text only."""


@dataclass(frozen=True, slots=True)
class GpBundle:
    """The Bundle for the GP record, and how many items consent kept back."""

    bundle: JsonDict
    observation_ids: tuple[str, ...]
    dropped: int = 0
    kept: tuple[FeedbackItem, ...] = field(default_factory=tuple)


def _by_identifier(rtype: str, system: str, value: str) -> JsonDict:
    return {"type": rtype, "identifier": {"system": system, "value": value}}


def _concept(system: str, code: str, display: str | None = None) -> JsonDict:
    coding: JsonDict = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def _value(item: FeedbackItem) -> JsonDict:  # noqa: PLR0911 - one return per item kind
    kind = item.kind
    if kind == "first-contact":
        return {"valueDateTime": str(item.value or item.effective)}
    if kind == "intake-done":
        return {"valueBoolean": True}
    if kind in ("conversation-count", *PG_DIMENSIONS):
        return {"valueInteger": int(item.value or 0)}
    if kind == "activity-started":
        out: JsonDict = {"valueCodeableConcept": _concept(ACTIVITY_CATEGORY, str(item.category))}
        if item.role:
            out["component"] = [
                {
                    "code": _concept(FEEDBACK_ITEM, "activity-role"),
                    "valueCodeableConcept": _concept(ACTIVITY_ROLE, item.role),
                }
            ]
        return out
    if kind == "closed":
        return {"valueCodeableConcept": _concept(CLOSURE_REASON, str(item.value))}
    if kind == "follow-up":
        months = int(item.value or 0)
        return {
            "valueQuantity": {
                "value": months,
                "unit": "mo",
                "system": "http://unitsofmeasure.org",
                "code": "mo",
            }
        }
    return {"valueString": str(item.value or "")}


def _observation(
    context: ReferralContext, feedback: Feedback, item: FeedbackItem, oid: str, source: str
) -> JsonDict:
    obs: JsonDict = {
        "resourceType": "Observation",
        "id": oid,
        "meta": {"source": source},
        "identifier": [{"system": ids.URI_IDENTIFIER, "value": f"urn:uuid:{oid}"}],
        "basedOn": [_by_identifier("ServiceRequest", *context.his_identifier)],
        "status": "entered-in-error" if item.retracted else "final",
        "category": [
            _concept(FEEDBACK_CATEGORY, "wor-feedback", "Terugkoppeling Welzijn op Recept")
        ],
        "code": _concept(FEEDBACK_ITEM, item.kind, DISPLAY.get(item.kind)),
    }
    if context.patient_identifier:
        obs["subject"] = _by_identifier("Patient", *context.patient_identifier)
    obs["effectiveDateTime"] = item.effective
    performers = [_by_identifier("Organization", *context.welfare)]
    performers[0]["display"] = context.welfare_name
    if feedback.coach is not None and (feedback.coach.identifier or feedback.coach.name):
        coach: JsonDict = {"type": "PractitionerRole"}
        if feedback.coach.identifier:
            coach["identifier"] = {
                "system": feedback.coach.identifier[0],
                "value": feedback.coach.identifier[1],
            }
        if feedback.coach.name:
            coach["display"] = feedback.coach.name
        performers.append(coach)
    obs["performer"] = performers
    obs.update(_value(item))
    return obs


def summary(state: TaskState, items: tuple[FeedbackItem, ...]) -> str:
    """The one-line message for the referrer's inbox (status and milestones, no free text)."""
    parts = [f"Welzijn op Recept: status {state.status}"]
    if state.business_status:
        parts.append(state.business_status)
    parts += [
        f"correctie: {DISPLAY.get(i.kind, i.kind).lower()} ingetrokken"
        if i.retracted
        else DISPLAY.get(i.kind, i.kind).lower()
        for i in items
        if i.kind != "note" or i.retracted
    ]
    return "; ".join(parts)


def to_gp_bundle(
    context: ReferralContext,
    feedback: Feedback,
    state: TaskState,
    mapping_ref: str,
    *,
    message: str | None = None,
    earlier: tuple[str, ...] = (),
) -> GpBundle:
    """The transaction Bundle for the GP record: Observations, the Task, a Communication.

    ``earlier`` are the ids of Observations sent before and still standing: the Task's
    ``output`` lists them too. A retracted item (``entered-in-error``) goes as its Observation
    (same id) with that status, and leaves ``output``.
    """
    source = f"{LOCAL_BASE}/mapping/{mapping_ref.replace('@', '|')}"
    kept, dropped = allowed_items(context, feedback.items)
    entries: list[JsonDict] = []
    obs_ids = []
    withdrawn = set()
    for item in kept:
        oid = item_key(context.task_id, item)
        if item.retracted:
            withdrawn.add(oid)
        else:
            obs_ids.append(oid)
        obs = _observation(context, feedback, item, oid, source)
        entries.append(_put(obs))
    outputs = obs_ids + sorted(set(earlier) - set(obs_ids) - withdrawn)
    entries.append(_put(_task(context, state, outputs, source, feedback.occurred_at)))
    text = message or summary(state, kept)
    entries.append(_put(_communication(context, feedback, text, source)))
    bundle: JsonDict = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(NAMESPACE, f"{context.task_id}|gp|{feedback.occurred_at}|{text}")),
        "meta": {"tag": [{"system": f"{CS}mapping", "code": mapping_ref}]},
        "type": "transaction",
        "entry": entries,
    }
    return GpBundle(bundle, tuple(obs_ids), dropped, kept)


def _task(
    context: ReferralContext, state: TaskState, obs_ids: list[str], source: str, when: str
) -> JsonDict:
    task: JsonDict = {
        "resourceType": "Task",
        "id": context.task_id,
        "meta": {"source": source},
        "identifier": [{"system": ids.URI_IDENTIFIER, "value": f"urn:uuid:{context.task_id}"}],
        "basedOn": [_by_identifier("ServiceRequest", *context.his_identifier)],
        "status": state.status,
    }
    if state.reason is not None:
        reason: JsonDict = {}
        if state.reason.code:
            reason = _concept(CLOSURE_REASON, state.reason.code)
        if state.reason.text and context.feedback_allowed:  # free text only under consent
            reason["text"] = state.reason.text
        if reason:
            task["statusReason"] = reason
    if state.business_status:
        task["businessStatus"] = _concept(BUSINESS_STATUS_SYSTEM, state.business_status)
    task["intent"] = "order"
    task["code"] = _concept("http://hl7.org/fhir/CodeSystem/task-code", "fulfill")
    task["focus"] = _by_identifier("ServiceRequest", *context.his_identifier)
    if context.patient_identifier:
        task["for"] = _by_identifier("Patient", *context.patient_identifier)
    task["lastModified"] = when
    if context.referrer:
        task["requester"] = _by_identifier(*context.referrer[0])
    task["owner"] = _by_identifier("Organization", *context.welfare)
    if obs_ids:
        task["output"] = [
            {
                "type": _concept(FEEDBACK_CATEGORY, "wor-feedback"),
                "valueReference": {"reference": f"urn:uuid:{oid}"},
            }
            for oid in obs_ids
        ]
    return task


def _communication(
    context: ReferralContext, feedback: Feedback, text: str, source: str
) -> JsonDict:
    cid = str(
        uuid.uuid5(NAMESPACE, f"{context.task_id}|communication|{feedback.occurred_at}|{text}")
    )
    comm: JsonDict = {
        "resourceType": "Communication",
        "id": cid,
        "meta": {"source": source},
        "basedOn": [_by_identifier("ServiceRequest", *context.his_identifier)],
        "partOf": [{"reference": f"urn:uuid:{context.task_id}"}],
        "status": "completed",
        "category": [_concept(FEEDBACK_CATEGORY, "wor-feedback")],
    }
    if context.patient_identifier:
        comm["subject"] = _by_identifier("Patient", *context.patient_identifier)
    comm["sent"] = feedback.occurred_at
    comm["recipient"] = [_by_identifier(*context.referrer[0])] if context.referrer else []
    comm["sender"] = _by_identifier("Organization", *context.welfare)
    comm["payload"] = [{"contentString": text}]
    return comm


def _put(resource: JsonDict) -> JsonDict:
    rtype, rid = resource["resourceType"], resource["id"]
    return {
        "fullUrl": f"urn:uuid:{rid}",
        "resource": resource,
        "request": {"method": "PUT", "url": f"{rtype}/{rid}"},
    }


def alert_bundle(context: ReferralContext, now: str, mapping_ref: str) -> JsonDict:
    """A Communication to the referrer: the first-contact deadline passed without first contact."""
    source = f"{LOCAL_BASE}/mapping/{mapping_ref.replace('@', '|')}"
    text = (
        "Welzijn op Recept: nog geen eerste contact gemeld; de termijn verliep op "
        f"{context.first_contact_deadline or 'onbekend'}"
    )
    feedback = Feedback(task_id=context.task_id, occurred_at=now)
    comm = _communication(context, feedback, text, source)
    comm["priority"] = "urgent"
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(NAMESPACE, f"{context.task_id}|deadline-alert")),
        "meta": {"tag": [{"system": f"{CS}mapping", "code": mapping_ref}]},
        "type": "transaction",
        "entry": [_put(comm)],
    }


def welfare_task_update(stored: JsonDict, state: TaskState, when: str) -> JsonDict:
    """A transaction Bundle that updates the Task at the welfare side (a GP-side cancellation).

    The Task is the one delivered (same id, or found by the bridge identifier with a conditional
    update where the destination assigned its own ids), with the new status and the reason as a
    ``closure-reason`` code only: the GP's free text may say more about the patient than a
    referral may carry, so it stays at the bridge (a reason given as text only travels as
    ``gp-withdrew`` or ``entered-in-error``).
    """
    entry = next(e for e in stored["entry"] if e["resource"]["resourceType"] == "Task")
    task = {k: v for k, v in entry["resource"].items() if k != "businessStatus"}
    task["status"] = state.status
    code = (state.reason.code if state.reason is not None else None) or _GP_REASON.get(state.status)
    if code:
        task["statusReason"] = _concept(CLOSURE_REASON, code)
    task["lastModified"] = when
    identifier = task["identifier"][0]
    if "id" in task:
        request = {"method": "PUT", "url": f"Task/{task['id']}"}
    else:
        request = {
            "method": "PUT",
            "url": f"Task?identifier={identifier['system']}|{identifier['value']}",
        }
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(NAMESPACE, f"{identifier['value']}|update|{state.status}|{when}")),
        "type": "transaction",
        "entry": [{"fullUrl": entry["fullUrl"], "resource": task, "request": request}],
    }


DELIVERY_TEXT: Final = {
    "delivery-failed": "Welzijn op Recept: de verwijzing kon niet worden afgeleverd bij {welfare};"
    " er wordt niet meer geprobeerd",
    "queued": "Welzijn op Recept: de verwijzing wordt opnieuw aangeboden aan {welfare}",
}
"""The referrer's message per delivery state the GP record is told of (no patient data)."""


def delivery_notice(
    context: ReferralContext, state: TaskState, now: str, mapping_ref: str
) -> JsonDict:
    """The GP record hears of the referral's delivery: the Task as the GP reads it at the bridge
    (``failed`` / ``delivery-failed`` after a dead letter; ``requested`` / ``queued`` when an
    operator sends it again) and a Communication addressed to the referrer (urgent when failed).
    """
    source = f"{LOCAL_BASE}/mapping/{mapping_ref.replace('@', '|')}"
    business = state.business_status or ""
    text = DELIVERY_TEXT[business].format(welfare=context.welfare_name or "de welzijnsorganisatie")
    feedback = Feedback(task_id=context.task_id, occurred_at=now)
    comm = _communication(context, feedback, text, source)
    if business == "delivery-failed":
        comm["priority"] = "urgent"
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(NAMESPACE, f"{context.task_id}|delivery|{business}|{now}")),
        "meta": {"tag": [{"system": f"{CS}mapping", "code": mapping_ref}]},
        "type": "transaction",
        "entry": [_put(_task(context, state, [], source, now)), _put(comm)],
    }
