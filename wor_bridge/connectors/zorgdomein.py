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
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.identifiers import URI_IDENTIFIER
from wor_bridge.core.stu3.convert import to_stu3

LOINC: Final = "http://loinc.org"
REFERRAL_NOTE: Final = ("57133-1", "Referral note")
PRACTITIONERROLE_REFERENCE: Final = (
    "http://nictiz.nl/fhir/StructureDefinition/practitionerrole-reference"
)
TITLE: Final = "Verwijzing Welzijn op Recept"


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
