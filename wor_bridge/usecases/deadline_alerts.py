"""Use case: first-contact deadline alerts, once per Task, to the GP record."""

from __future__ import annotations

import json

import structlog

from wor_bridge.core import feedback as fb
from wor_bridge.core import gp_record
from wor_bridge.core.fhir import canonical_json
from wor_bridge.core.settings import Settings
from wor_bridge.ports import Clock, OutboxStore
from wor_bridge.records import AuditEvent, NewMessage
from wor_bridge.usecases.way_back import FEEDBACK_MAPPING

log = structlog.get_logger("wor_bridge.usecases.deadline_alerts")


def check_deadlines(
    store: OutboxStore, settings: Settings, clock: Clock, limit: int = 100
) -> list[str]:
    """Alert once for every Task past its first-contact deadline; returns their ids."""
    alerted = []
    now = clock.now()
    for task_id in store.overdue_tasks(now, limit):
        task = store.get_task(task_id)
        if task is None:
            continue
        context = fb.context_from_bundle(task_id, json.loads(task.bundle), task.patient_id)
        target = settings.feedback.gp_record
        message = None
        if target is not None:
            bundle = gp_record.alert_bundle(
                context, now.isoformat(timespec="seconds"), FEEDBACK_MAPPING
            )
            message = NewMessage(f"alert|{task_id}", task_id, target, canonical_json(bundle))
        audit = AuditEvent(
            event="first_contact_overdue",
            action="E",
            outcome="alerted" if target else "alerted-no-gp-record",
            user="bridge",
            responsible=task.destination,
            source_system=task.source_system,
            patient_id=task.patient_id,
            object_type="Task",
            object_id=task_id,
        )
        if store.mark_alerted(task_id, message, audit=audit, now=now):
            log.warning("first_contact_overdue", task_id=task_id, destination=task.destination)
            alerted.append(task_id)
    return alerted
