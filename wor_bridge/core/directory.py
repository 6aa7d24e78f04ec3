"""The care-services directory (GF Adressering, IHE mCSD): settings, replica records, version
order and the organisation keys. Pure: no I/O.

The bridge is an mCSD *Update Client* with a local replica and a *Query Client* on it: it never
asks the national directory at routing time (GF national constraint 2: matching is done on a
local replica). Rules cite ``docs/standards/gf-adressering-mcsd.md`` by their numbers there
(L1-L10 initial load, S1-S11 incremental sync) and the sources it lists ([GF], [GF-fsh], [NUTS],
[FHIR], [ZAB]).

Replica rules implemented over these values:

- S6/S7: an older version never overwrites a newer one, and applying a change twice has one
  effect: ``newer`` orders versions by ``meta.lastUpdated``, then a numeric ``versionId``;
  a deletion (a FHIR history ``DELETE`` entry) is kept as a tombstone with its version, so a late
  older update cannot bring the resource back.
- L8: references are not checked on write (a HealthcareService may name an Endpoint that
  arrives in a later delta); the index keys are just strings.
- Section 3.4: URA and the three KvK systems in use are normalised to one key per organisation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from wor_bridge.core import identifiers as ids
from wor_bridge.core.settings import (
    ClientTls,
    Coding,
    Destination,
    DestinationAuth,
    DestinationType,
    IdentifierSetting,
)

DIRECTORY_ID: Final = "mcsd-directory"
"""The transport's name for the directory (a destination may not use it)."""

GF_BASE: Final = "http://minvws.github.io/generiekefuncties-docs/CodeSystem"
CONNECTION_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
NUTS_CAPABILITIES: Final = (
    "http://nuts-foundation.github.io/nl-generic-functions-ig/CodeSystem/"
    "nl-gf-data-exchange-capabilities"
)
ROUTING_TYPES: Final = frozenset({"Organization", "HealthcareService", "Endpoint"})

DirectoryType = Literal[
    "Organization", "Location", "HealthcareService", "Endpoint", "OrganizationAffiliation"
]
LOAD_ORDER: Final[tuple[str, ...]] = (
    "Organization",
    "Location",
    "HealthcareService",
    "Endpoint",
    "OrganizationAffiliation",
)
"""L4: referenced before referencing (SHOULD; circular references make it best effort)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DirectoryEndpointType(_Frozen):
    """Which directory Endpoints a destination type can use: ``connectionType``, a
    ``payloadType`` coding and the ``fhirVersion`` parameter of a ``payloadMimeType`` (GF "Query
    Client", "Versioning and conformance"; section 4)."""

    connection_type: Coding = Coding(system=CONNECTION_TYPE_SYSTEM, code="hl7-fhir-rest")
    payload_type: Coding
    fhir_version: str = Field(pattern=r"^\d+\.\d+$")
    type: DestinationType


DEFAULT_ENDPOINT_TYPES: Final[tuple[DirectoryEndpointType, ...]] = (
    # GF use case 4: the receiver's endpoint "supports a 'Request' payloadType" (data category
    # Request = ServiceRequest, Task; [GF-fsh] codesystem-datacategories.fsh)
    DirectoryEndpointType(
        payload_type=Coding(system=f"{GF_BASE}/nl-gf-data-categories-cs", code="Request"),
        fhir_version="4.0",
        type="fhir-r4",
    ),
    # TA Notified Pull receivers (STU3): "Twiin-TA-notification" ([GF-fsh] codesystems.fsh, and
    # the older canonical of the same code system in [NUTS] codesystems.fsh)
    DirectoryEndpointType(
        payload_type=Coding(
            system=f"{GF_BASE}/nl-gf-data-exchange-capabilities", code="Twiin-TA-notification"
        ),
        fhir_version="3.0",
        type="notified-pull-stu3",
    ),
    DirectoryEndpointType(
        payload_type=Coding(system=NUTS_CAPABILITIES, code="Twiin-TA-notification"),
        fhir_version="3.0",
        type="notified-pull-stu3",
    ),
)


class DirectorySettings(_Frozen):
    """``[directory]``: the mCSD directory the bridge replicates.

    Authentication and TLS work as for a destination ([GF] does not say how an Update Client
    authenticates, section 7.3). One common interval for all types (S2), about 15 minutes
    (S3); every wait adds a random ``0..jitter_s`` (S4), so syncs never fall on fixed clock
    boundaries and never come more often than ``interval_s`` (the LRZa's rate limit, S3).
    """

    base_url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$")
    auth: DestinationAuth = DestinationAuth()
    tls: ClientTls | None = None
    connect_timeout_s: float = Field(default=3.05, gt=0, le=60)
    read_timeout_s: float = Field(default=30.0, gt=0, le=300)
    interval_s: float = Field(default=900.0, ge=1.0)
    jitter_s: float = Field(default=120.0, ge=0.0)
    retry_base_s: float = Field(default=30.0, gt=0)
    max_wait_s: float = Field(default=60.0, ge=0.0)
    """The longest wait inside a round (``Retry-After`` of a 429); a longer one ends the round."""
    page_size: int = Field(default=100, ge=1, le=1000)
    max_pages: int = Field(default=10_000, ge=1)
    resource_types: tuple[DirectoryType, ...] = ("Organization", "HealthcareService", "Endpoint")
    endpoint_types: tuple[DirectoryEndpointType, ...] = DEFAULT_ENDPOINT_TYPES

    @field_validator("resource_types")
    @classmethod
    def _routing_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not set(value) >= ROUTING_TYPES or len(set(value)) != len(value):
            raise ValueError(f"resource_types must hold {sorted(ROUTING_TYPES)}, each once")
        return tuple(sorted(value, key=LOAD_ORDER.index))

    def transport_destination(self) -> Destination:
        """The directory as the transport sees it: base URL, auth, TLS and timeouts."""
        return Destination(
            id=DIRECTORY_ID,
            name="care-services directory",
            identifier=IdentifierSetting(system=ids.URI_IDENTIFIER, value=self.base_url),
            endpoint=self.base_url,
            auth=self.auth,
            tls=self.tls,
            connect_timeout_s=self.connect_timeout_s,
            read_timeout_s=self.read_timeout_s,
        )


def accepted_types(destination: Destination) -> tuple[str, ...]:
    """The destination types the directory may choose for ``destination``."""
    lookup = destination.directory
    return (lookup.types if lookup and lookup.types else ()) or (destination.type,)


def check_destinations(
    directory: DirectorySettings | None, destinations: tuple[Destination, ...]
) -> None:
    """Destinations that take their endpoint from the directory fit ``[directory]`` (ValueError)."""
    for dest in destinations:
        lookup = dest.directory
        if dest.id == DIRECTORY_ID:
            raise ValueError(f"destination id {DIRECTORY_ID!r} is reserved for the directory")
        if lookup is None:
            continue
        where = f"destination {dest.id}: directory"
        if directory is None:
            raise ValueError(f"{where}: needs a [directory] section")
        if lookup.static == "override" and not dest.endpoint:
            raise ValueError(f"{where}: static = override needs an endpoint")
        org = lookup.organization or dest.identifier
        if organization_key(org.system, org.value) is None:
            raise ValueError(f"{where}: the organisation must be named by a URA or KvK number")
        types = accepted_types(dest)
        if "notified-pull-stu3" in types and dest.type != "notified-pull-stu3":
            raise ValueError(f"{where}: notified-pull-stu3 needs type = notified-pull-stu3")
        if not any(rule.type in types for rule in directory.endpoint_types):
            raise ValueError(f"{where}: no directory.endpoint_types entry gives {list(types)}")


def organization_key(system: str, value: str) -> str | None:
    """``ura|<n>`` or ``kvk|<n>`` for a URA or KvK identifier (any of the three KvK systems, or
    the URA OID); None for any other system (section 3.4, [GF-fsh] invariant
    ``ura-identifier-or-partof``)."""
    text = value.strip()
    normal = ids.normalize_system(system)
    if not text:
        return None
    if normal == ids.URA:
        return f"ura|{text}"
    if normal in ids.KVK_SYSTEMS:
        return f"kvk|{text}"
    return None


def local_reference(reference: object, resource_type: str) -> str | None:
    """``Type/id`` of a literal reference (relative, absolute or versioned) to ``resource_type``."""
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    parts = reference["reference"].split("/_history/")[0].rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == resource_type and parts[-1]:
        return f"{resource_type}/{parts[-1]}"
    return None


def index_keys(resource: dict[str, Any]) -> tuple[str, ...]:
    """The keys the Query Client looks resources up by: an Organization by its URA/KvK and by
    ``partOf``; a HealthcareService by ``providedBy``."""
    keys: list[str] = []
    kind = resource.get("resourceType")
    if kind == "Organization":
        for ident in resource.get("identifier") or []:
            system, value = ident.get("system"), ident.get("value")
            if isinstance(system, str) and isinstance(value, str):
                key = organization_key(system, value)
                if key is not None and key not in keys:
                    keys.append(key)
        if (parent := local_reference(resource.get("partOf"), "Organization")) is not None:
            keys.append(f"partOf|{parent}")
    elif kind == "HealthcareService" and (
        owner := local_reference(resource.get("providedBy"), "Organization")
    ):
        keys.append(f"providedBy|{owner}")
    return tuple(keys)


@dataclass(frozen=True, slots=True)
class DirectoryRecord:
    """One version of a directory resource, as received and as kept (``body`` None: deleted)."""

    resource_type: str
    id: str
    last_updated_us: int
    """``meta.lastUpdated`` in microseconds since the epoch (the server's clock)."""
    version_id: str
    body: bytes | None
    keys: tuple[str, ...] = ()

    @property
    def deleted(self) -> bool:
        """A tombstone: the directory deleted the resource (its version is kept)."""
        return self.body is None


def newer(incoming: DirectoryRecord, stored: DirectoryRecord) -> bool:
    """True when ``incoming`` is a later version than ``stored`` (S6); the same version is not
    newer, so applying a change twice has one effect (S7)."""
    return _order(incoming) > _order(stored)


def _order(record: DirectoryRecord) -> tuple[int, int]:
    number = int(record.version_id) if record.version_id.isdigit() else 0
    return record.last_updated_us, number


def instant_us(text: object) -> int | None:
    """A FHIR ``instant`` (zone required) as microseconds since the epoch; None otherwise."""
    if not isinstance(text, str) or "T" not in text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return round((when - _EPOCH).total_seconds() * 1_000_000)


_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class SyncState:
    """Where the replica stands: ``since`` is the server time up to which it is in sync (L5);
    ``ready`` is set once the initial load and its ``_history`` catch-up completed (L9)."""

    since: str | None = None
    ready: bool = False
    synced_at: dt.datetime | None = None


def sync_delay_s(
    settings: DirectorySettings,
    draw: float,
    *,
    failures: int = 0,
    retry_after_s: float | None = None,
    since_last_s: float | None = None,
) -> float:
    """How long to wait before the next round.

    After a good round: ``interval_s`` plus a random share of ``jitter_s`` (S3, S4), counted from
    the last good round (so a restart does not sync more often than the interval). After a
    failed one: exponential backoff from ``retry_base_s``, capped at the interval (S8), and never
    sooner than the server's ``Retry-After`` (S9). ``draw`` is a random number in [0, 1).
    """
    if failures > 0:
        backoff = min(settings.interval_s, settings.retry_base_s * 2 ** (failures - 1))
        return float(max(backoff * (0.5 + draw / 2), retry_after_s or 0.0))
    elapsed = since_last_s if since_last_s is not None else settings.interval_s
    return max(0.0, settings.interval_s - elapsed) + draw * settings.jitter_s
