"""Connector for a plain FHIR R4 welfare endpoint.

``transaction``: one ``POST [base]`` with the transaction Bundle. ``put``: one ``PUT
[base]/Type/id`` per resource, in Bundle order (ids are deterministic, so a repeat is harmless).
Either way a repeat after a lost response has one effect at the receiver.
"""

from __future__ import annotations

import hashlib
import json
from typing import Final

from wor_bridge.core.delivery import HttpRequest
from wor_bridge.core.settings import Destination

FHIR_JSON: Final = "application/fhir+json; fhirVersion=4.0"
HEADERS: Final = (("Content-Type", FHIR_JSON), ("Accept", FHIR_JSON))


def render(payload: bytes, destination: Destination, idempotency_key: str) -> list[HttpRequest]:
    """The requests that deliver ``payload`` (a transaction Bundle) to ``destination``."""
    if not destination.endpoint:
        raise ValueError(f"destination {destination.id} has no endpoint")
    base = destination.endpoint.rstrip("/")
    headers = (*HEADERS, ("X-Request-Id", request_id(idempotency_key)))
    if destination.delivery == "transaction":
        return [HttpRequest("POST", base, payload, headers)]
    bundle = json.loads(payload)
    requests = []
    for entry in bundle["entry"]:
        resource = entry["resource"]
        url = f"{base}/{resource['resourceType']}/{resource['id']}"
        body = json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()
        requests.append(HttpRequest("PUT", url, body, headers))
    return requests


def request_id(idempotency_key: str) -> str:
    """A stable, opaque request id for the receiver's logs (no business data in clear)."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]
