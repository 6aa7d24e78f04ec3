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
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.identifiers import URI_IDENTIFIER
from wor_bridge.core.settings import Destination, Settings

FHIR_JSON: Final = "application/fhir+json; fhirVersion=4.0"
HEADERS: Final = (("Content-Type", FHIR_JSON), ("Accept", FHIR_JSON))
__all__ = ["FHIR_JSON", "HEADERS", "render", "request_id"]


def render(message: Outgoing, destination: Destination, _settings: Settings) -> list[HttpRequest]:
    """The requests that deliver ``message`` (a transaction Bundle) to ``destination``."""
    base = base_url(destination)
    headers = (*HEADERS, ("X-Request-Id", request_id(message.idempotency_key)))
    update = message.kind == "referral-update"
    entries = [
        e
        for e in message.bundle["entry"]
        if not (update and e["resource"]["resourceType"] == "Task")
    ]
    if destination.delivery == "transaction":
        if not update:
            return [HttpRequest("POST", base, message.payload, headers)]
        return [
            HttpRequest("POST", base, body(_update_transaction(message.bundle, entries)), headers)
        ]
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


def _update_transaction(bundle: JsonDict, entries: list[JsonDict]) -> JsonDict:
    """A referral amendment as a transaction of conditional updates: each resource (the Task
    left out: its status is the welfare side's) ``PUT Type?identifier=<bridge identifier>``, which
    finds what the referral created whether the receiver kept the bridge's id or gave its own,
    and has one effect however often it is sent (FHIR R4 http.html#cond-update)."""
    out = []
    for entry in entries:
        resource = entry["resource"]
        rid = str(resource.get("id") or str(entry["fullUrl"]).rsplit(":", 1)[-1])
        query = f"identifier={URI_IDENTIFIER}|urn:uuid:{rid}"
        request = {"method": "PUT", "url": f"{resource['resourceType']}?{query}"}
        out.append({"fullUrl": entry["fullUrl"], "resource": resource, "request": request})
    meta = {k: v for k, v in (bundle.get("meta") or {}).items() if k != "tag"}
    tags = [
        t for t in (bundle.get("meta") or {}).get("tag", []) if t.get("code") != "referral-update"
    ]
    if tags:
        meta["tag"] = tags
    head = {"resourceType": "Bundle", "id": bundle["id"], **({"meta": meta} if meta else {})}
    return {**head, "type": "transaction", "entry": out}
