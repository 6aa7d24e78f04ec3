"""An outbox message as the destination connectors see it, and what they share to render it.

Every message is stored as an R4 transaction Bundle. Its *kind* says what it does at the
receiver, which decides how a connector keeps a repeat harmless:

- ``referral``: the referral itself (it holds a ServiceRequest): a *create* at the receiver, made
  idempotent by a conditional create (``If-None-Exist`` on the bridge identifier) or a PUT to a
  deterministic id, as the destination's ``create`` setting says;
- ``referral-update``: the referral changed (an amendment, ``core.amendment``): an *update* of
  what the receiver holds, never a second create: conditional updates on the bridge identifier
  (``fhir-r4``), the notification Task updated (notified pull), or a new document version
  (ZorgDomein); the receiver's Task itself is left alone (its status belongs to the welfare side);
- ``task-update``: a later change of the referral's Task (a GP-side withdrawal, and later
  amendments): an *update*, always a PUT (to the Task's id, or conditional on its identifier),
  which has one effect however often it is repeated;
- ``record``: a message for the GP record (feedback, alerts, delivery notices): PUTs of resources
  with deterministic ids in a transaction.

Messages about one Task reach one destination in the order they were made: the outbox hands out
only the oldest pending message per Task and destination. Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from wor_bridge.core.amendment import is_update
from wor_bridge.core.delivery import HttpRequest
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.identifiers import URI_IDENTIFIER, oid_form
from wor_bridge.core.settings import Destination, IdentifierSetting

Kind = Literal["referral", "referral-update", "task-update", "record"]
STU3_JSON: Final = "application/fhir+json; fhirVersion=3.0"


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One outbox message: its Bundle, what kind it is, and the instant it was made."""

    bundle: JsonDict
    payload: bytes
    idempotency_key: str
    created_at: str
    earlier: Callable[[], list[bytes]] = field(default=lambda: [], compare=False)
    """The payloads of the earlier messages about this Task to this destination, oldest first
    (read on demand: a Twiin-02 cancellation names every notification sent before it)."""

    @property
    def kind(self) -> Kind:
        """``referral`` (a ServiceRequest inside), ``referral-update`` (the same, tagged by
        ``core.amendment.update_bundle``), ``task-update`` (only a Task), ``record``."""
        types = [e["resource"]["resourceType"] for e in self.bundle.get("entry") or []]
        if "ServiceRequest" in types:
            return "referral-update" if is_update(self.bundle) else "referral"
        if types == ["Task"]:
            return "task-update"
        return "record"

    @property
    def task(self) -> JsonDict:
        """The (R4) Task the message is about; ValueError when it holds none."""
        for entry in self.bundle.get("entry") or []:
            if entry["resource"]["resourceType"] == "Task":
                resource: JsonDict = entry["resource"]
                return resource
        raise ValueError("the message holds no Task")

    @property
    def task_uuid(self) -> str:
        """The uuid of the bridge's Task identifier (``urn:ietf:rfc:3986|urn:uuid:<uuid>``)."""
        for ident in self.task.get("identifier") or []:
            value = str(ident.get("value", ""))
            if ident.get("system") == URI_IDENTIFIER and value.startswith("urn:uuid:"):
                return str(uuid.UUID(value[9:]))
        raise ValueError("the Task carries no urn:uuid identifier")


def outgoing(
    payload: bytes,
    idempotency_key: str,
    created_at: str,
    earlier: Callable[[], list[bytes]] | None = None,
) -> Outgoing:
    """Parse a stored message; ValueError when it is not a Bundle."""
    bundle: Any = json.loads(payload)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise ValueError("an outbox message is a Bundle")
    return Outgoing(bundle, payload, idempotency_key, created_at, earlier or (lambda: []))


def request_id(idempotency_key: str) -> str:
    """A stable, opaque request id for the receiver's logs (no business data in clear)."""
    return hashlib.sha256(idempotency_key.encode()).hexdigest()[:32]


def body(resource: JsonDict) -> bytes:
    """Compact JSON bytes of a resource."""
    return json.dumps(resource, ensure_ascii=False, separators=(",", ":")).encode()


def base_url(destination: Destination) -> str:
    """The destination's base URL without a trailing slash; ValueError when it has none."""
    if not destination.endpoint:
        raise ValueError(f"destination {destination.id} has no endpoint")
    return destination.endpoint.rstrip("/")


def identifier_query(task_uuid: str) -> str:
    """``identifier=urn:ietf:rfc:3986|urn:uuid:<uuid>``: the search that finds one resource."""
    return f"identifier={URI_IDENTIFIER}|urn:uuid:{task_uuid}"


def configured_identifier(setting: IdentifierSetting, destination: Destination) -> JsonDict:
    """A configured identifier in the form the destination expects."""
    system = oid_form(setting.system) if destination.identifier_form == "oid" else setting.system
    return {"system": system, "value": setting.value}


def in_form(ident: JsonDict, destination: Destination) -> JsonDict:
    """An identifier with its system in the destination's form (URI or ``urn:oid:``)."""
    if destination.identifier_form == "oid":
        return {**ident, "system": oid_form(str(ident["system"]))}
    return ident


def stu3_headers(request_id: str) -> tuple[tuple[str, str], ...]:
    """Content type, accept and the opaque request id of an STU3 request."""
    return (("Content-Type", STU3_JSON), ("Accept", STU3_JSON), ("X-Request-Id", request_id))


def create(
    destination: Destination,
    rtype: str,
    rid: str,
    resource: JsonDict,
    headers: tuple[tuple[str, str], ...],
    *,
    conditional_on: str,
) -> HttpRequest:
    """The request that creates ``resource`` once, by the destination's ``create`` setting:
    ``conditional`` POSTs with ``If-None-Exist: <conditional_on>``, ``put`` PUTs it (with its
    id) at ``[base]/<rtype>/<rid>``, ``plain`` POSTs it as it is (at least once: a repeat after a
    lost answer makes a second resource at the receiver)."""
    base = base_url(destination)
    mode = destination.create or "conditional"
    if mode == "put":
        return HttpRequest("PUT", f"{base}/{rtype}/{rid}", body({**resource, "id": rid}), headers)
    if mode == "conditional":
        headers = (*headers, ("If-None-Exist", conditional_on))
    return HttpRequest("POST", f"{base}/{rtype}", body(resource), headers)


def update_task(
    destination: Destination,
    task_uuid: str,
    task: JsonDict,
    headers: tuple[tuple[str, str], ...],
    *,
    at_id: bool,
) -> HttpRequest:
    """The PUT that updates the receiver's Task: at ``[base]/Task/<uuid>`` when it was created
    there (``at_id``), else conditional on the bridge identifier (``PUT [base]/Task?identifier=``,
    without an id: the receiver keeps its own). A PUT has one effect however often it is sent."""
    base = base_url(destination)
    if at_id:
        url, resource = f"{base}/Task/{task_uuid}", {**task, "id": task_uuid}
    else:
        url = f"{base}/Task?{identifier_query(task_uuid)}"
        resource = {k: v for k, v in task.items() if k != "id"}
    return HttpRequest("PUT", url, body(resource), headers)


def by_identifier(node: Any) -> Any:
    """A copy of ``node`` whose ``urn:uuid:`` references become references by the bridge
    identifier that every resource the bridge makes carries (``urn:ietf:rfc:3986|urn:uuid:<id>``):
    outside the Bundle a ``urn:uuid:`` reference resolves nowhere, the identifier does."""
    if isinstance(node, dict):
        reference = node.get("reference")
        if isinstance(reference, str) and reference.startswith("urn:uuid:"):
            rest = {k: v for k, v in node.items() if k not in ("reference", "type")}
            return {**rest, "identifier": {"system": URI_IDENTIFIER, "value": reference}}
        return {k: by_identifier(v) for k, v in node.items()}
    if isinstance(node, list):
        return [by_identifier(v) for v in node]
    return node
