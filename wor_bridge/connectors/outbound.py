"""Which requests deliver an outbox message, by destination type.

Every message to a welfare destination is stored as an R4 transaction Bundle: the referral
(with a ServiceRequest), or a GP-side update of the Task (a withdrawal). The destination's
``type`` decides what goes on the wire:

- ``fhir-r4``: the Bundle itself (``fhir_r4.render``);
- ``notified-pull-stu3``: no patient data. The referral becomes an STU3 notification Task,
  ``POST [endpoint]/Task`` with ``If-None-Exist`` on its identifier (a repeat after a lost
  response creates nothing new); the receiver pulls the rest from the bridge. A withdrawal
  becomes ``PUT [endpoint]/Task?identifier=...`` with the new status and no pull references (the
  bridge refuses pulls from then on anyway);
- ``zorgdomein-stu3``: the referral as an STU3 document Bundle, ``POST [endpoint]/Bundle``
  (its id derives from the Task id, so a repeat is the same document); a withdrawal is the STU3
  Task, ``PUT [endpoint]/Task?identifier=...``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Final

from wor_bridge.connectors import fhir_r4, notified_pull, zorgdomein
from wor_bridge.core.delivery import HttpRequest
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.identifiers import URI_IDENTIFIER, oid_form
from wor_bridge.core.settings import Destination, IdentifierSetting, Settings
from wor_bridge.core.stu3.convert import to_stu3

STU3_JSON: Final = "application/fhir+json; fhirVersion=3.0"
_DOCUMENT_NS: Final = uuid.UUID("6f0a3c1e-2b7d-5e4a-9c8b-1d2e3f4a5b6c")


def _body(resource: JsonDict) -> bytes:
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()


def identifier(setting: IdentifierSetting, destination: Destination) -> JsonDict:
    """A configured identifier in the form the destination expects."""
    system = oid_form(setting.system) if destination.identifier_form == "oid" else setting.system
    return {"system": system, "value": setting.value}


def _in_form(ident: JsonDict, destination: Destination) -> JsonDict:
    if destination.identifier_form == "oid":
        return {**ident, "system": oid_form(str(ident["system"]))}
    return ident


def _task(bundle: JsonDict) -> JsonDict:
    for entry in bundle.get("entry") or []:
        if entry["resource"]["resourceType"] == "Task":
            resource: JsonDict = entry["resource"]
            return resource
    raise ValueError("the message holds no Task")


def _is_referral(bundle: JsonDict) -> bool:
    return any(e["resource"]["resourceType"] == "ServiceRequest" for e in bundle.get("entry") or [])


def _task_uuid(task: JsonDict) -> str:
    for ident in task.get("identifier") or []:
        if ident.get("system") == URI_IDENTIFIER and str(ident.get("value", "")).startswith(
            "urn:uuid:"
        ):
            return str(uuid.UUID(str(ident["value"])[9:]))
    raise ValueError("the Task carries no urn:uuid identifier")


def _conditional(task_uuid: str) -> str:
    return f"identifier={URI_IDENTIFIER}|urn:uuid:{task_uuid}"


def render(
    payload: bytes,
    destination: Destination,
    idempotency_key: str,
    settings: Settings,
    *,
    created_at: str,
) -> list[HttpRequest]:
    """The requests that deliver ``payload`` to ``destination`` (ValueError when impossible).

    ``created_at`` (the outbox entry's creation instant) dates a ZorgDomein document, so that a
    repeat sends the same bytes.
    """
    if destination.type == "fhir-r4":
        return fhir_r4.render(payload, destination, idempotency_key)
    if not destination.endpoint:
        raise ValueError(f"destination {destination.id} has no endpoint")
    base = destination.endpoint.rstrip("/")
    bundle: Any = json.loads(payload)
    task = _task(bundle)
    task_uuid = _task_uuid(task)
    headers = (
        ("Content-Type", STU3_JSON),
        ("Accept", STU3_JSON),
        ("X-Request-Id", fhir_r4.request_id(idempotency_key)),
    )
    receiver = identifier(destination.identifier, destination)
    if destination.type == "notified-pull-stu3":
        if _is_referral(bundle):
            note = notified_pull.notification_task(
                bundle,
                task_id=task_uuid,
                receiver=receiver,
                sender=_in_form(notified_pull.practice_identifier(bundle), destination),
                base_url=settings.pull.base_url,
            )
            create = (*headers, ("If-None-Exist", _conditional(task_uuid)))
            return [HttpRequest("POST", f"{base}/Task", _body(note), create)]
        # statusReason is a CodeableConcept in R4 and STU3 alike; only its codes travel: the
        # GP's text may name the patient, and the notification side carries no personal data
        codes = (task.get("statusReason") or {}).get("coding")
        reason = {"coding": codes} if codes else None
        ended = notified_pull.withdrawn_task(task_uuid, receiver, str(task["status"]), reason)
        url = f"{base}/Task?{_conditional(task_uuid)}"
        return [HttpRequest("PUT", url, _body(ended), headers)]
    if _is_referral(bundle):
        document = zorgdomein.document_bundle(
            bundle, bundle_id=str(uuid.uuid5(_DOCUMENT_NS, task_uuid)), now=created_at
        )
        return [HttpRequest("POST", f"{base}/Bundle", _body(document), headers)]
    url = f"{base}/Task?{_conditional(task_uuid)}"
    return [HttpRequest("PUT", url, _body(to_stu3(task).resource), headers)]
