"""ZorgDomein-style delivery: the referral as an STU3 FHIR document Bundle.

Pure functions over FHIR JSON dicts, no I/O. DOMAIN.md section 7: ZorgDomein-style platforms speak
FHIR STU3 and exchange documents as ``document`` Bundles with the Composition first. The
Composition is a LOINC 57133-1 "Referral note" about the Patient, with sections that reference the
ReferralRequest, the Consent and the Task (whose id the receiver uses to ``PUT`` status updates at
the bridge's STU3 endpoint); the remaining entries are the referral's resources converted
with ``core.stu3.convert.to_stu3`` (the same set ``notified_pull.pullable`` serves), each under
its ``fullUrl`` from the R4 Bundle (``urn:uuid:<id>`` when the entry had none).

STU3 specifics (checked on the ``fhir.resources`` STU3 models): ``Bundle.timestamp`` does not
exist before R4, so the document's moment is ``Composition.date`` and the Bundle's
``meta.lastUpdated``; ``Composition.author`` may not reference a PractitionerRole in STU3, so the
author is the referrer's Practitioner carrying the Nictiz STU3 extension
``http://nictiz.nl/fhir/StructureDefinition/practitionerrole-reference`` to the PractitionerRole
(as the Nictiz zib2017 STU3 profiles do); without a Practitioner the extension stands alone.
"""

from __future__ import annotations

import uuid
from typing import Final

from wor_bridge.connectors.notified_pull import Entry, reference_targets, referral_entries, retarget
from wor_bridge.connectors.outgoing import (
    Outgoing,
    by_identifier,
    create,
    request_id,
    stu3_headers,
    update_task,
)
from wor_bridge.core.delivery import HttpRequest
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.identifiers import URI_IDENTIFIER
from wor_bridge.core.settings import Destination, Settings
from wor_bridge.core.stu3.convert import to_stu3

LOINC: Final = "http://loinc.org"
REFERRAL_NOTE: Final = ("57133-1", "Referral note")
PRACTITIONERROLE_REFERENCE: Final = (
    "http://nictiz.nl/fhir/StructureDefinition/practitionerrole-reference"
)
TITLE: Final = "Verwijzing Welzijn op Recept"
_DOCUMENT_NS: Final = uuid.UUID("6f0a3c1e-2b7d-5e4a-9c8b-1d2e3f4a5b6c")
_UPDATE_ELEMENTS: Final = (
    "resourceType",
    "identifier",
    "status",
    "statusReason",
    "intent",
    "code",
    "focus",
    "for",
    "authoredOn",
    "lastModified",
    "requester",
    "owner",
)


def document_id(task_uuid: str) -> str:
    """The document's id (and identifier value): derived from the Task's, so every repeat of the
    referral is the same document."""
    return str(uuid.uuid5(_DOCUMENT_NS, task_uuid))


def render(message: Outgoing, destination: Destination, _settings: Settings) -> list[HttpRequest]:
    """The requests that deliver ``message`` to a ZorgDomein-style platform (ValueError when it
    is not for one). The referral is the document Bundle, created once: ``POST [base]/Bundle``
    with ``If-None-Exist: identifier=<Bundle.identifier>`` (``create = "conditional"``) or ``PUT
    [base]/Bundle/<document id>`` (``create = "put"``); a Task update is the STU3 Task, ``PUT
    [base]/Task?identifier=...`` (see ``task_update``)."""
    headers = stu3_headers(request_id(message.idempotency_key))
    task_uuid = message.task_uuid
    if message.kind in ("referral", "referral-update"):
        doc_id = document_id(task_uuid)
        referral = message.bundle
        if message.kind == "referral-update":  # a changed referral is a new version of the
            # document (documents never change): its own id from the message's key, so a repeat
            # is the same version; without the Task, whose status is the platform's
            doc_id = str(uuid.uuid5(uuid.UUID(doc_id), message.idempotency_key))
            referral = {
                **referral,
                "entry": [e for e in referral["entry"] if e["resource"]["resourceType"] != "Task"],
            }
        document = document_bundle(referral, bundle_id=doc_id, now=message.created_at)
        query = f"identifier={URI_IDENTIFIER}|urn:uuid:{doc_id}"
        return [create(destination, "Bundle", doc_id, document, headers, conditional_on=query)]
    if message.kind != "task-update":
        raise ValueError("a ZorgDomein-style platform gets referrals and Task updates only")
    return [update_task(destination, task_uuid, task_update(message.task), headers, at_id=False)]


def task_update(task_r4: JsonDict) -> JsonDict:
    """The STU3 Task that tells the platform the referral's Task changed (a GP-side withdrawal):
    its identifier, status and reason *codes* (never the GP's free text), intent, code and dates,
    and its references by the bridge identifier each referenced resource carries in the document
    (a ``urn:uuid:`` fullUrl resolves only inside the document it was sent in)."""
    kept = {k: v for k, v in task_r4.items() if k in _UPDATE_ELEMENTS}
    codes = (kept.pop("statusReason", None) or {}).get("coding")
    if codes:
        kept["statusReason"] = {"coding": codes}
    converted: JsonDict = to_stu3(by_identifier(kept)).resource
    return converted


def document_bundle(referral_bundle_r4: JsonDict, *, bundle_id: str, now: str) -> JsonDict:
    """The referral as an STU3 document Bundle: Composition first, then the converted resources.

    ``bundle_id`` is a uuid (the Composition's id is derived from it); ``now`` a FHIR instant.
    Raises ValueError on a Bundle without a ServiceRequest, Patient or PractitionerRole.
    """
    doc_uuid = uuid.UUID(bundle_id)
    entries = referral_entries(referral_bundle_r4)
    task = _task_entry(referral_bundle_r4)
    if task is not None:
        entries.append(task)
    targets = reference_targets(entries, lambda e: e.full_url)
    composition_id = str(uuid.uuid5(doc_uuid, "Composition"))
    composition = _composition(entries, composition_id, now)
    return {
        "resourceType": "Bundle",
        "id": str(doc_uuid),
        "meta": {"lastUpdated": now},
        "identifier": {"system": URI_IDENTIFIER, "value": f"urn:uuid:{doc_uuid}"},
        "type": "document",
        "entry": [
            {"fullUrl": f"urn:uuid:{composition_id}", "resource": composition},
            *(
                {"fullUrl": e.full_url, "resource": retarget(to_stu3(e.resource).resource, targets)}
                for e in entries
            ),
        ],
    }


def _composition(entries: list[Entry], composition_id: str, now: str) -> JsonDict:
    referral = _one(entries, "ServiceRequest", None)
    patient = _one(entries, "Patient", None)
    requester = (referral.resource.get("requester") or {}).get("reference")
    role = _one(entries, "PractitionerRole", requester)
    practitioner_ref = (role.resource.get("practitioner") or {}).get("reference")
    practitioner = _find(entries, "Practitioner", practitioner_ref)
    author: JsonDict = {
        "extension": [
            {"url": PRACTITIONERROLE_REFERENCE, "valueReference": {"reference": role.full_url}}
        ]
    }
    if practitioner is not None:
        author["reference"] = practitioner.full_url
    sections = [
        {"title": "Verwijzing", "entry": [{"reference": referral.full_url}]},
    ]
    consents = [{"reference": e.full_url} for e in entries if _is(e, "Consent")]
    if consents:
        sections.append({"title": "Toestemming", "entry": consents})
    tasks = [{"reference": e.full_url} for e in entries if _is(e, "Task")]
    if tasks:  # the receiver PUTs this Task (by its id) at the bridge's STU3 endpoint
        sections.append({"title": "Opdracht", "entry": tasks})
    return {
        "resourceType": "Composition",
        "id": composition_id,
        "identifier": {"system": URI_IDENTIFIER, "value": f"urn:uuid:{composition_id}"},
        "status": "final",
        "type": {
            "coding": [{"system": LOINC, "code": REFERRAL_NOTE[0], "display": REFERRAL_NOTE[1]}]
        },
        "subject": {"reference": patient.full_url},
        "date": now,
        "author": [author],
        "title": TITLE,
        "section": sections,
    }


def _task_entry(bundle: JsonDict) -> Entry | None:
    """The referral's Task (the bridge's id), which the receiver updates with status changes."""
    for raw in bundle.get("entry") or []:
        resource = raw.get("resource") if isinstance(raw, dict) else None
        if isinstance(resource, dict) and resource.get("resourceType") == "Task":
            rid = str(resource.get("id") or str(raw["fullUrl"]).removeprefix("urn:uuid:"))
            full_url = str(raw.get("fullUrl") or f"urn:uuid:{rid}")
            body = {
                "resourceType": "Task",
                "id": rid,
                **{k: v for k, v in resource.items() if k not in ("resourceType", "id")},
            }
            return Entry(full_url=full_url, stu3_type="Task", id=rid, resource=body)
    return None


def _is(entry: Entry, rtype: str) -> bool:
    return bool(entry.resource["resourceType"] == rtype)


def _find(entries: list[Entry], rtype: str, reference: object) -> Entry | None:
    """The entry of ``rtype`` that ``reference`` points at (by fullUrl or ``Type/id``)."""
    for e in entries:
        if _is(e, rtype) and reference in (e.full_url, f"{rtype}/{e.id}"):
            return e
    return None


def _one(entries: list[Entry], rtype: str, reference: object) -> Entry:
    """The referenced entry of ``rtype``, else the first one of that type."""
    found = _find(entries, rtype, reference) or next((e for e in entries if _is(e, rtype)), None)
    if found is None:
        raise ValueError(f"the referral Bundle has no {rtype}")
    return found
