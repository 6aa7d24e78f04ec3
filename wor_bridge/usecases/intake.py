"""Use case: accept a pushed referral (map, gate, store durably with its outbox entry).

Logs here carry ids, counts and durations only; the audit trail (in the store) carries the patient
identifier, as NEN 7513 requires.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import structlog

from wor_bridge import faults
from wor_bridge.core import identifiers as ids
from wor_bridge.core import outbox
from wor_bridge.core.fhir import canonical_json
from wor_bridge.core.gates import Referral, identifiers_in
from wor_bridge.core.monitoring_facts import referral_facts
from wor_bridge.core.search import referral_keys
from wor_bridge.core.settings import Settings
from wor_bridge.core.translation import translate
from wor_bridge.errors import Issue, MappingError, RefusedError
from wor_bridge.ports import Clock, OutboxStore
from wor_bridge.records import AuditEvent, NewReferral
from wor_bridge.usecases import amendment
from wor_bridge.usecases.caller import Caller

log = structlog.get_logger("wor_bridge.usecases.intake")


@dataclass(frozen=True, slots=True)
class Accepted:
    """A durably stored referral."""

    task_id: str
    outbox_id: int
    destination: str
    created: bool
    amended: bool = False
    """A changed re-push: the welfare side receives the update (``outbox_id`` is then 0)."""


def _patient_id(referral: Referral, patient_uuid: str) -> str:
    bsn = identifiers_in(referral.patient.resource, frozenset({ids.BSN}))
    return f"{ids.BSN}|{bsn[0][1]}" if bsn else f"urn:uuid:{patient_uuid}"


def _responsible(referral: Referral) -> str:
    people = identifiers_in(referral.role.resource, ids.REFERRER_IDENTIFYING_SYSTEMS)
    if referral.practitioner is not None:
        people += identifiers_in(referral.practitioner.resource, ids.REFERRER_IDENTIFYING_SYSTEMS)
    return "|".join(people[0]) if people else ""


def accept_referral(
    store: OutboxStore,
    settings: Settings,
    clock: Clock,
    *,
    data: bytes,
    content_type: str | None,
    caller: Caller,
) -> Accepted:
    """Map, gate and durably store a referral with its outbox entry; raises RefusedError."""
    started = time.monotonic()
    source = caller.source_system or settings.output.source_system
    try:
        result = translate(data, content_type, settings, source_system=source)
    except RefusedError as err:
        withdrawn = None
        if isinstance(err, MappingError):
            withdrawn = amendment.withdraw_refused(
                store, settings, clock, err, caller=caller, source_system=source
            )
        store.audit(
            AuditEvent(
                event="referral_intake",
                action="C",
                outcome="refused",
                user=caller.client_id,
                responsible=caller.on_behalf_of,
                source_system=source,
                detail=f"{type(err).__name__}: {len(err.issues)} issue(s)",
            ),
            clock.now(),
        )
        log.info("referral_refused", client=caller.client_id, issues=len(err.issues))
        if withdrawn is not None:
            note = Issue(
                "informational",
                "ServiceRequest.identifier",
                f"the earlier referral with this identifier (Task/{withdrawn}) is withdrawn at"
                " the welfare organisation: the Consent no longer permits it",
                severity="information",
            )
            raise MappingError([*err.issues, note]) from None
        raise
    key = outbox.idempotency_key(result.ids.key, result.destination.id)
    patient_id = _patient_id(result.referral, result.ids.patient)
    responsible = _responsible(result.referral)
    his_system, his_value, owner_id = referral_keys(result.bundle)
    now = clock.now()
    new = NewReferral(
        task_id=result.ids.task,
        idempotency_key=key,
        source_system=source,
        destination=result.destination.id,
        mapping=result.mapping_ref,
        patient_id=patient_id,
        responsible=responsible,
        client_id=caller.client_id,
        bundle=canonical_json(result.bundle),
        service_request_id=result.ids.service_request,
        deadline_at=deadline(result.bundle),
        his_system=his_system,
        his_value=his_value,
        owner_id=owner_id,
        monitoring=referral_facts(  # monitoring: facts without patient data
            result,
            settings.monitoring,
            task_id=result.ids.task,
            source_system=source,
            received_at=now,
            deadline_at=deadline(result.bundle),
            municipalities=tuple(settings.routing.municipalities),
        ),
    )
    audit = AuditEvent(
        event="referral_intake",
        action="C",
        outcome="accepted",
        user=caller.client_id,
        responsible=responsible or caller.on_behalf_of,
        source_system=source,
        patient_id=patient_id,
        object_type="Task",
        object_id=result.ids.task,
    )
    if store.get_task(new.task_id) is not None:
        version = amendment.amend(store, clock, result, new, audit)
        if version is not None:
            faults.hit("after_commit")
            return Accepted(new.task_id, 0, result.destination.id, created=False, amended=True)
    added = store.add_referral(new, now, audit=audit)
    faults.hit("after_commit")
    log.info(
        "referral_accepted",
        task_id=added.task_id,
        outbox_id=added.outbox_id,
        destination=result.destination.id,
        created=added.created,
        duration_ms=round((time.monotonic() - started) * 1000, 1),
    )
    return Accepted(added.task_id, added.outbox_id, result.destination.id, added.created)


def deadline(bundle: dict[str, Any]) -> dt.datetime | None:
    """The first-contact deadline of a mapped referral (Task.restriction.period.end) in UTC.

    A date without a time means the end of that day (Europe/Amsterdam is UTC+1/+2; the end of
    the UTC day is a safe, slightly late bound).
    """
    task = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
    end = ((task.get("restriction") or {}).get("period") or {}).get("end")
    if not isinstance(end, str):
        return None
    if len(end) <= 10:
        day = dt.date.fromisoformat(end)
        return dt.datetime.combine(day, dt.time(23, 59, 59), tzinfo=dt.UTC)
    moment = dt.datetime.fromisoformat(end)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
