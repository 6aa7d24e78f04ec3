"""Use case: accept a referral a GP system pushed as FHIR STU3.

The STU3 input is converted to R4 (``core.stu3.intake``) and then accepted by
``intake.accept_referral``, the one R4 path: the same gates, minimisation, routing, idempotency
key, outbox entry and audit record as an R4 push, so the same referral pushed as R4 or STU3 is one
referral (the same Task, no second delivery). A refusal from that path is told in the STU3
input's terms; a refusal of the STU3 input itself (not STU3, an unsupported resource type) is
audited here as ``accept_referral`` audits its own. Logs carry counts only.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from wor_bridge.core.settings import Settings
from wor_bridge.core.stu3 import intake as stu3_intake
from wor_bridge.errors import RefusedError
from wor_bridge.ports import Clock, OutboxStore
from wor_bridge.records import AuditEvent
from wor_bridge.usecases import intake
from wor_bridge.usecases.caller import Caller

log = structlog.get_logger("wor_bridge.usecases.stu3_intake")


@dataclass(frozen=True, slots=True)
class Stu3Accepted:
    """A durably stored referral, and the STU3 elements the bridge did not read."""

    accepted: intake.Accepted
    lost: tuple[str, ...]


def accept_stu3_referral(
    store: OutboxStore,
    settings: Settings,
    clock: Clock,
    *,
    data: bytes,
    content_type: str | None,
    caller: Caller,
) -> Stu3Accepted:
    """Convert STU3 input to R4 and accept it as R4 input; raises RefusedError (STU3 paths)."""
    source = caller.source_system or settings.output.source_system
    try:
        converted = stu3_intake.convert_input(
            data, content_type, max_bytes=settings.max_body_bytes, limits=settings.limits
        )
    except RefusedError as err:
        store.audit(
            AuditEvent(
                event="referral_intake",
                action="C",
                outcome="refused",
                user=caller.client_id,
                responsible=caller.on_behalf_of,
                source_system=source,
                detail=f"{type(err).__name__}: {len(err.issues)} issue(s) (STU3)",
            ),
            clock.now(),
        )
        log.info("referral_refused", client=caller.client_id, issues=len(err.issues), stu3=True)
        raise
    try:
        accepted = intake.accept_referral(
            store,
            converted.settings(settings),
            clock,
            data=converted.r4,
            content_type=stu3_intake.R4_JSON,
            caller=caller,
        )
    except RefusedError as err:
        raise converted.relocate(err) from None
    return Stu3Accepted(accepted, converted.lost)
