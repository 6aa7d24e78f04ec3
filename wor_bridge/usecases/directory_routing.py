"""Use case: the endpoint of a destination at delivery time, from the directory replica (the GF
*Query Client*) or from the static configuration.

A destination with a ``directory`` block names an organisation (URA or KvK) and a
HealthcareService type; its endpoint address and destination type come from the replica when
the referral is sent, so a receiver can switch systems on a date (``core.endpoint_choice``).
The static ``endpoint``/``type`` is the override (``static = "override"``) and the fallback
(no ``[directory]``, the replica not ready yet, or no single valid endpoint). ``Resolved.source``
says which one was used; the delivery writes it into its audit record.

The replica answers only once its initial load and catch-up completed (L9 in
``docs/standards/gf-adressering-mcsd.md``); references that do not resolve are skipped at read
time, never refused at write time (L8).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Final

from wor_bridge.core import endpoint_choice
from wor_bridge.core.directory import DirectorySettings, accepted_types, organization_key
from wor_bridge.core.settings import Destination, DestinationDirectory
from wor_bridge.ports import DirectoryReplica

MAX_DEPTH: Final = 5
"""``partOf`` levels followed below the named organisation (departments of departments)."""
MAX_ORGANIZATIONS: Final = 100


@dataclass(frozen=True, slots=True)
class Resolved:
    """The destination as it is delivered to now, and where its endpoint came from."""

    destination: Destination
    source: str
    """``static``, ``static (override)``, ``static (fallback: <why>)`` or
    ``directory Endpoint/<id>`` (no patient data: organisation data only)."""


@dataclass(frozen=True, slots=True)
class Unresolved:
    """No endpoint: the directory gives none and there is no static one to fall back on."""

    reason: str


def resolve(
    replica: DirectoryReplica | None,
    directory: DirectorySettings | None,
    destination: Destination,
    now: dt.datetime,
) -> Resolved | Unresolved:
    """Where ``destination`` is delivered at ``now``."""
    lookup = destination.directory
    if lookup is None:
        return Resolved(destination, "static")
    if lookup.static == "override" and destination.endpoint:
        return Resolved(destination, "static (override)")
    if replica is None or directory is None:
        found: endpoint_choice.Chosen | endpoint_choice.NoEndpoint = endpoint_choice.NoEndpoint(
            "no directory configured"
        )
    else:
        found = _from_replica(replica, directory, destination, lookup, now)
    if isinstance(found, endpoint_choice.Chosen):
        chosen = destination.model_copy(update={"endpoint": found.address, "type": found.type})
        return Resolved(chosen, f"directory Endpoint/{found.endpoint_id}")
    if destination.endpoint:
        return Resolved(destination, f"static (fallback: {found.reason})")
    return Unresolved(f"directory: {found.reason}")


def _from_replica(
    replica: DirectoryReplica,
    directory: DirectorySettings,
    destination: Destination,
    lookup: DestinationDirectory,
    now: dt.datetime,
) -> endpoint_choice.Chosen | endpoint_choice.NoEndpoint:
    if not replica.sync_state().ready:
        return endpoint_choice.NoEndpoint("replica not ready (initial load not complete)")
    org = lookup.organization or destination.identifier
    key = organization_key(org.system, org.value) or ""
    organizations = [
        record.id
        for record in replica.find("Organization", key)
        if endpoint_choice.usable_organization(_body(record.body))
    ]
    if not organizations:
        return endpoint_choice.NoEndpoint("organisation not in the directory")
    services = [
        body
        for org_id in _with_departments(replica, organizations)
        for record in replica.find("HealthcareService", f"providedBy|Organization/{org_id}")
        if endpoint_choice.offers(body := _body(record.body), lookup.service_type)
    ]
    if not services:
        return endpoint_choice.NoEndpoint("no active HealthcareService of that type")
    endpoints = [
        _body(record.body)
        for endpoint_id in endpoint_choice.endpoint_ids(services)
        if (record := replica.get("Endpoint", endpoint_id)) is not None and not record.deleted
    ]
    if not endpoints:
        return endpoint_choice.NoEndpoint("the HealthcareService names no known Endpoint")
    return endpoint_choice.choose(
        endpoints, directory.endpoint_types, accepted_types(destination), now
    )


def _with_departments(replica: DirectoryReplica, roots: list[str]) -> list[str]:
    """The organisations and their ``partOf`` descendants (bounded), in breadth-first order."""
    found = list(dict.fromkeys(roots))
    level = list(found)
    for _ in range(MAX_DEPTH):
        children: list[str] = []
        for parent in level:
            for record in replica.find("Organization", f"partOf|Organization/{parent}"):
                usable = endpoint_choice.usable_organization(_body(record.body))
                if usable and record.id not in found and len(found) < MAX_ORGANIZATIONS:
                    found.append(record.id)
                    children.append(record.id)
        level = children
        if not level:
            break
    return found


def _body(body: bytes | None) -> dict[str, Any]:
    parsed = json.loads(body) if body else {}
    return parsed if isinstance(parsed, dict) else {}
