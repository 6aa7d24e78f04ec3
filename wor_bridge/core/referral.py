"""A gated referral -> the minimal FHIR R4 transaction Bundle the welfare organisation receives.

ServiceRequest + Task (HL7 SDOH Clinical Care referral pattern), the minimised Patient, the
referrer's PractitionerRole/Practitioner, the practice and welfare Organizations and the Consent.
Ids are uuid5 of business keys, keys are inserted in a fixed order, so the same input and mapping
give byte-identical output.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Final

from wor_bridge.core import identifiers as ids
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.gates import Referral, codings, identifiers_in
from wor_bridge.core.resource_ids import Ids, make_ids
from wor_bridge.core.settings import (
    BUSINESS_STATUS_SYSTEM,
    CONTACT_MODE_SYSTEM,
    LOCAL_BASE,
    MAPPING_TAG_SYSTEM,
    WOR_PROGRAMME_SYSTEM,
    Destination,
    MappingFile,
    OutputSettings,
)
from wor_bridge.core.transform import REGISTRY, TransformContext, contact_points, human_names

NL_CORE: Final = "http://nictiz.nl/fhir/StructureDefinition/"
TASK_CODE: Final = "http://hl7.org/fhir/CodeSystem/task-code"


def _ref(rid: str) -> JsonDict:
    return {"reference": f"urn:uuid:{rid}"}


def _concepts(value: Any, allowed: frozenset[str] | None = None) -> list[JsonDict]:
    """CodeableConcepts reduced to their codings (URI systems); free text is never copied."""
    out = []
    for concept in value if isinstance(value, list) else [value]:
        kept = [
            {"system": s, "code": c} for s, c in codings(concept) if allowed is None or s in allowed
        ]
        if kept:
            out.append({"coding": kept})
    return out


def _business_ids(resource: JsonDict, systems: frozenset[str]) -> list[JsonDict]:
    return [{"system": s, "value": v} for s, v in identifiers_in(resource, systems)]


def _meta(mapping: MappingFile, profile: str | None = None) -> JsonDict:
    meta: JsonDict = {}
    if profile:
        meta["profile"] = [NL_CORE + profile]
    meta["source"] = f"{LOCAL_BASE}/mapping/{mapping.id}|{mapping.version}"
    return meta


def _bridge_id(rid: str) -> JsonDict:
    return {"system": ids.URI_IDENTIFIER, "value": f"urn:uuid:{rid}"}


def _patient(referral: Referral, mapping: MappingFile, pid: str) -> JsonDict:
    src = referral.patient.resource
    ctx = TransformContext(referral.authored_date, mapping.age_bands, referral.at)
    identifiers = [_bridge_id(pid)]
    extensions: list[JsonDict] = []
    fields: JsonDict = {}
    for rule in mapping.patient:
        if rule.source not in src:
            continue
        value = REGISTRY[rule.transform].fn(src[rule.source], ctx)
        if value is None:
            continue
        if rule.target == "identifier":
            identifiers = [*value, *identifiers]
        elif rule.target == "extension":
            extensions.extend(value)
        else:
            fields[rule.target] = value
    out: JsonDict = {"resourceType": "Patient", "meta": _meta(mapping, "nl-core-Patient")}
    if extensions:
        out["extension"] = extensions
    out["identifier"] = identifiers
    out.update(fields)
    return out


def _practitioner(referral: Referral, mapping: MappingFile, rid: str) -> JsonDict:
    src = referral.practitioner.resource if referral.practitioner else {}
    ctx = TransformContext(referral.authored_date, mapping.age_bands, referral.at)
    out: JsonDict = {
        "resourceType": "Practitioner",
        "meta": _meta(mapping, "nl-core-HealthProfessional-Practitioner"),
        "identifier": [
            *_business_ids(src, ids.PERSON_IDENTIFIER_SYSTEMS),
            _bridge_id(rid),
        ],
    }
    names = human_names(src.get("name"), ctx)
    if names:
        out["name"] = names
    telecom = contact_points(src.get("telecom"), ctx)
    if telecom:
        out["telecom"] = telecom
    return out


def _role(referral: Referral, mapping: MappingFile, i: Ids) -> JsonDict:
    src = referral.role.resource
    ctx = TransformContext(referral.authored_date, mapping.age_bands, referral.at)
    out: JsonDict = {
        "resourceType": "PractitionerRole",
        "meta": _meta(mapping, "nl-core-HealthProfessional-PractitionerRole"),
        "identifier": [
            *_business_ids(src, ids.PERSON_IDENTIFIER_SYSTEMS),
            _bridge_id(i.role),
        ],
    }
    if i.practitioner:
        out["practitioner"] = _ref(i.practitioner)
    out["organization"] = _ref(i.practice)
    for element in ("code", "specialty"):
        concepts = _concepts(src.get(element))
        if concepts:
            out[element] = concepts
    telecom = contact_points(src.get("telecom"), ctx)
    if telecom:
        out["telecom"] = telecom
    return out


def _practice(referral: Referral, mapping: MappingFile, rid: str) -> JsonDict:
    src = referral.practice.resource
    ctx = TransformContext(referral.authored_date, mapping.age_bands, referral.at)
    out: JsonDict = {
        "resourceType": "Organization",
        "meta": _meta(mapping, "nl-core-HealthcareProvider-Organization"),
        "identifier": [
            *_business_ids(src, ids.PRACTICE_IDENTIFYING_SYSTEMS),
            _bridge_id(rid),
        ],
    }
    if isinstance(src.get("name"), str):
        out["name"] = src["name"]
    telecom = contact_points(src.get("telecom"), ctx)
    if telecom:
        out["telecom"] = telecom
    return out


def _welfare(destination: Destination, mapping: MappingFile, rid: str) -> JsonDict:
    return {
        "resourceType": "Organization",
        "meta": _meta(mapping),
        "identifier": [
            {"system": destination.identifier.system, "value": destination.identifier.value},
            _bridge_id(rid),
        ],
        "name": destination.name,
    }


_PATIENT_PRIVACY: Final = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
    ]
}
V3_ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
_IDSCL: Final = {"coding": [{"system": V3_ACT_CODE, "code": "IDSCL"}]}


def _codings_only(value: Any) -> list[JsonDict]:
    """A list of Codings reduced to system (URI form) and code."""
    items = value if isinstance(value, list) else []
    return [{"system": s, "code": c} for s, c in codings([{"coding": items}])]


def _party(ref: Any, referral: Referral, i: Ids) -> str | None:
    """The output id of the party a consent actor names (the patient, the referrer, the practice
    or the welfare organisation), or None for anyone else."""
    found = referral.graph.resolve(ref, referral.consent.location)
    pairs = [
        (referral.patient, i.patient),
        (referral.role, i.role),
        (referral.practitioner, i.practitioner),
        (referral.practice, i.practice),
    ]
    for located, rid in pairs:
        if located is not None and found is not None and found.resource is located.resource:
            return rid
    named = ids.identifier_pairs(ref.get("identifier") if isinstance(ref, dict) else None)
    named += ids.identifier_pairs(found.resource.get("identifier") if found else None)
    return i.welfare if referral.destination.identifiers() & set(named) else None


def _provision(src: Any, referral: Referral, i: Ids, nested: bool) -> JsonDict | None:
    """A consent provision as the destination can read it, with its nested provisions.

    Actors become references into the Bundle. A nested provision that names only other actors,
    or specific data (``data``), concerns others: it was applied here and does not travel (a
    receiver would read it without its actor as a rule for everyone).
    """
    if not isinstance(src, dict) or (nested and src.get("data")):
        return None
    out: JsonDict = {k: src[k] for k in ("type", "period") if k in src}
    actors = []
    for actor in src.get("actor") or []:
        rid = _party(actor.get("reference"), referral, i)
        role = _concepts(actor.get("role"))
        if rid and role:
            actors.append({"role": role[0], "reference": _ref(rid)})
    if nested and src.get("actor") and not actors:
        return None
    if actors:
        out["actor"] = actors
    conditions: JsonDict = {
        "action": _concepts(src.get("action")),
        "securityLabel": _codings_only(src.get("securityLabel")),
        "purpose": _codings_only(src.get("purpose")),
        "class": _codings_only(src.get("class")),
        "code": _concepts(src.get("code")),
        "dataPeriod": src.get("dataPeriod"),
    }
    out.update({k: v for k, v in conditions.items() if v})
    inner = [p for p in (_provision(x, referral, i, True) for x in src.get("provision") or []) if p]
    if inner:
        out["provision"] = inner
    return out or None


def _consent(referral: Referral, mapping: MappingFile, i: Ids) -> JsonDict:
    src = referral.consent.resource
    out: JsonDict = {
        "resourceType": "Consent",
        "meta": _meta(mapping),
        "identifier": [_bridge_id(i.consent)],
        "status": "active",
        "scope": (_concepts(src.get("scope")) or [_PATIENT_PRIVACY])[0],
        "category": _concepts(src.get("category")) or [_IDSCL],
        "patient": _ref(i.patient),
    }
    if isinstance(src.get("dateTime"), str):
        out["dateTime"] = src["dateTime"]
    policies = [{"uri": p["uri"]} for p in src.get("policy") or [] if isinstance(p.get("uri"), str)]
    if policies:
        out["policy"] = policies
    policy = _concepts(src.get("policyRule"))
    if policy:
        out["policyRule"] = policy[0]
    elif not policies:  # a root permit alone decided it: state it, as ppc-1 asks
        out["policyRule"] = {"coding": [{"system": V3_ACT_CODE, "code": "OPTIN"}]}
    provision = _provision(src.get("provision"), referral, i, False)
    if provision:
        out["provision"] = provision
    return out


def _reason_codes(referral: Referral, mapping: MappingFile) -> list[JsonDict]:
    table = {(t.source.system, t.source.code): t.target for t in mapping.code_translations}
    allowed = set(mapping.reason_code_systems)
    kept: list[JsonDict] = []
    for system, code in codings(referral.service_request.resource.get("reasonCode")):
        target = table.get((system, code))
        if target is not None:
            coding: JsonDict = {"system": target.system, "code": target.code}
            if target.display:
                coding["display"] = target.display
            kept.append(coding)
        elif system in allowed:
            kept.append({"system": system, "code": code})
    return kept


def _service_request(referral: Referral, mapping: MappingFile, i: Ids) -> JsonDict:
    src = referral.service_request.resource
    his_system, his_value = referral.referral_identifier
    out: JsonDict = {
        "resourceType": "ServiceRequest",
        "meta": _meta(mapping),
        "identifier": [{"system": his_system, "value": his_value}, _bridge_id(i.service_request)],
        "status": "active",
        "intent": "order",
        "code": {
            "coding": [
                {"system": referral.z68.system, "code": referral.z68.code},
                {"system": WOR_PROGRAMME_SYSTEM, "code": "wor", "display": "Welzijn op Recept"},
            ],
        },
        "subject": _ref(i.patient),
    }
    for key in ("occurrenceDateTime", "occurrencePeriod"):
        if key in src:
            out[key] = src[key]
    out["authoredOn"] = referral.authored_on
    out["requester"] = _ref(i.role)
    out["performer"] = [_ref(i.welfare)]
    contact = _concepts(src.get("locationCode"), frozenset({CONTACT_MODE_SYSTEM}))
    if contact:
        out["locationCode"] = contact
    reason: JsonDict = {}
    reason_codings = _reason_codes(referral, mapping)
    if reason_codings:
        reason["coding"] = reason_codings
    reason["text"] = referral.reason
    out["reasonCode"] = [reason]
    out["supportingInfo"] = [_ref(i.consent)]
    return out


def first_contact_deadline(authored_on: str, days: int) -> str:
    """``authoredOn`` + ``days``, keeping its precision and time zone."""
    if len(authored_on) <= 10:
        return (dt.date.fromisoformat(authored_on) + dt.timedelta(days=days)).isoformat()
    moment = dt.datetime.fromisoformat(authored_on) + dt.timedelta(days=days)
    text = moment.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") and authored_on.endswith("Z") else text


def _task(referral: Referral, mapping: MappingFile, i: Ids, output: OutputSettings) -> JsonDict:
    return {
        "resourceType": "Task",
        "meta": _meta(mapping),
        "identifier": [_bridge_id(i.task)],
        "status": "requested",
        "businessStatus": {"coding": [{"system": BUSINESS_STATUS_SYSTEM, "code": "sent"}]},
        "intent": "order",
        "code": {"coding": [{"system": TASK_CODE, "code": "fulfill"}]},
        "focus": _ref(i.service_request),
        "for": _ref(i.patient),
        "authoredOn": referral.authored_on,
        "requester": _ref(i.role),
        "owner": _ref(i.welfare),
        "restriction": {
            "period": {
                "end": first_contact_deadline(referral.authored_on, output.first_contact_days)
            }
        },
    }


def _entry(resource: JsonDict, rid: str, mapping: MappingFile) -> JsonDict:
    rtype = resource["resourceType"]
    if mapping.request == "PUT":
        body = {
            "resourceType": rtype,
            "id": rid,
            **{k: v for k, v in resource.items() if k != "resourceType"},
        }
        request = {"method": "PUT", "url": f"{rtype}/{rid}"}
    else:
        body = resource
        request = {
            "method": "POST",
            "url": rtype,
            "ifNoneExist": f"identifier={ids.URI_IDENTIFIER}|urn:uuid:{rid}",
        }
    return {"fullUrl": f"urn:uuid:{rid}", "resource": body, "request": request}


def to_bundle(
    referral: Referral,
    destination: Destination,
    mapping: MappingFile,
    output: OutputSettings,
) -> tuple[JsonDict, Ids]:
    """The transaction Bundle for ``destination`` and the ids it uses."""
    i = make_ids(referral, destination, output)
    resources: list[tuple[JsonDict, str]] = [(_patient(referral, mapping, i.patient), i.patient)]
    if referral.practitioner is not None and i.practitioner:
        resources.append((_practitioner(referral, mapping, i.practitioner), i.practitioner))
    resources += [
        (_practice(referral, mapping, i.practice), i.practice),
        (_role(referral, mapping, i), i.role),
        (_welfare(destination, mapping, i.welfare), i.welfare),
        (_consent(referral, mapping, i), i.consent),
        (_service_request(referral, mapping, i), i.service_request),
        (_task(referral, mapping, i, output), i.task),
    ]
    bundle: JsonDict = {
        "resourceType": "Bundle",
        "id": i.bundle,
        "meta": {"tag": [{"system": MAPPING_TAG_SYSTEM, "code": mapping.ref}]},
        "type": "transaction",
        "entry": [_entry(res, rid, mapping) for res, rid in resources],
    }
    return bundle, i
