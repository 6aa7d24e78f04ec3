"""Use case: read the bridge's Task as the GP or welfare side sees it (an audited read)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from wor_bridge.core import feedback as fb
from wor_bridge.core import identifiers as ids
from wor_bridge.core.outbox import State
from wor_bridge.core.search import referral_keys, task_status
from wor_bridge.core.settings import BUSINESS_STATUS_SYSTEM
from wor_bridge.core.task import Refusal
from wor_bridge.ports import Clock, OutboxStore
from wor_bridge.records import AuditEvent, TaskRecord
from wor_bridge.usecases.caller import Caller
from wor_bridge.usecases.way_back import NOT_FOUND, access


def task_resource(
    task: TaskRecord, delivery: State, item_keys: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The bridge's Task: delivery state until the welfare side reports, then its state.

    ``meta.versionId`` is the version to send in ``If-Match`` when updating it and
    ``meta.lastUpdated`` when it last changed; ``identifier`` adds the HIS's own referral number
    to the bridge's; ``output`` refers (by identifier) to the feedback Observations sent to the
    GP record.
    """
    bundle = json.loads(task.bundle)
    local = {
        e["fullUrl"]: f"{e['resource']['resourceType']}/{e['fullUrl'].rsplit(':', 1)[-1]}"
        for e in bundle["entry"]
    }
    mapped = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
    out: dict[str, Any] = relative_references(mapped, local)
    status, business = task_status(task.status, task.business_status, delivery)
    out = {**out, "id": task.task_id, "status": status}
    his_system, his_value, _ = referral_keys(bundle)
    if his_value:
        out["identifier"] = [
            *(out.get("identifier") or []),
            {"system": his_system, "value": his_value},
        ]
    meta = {**out.get("meta", {}), "versionId": str(task.version)}
    if task.updated_at is not None:
        meta["lastUpdated"] = instant(task.updated_at)
    out["meta"] = meta
    out["businessStatus"] = {"coding": [{"system": BUSINESS_STATUS_SYSTEM, "code": business}]}
    if task.reason_code or task.reason_text:
        reason: dict[str, Any] = {}
        if task.reason_code:
            reason["coding"] = [{"system": fb.CLOSURE_REASON, "code": task.reason_code}]
        if task.reason_text:
            reason["text"] = task.reason_text
        out["statusReason"] = reason
    item_keys = frozenset(fb.live_keys(item_keys))  # a retracted item is no output any more
    if item_keys:
        out["output"] = [
            {
                "type": {"coding": [{"system": fb.FEEDBACK_CATEGORY, "code": "wor-feedback"}]},
                "valueReference": {
                    "type": "Observation",
                    "identifier": {"system": ids.URI_IDENTIFIER, "value": f"urn:uuid:{key}"},
                },
            }
            for key in sorted(item_keys)
        ]
    return out


def instant(moment: dt.datetime) -> str:
    """A FHIR ``instant`` in UTC with milliseconds (``2026-01-02T03:04:05.678Z``)."""
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def relative_references(node: Any, local: dict[str, str]) -> Any:
    """Bundle-internal ``urn:uuid:`` references as ``Type/id`` (outside the Bundle)."""
    if isinstance(node, dict):
        return {
            k: local.get(v, v) if k == "reference" else relative_references(v, local)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [relative_references(v, local) for v in node]
    return node


def read_task(
    store: OutboxStore, clock: Clock, task_id: str, caller: Caller, destination: str | None = None
) -> dict[str, Any] | Refusal:
    """The Task for ``task_id`` (audited as a read of patient data)."""
    task = store.get_task(task_id)
    record = store.get_referral(task_id)
    if task is None or record is None:
        return NOT_FOUND
    denied = access(task, caller, destination)
    if denied is not None:
        return denied
    store.audit(
        AuditEvent(
            event="task_read",
            action="R",
            outcome="success",
            user=caller.client_id,
            responsible=caller.on_behalf_of,
            source_system=task.source_system,
            patient_id=task.patient_id,
            object_type="Task",
            object_id=task_id,
        ),
        clock.now(),
    )
    return task_resource(task, record.state, frozenset(store.known_items(task_id)))
