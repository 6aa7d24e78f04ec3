"""Use cases: search the bridge's Tasks, read back a referral's ServiceRequest and the feedback
Observations the bridge holds. All within the caller's tenancy (``caller.may_access``: what the
caller may not see is not found) and audited as reads of patient data, one record per Task.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wor_bridge.core.search import Parsed
from wor_bridge.core.task import Refusal
from wor_bridge.ports import Clock, OutboxStore
from wor_bridge.records import AuditEvent, TaskRecord, TaskSearch
from wor_bridge.usecases.caller import Caller, may_access
from wor_bridge.usecases.task_view import instant, relative_references, task_resource
from wor_bridge.usecases.way_back import NOT_FOUND

JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Found:
    """One page of a Task search: the total and the Tasks as GET returns them."""

    total: int
    tasks: tuple[JsonDict, ...]


def tenancy(caller: Caller, destination: str | None) -> TaskSearch:
    """The part of a search that keeps it within what ``caller`` may see (deny by default)."""
    if caller.admin:
        return TaskSearch(everyone=True)
    acting_for = destination if destination is not None else caller.destination
    if acting_for is not None:
        return TaskSearch(destination=acting_for)
    return TaskSearch(source_system=caller.source_system)


def _audit(
    store: OutboxStore, clock: Clock, event: str, caller: Caller, task: TaskRecord, *, kind: str
) -> None:
    store.audit(
        AuditEvent(
            event=event,
            action="R",
            outcome="success",
            user=caller.client_id,
            responsible=caller.on_behalf_of,
            source_system=task.source_system,
            patient_id=task.patient_id,
            object_type=kind,
            object_id=task.task_id,
        ),
        clock.now(),
    )


def search_tasks(
    store: OutboxStore,
    clock: Clock,
    parsed: Parsed,
    caller: Caller,
    destination: str | None = None,
    *,
    behalf: Callable[[TaskRecord], Caller] | None = None,
) -> Found:
    """The page of Tasks ``parsed`` asks for that ``caller`` may see; each one audited.

    ``behalf(task)`` gives the on-behalf-of of each record (the GP side's referrer)."""
    scope = tenancy(caller, destination)
    page = store.search_tasks(
        TaskSearch(
            where=parsed.where,
            updated_from=parsed.updated_from,
            updated_before=parsed.updated_before,
            source_system=scope.source_system,
            destination=scope.destination,
            everyone=scope.everyone,
            newest_first=parsed.newest_first,
            offset=parsed.offset,
            count=0 if parsed.summary == "count" else parsed.count,
        )
    )
    out = []
    for task in page.tasks:
        if not may_access(caller, destination, task.destination, task.source_system):
            continue  # the store keeps the tenancy; this is the second lock on the door
        record = store.get_referral(task.task_id)
        if record is None:
            continue
        who = caller if behalf is None else behalf(task)
        _audit(store, clock, "task_search", who, task, kind="Task")
        out.append(task_resource(task, record.state, frozenset(store.known_items(task.task_id))))
    return Found(page.total, tuple(out))


def _visible(
    store: OutboxStore, task_id: str | None, caller: Caller, destination: str | None
) -> TaskRecord | Refusal:
    task = store.get_task(task_id) if task_id else None
    if task is None or not may_access(caller, destination, task.destination, task.source_system):
        return NOT_FOUND
    return task


def read_service_request(
    store: OutboxStore, clock: Clock, request_id: str, caller: Caller, destination: str | None
) -> JsonDict | Refusal:
    """The referral's ServiceRequest as the bridge mapped it (version 1; audited)."""
    task = _visible(store, store.task_for_request(request_id), caller, destination)
    if isinstance(task, Refusal):
        return task
    bundle = json.loads(task.bundle)
    local = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['fullUrl'].rsplit(':', 1)[-1]}"
        for e in bundle["entry"]
    }
    found = next(
        (
            e["resource"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "ServiceRequest"
            and e["resource"].get("id") == request_id
        ),
        None,
    )
    if found is None:
        return NOT_FOUND
    out: JsonDict = relative_references(found, local)
    meta = {**out.get("meta", {}), "versionId": "1"}
    if task.received_at is not None:
        meta["lastUpdated"] = instant(task.received_at)
    _audit(store, clock, "referral_read", caller, task, kind="ServiceRequest")
    return {**out, "meta": meta}


def read_observation(
    store: OutboxStore,
    clock: Clock,
    observation_id: str,
    caller: Caller,
    destination: str | None,
    *,
    gp_record: str | None,
) -> JsonDict | Refusal:
    """A feedback Observation as the bridge sent it to the GP record (version 1; audited).

    Only Observations the bridge holds: with no GP record configured, or an item the consent
    withheld, there is none (404)."""
    task = _visible(store, store.item_task(observation_id), caller, destination)
    if isinstance(task, Refusal):
        return task
    found = held_observation(store, task.task_id, observation_id, gp_record)
    if found is None:
        return NOT_FOUND
    _audit(store, clock, "feedback_read", caller, task, kind="Observation")
    return found


def held_observation(
    store: OutboxStore, task_id: str, observation_id: str, gp_record: str | None
) -> JsonDict | None:
    """The Observation ``observation_id`` as the Task's messages to the GP record last sent it:
    version 1 as reported, version 2 when it was retracted (``entered-in-error``) later."""
    found: JsonDict | None = None
    version = 0
    for target, payload in store.task_messages(task_id):
        if target != gp_record:
            continue
        for entry in json.loads(payload).get("entry") or []:
            resource = entry.get("resource") or {}
            if resource.get("resourceType") == "Observation" and resource.get("id") == (
                observation_id
            ):
                found, version = resource, version + 1
    if found is None:
        return None
    return {**found, "meta": {**found.get("meta", {}), "versionId": str(version)}}
