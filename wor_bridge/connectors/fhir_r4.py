"""Connector for a plain FHIR R4 endpoint (a welfare organisation, and the GP record).

Every message is an R4 transaction Bundle whose entries are idempotent by construction: ``PUT
Type/id`` with a deterministic id, ``POST Type`` with ``ifNoneExist`` on the bridge identifier
(the destination's mapping file chooses), or ``PUT Type?identifier=...`` (a conditional update).
``delivery = "transaction"``: one ``POST [base]`` with the Bundle. ``delivery = "put"``: one
``PUT [base]/Type/id`` per resource, in Bundle order, with the Bundle's ``urn:uuid:`` references
rewritten to ``Type/id`` (outside a Bundle a ``urn:uuid:`` resolves nowhere). Either way a repeat
after a lost answer has one effect at the receiver.
"""

from __future__ import annotations

from typing import Final

from wor_bridge.connectors.notified_pull import retarget
from wor_bridge.connectors.outgoing import Outgoing, base_url, body, request_id
from wor_bridge.core.delivery import HttpRequest
from wor_bridge.core.settings import Destination, Settings

FHIR_JSON: Final = "application/fhir+json; fhirVersion=4.0"
HEADERS: Final = (("Content-Type", FHIR_JSON), ("Accept", FHIR_JSON))
__all__ = ["FHIR_JSON", "HEADERS", "render", "request_id"]


def render(message: Outgoing, destination: Destination, _settings: Settings) -> list[HttpRequest]:
    """The requests that deliver ``message`` (a transaction Bundle) to ``destination``."""
    base = base_url(destination)
    headers = (*HEADERS, ("X-Request-Id", request_id(message.idempotency_key)))
    if destination.delivery == "transaction":
        return [HttpRequest("POST", base, message.payload, headers)]
    entries = message.bundle["entry"]
    local = {
        str(e["fullUrl"]): f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in entries
        if e.get("fullUrl") and e["resource"].get("id")
    }
    requests = []
    for entry in entries:
        resource = retarget(entry["resource"], local)
        url = f"{base}/{resource['resourceType']}/{resource['id']}"
        requests.append(HttpRequest("PUT", url, body(resource), headers))
    return requests
