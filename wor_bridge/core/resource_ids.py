"""The deterministic ids of one referral's resources: uuid5 of business keys (pure).

Patient-side resources (Patient, Consent, ServiceRequest, Task) derive from the referral key
(source system + the GP system's referral identifier); practitioners and organisations from their
own identifiers (AGB/UZI/URA, or the destination's configured identifier), so the same input
always gives the same ids and a re-send is idempotent at the receiver (GUIDE principle 4).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final

from wor_bridge.core import identifiers as ids
from wor_bridge.core.gates import Referral, identifiers_in
from wor_bridge.core.settings import Destination, OutputSettings

NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://wor-bridge.nl/ns/resource")


@dataclass(frozen=True, slots=True)
class Ids:
    """The deterministic ids of one referral's resources."""

    key: str
    patient: str
    consent: str
    service_request: str
    task: str
    practitioner: str | None
    practice: str
    role: str
    welfare: str
    bundle: str


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(NAMESPACE, "|".join(parts)))


def referral_key(referral: Referral, output: OutputSettings) -> str:
    """The business key of a referral: source system + the GP system's referral identifier."""
    return key_of(output.source_system, referral.referral_identifier)


def key_of(source_system: str, identifier: tuple[str, str]) -> str:
    """The business key from the source system and the (normalised system, value) identifier."""
    system, value = identifier
    return f"{source_system}|{system}|{value}"


def task_id_of(key: str) -> str:
    """The Task id of the referral with this business key (as ``make_ids`` gives it)."""
    return _uuid(key, "Task")


def make_ids(referral: Referral, destination: Destination, output: OutputSettings) -> Ids:
    """uuid5 ids: patient-side resources from the referral key, others from their identifiers."""
    key = referral_key(referral, output)
    practitioner = None
    if referral.practitioner is not None:
        pid = identifiers_in(referral.practitioner.resource, ids.PERSON_IDENTIFIER_SYSTEMS)
        practitioner = _uuid("Practitioner", *pid[0]) if pid else _uuid(key, "Practitioner")
    org_id = identifiers_in(referral.practice.resource, ids.PRACTICE_IDENTIFYING_SYSTEMS)[0]
    practice = _uuid("Organization", *org_id)
    role = _uuid("PractitionerRole", practitioner or key, practice)
    welfare = _uuid("Organization", destination.identifier.system, destination.identifier.value)
    return Ids(
        key=key,
        patient=_uuid(key, "Patient"),
        consent=_uuid(key, "Consent"),
        service_request=_uuid(key, "ServiceRequest"),
        task=task_id_of(key),
        practitioner=practitioner,
        practice=practice,
        role=role,
        welfare=welfare,
        bundle=_uuid(key, "Bundle", destination.id),
    )
