"""Pick a receiver's endpoint from the directory replica: the GF *Query Client* rules. Pure.

Rule numbers and sources are those of ``docs/standards/gf-adressering-mcsd.md`` section 4:

1. Only Endpoints with ``status = active`` whose ``period``, when present, includes the moment
   of delivery ([GF] "Query Client"). ``period`` has no R4 search parameter, so it is evaluated
   here, client-side (rule 3). A receiver switching systems registers the old Endpoint with
   ``period.end`` and the new one with ``period.start`` at the cut-over, so at most one is valid
   at any moment ([GF] "Endpoint lifecycle and transition", use case 5); the choice follows
   ``period``, not registration time.
2. Within those, match ``connectionType`` and ``payloadType``, and the FHIR version in a
   ``payloadMimeType`` parameter ``fhirVersion`` ([GF] "Versioning and conformance": the name
   SHALL NOT be used for version selection). Only JSON media types count: the bridge sends JSON.
3. Where to look: the ``endpoint`` of the organisation's HealthcareServices (or those of its
   ``partOf`` departments) whose ``type`` matches ([GF] "HealthcareService", use case 4).
   ``Organization.endpoint`` is *not* used: the sources do not name it for notifications.
4. Several valid Endpoints for one rule: [GF] calls it redundancy or a registration error and
   gives no tie-breaker, so the bridge does not guess: the choice fails and the caller falls back
   to the static configuration (or waits). The same address registered twice is one endpoint.

Withdrawn entities are not deleted but get a status ([GF] national constraint 3):
``entered-in-error`` and ``off``/``suspended`` Endpoints and ``active = false`` Organizations
and HealthcareServices are left out.

A ``period`` bound given as a date (``2024-01-15``) counts in UTC: the start at 00:00 UTC of that
day, the end at the end of that day; give a dateTime with a zone for an exact cut-over.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from wor_bridge.core.directory import DirectoryEndpointType, local_reference
from wor_bridge.core.settings import Coding

JsonDict = dict[str, Any]

JSON_MEDIA_TYPES: Final = frozenset(
    {"application/fhir+json", "application/json", "application/json+fhir"}
)


@dataclass(frozen=True, slots=True)
class Chosen:
    """The one endpoint valid now, and the destination type it is delivered as."""

    endpoint_id: str
    address: str
    type: str


@dataclass(frozen=True, slots=True)
class NoEndpoint:
    """Why the directory gives no endpoint (no values of the referral, organisation data only)."""

    reason: str


def usable_organization(organization: JsonDict) -> bool:
    """Not withdrawn (``active`` false)."""
    return organization.get("active") is not False


def offers(service: JsonDict, service_type: Coding) -> bool:
    """An active HealthcareService with ``service_type`` among its ``type`` codings."""
    if service.get("active") is False:
        return False
    return any(
        coding.get("system") == service_type.system and coding.get("code") == service_type.code
        for concept in service.get("type") or []
        for coding in concept.get("coding") or []
    )


def endpoint_ids(services: Sequence[JsonDict]) -> list[str]:
    """The ids of the Endpoints the services reference, in order, once each."""
    found: list[str] = []
    for service in services:
        for ref in service.get("endpoint") or []:
            local = local_reference(ref, "Endpoint")
            if local is not None and local[len("Endpoint/") :] not in found:
                found.append(local[len("Endpoint/") :])
    return found


def _bounds(text: object) -> tuple[dt.datetime, dt.datetime] | None:
    """The first instant of a FHIR dateTime and the first instant after it (by its precision:
    a second, a day, a month or a year); None when it is not a dateTime."""
    if not isinstance(text, str):
        return None
    try:
        if "T" in text:
            when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            return (when, when + dt.timedelta(seconds=1)) if when.tzinfo is not None else None
        parts = [int(p) for p in text.split("-")]
        year, month, day = (*parts, 1, 1)[:3]
        start = dt.datetime(year, month, day, tzinfo=dt.UTC)
        ends = {
            1: dt.datetime(year + 1, 1, 1, tzinfo=dt.UTC),
            2: dt.datetime(year + month // 12, month % 12 + 1, 1, tzinfo=dt.UTC),
            3: start + dt.timedelta(days=1),
        }
    except ValueError:
        return None
    return (start, ends[len(parts)]) if len(parts) in ends else None


def in_period(period: object, now: dt.datetime) -> bool:
    """``now`` lies in ``period`` (absent: always; no ``end``: until further notice)."""
    if period is None:
        return True
    if not isinstance(period, dict):
        return False
    if "start" in period:
        start = _bounds(period["start"])
        if start is None or now < start[0]:
            return False
    if "end" in period:
        end = _bounds(period["end"])
        if end is None or now >= end[1]:
            return False
    return True


def valid_now(endpoint: JsonDict, now: dt.datetime) -> bool:
    """Rule 1: ``status`` active and ``period`` includes ``now``."""
    return endpoint.get("status") == "active" and in_period(endpoint.get("period"), now)


def fhir_versions(endpoint: JsonDict) -> frozenset[str]:
    """The FHIR versions (``major.minor``) of the JSON ``payloadMimeType`` values."""
    versions = set()
    for mime in endpoint.get("payloadMimeType") or []:
        if not isinstance(mime, str):
            continue
        media, *params = (part.strip() for part in mime.split(";"))
        if media.lower() not in JSON_MEDIA_TYPES:
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "fhirversion":
                number = value.strip().strip('"').split(".")
                if len(number) >= 2 and number[0].isdigit() and number[1].isdigit():
                    versions.add(f"{number[0]}.{number[1]}")
    return frozenset(versions)


def matches(endpoint: JsonDict, rule: DirectoryEndpointType) -> bool:
    """Rule 2: connection type, payload type and FHIR version."""
    connection = endpoint.get("connectionType") or {}
    if (connection.get("system"), connection.get("code")) != (
        rule.connection_type.system,
        rule.connection_type.code,
    ):
        return False
    payload = any(
        coding.get("system") == rule.payload_type.system
        and coding.get("code") == rule.payload_type.code
        for concept in endpoint.get("payloadType") or []
        for coding in concept.get("coding") or []
    )
    return payload and rule.fhir_version in fhir_versions(endpoint)


def choose(
    endpoints: Sequence[JsonDict],
    rules: Sequence[DirectoryEndpointType],
    types: Sequence[str],
    now: dt.datetime,
) -> Chosen | NoEndpoint:
    """The endpoint for delivery at ``now``: the first rule (in configured order, of the
    accepted ``types``) that exactly one valid address satisfies."""
    valid = [e for e in endpoints if valid_now(e, now)]
    if not valid:
        return NoEndpoint(f"none of {len(endpoints)} endpoint(s) is active and in its period")
    for rule in rules:
        if rule.type not in types:
            continue
        fits = [e for e in valid if matches(e, rule) and isinstance(e.get("address"), str)]
        addresses = sorted({str(e["address"]) for e in fits})
        if len(addresses) > 1:
            return NoEndpoint(f"{len(addresses)} valid endpoints for one kind (ambiguous)")
        if addresses:
            first = next(e for e in fits if e["address"] == addresses[0])
            return Chosen(str(first.get("id", "")), addresses[0], rule.type)
    return NoEndpoint(f"none of {len(valid)} valid endpoint(s) fits {list(types)}")
