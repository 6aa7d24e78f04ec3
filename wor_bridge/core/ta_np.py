"""Twiin TA Notified Pull v1.0.1 as the sender: per-receiver settings and the authorization base.

Sources (paraphrased; details and gaps in docs/standards/ta-notified-pull.md):

- Twiin-01 "Send Notification Task" (Afsprakenstelsel §10.3.1): an STU3 Task that identifies the
  sending system, organisation and receiver, the patient, the resources and searches the receiver
  may use at the sender, and the **authorization base** (TA §3.3);
- Twiin-02 "Cancel Notification Task" (§10.3.2): a conditional update on the Notification's
  identifier with ``status`` cancelled;
- Twiin-03 "Get workflow Task" (§10.3.3): ``GET [base]/Task/[id]`` at the sender;
- TA §3.3 / VIPLive "3. Notify afleveren" and "5. Pull uitvoeren": the receiver plays the
  authorization base back in its token request at the sender.

The TA's element table could not be read; what it leaves open is a setting here, with the reading
documented as an assumption: the input type codes, whether the patient travels on the Task
(``for.identifier``) or as a claim of the authorization assertion, and absolute or relative
references. Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

TASK_PARAMETER: Final = "http://fhir.nl/fhir/NamingSystem/TaskParameter"
"""System of the Notification's ``input.type`` codings (Nuts templates, VZVZ transformation)."""
TASK_CODE: Final = "http://fhir.nl/fhir/NamingSystem/TaskCode"
PULL_NOTIFICATION: Final = "pull-notification"
"""``Task.code`` of a Notification (Nuts README §4.1.3 "(unchanged)" from the TA)."""
AUTHORIZATION_BASE: Final = "authorization-base"
GET_WORKFLOW_TASK: Final = "get-workflow-task"

_REGISTERED_CLAIMS: Final = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti"})
_LABEL: Final = b"wor-bridge|twiin-authorization-base|"
_MAC_BYTES: Final = 16


class SystemIdentifier(BaseModel):
    """An Identifier (``system``, ``value``) as configured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    system: str
    value: str


class TaNpSettings(BaseModel):
    """What a TA receiver agreed where the TA text was unavailable (``[destinations.ta_np]``).

    ``patient``: ``identifier`` puts the BSN (when the destination's mapping lets it travel) in
    ``Task.for.identifier``; ``token-claim`` keeps the Task free of it and puts it in the
    authorization assertion as ``patient_claim`` (Twiin-01: "identification of the patient";
    both forms are in use); ``none`` sends neither. ``read_code``/``query_code``: the
    ``input.type`` codes (``TaskParameter``); the TA slice names are the defaults, unconfirmed as
    codes (§2.2 of the notes). ``references``: ``relative`` (``Type/id`` against the sender's
    base, VIPLive page 5) or ``absolute`` URLs. ``owner``: VIPLive omits ``Task.owner`` when the
    receiver is the system itself. ``sender_system``: ``requester.agent.identifier`` (default:
    the bridge's ``[pull] base_url`` as a URI).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    patient: Literal["identifier", "token-claim", "none"] = "token-claim"
    patient_claim: str = Field(default="patient", min_length=1)
    read_code: str = "read-available-resource"
    query_code: str = "query-available-resources"
    references: Literal["relative", "absolute"] = "relative"
    owner: bool = True
    sender_system: SystemIdentifier | None = None

    @field_validator("patient_claim")
    @classmethod
    def _own_claim(cls, value: str) -> str:
        if value in _REGISTERED_CLAIMS:
            raise ValueError("ta_np.patient_claim must not be a registered JWT claim (RFC 7519)")
        return value


def _mac(key: bytes, task_uuid: uuid.UUID) -> bytes:
    return hmac.new(key, _LABEL + task_uuid.bytes, hashlib.sha256).digest()[:_MAC_BYTES]


def authorization_base(key: bytes, task_id: str) -> str:
    """The opaque authorization base of a referral's notifications (TA §3.3): base64url of the
    Task uuid and a 128-bit HMAC-SHA256 under ``key`` (``[pull] token_key``). Unguessable, bound
    to the one Task; the token endpoint turns it back into that Task (``task_of``). ValueError on
    a ``task_id`` that is not a uuid."""
    task = uuid.UUID(task_id)
    return base64.urlsafe_b64encode(task.bytes + _mac(key, task)).rstrip(b"=").decode()


def task_of(key: bytes, value: str) -> str | None:
    """The Task id an authorization base was made for, or None when it is not one of ours."""
    if not value or len(value) > 64 or not value.isascii():
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except ValueError:
        return None
    if len(raw) != 16 + _MAC_BYTES:
        return None
    task = uuid.UUID(bytes=raw[:16])
    if not hmac.compare_digest(raw[16:], _mac(key, task)):
        return None
    if authorization_base(key, str(task)) != value:  # one spelling only (no stray padding bits)
        return None
    return str(task)
