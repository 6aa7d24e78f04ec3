"""Consent: R4 ``scope``/``category``/``provision`` ⇄ STU3 ``period``/``actor``/``except``.

Source: the HL7 converter ``Consent30_40`` (hapifhir/org.hl7.fhir.core): R4 ``performer`` ⇄ STU3
``consentingParty``; the root ``provision``'s period, actor, action, securityLabel, purpose,
dataPeriod and data sit on the STU3 Consent itself; nested provisions are STU3 ``except``; R4
``policyRule`` (CodeableConcept) ⇄ STU3 ``policyRule`` (uri) through ``urn:ietf:rfc:3986`` codings.
STU3 models the privacy use case only (STU3 consent.html), so ``scope`` patient-privacy is
implied there and restored towards R4. STU3 §6.2.5 defines the policy URIs
``http://hl7.org/fhir/ConsentPolicy/opt-in``/``opt-out``; they stand for v3-ActCode
``OPTIN``/``OPTOUT``, the R4 policy rules.

Lost towards STU3: ``identifier`` after the first, any other ``scope``, ``verification``, the root
provision's ``type``, ``class`` and ``code`` (STU3 states the base rule by ``policyRule``), nested
provisions below the first level, a nested provision without a ``type`` (required in STU3), a
``policyRule`` without a URI form, and an ``except.code`` whose concept is more than one coding.
Lost towards R4: ``sourceIdentifier``.
"""

from __future__ import annotations

from typing import Any, Final

from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.stu3.element import Into, Pairs, Rename, Slot, Spec, fit_object

SCOPE: Final = "http://terminology.hl7.org/CodeSystem/consentscope"
PRIVACY_SCOPE: Final = {"coding": [{"system": SCOPE, "code": "patient-privacy"}]}
V3_ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
URI_SYSTEM: Final = "urn:ietf:rfc:3986"
POLICY_URIS: Final = {
    "OPTIN": "http://hl7.org/fhir/ConsentPolicy/opt-in",
    "OPTOUT": "http://hl7.org/fhir/ConsentPolicy/opt-out",
}
_POLICY_CODES: Final = {uri: code for code, uri in POLICY_URIS.items()}
_ROOT_PROVISION: Final = ("period", "actor", "action", "securityLabel", "purpose")
_ROOT_PROVISION_DATA: Final = ("dataPeriod", "data")


def _scope_to_stu3(slot: Slot) -> Pairs:
    """Patient-privacy is what an STU3 Consent is; any other scope cannot be said."""
    return [] if slot.value == PRIVACY_SCOPE else slot.walk.lose(slot.path)


def _provision_to_stu3(slot: Slot) -> Pairs:
    """The root provision's elements onto the Consent; its ``provision`` list becomes ``except``."""
    if not isinstance(slot.value, dict):
        return slot.walk.lose(slot.path)
    return list(fit_object(slot.value, "ConsentProvision", "Consent", slot.path, slot.walk).items())


def _policy_uri(coding: Any) -> str | None:
    """The STU3 policy URI of one R4 policy-rule coding, when it has one."""
    if not isinstance(coding, dict):
        return None
    system, code = coding.get("system"), coding.get("code")
    if system == URI_SYSTEM and isinstance(code, str):
        return code
    return POLICY_URIS.get(str(code)) if system == V3_ACT_CODE else None


def _policy_rule_to_stu3(slot: Slot) -> Pairs:
    """The first coding with a URI form; the concept's other parts are lost."""
    concept: JsonDict = slot.value if isinstance(slot.value, dict) else {}
    found_codings = concept.get("coding")
    codings: list[Any] = found_codings if isinstance(found_codings, list) else []
    found = next(((i, _policy_uri(c)) for i, c in enumerate(codings) if _policy_uri(c)), None)
    if found is None:
        return slot.walk.lose(slot.path)
    index, uri = found
    for key in concept:
        if key != "coding":
            slot.walk.lose(f"{slot.path}.{key}")
    for i in range(len(codings)):
        if i != index:
            slot.walk.lose(f"{slot.path}.coding[{i}]")
    for key in codings[index]:
        if key not in ("system", "code"):
            slot.walk.lose(f"{slot.path}.coding[{index}].{key}")
    return [("policyRule", uri)]


def _policy_rule_to_r4(slot: Slot) -> Pairs:
    """An STU3 policy URI as an R4 concept: v3-ActCode for opt-in/out, else the URI itself."""
    if slot.value in _POLICY_CODES:
        coding = {"system": V3_ACT_CODE, "code": _POLICY_CODES[slot.value]}
    else:
        coding = {"system": URI_SYSTEM, "code": slot.value}
    return [("policyRule", {"coding": [coding]})]


def _concepts_to_codings(slot: Slot) -> Pairs:
    """R4 ``provision.code`` concepts -> STU3 ``except.code`` codings (one coding per concept)."""
    codings: list[JsonDict] = []
    for i, concept in enumerate(slot.value if isinstance(slot.value, list) else []):
        coding = concept.get("coding") if isinstance(concept, dict) else None
        if not (isinstance(coding, list) and len(coding) == 1 and set(concept) == {"coding"}):
            slot.walk.lose(f"{slot.path}[{i}]")
            continue
        codings.append(fit_object(coding[0], "Coding", "Coding", f"{slot.path}[{i}]", slot.walk))
    return [("code", codings)] if codings else []


def _codings_to_concepts(slot: Slot) -> Pairs:
    """STU3 ``except.code`` codings -> R4 ``provision.code`` concepts, one each."""
    values = slot.value if isinstance(slot.value, list) else []
    return [
        ("code", [{"coding": [fit_object(c, "Coding", "Coding", f"{slot.path}[{i}]", slot.walk)]}])
        for i, c in enumerate(values)
        if isinstance(c, dict)
    ]


def _privacy_scope(_: JsonDict) -> Pairs:
    """R4 requires a scope; an STU3 Consent is a privacy consent."""
    return [("scope", PRIVACY_SCOPE)]


TO_STU3: Final = {
    ("Consent", "Consent"): Spec(
        {
            "scope": _scope_to_stu3,
            "performer": Rename("consentingParty"),
            "policyRule": _policy_rule_to_stu3,
            "provision": _provision_to_stu3,
        }
    ),
    ("ConsentProvision", "Consent"): Spec({"provision": Rename("except")}),
    ("ConsentProvision", "ConsentExcept"): Spec({"code": _concepts_to_codings}, needs=("type",)),
}

TO_R4: Final = {
    ("Consent", "Consent"): Spec(
        {
            "consentingParty": Rename("performer"),
            "policyRule": _policy_rule_to_r4,
            **{name: Into("provision", name) for name in _ROOT_PROVISION + _ROOT_PROVISION_DATA},
            "except": Into("provision", "provision"),
        },
        added=_privacy_scope,
    ),
    ("ConsentExcept", "ConsentProvision"): Spec({"code": _codings_to_concepts}),
}
