"""Use case: a referral pushed again. Amend it (update or redirect), or withdraw it when its
Consent now refuses. Source: issue 10 section 5; the decision itself is ``core.amendment``.

Everything an amendment does (the new content, the messages for the welfare side, the audit
record) is stored in one transaction, under an optimistic lock on the Task version; messages
about one Task reach one destination in the order they were made (the outbox hands out the
oldest pending one per Task and destination), so an update never overtakes the referral.
"""

from __future__ import annotations

import json
from dataclasses import replace

import structlog

from wor_bridge.core import amendment
from wor_bridge.core import feedback as fb
from wor_bridge.core.fhir import canonical_json
from wor_bridge.core.resource_ids import key_of, task_id_of
from wor_bridge.core.settings import Settings
from wor_bridge.core.translation import Translated
from wor_bridge.errors import Issue, MappingError
from wor_bridge.ports import Clock, OutboxStore
from wor_bridge.records import Amendment, AuditEvent, NewMessage, NewReferral
from wor_bridge.usecases import way_back
from wor_bridge.usecases.caller import Caller

log = structlog.get_logger("wor_bridge.usecases.amendment")

_ATTEMPTS = 3


def amend(
    store: OutboxStore, clock: Clock, result: Translated, new: NewReferral, audit: AuditEvent
) -> int | None:
    """Store ``new`` (the mapped re-push of a referral the bridge holds) as an amendment.

    Returns the new Task version, or None when the push is a duplicate (the caller stores it as
    one). Raises MappingError (business-rule, at ``ServiceRequest.identifier``) when the Task has
    finished, and (conflict) when concurrent changes keep moving the Task.
    """
    for _attempt in range(_ATTEMPTS):
        task = store.get_task(new.task_id)
        if task is None:
            return None  # gone meanwhile: never happens (Tasks are kept); store it as new
        decision = amendment.decide(
            stored_bundle=task.bundle,
            stored_destination=task.destination,
            task_status=task.status,
            new_bundle=new.bundle,
            new_destination=new.destination,
        )
        if decision == "duplicate":
            return None
        if decision == "finished":
            raise MappingError(
                [
                    Issue(
                        "business-rule",
                        f"{result.referral.service_request.location}.identifier",
                        f"must be a new referral identifier: the referral with this one has"
                        f" ended at the welfare side (Task status {task.status})",
                    )
                ]
            )
        now = clock.now()
        fingerprint = amendment.digest(new.bundle)
        if decision == "update":
            update = amendment.update_bundle(result.bundle, fingerprint)
            messages: tuple[NewMessage, ...] = (
                NewMessage(
                    f"amend|{new.task_id}|{fingerprint}",
                    new.task_id,
                    new.destination,
                    canonical_json(update),
                ),
            )
            stored = new
        else:
            when = now.isoformat(timespec="seconds")
            cancel = amendment.withdrawal(json.loads(task.bundle), amendment.REDIRECTED, when)
            stored = replace(new, idempotency_key=f"{new.idempotency_key}|{fingerprint[:16]}")
            messages = (
                NewMessage(
                    f"redirect|{new.task_id}|{fingerprint}|{task.destination}",
                    new.task_id,
                    task.destination,
                    canonical_json(cancel),
                ),
                NewMessage(stored.idempotency_key, new.task_id, new.destination, new.bundle),
            )
        detail = (
            f"{decision}: {task.destination} -> {new.destination}"
            if decision == "redirect"
            else f"{decision}: {new.destination}"
        )
        version = store.amend_referral(
            Amendment(
                referral=stored,
                expected_version=task.version,
                messages=messages,
                redirected=decision == "redirect",
                previous_destination=task.destination,
            ),
            now,
            audit=replace(
                audit, event="referral_amended", action="U", outcome="accepted", detail=detail
            ),
        )
        if version is not None:
            log.info(
                "referral_amended",
                task_id=new.task_id,
                decision=decision,
                destination=new.destination,
                previous=task.destination,
            )
            return version
    raise MappingError(
        [Issue("conflict", "ServiceRequest", "must be pushed again: the Task changed meanwhile")]
    )


def withdraw_refused(
    store: OutboxStore,
    settings: Settings,
    clock: Clock,
    err: MappingError,
    *,
    caller: Caller,
    source_system: str,
) -> str | None:
    """When a push is refused for its Consent and the bridge holds an earlier referral with the
    same identifier that is still open, withdraw that one: a GP-side cancellation with the
    closure reason ``consent-withdrawn`` (the welfare side is told; pull access ends with the
    open Task; nothing more is forwarded and nothing goes to the GP record but the Task's state).
    Returns the withdrawn Task's id, or None."""
    if err.consent_refused_for is None:
        return None
    task_id = task_id_of(key_of(source_system, err.consent_refused_for))
    task = store.get_task(task_id)
    if task is None:
        return None
    applied = way_back.apply_feedback(
        store,
        settings,
        clock,
        fb.Feedback(
            task_id=task_id,
            occurred_at=clock.now().isoformat(timespec="seconds"),
            status="cancelled",
            reason_code=amendment.CONSENT_WITHDRAWN,
        ),
        side="gp",
        caller=caller,
    )
    if not isinstance(applied, way_back.Applied) or not applied.changed:
        return None
    log.info("referral_withdrawn", task_id=task_id, reason=amendment.CONSENT_WITHDRAWN)
    return task_id
