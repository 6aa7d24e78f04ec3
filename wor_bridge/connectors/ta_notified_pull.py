"""Twiin TA Notified Pull v1.0.1, the sender's messages: Notification (Twiin-01), cancellation
(Twiin-02) and the workflow Task served for Twiin-03. Pure functions over FHIR JSON dicts.

A destination with ``pull_mode = "ta-np"`` gets these instead of the bridge's single-Task
notification (``notified_pull``). Sources per function; the whole reading, with what could not
be confirmed, is docs/standards/ta-notified-pull.md (sections in brackets below).

- One **workflow Task** per referral lives at the bridge (Afsprakenstelsel §10.2.3.1 step 1):
  the referral's Task, read with ``GET {base_url}/fhir/stu3/Task/<task uuid>`` (Twiin-03). Its
  identifier value ``urn:uuid:<task uuid>`` is the ``groupIdentifier`` of every Notification
  about the referral (Nuts tip; [§2.1]).
- Every **Notification** is a new STU3 Task created at the receiver (Twiin-01, §10.2.3.1 steps
  2-5: a new Notification when the data set changes): a new ``identifier`` (uuid5 of the Task and
  the outbox message, so a resend is the same Notification and its ``If-None-Exist`` makes it
  one), ``status`` requested, ``intent`` proposal, ``code`` ``TaskCode#pull-notification``,
  ``basedOn`` the workflow Task (Nuts; [§6]), the sending system and practice in ``requester``,
  the receiver in ``owner``, the access window in ``restriction.period``, and the inputs
  ``authorization-base``, ``get-workflow-task``, one ``read-available-resource`` per pullable
  resource and a ``query-available-resources`` search (``SEARCHES``) [§2.2]. No name, address,
  telecom, birth date nor free text; the BSN only where the receiver agreed to get it on the Task
  (``ta_np.patient``).
- **Cancellation** (Twiin-02, §10.3.2): ``PUT [receiver]/Task?identifier=<Notification
  identifier>`` with that identifier, ``status`` cancelled and ``intent`` proposal, for every
  Notification sent about the referral, when the GP side ends it.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import replace
from typing import Final

from wor_bridge.connectors.notified_pull import (
    Entry,
    access_period,
    practice_identifier,
    referral_entries,
)
from wor_bridge.connectors.outgoing import (
    Outgoing,
    configured_identifier,
    create,
    identifier_query,
    in_form,
    outgoing,
    request_id,
    stu3_headers,
    update_task,
)
from wor_bridge.core import ta_np
from wor_bridge.core.delivery import HttpRequest
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.identifiers import BSN, URI_IDENTIFIER, normalize_system
from wor_bridge.core.settings import Destination, Settings

_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://wor-bridge.nl/ns/ta-np-notification")


def notification_uuid(task_uuid: str, payload: bytes) -> str:
    """The uuid of the Notification that the outbox message ``payload`` becomes: one per message
    (a new one per amendment, Twiin-01 "a new and an updated data set"), the same on a resend."""
    digest = hashlib.sha256(payload).hexdigest()
    return str(uuid.uuid5(_NAMESPACE, f"{uuid.UUID(task_uuid)}|{digest}"))


def _uri(value: str) -> JsonDict:
    return {"system": URI_IDENTIFIER, "value": f"urn:uuid:{value}"}


def _parameter(code: str, **value: object) -> JsonDict:
    return {"type": {"coding": [{"system": ta_np.TASK_PARAMETER, "code": code}]}, **value}


def reference(entry_key: str, options: ta_np.TaNpSettings, base_url: str) -> str:
    """How a Notification or workflow Task points at a pullable resource: ``Type/id`` relative to
    the bridge's STU3 base (VIPLive "5. Pull uitvoeren"), or the absolute URL."""
    if options.references == "relative":
        return entry_key
    return f"{base_url.rstrip('/')}/fhir/stu3/{entry_key}"


def read_inputs(entries: list[Entry], options: ta_np.TaNpSettings, base_url: str) -> list[JsonDict]:
    """One ``read-available-resource`` input per pullable resource (Twiin-01: "references to
    individual FHIR resources made available at the sender")."""
    return [
        _parameter(
            options.read_code, valueReference={"reference": reference(e.key, options, base_url)}
        )
        for e in entries
    ]


SEARCHES: Final = {
    "ReferralRequest": ("_id", "subject"),
    "Patient": ("_id",),
    "PractitionerRole": ("_id",),
    "Practitioner": ("_id",),
    "Organization": ("_id",),
    "Consent": ("_id", "patient"),
}
"""What ``GET [base]/<Type>?...`` answers at the bridge (``query-available-resources``): within
the token's referral only; ``_id`` (comma-separated ids) and the reference to the Patient."""


def query_inputs(
    entries: list[Entry], options: ta_np.TaNpSettings, base_url: str
) -> list[JsonDict]:
    """The ``query-available-resources`` inputs (Twiin-01: "FHIR search queries that can be used
    to retrieve resources made available at the sender"): the patient's Consents, a set whose
    size the receiver cannot know beforehand. None without a Consent or a Patient."""
    patients = [e for e in entries if e.stu3_type == "Patient"]
    if not patients or not any(e.stu3_type == "Consent" for e in entries):
        return []
    query = reference(f"Consent?patient={patients[0].key}", options, base_url)
    return [_parameter(options.query_code, valueString=query)]


def search(
    pullable: dict[str, JsonDict], stu3_type: str, params: list[tuple[str, str]]
) -> list[str] | None:
    """The keys (``Type/id``) of the pullable resources of ``stu3_type`` that match every
    parameter (AND; ``_id`` takes a comma list, ``patient``/``subject`` a ``Patient/<id>`` or
    ``<id>`` reference), or None when the type or a parameter is not one ``SEARCHES`` offers."""
    allowed = SEARCHES.get(stu3_type)
    if allowed is None or any(name not in allowed for name, _ in params):
        return None
    found = []
    for key, resource in pullable.items():
        if not key.startswith(f"{stu3_type}/"):
            continue
        if all(_matches(resource, name, value) for name, value in params):
            found.append(key)
    return found


def _matches(resource: JsonDict, name: str, value: str) -> bool:
    if name == "_id":
        return str(resource.get("id")) in value.split(",")
    target = (resource.get(name) or {}).get("reference")
    return isinstance(target, str) and target in (value, f"Patient/{value}")


def patient_bsn(entries: list[Entry]) -> str | None:
    """The BSN of the referral's Patient as the destination's mapping let it travel, else None."""
    for entry in entries:
        if entry.resource["resourceType"] != "Patient":
            continue
        for ident in entry.resource.get("identifier") or []:
            if normalize_system(str(ident.get("system", ""))) == BSN and ident.get("value"):
                return str(ident["value"])
    return None


def grant(bundle: JsonDict, options: ta_np.TaNpSettings) -> tuple[tuple[str, str], ...]:
    """The authorization assertion's claims for requests about this referral (TA §3.2.2): ``sub``
    the initiating care provider (the practice's AGB or URA, as AORTA's Twiin assertion does),
    and the patient when ``ta_np.patient`` is ``token-claim`` and the BSN travels."""
    claims = [("sub", str(practice_identifier(bundle)["value"]))]
    bsn = patient_bsn(referral_entries(bundle))
    if options.patient == "token-claim" and bsn:
        claims.append((options.patient_claim, bsn))
    return tuple(claims)


def notification(
    message: Outgoing, destination: Destination, settings: Settings, key: bytes
) -> JsonDict:
    """The Twiin-01 Notification Task (STU3 JSON) for a ``referral``/``referral-update`` message.

    ``key``: the authorization base key (``[pull] token_key``). Raises ValueError when the
    referral lacks a ServiceRequest, Patient or practice identifier.
    """
    options = destination.ta_np
    base = settings.pull.base_url.rstrip("/")
    task_uuid = message.task_uuid
    entries = referral_entries(message.bundle)
    agent = (
        {"system": options.sender_system.system, "value": options.sender_system.value}
        if options.sender_system
        else {"system": URI_IDENTIFIER, "value": base}
    )
    task: JsonDict = {
        "resourceType": "Task",
        "identifier": [_uri(notification_uuid(task_uuid, message.payload))],
        "basedOn": [{"reference": reference(f"Task/{task_uuid}", options, base)}],
        "groupIdentifier": _uri(task_uuid),
        "status": "requested",
        "intent": "proposal",
        "code": {"coding": [{"system": ta_np.TASK_CODE, "code": ta_np.PULL_NOTIFICATION}]},
    }
    bsn = patient_bsn(entries)
    if options.patient == "identifier" and bsn:
        task["for"] = {"identifier": {"system": BSN, "value": bsn}}
    task["authoredOn"] = message.created_at
    task["requester"] = {
        "agent": {"identifier": agent},
        "onBehalfOf": {"identifier": in_form(practice_identifier(message.bundle), destination)},
    }
    if options.owner:
        task["owner"] = {"identifier": configured_identifier(destination.identifier, destination)}
    period = access_period(message.bundle)
    if period:
        task["restriction"] = {"period": period}
    task["input"] = [
        _parameter(ta_np.AUTHORIZATION_BASE, valueString=ta_np.authorization_base(key, task_uuid)),
        _parameter(ta_np.GET_WORKFLOW_TASK, valueBoolean=True),
        *read_inputs(entries, options, base),
        *query_inputs(entries, options, base),
    ]
    return task


def cancellation(notification_id: str) -> JsonDict:
    """The Twiin-02 body: the Notification's identifier, ``status`` cancelled, ``intent``
    proposal (the table of §10.3.2; nothing else)."""
    return {
        "resourceType": "Task",
        "identifier": [_uri(notification_id)],
        "status": "cancelled",
        "intent": "proposal",
    }


def workflow_task(
    served: JsonDict, task_id: str, bundle: JsonDict, destination: Destination, base_url: str
) -> JsonDict:
    """The workflow Task a TA receiver reads (Twiin-03): the referral's STU3 Task as served, with
    the ``groupIdentifier`` its Notifications carry and the resources it may read. The TA leaves
    its content to the workflow ("no generic specification ... more specific than FHIR"); it
    references the Patient, never carries the BSN (Nuts: no BSN on a Task read without a
    personal authentication)."""
    options = destination.ta_np
    entries = referral_entries(bundle)
    out = {k: v for k, v in served.items() if k != "input"}
    out["groupIdentifier"] = _uri(str(uuid.UUID(task_id)))
    out["input"] = [
        *(served.get("input") or []),
        *read_inputs(entries, options, base_url),
        *query_inputs(entries, options, base_url),
    ]
    return out


def render(message: Outgoing, destination: Destination, settings: Settings) -> list[HttpRequest]:
    """The requests for a TA receiver: a referral or amendment is a new Notification, created once
    (``If-None-Exist`` on its identifier; Twiin-01); a Task update from the GP side (withdrawal,
    redirect, consent withdrawn: the referral ends) cancels every Notification sent (Twiin-02).
    Each request carries the grant claims for the Twiin token request. ValueError without
    ``[pull] token_key`` or for another kind of message."""
    if settings.pull.token_key is None:
        raise ValueError("TA notified pull needs [pull] token_key")
    key = settings.pull.token_key.get_secret_value().encode()
    headers = stu3_headers(request_id(message.idempotency_key))
    options = destination.ta_np
    if message.kind in ("referral", "referral-update"):
        note = notification(message, destination, settings, key)
        nid = note["identifier"][0]["value"].removeprefix("urn:uuid:")
        request = create(
            destination, "Task", nid, note, headers, conditional_on=identifier_query(nid)
        )
        return [replace(request, grant=grant(message.bundle, options))]
    if message.kind != "task-update":
        raise ValueError("a notified-pull receiver gets referrals and Task updates only")
    sent = [outgoing(p, "", "") for p in message.earlier()]
    notified = [m for m in sent if m.kind in ("referral", "referral-update")]
    if not notified:
        raise ValueError("no Notification was sent for this Task")
    claims = grant(notified[-1].bundle, options)
    cancels = []
    ids = dict.fromkeys(notification_uuid(message.task_uuid, m.payload) for m in notified)
    for nid in ids:  # once each, in the order sent (a replayed referral is the same Notification)
        request = update_task(destination, nid, cancellation(nid), headers, at_id=False)
        cancels.append(replace(request, grant=claims))
    return cancels
