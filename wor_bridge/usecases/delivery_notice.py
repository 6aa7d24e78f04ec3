"""Use case helper: tell the GP record what became of a referral's delivery.

A dead letter of the referral itself is told (the Task failed: ``failed`` / ``delivery-failed``,
addressed to the referrer), and so is an operator's retry of it (``requested`` / ``queued``
again), so that the GP record never keeps a state the bridge no longer shows. The message goes
through the outbox like all feedback, after the messages about the Task queued before it.
"""

from __future__ import annotations

import datetime as dt
import json

from wor_bridge.core import feedback as fb
from wor_bridge.core import gp_record
from wor_bridge.core.fhir import canonical_json
from wor_bridge.core.settings import Settings
from wor_bridge.core.task import TaskState
from wor_bridge.ports import OutboxStore
from wor_bridge.records import NewMessage
from wor_bridge.usecases.way_back import FEEDBACK_MAPPING

FAILED = TaskState("failed", "delivery-failed")
REQUEUED = TaskState("requested", "queued")


def notice(
    store: OutboxStore, settings: Settings, task_id: str, state: TaskState, now: dt.datetime
) -> NewMessage | None:
    """The GP-record message saying the referral's delivery is now ``state`` (None without a
    GP record, or when the Task moved on: then its own status is what the GP record knows)."""
    target = settings.feedback.gp_record
    task = store.get_task(task_id)
    if target is None or task is None or task.status != "requested":
        return None
    context = fb.context_from_bundle(task_id, json.loads(task.bundle), task.patient_id)
    when = now.isoformat(timespec="seconds")
    bundle = gp_record.delivery_notice(context, state, when, FEEDBACK_MAPPING)
    key = f"delivery|{task_id}|{state.business_status}|{now.isoformat()}"
    return NewMessage(key, task_id, target, canonical_json(bundle))
