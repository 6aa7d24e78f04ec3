"""Requests: R4 ``ServiceRequest`` ⇄ STU3 ``ReferralRequest``, and ``Task``, both directions.

Sources: the HL7 converter ``Task30_40`` (hapifhir/org.hl7.fhir.core, after
https://hl7.org/fhir/R4/task-version-maps.html) and the R3→R4 ReferralRequest map of
GoogleCloudPlatform/healthcare-data-harmonization (``requester.agent`` -> ``requester``,
``specialty`` -> ``performerType``, ``recipient`` -> ``performer``, ``context`` -> ``encounter``,
``groupIdentifier`` -> ``requisition``). STU3 ``ReferralRequest.type`` carries R4 ``code`` (what is
asked: a referral type). Request status codes renamed in R4: ``suspended`` -> ``on-hold``,
``cancelled`` -> ``revoked``. R4 adds intent ``directive`` (ServiceRequest) and ``unknown`` (Task).

Lost towards STU3: ServiceRequest ``category``, ``doNotPerform``, ``orderDetail``, ``quantity[x]``,
``occurrenceTiming``, ``asNeeded[x]``, ``locationCode``, ``locationReference``, ``insurance``,
``specimen``, ``bodySite``, ``patientInstruction``, ``instantiatesUri``; Task ``reasonReference``,
``insurance``, ``location``. Lost towards R4: ReferralRequest ``serviceRequested``,
``description``; ``requester.onBehalfOf`` of both.
"""

from __future__ import annotations

from typing import Final

from wor_bridge.core.stu3.element import (
    CanonicalsToReferences,
    Codes,
    ReferencesToCanonicals,
    Rename,
    Spec,
    Unwrap,
    Wrap,
    context_to_encounter,
)

_INTENTS: Final = frozenset(
    {"proposal", "plan", "order", "original-order", "reflex-order", "filler-order"}
    | {"instance-order", "option"}
)
_SAME_STATUS: Final = frozenset({"draft", "active", "completed", "entered-in-error", "unknown"})

TO_STU3: Final = {
    ("ServiceRequest", "ReferralRequest"): Spec(
        {
            "instantiatesCanonical": CanonicalsToReferences("definition"),
            "requisition": Rename("groupIdentifier"),
            "status": Codes({"on-hold": "suspended", "revoked": "cancelled"}, _SAME_STATUS),
            "intent": Codes({}, _INTENTS),
            "code": Rename("type"),
            "encounter": Rename("context"),
            "requester": Wrap("agent"),
            "performerType": Rename("specialty"),
            "performer": Rename("recipient"),
        }
    ),
    ("Task", "Task"): Spec(
        {
            "instantiatesCanonical": CanonicalsToReferences("definitionReference"),
            "instantiatesUri": Rename("definitionUri"),
            "intent": Codes({}, _INTENTS),
            "encounter": Rename("context"),
            "requester": Wrap("agent"),
            "reasonCode": Rename("reason"),
        }
    ),
}

TO_R4: Final = {
    ("ReferralRequest", "ServiceRequest"): Spec(
        {
            "definition": ReferencesToCanonicals("instantiatesCanonical"),
            "groupIdentifier": Rename("requisition"),
            "status": Codes({"suspended": "on-hold", "cancelled": "revoked"}, _SAME_STATUS),
            "type": Rename("code"),
            "context": context_to_encounter,
            "requester": Unwrap("agent"),
            "specialty": Rename("performerType"),
            "recipient": Rename("performer"),
        }
    ),
    ("Task", "Task"): Spec(
        {
            "definitionReference": ReferencesToCanonicals("instantiatesCanonical"),
            "definitionUri": Rename("instantiatesUri"),
            "context": context_to_encounter,
            "requester": Unwrap("agent"),
            "reason": Rename("reasonCode"),
        }
    ),
}
