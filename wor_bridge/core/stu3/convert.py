"""FHIR R4 ⇄ STU3 for what the bridge sends to and receives from Dutch STU3 platforms.

Pure functions over FHIR JSON dicts, no I/O. Nine resource types: Patient, Practitioner,
PractitionerRole, Organization, Consent, Task, Observation, Communication, and R4
``ServiceRequest`` ⇄ STU3 ``ReferralRequest`` (STU3 has no ServiceRequest). Reference strings are
kept except for that type rename (``ServiceRequest/x`` ⇄ ``ReferralRequest/x``, also in Bundle
``fullUrl`` and ``request.url``).

What the target version cannot express is not dropped silently: ``Conversion.lost`` names each
such element by its path in the *source* (``Observation.subject.type``, ``Consent.provision.type``;
names and indices, never values). Every element not listed survives a round trip
R4 → STU3 → R4 unchanged (one corner: an R4 Quantity that looks exactly like the STU3 form of an
integer comes back as that integer, see ``event``).

Differences common to all types (handled in ``element``): R4 ``Meta.source`` and
``Reference.type`` do not exist in STU3; neither do the R4-only value types of ``Extension``
(canonical, url, uuid, ...) nor ``Bundle.timestamp``; STU3 ``Patient.animal`` is gone in R4.
The resource families document their own differences and sources: ``request``
(ServiceRequest/ReferralRequest, Task), ``consent`` and ``event`` (Observation,
Communication). Patient, Practitioner, PractitionerRole and Organization have the same elements
in both versions (compared on the ``fhir.resources`` R4B and STU3 models).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from wor_bridge.core import fhir
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.stu3 import consent as stu3_consent
from wor_bridge.core.stu3 import event as stu3_event
from wor_bridge.core.stu3 import request as stu3_request
from wor_bridge.core.stu3.element import (
    Codes,
    Direction,
    Spec,
    Walk,
    convert_resource,
    fit_object,
)

_SAME_TYPES: Final = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "Consent",
    "Task",
    "Observation",
    "Communication",
)
_HTTP_VERBS: Final = frozenset({"GET", "POST", "PUT", "DELETE"})


@dataclass(frozen=True)
class Conversion:
    """A converted resource and the source paths of the elements it could not express."""

    resource: JsonDict
    lost: tuple[str, ...]


# R4 adds HEAD and PATCH to ``Bundle.entry.request.method``.
_BUNDLE_TO_STU3: Final = {
    ("BundleEntryRequest", "BundleEntryRequest"): Spec({"method": Codes({}, _HTTP_VERBS)})
}


TO_STU3: Final = Direction(
    source=fhir.elements,
    target=fhir.stu3_elements,
    types={**{t: t for t in _SAME_TYPES}, "ServiceRequest": "ReferralRequest"},
    specs={
        **stu3_request.TO_STU3,
        **stu3_consent.TO_STU3,
        **stu3_event.TO_STU3,
        **_BUNDLE_TO_STU3,
    },
)
TO_R4: Final = Direction(
    source=fhir.stu3_elements,
    target=fhir.elements,
    types={**{t: t for t in _SAME_TYPES}, "ReferralRequest": "ServiceRequest"},
    specs={**stu3_request.TO_R4, **stu3_consent.TO_R4, **stu3_event.TO_R4},
)


def to_stu3(resource_r4: JsonDict) -> Conversion:
    """Convert one R4 resource of the nine supported types to STU3."""
    return _convert(resource_r4, TO_STU3)


def to_r4(resource_stu3: JsonDict) -> Conversion:
    """Convert one STU3 resource of the nine supported types to R4."""
    return _convert(resource_stu3, TO_R4)


def bundle_to_stu3(bundle_r4: JsonDict) -> Conversion:
    """Convert an R4 Bundle and every entry's resource (and ``request.url``) to STU3."""
    return _convert_bundle(bundle_r4, TO_STU3)


def bundle_to_r4(bundle_stu3: JsonDict) -> Conversion:
    """Convert an STU3 Bundle and every entry's resource (and ``request.url``) to R4."""
    return _convert_bundle(bundle_stu3, TO_R4)


def _convert(resource: JsonDict, direction: Direction) -> Conversion:
    walk = Walk(direction)
    rtype = resource.get("resourceType")
    converted = convert_resource(resource, str(rtype), walk)
    return Conversion(converted, tuple(walk.lost))


def _convert_bundle(bundle: JsonDict, direction: Direction) -> Conversion:
    if bundle.get("resourceType") != "Bundle":
        raise ValueError(
            f"STU3 bundle conversion needs a Bundle, not {bundle.get('resourceType')!r}"
        )
    walk = Walk(direction)
    converted = {"resourceType": "Bundle", **fit_object(bundle, "Bundle", "Bundle", "Bundle", walk)}
    return Conversion(converted, tuple(walk.lost))
