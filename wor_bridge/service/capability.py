"""The FHIR route table and the CapabilityStatement generated from it (``GET [base]/metadata``).

``ROUTES`` names every route of ``/fhir/r4`` and ``/fhir/stu3``: method, path, resource type,
FHIR interaction and the body formats it reads. ``check`` compares it with the app's routes when
the app is built, so a route added without its row (or a row without its route) stops the
start-up: the statement cannot drift from what the service does. The statement states the
interactions, the search parameters (``core.search.TASK_PARAMS``), the formats, the patch format,
version-aware updates (``If-Match`` required) and the security of the service as configured.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

from fastapi import FastAPI
from fastapi.routing import APIRoute

from wor_bridge.connectors.notified_pull import PULLED_TYPES
from wor_bridge.connectors.ta_notified_pull import SEARCHES
from wor_bridge.core import search
from wor_bridge.core.media import Version

JsonDict = dict[str, Any]
BASES: Final = {"R4": "/fhir/r4", "STU3": "/fhir/stu3"}
SECURITY_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/restful-security-service"
_SYSTEM_LEVEL: Final = frozenset({"transaction", "batch"})


@dataclass(frozen=True, slots=True)
class Route:
    """One FHIR route: what it is in FHIR REST terms."""

    method: str
    path: str
    types: tuple[str, ...]
    """resource types; empty for the base"""
    interactions: tuple[str, ...]
    bodies: tuple[str, ...] = ()
    """body formats read: json, xml, json-patch, form"""

    @property
    def version(self) -> Version:
        """The FHIR version of the route's base."""
        return "STU3" if self.path.startswith(BASES["STU3"]) else "R4"


_STU3_TYPES: Final = tuple(
    "ReferralRequest" if t == "ServiceRequest" else t for t in (*PULLED_TYPES, "Task")
)
ROUTES: Final = (
    Route("GET", "/fhir/r4/metadata", (), ("capabilities",)),
    Route("POST", "/fhir/r4", (), ("transaction", "batch"), ("json", "xml")),
    Route("POST", "/fhir/r4/ServiceRequest", ("ServiceRequest",), ("create",), ("json", "xml")),
    Route("GET", "/fhir/r4/ServiceRequest/{request_id}", ("ServiceRequest",), ("read",)),
    Route(
        "GET",
        "/fhir/r4/ServiceRequest/{request_id}/_history/{vid}",
        ("ServiceRequest",),
        ("vread",),
    ),
    Route("GET", "/fhir/r4/Task", ("Task",), ("search-type",)),
    Route("POST", "/fhir/r4/Task/_search", ("Task",), ("search-type",), ("form",)),
    Route("GET", "/fhir/r4/Task/{task_id}", ("Task",), ("read",)),
    Route("GET", "/fhir/r4/Task/{task_id}/_history/{vid}", ("Task",), ("vread",)),
    Route("PUT", "/fhir/r4/Task/{task_id}", ("Task",), ("update",), ("json",)),
    Route("PATCH", "/fhir/r4/Task/{task_id}", ("Task",), ("patch",), ("json-patch",)),
    Route("POST", "/fhir/r4/Observation", ("Observation",), ("create",), ("json",)),
    Route("GET", "/fhir/r4/Observation/{observation_id}", ("Observation",), ("read",)),
    Route(
        "GET",
        "/fhir/r4/Observation/{observation_id}/_history/{vid}",
        ("Observation",),
        ("vread",),
    ),
    Route("GET", "/fhir/stu3/metadata", (), ("capabilities",)),
    Route("POST", "/fhir/stu3", (), ("transaction", "batch"), ("json", "xml")),
    Route("POST", "/fhir/stu3/ReferralRequest", ("ReferralRequest",), ("create",), ("json", "xml")),
    Route("GET", "/fhir/stu3/{rtype}/{rid}", _STU3_TYPES, ("read",)),
    *(Route("GET", f"/fhir/stu3/{t}", (t,), ("search-type",)) for t in SEARCHES),
    Route("PUT", "/fhir/stu3/Task/{task_id}", ("Task",), ("update",), ("json",)),
    Route("POST", "/fhir/stu3/Observation", ("Observation",), ("create",), ("json",)),
)


def fhir_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route of the app under a FHIR base (HEAD left out)."""
    found = set()
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path.startswith(tuple(BASES.values())):
            found |= {(m, route.path) for m in route.methods or () if m != "HEAD"}
    return found


def check(app: FastAPI) -> None:
    """Raise ``RuntimeError`` when ``ROUTES`` and the app's FHIR routes differ."""
    table = {(r.method, r.path) for r in ROUTES}
    routes = fhir_routes(app)
    if table != routes:
        missing = sorted(routes - table)
        extra = sorted(table - routes)
        raise RuntimeError(f"FHIR route table out of date: no row {missing}; no route {extra}")


def json_only(method: str, path: str) -> bool:
    """Whether the route at ``path`` reads a body but never XML (then XML is a 415)."""
    for route in ROUTES:
        if route.method == method and route.bodies and _matches(route.path, path):
            return "xml" not in route.bodies
    return False


def _matches(template: str, path: str) -> bool:
    parts, given = template.strip("/").split("/"), path.strip("/").split("/")
    return len(parts) == len(given) and all(
        p.startswith("{") or p == g for p, g in zip(parts, given, strict=True)
    )


def _coding(code: str) -> JsonDict:
    return {"coding": [{"system": SECURITY_SYSTEM, "code": code}]}


def _security(version: Version, mutual_tls: bool) -> JsonDict:
    text = (
        "API key as `Authorization: Bearer <key>` or `X-API-Key`; scopes per client; each client "
        "sees only its own source system's (GP side) or organisation's (welfare side) Tasks."
    )
    services = []
    if version == "STU3":
        text = (
            "Reads: an access token from the token endpoint (OAuth2 client credentials, bound to "
            "one Task); writes: that token or an API key."
        )
        services.append(_coding("OAuth"))
    if mutual_tls:
        text += " Mutual TLS: a client certificate issued by the configured CA."
        services.append(_coding("Certificates"))
    out: JsonDict = {"cors": False, "description": text}
    if services:
        out["service"] = services
    return out


def _resource(rtype: str, interactions: list[str], version: Version) -> JsonDict:
    entry: JsonDict = {"type": rtype, "interaction": [{"code": c} for c in interactions]}
    if version == "R4" and rtype == "Task":
        entry["versioning"] = "versioned-update"
        entry["readHistory"] = False
        entry["updateCreate"] = False
        entry["searchParam"] = [
            {
                "name": name,
                "definition": "http://hl7.org/fhir/SearchParameter/"
                + ({"_id": "Resource-id", "_lastUpdated": "Resource-lastUpdated"}.get(name)
                   or f"Task-{name}"),
                "type": param.type,
                "documentation": param.documentation,
            }
            for name, param in search.TASK_PARAMS.items()
        ]  # fmt: skip
    elif version == "R4":
        entry["versioning"] = "versioned"
        entry["readHistory"] = False
    return entry


def statement(version: Version, base_url: str, *, mutual_tls: bool, today: dt.date) -> JsonDict:
    """The CapabilityStatement of one FHIR base, from ``ROUTES``."""
    routes = [r for r in ROUTES if r.version == version]
    per_type: dict[str, list[str]] = {}
    system: list[str] = []
    for route in routes:
        for code in route.interactions:
            if code in _SYSTEM_LEVEL and code not in system:
                system.append(code)
            for rtype in route.types:
                codes = per_type.setdefault(rtype, [])
                if code not in codes:
                    codes.append(code)
    rest: JsonDict = {
        "mode": "server",
        "documentation": "The bridge's FHIR REST interface; see the README's endpoint table.",
        "security": _security(version, mutual_tls),
        "resource": [_resource(t, per_type[t], version) for t in sorted(per_type)],
    }
    if system:
        rest["interaction"] = [{"code": c} for c in system]
    doc: JsonDict = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": today.isoformat(),
        "publisher": "wor_bridge",
        "kind": "instance",
        "software": {"name": "wor_bridge", "version": "0.1.0"},
        "implementation": {
            "description": "wor_bridge: Welzijn op Recept referrals",
            "url": f"{base_url.rstrip('/')}{BASES[version]}",
        },
        "fhirVersion": "4.0.1" if version == "R4" else "3.0.2",
    }
    if version == "STU3":
        doc["acceptUnknown"] = "no"
        doc["format"] = ["application/fhir+json", "application/fhir+xml"]
    else:
        doc["format"] = ["application/fhir+json", "application/fhir+xml", "json", "xml"]
        doc["patchFormat"] = ["application/json-patch+json"]
    doc["rest"] = [rest]
    return doc
