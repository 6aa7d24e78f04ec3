"""Consent: R4 ``scope``/``category``/``provision`` ⇄ STU3 ``period``/``actor``/``except``.

Source: the HL7 converter ``Consent30_40`` (hapifhir/org.hl7.fhir.core): R4 ``performer`` ⇄ STU3
``consentingParty``; the root ``provision``'s period, actor, action, securityLabel, purpose,
dataPeriod and data sit on the STU3 Consent itself; nested provisions are STU3 ``except``; R4
``policyRule`` (CodeableConcept) ⇄ STU3 ``policyRule`` (uri) through ``urn:ietf:rfc:3986`` codings.
STU3 models the privacy use case only (STU3 consent.html), so ``scope`` patient-privacy is
implied there and restored towards R4. STU3 §6.2.5 defines the policy URIs
``http://hl7.org/fhir/ConsentPolicy/opt-in``/``opt-out``; they stand for v3-ActCode
``OPTIN``/``OPTOUT``, the R4 policy rules.

The base decision survives the conversion as ``core/consent.py`` reads it (issue 10): STU3 states
the base rule by ``policyRule`` alone, so an R4 root ``provision.type`` (which overrides the R4
policy rule) becomes the STU3 ``policyRule`` (permit: opt-in, deny: opt-out; a differing R4 rule is
then listed as lost), also when the R4 Consent has no policyRule (nl-core examples); ``OPTINR``
and ``OPTOUTE`` travel as their base, opt-in and opt-out, whose restrictions and exceptions are the
``except`` entries. An STU3 reader never sees "opt-out" where the bridge decided "permit".

Lost towards STU3: ``identifier`` after the first, any other ``scope``, ``verification``, the root
provision's ``type`` (the element; its meaning is the policyRule), ``class`` and ``code``, nested
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
_BASE_URIS: Final = {
    **POLICY_URIS,
    "OPTINR": POLICY_URIS["OPTIN"],
    "OPTOUTE": POLICY_URIS["OPTOUT"],
    "permit": POLICY_URIS["OPTIN"],
    "deny": POLICY_URIS["OPTOUT"],
}
_ROOT_PROVISION: Final = ("period", "actor", "action", "securityLabel", "purpose")
_ROOT_PROVISION_DATA: Final = ("dataPeriod", "data")


def _scope_to_stu3(slot: Slot) -> Pairs:
    """Patient-privacy is what an STU3 Consent is; any other scope cannot be said."""
    return [] if slot.value == PRIVACY_SCOPE else slot.walk.lose(slot.path)


def _root_type(consent: JsonDict) -> str | None:
    """The root provision's ``type`` when it states permit or deny (it overrides policyRule)."""
    root = consent.get("provision")
    found = root.get("type") if isinstance(root, dict) else None
    return found if found in ("permit", "deny") else None


def _provision_to_stu3(slot: Slot) -> Pairs:
    """The root provision's elements onto the Consent; its ``provision`` list becomes ``except``.

    Its ``type`` has no element there (listed as lost); its meaning travels as the STU3
    ``policyRule`` (``_policy_rule_to_stu3``, ``_base_rule``).
    """
    if not isinstance(slot.value, dict):
        return slot.walk.lose(slot.path)
    return list(fit_object(slot.value, "ConsentProvision", "Consent", slot.path, slot.walk).items())


def _base_rule(consent: JsonDict) -> Pairs:
    """Without an R4 policyRule, the root provision's type is the STU3 base rule."""
    root_type = _root_type(consent)
    if "policyRule" in consent or root_type is None:
        return []
    return [("policyRule", _BASE_URIS[root_type])]


def _policy_uri(coding: Any) -> str | None:
    """The STU3 policy URI of one R4 policy-rule coding, when it has one."""
    if not isinstance(coding, dict):
        return None
    system, code = coding.get("system"), coding.get("code")
    if system == URI_SYSTEM and isinstance(code, str):
        return code
    return _BASE_URIS.get(str(code)) if system == V3_ACT_CODE else None


def _policy_rule_to_stu3(slot: Slot) -> Pairs:
    """The first coding with a URI form; the concept's other parts are lost.

    A root ``provision.type`` overrides it: then the STU3 rule is that type's URI, and an R4 rule
    that says otherwise is lost.
    """
    concept: JsonDict = slot.value if isinstance(slot.value, dict) else {}
    found_codings = concept.get("coding")
    codings: list[Any] = found_codings if isinstance(found_codings, list) else []
    found = next(((i, _policy_uri(c)) for i, c in enumerate(codings) if _policy_uri(c)), None)
    root_type = _root_type(slot.owner)
    if root_type is not None and (found is None or found[1] != _BASE_URIS[root_type]):
        slot.walk.lose(slot.path)
        return [("policyRule", _BASE_URIS[root_type])]
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
        },
        added=_base_rule,
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
