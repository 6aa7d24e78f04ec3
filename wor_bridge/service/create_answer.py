"""How a push and a feedback Observation are answered: as a FHIR server answers a create
(http.html#create) and a transaction or batch (http.html#transaction).

- A referral (``POST [base]/ServiceRequest``, or a ``collection`` Bundle at the base): **201**
  when it is new, **200** for the same referral again; ``Location`` the absolute URL of its Task
  version (``[base]/Task/{id}/_history/{vid}``, on the configured public base) and ``ETag``
  ``W/"{vid}"``. The body is what ``Prefer: return=`` asks for: ``minimal`` (none; also the
  default: what was created is a Task, not the ServiceRequest posted, and a client library
  would take it for its own resource), ``representation`` (the Task as ``GET`` returns it:
  ``businessStatus`` shows the delivery, queued until the dispatcher delivers it) or
  ``OperationOutcome`` (the information outcome the service answered before).
- A ``transaction`` or ``batch`` Bundle: **200** with a ``transaction-response`` (or
  ``batch-response``) Bundle, one entry per request entry in order: the ServiceRequest's
  ``201 Created`` (or ``200 OK``) with its ``location`` and ``etag`` and an outcome naming the
  Task; every other entry ``200 OK`` with an outcome saying it was read as part of the referral.
  ``Location`` and ``ETag`` name the Task as above.
- A feedback Observation: **201** (**200** for a repeat) with ``Location``
  ``[base]/Observation/{id}/_history/{vid}`` of the Observation the bridge holds (the one sent to
  the GP record: version 1, version 2 once retracted by an ``entered-in-error`` Observation);
  the body by ``Prefer``, by default that Observation. Without a GP record, or
  when the consent withheld the item, the bridge holds none: no ``Location``, the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from wor_bridge.bootstrap import Components
from wor_bridge.core import inbound, shape
from wor_bridge.core.outcome import information, operation_outcome
from wor_bridge.errors import Issue, RefusedError
from wor_bridge.usecases import task_view

JsonDict = dict[str, Any]
Respond = Callable[..., Response]


def preferred(request: Request, default: str) -> str:
    """``Prefer: return=`` of the request (``default`` when absent or unknown)."""
    asked = shape.prefer(request.headers.get("prefer")).get("return", "")
    return asked if asked in shape.RETURNS else default


def _bundle_of(body: bytes, content_type: str | None, max_bytes: int) -> JsonDict | None:
    """The pushed resource when it is a transaction or batch Bundle (else None). The intake
    read it already: JSON is only parsed again, XML read again (hardened) into FHIR JSON."""
    try:
        if inbound.detect_format(body, content_type) == "json":
            data = json.loads(body)
        else:
            data = inbound.read(body, content_type, max_bytes=max_bytes)
    except (RefusedError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if data.get("resourceType") == "Bundle" and data.get("type") in ("transaction", "batch"):
        return data
    return None


def referral_answer(
    c: Components,
    respond: Respond,
    request: Request,
    *,
    task_id: str,
    created: bool,
    body: bytes,
    amended: bool = False,
) -> Response:
    """The answer to an accepted referral (see the module docstring). Runs in a worker thread."""
    base = f"{c.config.core.pull.base_url.rstrip('/')}/fhir/r4"
    task = c.store.get_task(task_id)
    record = c.store.get_referral(task_id)
    version = task.version if task is not None else 1
    headers = {"Location": f"{base}/Task/{task_id}/_history/{version}", "ETag": f'W/"{version}"'}
    status = 201 if created else 200
    message = (
        "referral accepted and stored; delivery is queued"
        if created
        else "referral changed; the welfare organisation receives the change"
        if amended
        else "referral already received; no second delivery"
    )
    pushed = None
    if request.url.path.rstrip("/") == "/fhir/r4":
        ctype = request.headers.get("content-type") or None
        pushed = _bundle_of(body, ctype, c.config.core.max_body_bytes)
    if pushed is not None:
        kind = str(pushed["type"])
        entries = []
        for entry in pushed.get("entry") or []:
            resource = entry.get("resource") or {}
            if resource.get("resourceType") == "ServiceRequest" and record is not None:
                sr_id = _request_id(record.bundle)
                entries.append(
                    shape.response_entry(
                        "201 Created" if created else "200 OK",
                        f"{base}/ServiceRequest/{sr_id}/_history/1",
                        'W/"1"',
                        information(f"{message}; Task: {headers['Location']}"),
                    )
                )
            else:
                note = "read as part of the referral; not kept as a resource of its own"
                entries.append(shape.response_entry("200 OK", outcome=information(note)))
        return respond(shape.transaction_response(kind, entries), headers=headers)
    wanted = preferred(request, "minimal")
    if wanted == "representation" and task is not None and record is not None:
        known = frozenset(c.store.known_items(task_id))
        resource = task_view.task_resource(task, record.state, known)
        return respond(resource, status_code=status, headers=headers)
    if wanted == "OperationOutcome":
        return respond(information(message), status_code=status, headers=headers)
    return Response(status_code=status, headers=headers)


def _request_id(bundle: bytes) -> str:
    data = json.loads(bundle)
    # a resource the mapping creates conditionally has no id: its fullUrl is urn:uuid:<id>
    return next(
        str(e["resource"].get("id") or str(e["fullUrl"]).rsplit(":", 1)[-1])
        for e in data["entry"]
        if e["resource"]["resourceType"] == "ServiceRequest"
    )


def observation_answer(
    c: Components,
    respond: Respond,
    request: Request,
    *,
    key: str | None,
    held: JsonDict | None,
    issues: list[Issue],
    repeat: bool,
) -> Response:
    """The answer to an applied feedback Observation (see the module docstring)."""
    status = 200 if repeat else 201
    outcome = operation_outcome(issues)
    if key is None or held is None:
        return respond(outcome, status_code=status)
    base = f"{c.config.core.pull.base_url.rstrip('/')}/fhir/r4"
    version = held["meta"]["versionId"]  # 2 once a retraction (entered-in-error) was sent
    headers = {"Location": f"{base}/Observation/{key}/_history/{version}", "ETag": f'W/"{version}"'}
    wanted = preferred(request, "representation")
    if wanted == "representation":
        return respond(held, status_code=status, headers=headers)
    if wanted == "OperationOutcome":
        return respond(outcome, status_code=status, headers=headers)
    return Response(status_code=status, headers=headers)
