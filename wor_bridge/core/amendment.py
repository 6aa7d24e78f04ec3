"""Referral amendments: what a re-push of a referral the bridge already holds means. Pure.

A GP system that pushes a referral again (the same source system and HIS referral identifier, so
the same Task) either repeats it or changes it. Source: issue 10 section 5; FHIR R4 workflow
(``Task.status``: a finished Task never moves again, task.html#statemachine).

- ``duplicate``: the mapped Bundle is byte-identical (mapping is deterministic): nothing to do;
- ``finished``: the Task has finished (completed, cancelled, rejected, failed, entered-in-error):
  a change can no longer reach anyone who acts on it, so it is refused; a new referral needs a
  new HIS identifier;
- ``update``: changed content for the same welfare organisation: it receives the update (same
  ids, one effect however often it is sent, after what went before);
- ``redirect``: the change routes to another organisation: the old one gets a cancellation with
  the closure reason ``redirected`` (codes only), the new one gets the referral.

A Consent that now refuses is not an amendment: the intake refuses the push and the use case
withdraws the earlier referral (closure reason ``consent-withdrawn``).
"""

from __future__ import annotations

import copy
import hashlib
import uuid
from typing import Final, Literal

from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.gp_record import welfare_task_update
from wor_bridge.core.settings import LOCAL_BASE
from wor_bridge.core.task import FINISHED, Reason, TaskState

Decision = Literal["duplicate", "finished", "update", "redirect"]

MESSAGE_KIND_SYSTEM: Final = f"{LOCAL_BASE}/CodeSystem/message-kind"
"""Tags an outbox Bundle whose kind its content does not tell (``referral-update``)."""
REFERRAL_UPDATE: Final = "referral-update"
REDIRECTED: Final = "redirected"
"""closure-reason code: the GP system changed the referral and it now goes elsewhere."""
CONSENT_WITHDRAWN: Final = "consent-withdrawn"
"""closure-reason code: the patient's Consent no longer permits the referral."""
_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "https://wor-bridge.nl/ns/amendment")


def digest(payload: bytes) -> str:
    """A short, stable fingerprint of a mapped Bundle (hex, 32 characters)."""
    return hashlib.sha256(payload).hexdigest()[:32]


def decide(
    *,
    stored_bundle: bytes,
    stored_destination: str,
    task_status: str,
    new_bundle: bytes,
    new_destination: str,
) -> Decision:
    """What the re-push means (see the module docstring); ``*_bundle`` are canonical JSON bytes."""
    if new_bundle == stored_bundle and new_destination == stored_destination:
        return "duplicate"
    if task_status in FINISHED:
        return "finished"
    return "update" if new_destination == stored_destination else "redirect"


def update_bundle(bundle: JsonDict, fingerprint: str) -> JsonDict:
    """The outbox message that updates the referral at the same organisation: the new mapped
    Bundle (every resource with its old id), tagged ``referral-update`` so each destination type
    renders it as an update rather than a create, with a Bundle id of its own (from
    ``fingerprint``, the ``digest`` of the new Bundle)."""
    out = copy.deepcopy(bundle)
    meta = out.setdefault("meta", {})
    meta["tag"] = [
        *meta.get("tag", []),
        {"system": MESSAGE_KIND_SYSTEM, "code": REFERRAL_UPDATE},
    ]
    out["id"] = str(uuid.uuid5(_NAMESPACE, f"{bundle.get('id')}|{fingerprint}"))
    return out


def is_update(bundle: JsonDict) -> bool:
    """Whether an outbox Bundle is a ``referral-update`` (see ``update_bundle``)."""
    tags = (bundle.get("meta") or {}).get("tag") or []
    return any(
        t.get("system") == MESSAGE_KIND_SYSTEM and t.get("code") == REFERRAL_UPDATE for t in tags
    )


def withdrawal(stored_bundle: JsonDict, code: str, when: str) -> JsonDict:
    """The cancellation the old organisation gets (``redirected`` or ``consent-withdrawn``): the
    Task it holds, cancelled, with the closure-reason code only (no free text)."""
    return welfare_task_update(stored_bundle, TaskState("cancelled", None, Reason(code)), when)
