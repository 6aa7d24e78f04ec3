"""Synthetic care-services directory content (organisations, HealthcareServices, Endpoints) for
the directory tests. Organisation data only: invented names, numbers and loopback addresses."""

from __future__ import annotations

from typing import Any

from wor_bridge.core import identifiers as ids
from wor_bridge.core.directory import CONNECTION_TYPE_SYSTEM, GF_BASE
from wor_bridge.core.settings import WOR_PROGRAMME_SYSTEM, Coding, DestinationDirectory

SERVICE_TYPE = Coding(system=WOR_PROGRAMME_SYSTEM, code="wor")
"""The HealthcareService type the tests route by (GF has no welfare code yet, section 7.5)."""
REQUEST = {"system": f"{GF_BASE}/nl-gf-data-categories-cs", "code": "Request"}
TA_NOTIFICATION = {
    "system": f"{GF_BASE}/nl-gf-data-exchange-capabilities",
    "code": "Twiin-TA-notification",
}
KVK_VOORBEELD = "90000001"
"""The KvK number of the shipped destination ``welzijn-voorbeeld``."""


def organization(
    rid: str,
    *,
    kvk: str | None = None,
    kvk_system: str = ids.KVK,
    ura: str | None = None,
    part_of: str | None = None,
    active: bool = True,
) -> dict[str, Any]:
    """An NlGfOrganization-like resource."""
    identifiers = []
    if ura is not None:
        identifiers.append({"system": ids.URA, "value": ura})
    if kvk is not None:
        identifiers.append({"system": kvk_system, "value": kvk})
    resource: dict[str, Any] = {
        "resourceType": "Organization",
        "id": rid,
        "active": active,
        "name": f"Organisation {rid}",
    }
    if identifiers:
        resource["identifier"] = identifiers
    if part_of is not None:
        resource["partOf"] = {"reference": f"Organization/{part_of}"}
    return resource


def service(
    rid: str,
    provided_by: str,
    endpoints: list[str],
    *,
    code: Coding = SERVICE_TYPE,
    active: bool = True,
) -> dict[str, Any]:
    """An NlGfHealthcareService-like resource offering ``code`` with these Endpoints."""
    return {
        "resourceType": "HealthcareService",
        "id": rid,
        "active": active,
        "providedBy": {"reference": f"Organization/{provided_by}"},
        "type": [{"coding": [{"system": code.system, "code": code.code}]}],
        "endpoint": [{"reference": f"Endpoint/{e}"} for e in endpoints],
    }


def endpoint(
    rid: str,
    address: str,
    *,
    status: str = "active",
    period: dict[str, str] | None = None,
    fhir_version: str = "4.0",
    payload: dict[str, str] | None = None,
) -> dict[str, Any]:
    """An NlGfEndpoint-like resource (FHIR REST, JSON with ``fhirVersion``)."""
    resource: dict[str, Any] = {
        "resourceType": "Endpoint",
        "id": rid,
        "status": status,
        "connectionType": {"system": CONNECTION_TYPE_SYSTEM, "code": "hl7-fhir-rest"},
        "payloadType": [{"coding": [payload or REQUEST]}],
        "payloadMimeType": [f"application/fhir+json; fhirVersion={fhir_version}"],
        "address": address,
        "managingOrganization": {"identifier": {"system": ids.KVK, "value": "90009999"}},
    }
    if period is not None:
        resource["period"] = period
    return resource


def lookup(**changes: Any) -> DestinationDirectory:
    """The ``directory`` block of a destination routed by the test service type."""
    return DestinationDirectory(service_type=SERVICE_TYPE, **changes)
