"""Notified pull towards STU3 welfare platforms: the notification Task and the pullable resources.

Pure functions over FHIR JSON dicts, no I/O. The bridge keeps the referral and POSTs a
*notification* to the receiver: an STU3 ``Task`` that carries no personal data (no name, address,
telecom, birth date, BSN nor free text), only identifiers of the parties and references to what
the receiver may pull from the bridge's STU3 read endpoint (``{base_url}/fhir/stu3/<Type>/<id>``).
``pullable`` gives exactly those resources, converted with ``wor_bridge.core.stu3.convert.to_stu3``.

Shape, after the public specifications consulted (DOMAIN.md section 7 for the AGB OID form):

- Twiin TA Notified Pull, as restated by the Nuts "Application on Nuts Notified Pull"
  (github.com/jorritspee/Application-on-Nuts-Notified-Pull, README section 4.1 and
  ``Notification-Task-Template.json`` / ``Workflow-Task-Template.json``): ``status`` requested,
  ``requester.agent.identifier`` and ``requester.onBehalfOf.identifier`` for the sender,
  ``owner.identifier`` for the receiver, ``restriction.period`` for the access window, and
  ``input`` slices typed in ``http://fhir.nl/fhir/NamingSystem/TaskParameter`` where
  ``read-available-resource`` names one resource instance the receiver may read. The workflow
  Task template codes the task SNOMED 3457005 "Patient referral" with intent ``order``.
- Nuts eOverdracht / the Nuts Bolt: the Task is read without a personal authentication, so it
  "must never carry personal data"; the BSN stays off the Task.

Differences from TA NP kept on purpose (the bridge's single-Task variant): one Task both notifies
and references the resources (no separate workflow Task, no ``get-workflow-task`` nor
``authorization-base`` inputs: tokens are issued by the transport, not this builder), and the
parties are identified by AGB in OID form (VIPLive) rather than by Nuts DIDs.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from wor_bridge.connectors.outgoing import (
    Outgoing,
    configured_identifier,
    create,
    identifier_query,
    in_form,
    request_id,
    stu3_headers,
    update_task,
)
from wor_bridge.core.delivery import HttpRequest
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.identifiers import AGB, SNOMED, URA, URI_IDENTIFIER, normalize_system
from wor_bridge.core.settings import Destination, Settings
from wor_bridge.core.stu3.convert import to_stu3

AGB_OID: Final = "urn:oid:2.16.840.1.113883.2.4.6.1"
TASK_PARAMETER: Final = "http://fhir.nl/fhir/NamingSystem/TaskParameter"
READ_AVAILABLE_RESOURCE: Final = "read-available-resource"
PATIENT_REFERRAL: Final = ("3457005", "Patient referral")

# R4 types the receiver may pull, in the order the Task lists them.
PULLED_TYPES: Final = (
    "ServiceRequest",
    "Patient",
    "PractitionerRole",
    "Practitioner",
    "Organization",
    "Consent",
)
_STU3_NAME: Final = {"ServiceRequest": "ReferralRequest"}
_FHIR_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_AGB: Final = re.compile(r"[0-9]{8}")


@dataclass(frozen=True)
class Entry:
    """One pullable resource of a referral Bundle: its ``fullUrl``, STU3 type and logical id."""

    full_url: str
    stu3_type: str
    id: str
    resource: JsonDict

    @property
    def key(self) -> str:
        """``<STU3 type>/<id>``, the relative reference the STU3 endpoint serves it under."""
        return f"{self.stu3_type}/{self.id}"


def referral_entries(referral_bundle_r4: JsonDict) -> list[Entry]:
    """The pullable resources of an R4 referral Bundle, ordered by ``PULLED_TYPES`` then position.

    A resource without ``id`` (POST-mode transaction entry) gets the uuid of its ``urn:uuid:``
    ``fullUrl`` (or the last segment of a URL) as id; the R4 resource is copied, never changed.
    """
    if referral_bundle_r4.get("resourceType") != "Bundle":
        raise ValueError("a referral Bundle is needed")
    found: list[Entry] = []
    for raw in referral_bundle_r4.get("entry") or []:
        resource = raw.get("resource") if isinstance(raw, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") not in PULLED_TYPES:
            continue
        rtype = str(resource["resourceType"])
        full_url = raw.get("fullUrl")
        rid = _resource_id(resource, full_url if isinstance(full_url, str) else None)
        found.append(
            Entry(
                full_url=full_url if isinstance(full_url, str) and full_url else f"urn:uuid:{rid}",
                stu3_type=_STU3_NAME.get(rtype, rtype),
                id=rid,
                resource={"resourceType": rtype, "id": rid, **_without_id(resource)},
            )
        )
    return sorted(found, key=lambda e: PULLED_TYPES.index(str(e.resource["resourceType"])))


def _without_id(resource: JsonDict) -> JsonDict:
    return {k: v for k, v in resource.items() if k not in ("resourceType", "id")}


def _resource_id(resource: JsonDict, full_url: str | None) -> str:
    rid = resource.get("id")
    if not isinstance(rid, str) and full_url:
        rid = full_url.removeprefix("urn:uuid:").rstrip("/").rsplit("/", 1)[-1]
    if not isinstance(rid, str) or not _FHIR_ID.fullmatch(rid):
        raise ValueError(f"{resource.get('resourceType')} has no usable id nor urn:uuid fullUrl")
    return rid


def pullable(referral_bundle_r4: JsonDict) -> dict[str, JsonDict]:
    """What the STU3 read endpoint serves: ``"<STU3 type>/<id>"`` -> the STU3 resource.

    References between the resources (``urn:uuid:`` fullUrls in the transaction Bundle) become
    relative ``<STU3 type>/<id>`` references, resolvable on that endpoint.
    """
    entries = referral_entries(referral_bundle_r4)
    targets = reference_targets(entries, lambda e: e.key)
    return {e.key: retarget(to_stu3(e.resource).resource, targets) for e in entries}


def pull_one(referral_bundle_r4: JsonDict, key: str) -> JsonDict | None:
    """``pullable(bundle).get(key)``, converting only that one resource (what a read needs)."""
    entries = referral_entries(referral_bundle_r4)
    for entry in entries:
        if entry.key == key:
            targets = reference_targets(entries, lambda e: e.key)
            converted: JsonDict = retarget(to_stu3(entry.resource).resource, targets)
            return converted
    return None


def reference_targets(entries: list[Entry], target: Callable[[Entry], str]) -> dict[str, str]:
    """Map every way the Bundle may refer to an entry (fullUrl, R4 and STU3 ``Type/id``)."""
    out: dict[str, str] = {}
    for e in entries:
        new = target(e)
        out[e.full_url] = new
        out[f"{e.resource['resourceType']}/{e.id}"] = new
        out[e.key] = new
    return out


def retarget(node: Any, targets: dict[str, str]) -> Any:
    """A copy of ``node`` with each ``reference`` string found in ``targets`` replaced."""
    if isinstance(node, dict):
        return {
            k: targets.get(v, v)
            if k == "reference" and isinstance(v, str)
            else retarget(v, targets)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [retarget(v, targets) for v in node]
    return node


def agb_identifier(agb: str) -> JsonDict:
    """An AGB as the OID-form Identifier STU3 notified-pull partners expect."""
    if not _AGB.fullmatch(agb):
        raise ValueError("an AGB code has 8 digits")
    return {"system": AGB_OID, "value": agb}


def practice_identifier(referral_bundle_r4: JsonDict) -> JsonDict:
    """The sending practice's AGB (else URA): the Organization of the requesting PractitionerRole.

    Raises ValueError when the referral names no such Organization.
    """
    entries = referral_entries(referral_bundle_r4)
    role = _first(entries, "PractitionerRole")
    org_ref = (role.resource.get("organization") or {}).get("reference")
    for entry in entries:
        if entry.resource["resourceType"] != "Organization" or org_ref not in (
            entry.full_url,
            f"Organization/{entry.id}",
        ):
            continue
        for system in (AGB, URA):
            for ident in entry.resource.get("identifier") or []:
                if normalize_system(str(ident.get("system", ""))) == system and ident.get("value"):
                    return {"system": system, "value": str(ident["value"])}
    raise ValueError("the referral names no practice Organization with an AGB or URA")


def notification_task(
    referral_bundle_r4: JsonDict,
    *,
    task_id: str,
    receiver: JsonDict | str,
    sender: JsonDict | str,
    base_url: str,
) -> JsonDict:
    """The STU3 notification Task for a referral: identifiers and pull references, no personal data.

    ``task_id`` is the bridge's Task uuid; ``receiver`` and ``sender`` are Identifiers (or AGB
    codes, written in OID form); ``base_url`` the bridge's public https base (the STU3
    endpoint lives under ``{base_url}/fhir/stu3``). Raises ValueError on a malformed argument or a
    Bundle without a ServiceRequest and Patient.
    """
    receiver_id = agb_identifier(receiver) if isinstance(receiver, str) else dict(receiver)
    sender_id = agb_identifier(sender) if isinstance(sender, str) else dict(sender)
    task_uuid = str(uuid.UUID(task_id))
    base = base_url.rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise ValueError("base_url must be an absolute http(s) URL")
    entries = referral_entries(referral_bundle_r4)

    def url(entry: Entry) -> str:
        return f"{base}/fhir/stu3/{entry.key}"

    referral = _first(entries, "ServiceRequest")
    patient = _first(entries, "Patient")
    task: JsonDict = {
        "resourceType": "Task",
        "identifier": [{"system": URI_IDENTIFIER, "value": f"urn:uuid:{task_uuid}"}],
        "status": "requested",
        "intent": "order",
        "code": {
            "coding": [
                {"system": SNOMED, "code": PATIENT_REFERRAL[0], "display": PATIENT_REFERRAL[1]}
            ]
        },
        "focus": {"reference": url(referral)},
        "for": {"reference": url(patient)},
    }
    authored = referral.resource.get("authoredOn")
    if isinstance(authored, str):
        task["authoredOn"] = authored
    task["requester"] = {
        "agent": {"identifier": sender_id},
        "onBehalfOf": {"identifier": sender_id},
    }
    task["owner"] = {"identifier": receiver_id}
    period = access_period(referral_bundle_r4)
    if period:
        task["restriction"] = {"period": period}
    task["input"] = [
        {
            "type": {"coding": [{"system": TASK_PARAMETER, "code": READ_AVAILABLE_RESOURCE}]},
            "valueReference": {"reference": url(e)},
        }
        for e in entries
    ]
    return task


def withdrawn_task(
    task_id: str, receiver: JsonDict, status: str, reason: JsonDict | None
) -> JsonDict:
    """The STU3 Task that tells the receiver a notified referral ended at the GP side: the same
    identifier, the new status (and reason), the owner, and no pull references any more."""
    task_uuid = str(uuid.UUID(task_id))
    task: JsonDict = {
        "resourceType": "Task",
        "identifier": [{"system": URI_IDENTIFIER, "value": f"urn:uuid:{task_uuid}"}],
        "status": status,
        "intent": "order",
        "code": {
            "coding": [
                {"system": SNOMED, "code": PATIENT_REFERRAL[0], "display": PATIENT_REFERRAL[1]}
            ]
        },
        "owner": {"identifier": dict(receiver)},
    }
    if reason:
        task["statusReason"] = reason
    return task


def render(message: Outgoing, destination: Destination, settings: Settings) -> list[HttpRequest]:
    """The requests that deliver ``message`` to a notified-pull receiver (ValueError when it is
    not for one): the referral becomes the notification Task, created once (``If-None-Exist`` on
    its identifier, or a PUT to ``Task/<Task uuid>``); a Task update becomes a PUT of the ended
    Task with its reason codes only (the GP's text may name the patient, and the notification
    side carries no personal data) and no pull references."""
    headers = stu3_headers(request_id(message.idempotency_key))
    task_uuid = message.task_uuid
    receiver = configured_identifier(destination.identifier, destination)
    if message.kind in ("referral", "referral-update"):
        note = notification_task(
            message.bundle,
            task_id=task_uuid,
            receiver=receiver,
            sender=in_form(practice_identifier(message.bundle), destination),
            base_url=settings.pull.base_url,
        )
        if message.kind == "referral-update":  # the referral changed: the same notification,
            # updated (its identifier finds it), so the receiver pulls the new content again
            note = {**note, "lastModified": message.created_at}
            return [
                update_task(
                    destination, task_uuid, note, headers, at_id=destination.create == "put"
                )
            ]
        query = identifier_query(task_uuid)
        return [create(destination, "Task", task_uuid, note, headers, conditional_on=query)]
    if message.kind != "task-update":
        raise ValueError("a notified-pull receiver gets referrals and Task updates only")
    task = message.task
    codes = (task.get("statusReason") or {}).get("coding")
    ended = withdrawn_task(
        task_uuid, receiver, str(task["status"]), {"coding": codes} if codes else None
    )
    return [update_task(destination, task_uuid, ended, headers, at_id=destination.create == "put")]


def _first(entries: list[Entry], rtype: str) -> Entry:
    for e in entries:
        if e.resource["resourceType"] == rtype:
            return e
    raise ValueError(f"the referral Bundle has no {rtype}")


def access_period(bundle: JsonDict) -> JsonDict:
    """The R4 Task's ``restriction.period`` (start/end only): how long the receiver may pull."""
    for raw in bundle.get("entry") or []:
        resource = raw.get("resource") if isinstance(raw, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Task":
            period = (resource.get("restriction") or {}).get("period") or {}
            return {k: period[k] for k in ("start", "end") if isinstance(period.get(k), str)}
    return {}
