"""May this referral be disclosed to this destination on ``authoredOn``? FHIR R4 Consent, closed.

Read as FHIR R4 (4.0.1) defines a privacy Consent: consent.html (§ Resource Content, the
privacy use case) and its element definitions, consent-definitions.html#Consent.status,
#Consent.patient, #Consent.dateTime, #Consent.policyRule, #Consent.provision and
#Consent.provision.type/.period/.actor/.action/.purpose/.class/.code/.provision; v3 ActCode
``_ActConsentDirective`` (terminology.hl7.org CodeSystem-v3-ActCode); datatypes.html#Period.

- ``status`` ``active`` only (draft and proposed are not yet in force, the others no longer);
  ``scope`` ``patient-privacy`` or ``category`` v3-ActCode ``IDSCL``: no treatment consent.
- ``Consent.patient`` "who the consent applies to": a literal reference that resolves (as every
  reference, by ``core/graph.py``) to the referred Patient, or a logical reference whose
  ``identifier`` is the referred patient's BSN (either system form, ``core/identifiers.py``).
- ``Consent.dateTime`` (when it was issued) not after ``authoredOn``; ``provision.period`` ("the
  timeframe in this rule is valid") covering ``authoredOn``; both compared as instants with their
  zones, a date as the whole Amsterdam day, bounds included (``core/period.py``).
- ``Consent.policyRule`` "the base computable regulation or policy" sets the base decision: v3
  ActCode (``_ActConsentDirective``) ``OPTIN`` "a grantor's assent to the terms of an agreement"
  and ``OPTINR`` (opt-in with restrictions) permit; ``OPTOUT`` "a grantor's dissent to the terms"
  and ``OPTOUTE`` (opt-out with exceptions) deny; so do the STU3 policy URIs
  ``http://hl7.org/fhir/ConsentPolicy/opt-in``/``opt-out`` (``urn:ietf:rfc:3986`` codings). A
  policy URI (coding or ``Consent.policy.uri``) permits only when ``gates.permitting_policies``
  declares it; without ``policyRule``, every ``Consent.policy`` must be declared. A Consent with
  neither (invariant ppc-1) is read by its root ``provision.type`` alone (nl-core examples omit
  the policy); with no ``type`` either, nothing says the patient consented: refused.
- ``Consent.provision`` ("constraints to the base Consent.policyRule"): a ``type`` on the root
  provision overrides the base (R4 says "not permitted in root rule"; senders write it, and it
  is the more specific statement). A permit covers this disclosure only when the root's own
  conditions do. ``provision.provision`` are "rules which provide exceptions to the base rule or
  subrules", each with a ``type`` ("required in all nested rules"): a nested provision applies
  when every condition it states covers this disclosure (``action``, ``actor``, ``purpose``,
  ``class``, ``code``, ``period``, ``dataPeriod``; absent = any; ``data`` and ``securityLabel``
  are per resource: undecidable for a referral as a whole).
  Applying exceptions flip the decision, their own exceptions flip it back; among siblings a
  deny wins.

Fail closed: whatever cannot be decided (an unknown policy, an actor that cannot be told apart
from this destination, a security label, an unreadable date, a nested provision without type)
is a refusal naming the element, never guessed. Issues are 422 ``business-rule`` with the
FHIRPath of the element in the input and never carry the patient's value. Pure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Final, Literal

from wor_bridge.core import identifiers as ids
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.graph import Graph, Located
from wor_bridge.core.period import Span, relation, span
from wor_bridge.core.settings import Destination
from wor_bridge.errors import Issue

V3_ACT_CODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_ACT_REASON: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
CONSENT_ACTION: Final = "http://terminology.hl7.org/CodeSystem/consentaction"
RESOURCE_TYPES: Final = "http://hl7.org/fhir/resource-types"
MIME_TYPES: Final = "urn:ietf:bcp:13"
URI: Final = "urn:ietf:rfc:3986"
PATIENT_PRIVACY: Final = ("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy")
_ALIASES: Final = {
    "http://hl7.org/fhir/v3/ActCode": V3_ACT_CODE,
    "urn:oid:2.16.840.1.113883.5.4": V3_ACT_CODE,
    "http://hl7.org/fhir/v3/ActReason": V3_ACT_REASON,
    "urn:oid:2.16.840.1.113883.5.8": V3_ACT_REASON,
    "http://hl7.org/fhir/consentaction": CONSENT_ACTION,
}
Effect = Literal["permit", "deny"]
POLICY_RULES: Final[dict[tuple[str, str], Effect]] = {
    (V3_ACT_CODE, "OPTIN"): "permit",
    (V3_ACT_CODE, "OPTINR"): "permit",
    (V3_ACT_CODE, "OPTOUT"): "deny",
    (V3_ACT_CODE, "OPTOUTE"): "deny",
    (URI, "http://hl7.org/fhir/ConsentPolicy/opt-in"): "permit",
    (URI, "http://hl7.org/fhir/ConsentPolicy/opt-out"): "deny",
}
ACTIONS: Final = frozenset({"disclose", "collect", "use", "access"})
"""What a referral involves: the practice discloses; the welfare organisation collects, uses and
(notified pull) accesses. ``correct`` is not involved."""
PURPOSES: Final = frozenset({"TREAT", "COC"})
"""v3 ActReason purposes of a WoR referral: treatment, coordination of care."""
CLASSES: Final = frozenset(
    {"Patient", "ServiceRequest", "Task", "Consent", "Practitioner", "PractitionerRole"}
).union({"Organization"})
FHIR_MEDIA: Final = frozenset({"application/fhir+json", "application/fhir+xml"})

State = Literal["yes", "no", "unknown"]
Found = tuple[State, str, str]
"""Whether a condition covers the disclosure, why not, and where inside the element (``.end``)."""


@dataclass(frozen=True, slots=True)
class Disclosure:
    """The question asked: disclose this referral to ``destination`` at ``at``."""

    graph: Graph
    patient: Located | None
    parties: tuple[Located, ...]
    """Who discloses: the referrer's role and practitioner, the practice."""
    destination: Destination | None
    """None when the referral has no route: the provisions are decided once it has one."""
    at: Span
    codes: frozenset[tuple[str, str]]
    """(system, code) found in what is disclosed, with their translations."""
    within: str | None = None
    """The Consent's FHIRPath: its references resolve against its Bundle entry (R4 rules)."""


@dataclass(frozen=True, slots=True)
class _Cover:
    state: State
    where: str = ""
    why: str = ""


def check(consent: Located, disclosure: Disclosure, permitting: frozenset[str]) -> list[Issue]:
    """Every reason this Consent does not permit the disclosure (empty: permitted)."""
    res, loc = consent.resource, consent.location
    disclosure = replace(disclosure, within=loc)
    issues: list[Issue] = []
    if res.get("status") != "active":
        issues.append(_issue(f"{loc}.status", "must be active (the consent in force)"))
    kinds = set(_codings(res.get("category"))) | set(_codings(res.get("scope")))
    if (V3_ACT_CODE, "IDSCL") not in kinds and PATIENT_PRIVACY not in kinds:
        why = "must be a consent to disclose (category IDSCL or scope patient-privacy)"
        issues.append(_issue(f"{loc}.category", why))
    issues += _patient(res, loc, disclosure)
    when = res.get("dateTime")
    moment = span(when) if when is not None else disclosure.at
    if moment is None:
        issues.append(_issue(f"{loc}.dateTime", "must be a date or date-time (got unreadable)"))
    elif moment.start > disclosure.at.start:
        issues.append(_issue(f"{loc}.dateTime", "must not be after authoredOn (given later)"))
    base, base_issues = _base(res, loc, permitting)
    issues += base_issues
    if base_issues or disclosure.destination is None:
        return issues
    return issues + _decide(res, loc, disclosure, base)


def _issue(where: str, diagnostics: str) -> Issue:
    return Issue("business-rule", where, diagnostics)


def _patient(res: JsonDict, loc: str, d: Disclosure) -> list[Issue]:
    """The Consent is the referred patient's: literal reference, or logical reference by BSN."""
    if d.patient is None:
        return []  # the patient gate reports the missing patient
    where, ref = f"{loc}.patient", res.get("patient")
    if not isinstance(ref, dict) or ref.get("type") not in (None, "Patient"):
        return [_issue(where, "must reference the referred Patient (literal, or by BSN)")]
    if isinstance(ref.get("reference"), str):
        found = d.graph.resolve(ref, where)
        if found is not None and found.resource is d.patient.resource:
            return []
        if found is not None or not isinstance(ref.get("identifier"), dict):
            detail = "resolves to another resource" if found else "does not resolve in the input"
            return [_issue(where, f"must be the consent of the referred patient ({detail})")]
    return _logical_patient(ref.get("identifier"), where, d.patient)


def _logical_patient(ident: Any, where: str, patient: Located) -> list[Issue]:
    """A logical reference matches when its identifier is the referred patient's BSN."""
    if not isinstance(ident, dict):
        return [_issue(where, "must reference the referred Patient (literal, or by BSN)")]
    system, value = ident.get("system"), ident.get("value")
    bsns = {v for _, v in ids.identifiers_in(patient.resource, frozenset({ids.BSN}))}
    problem = None
    if not isinstance(system, str) or ids.normalize_system(system) != ids.BSN:
        where, problem = f"{where}.identifier.system", "must be the BSN system (got another system)"
    elif not bsns:
        problem = "must be a literal reference (the referred patient has no BSN to match)"
    elif not isinstance(value, str) or value.strip() not in bsns:
        where, problem = f"{where}.identifier.value", "must be the referred patient's BSN (differs)"
    return [] if problem is None else [_issue(where, problem)]


def _base(res: JsonDict, loc: str, permitting: frozenset[str]) -> tuple[Effect | None, list[Issue]]:
    """The base decision of ``policyRule`` (or of ``policy`` without policyRule); None: unstated."""
    rule = res.get("policyRule")
    if isinstance(rule, dict):
        found: set[Effect] = set()
        for system, code in _codings(rule):
            effect = POLICY_RULES.get((system, code))
            if effect is None and system == URI and code in permitting:
                effect = "permit"
            if effect is not None:
                found.add(effect)
        if len(found) == 1:
            return found.pop(), []
        why = "codes that both permit and deny" if found else "no code this bridge understands"
        expected = "must be v3-ActCode OPTIN, OPTINR, OPTOUT or OPTOUTE, or a declared policy URI"
        return None, [_issue(f"{loc}.policyRule", f"{expected} (got {why})")]
    uris = [p.get("uri") for p in res.get("policy") or [] if isinstance(p, dict)]
    if not uris:
        return None, []
    if all(u in permitting for u in uris):
        return "permit", []
    why = "must be declared in gates.permitting_policies (got a policy this bridge does not know)"
    return None, [_issue(f"{loc}.policy", why)]


def _decide(res: JsonDict, loc: str, d: Disclosure, base: Effect | None) -> list[Issue]:
    """The provision tree over the base decision."""
    found = res.get("provision")
    root: JsonDict = found if isinstance(found, dict) else {}
    rloc = f"{loc}.provision"
    typed = root.get("type") in ("permit", "deny")
    if "type" in root and not typed:
        return [_issue(f"{rloc}.type", "must be permit or deny (got another code)")]
    effect: Effect | None = root["type"] if typed else base
    if effect is None:
        why = "must state consent: policyRule, a declared policy or provision.type (got none)"
        return [_issue(f"{loc}.policyRule", why)]
    issues: list[Issue] = []
    if effect == "permit":
        cover = _covers(root, rloc, d)
        if cover.state != "yes":
            issues.append(_uncovered(cover))
    where = f"{rloc}.type" if typed else f"{loc}.policyRule"
    outcome, where, nested = _exceptions(root, rloc, effect, where, d)
    issues += nested
    if outcome == "deny":
        if where.endswith("policyRule"):
            why = "the base policy withholds consent (opt-out) and no provision permits this"
        elif where == f"{rloc}.type":
            why = "the root provision denies, and no nested provision permits this"
        else:
            why = "a nested deny whose conditions all cover this disclosure"
        issues.append(_issue(where, f"must permit disclosure to this destination ({why})"))
    return issues


def _exceptions(
    prov: JsonDict, ploc: str, effect: Effect, where: str, d: Disclosure
) -> tuple[Effect, str, list[Issue]]:
    """Apply the nested provisions of ``prov`` (whose effect is ``effect``)."""
    denied: list[str] = []
    permitted: list[str] = []
    issues: list[Issue] = []
    for i, child in enumerate(prov.get("provision") or []):
        cloc = f"{ploc}.provision[{i}]"
        ctype = child.get("type") if isinstance(child, dict) else None
        if ctype not in ("permit", "deny"):
            issues.append(_issue(f"{cloc}.type", "must be permit or deny (a nested rule)"))
            continue
        cover = _covers(child, cloc, d)
        if cover.state == "unknown" and _can_deny(child):
            issues.append(_uncovered(cover))
        if cover.state != "yes":
            continue
        outcome, at, nested = _exceptions(child, cloc, ctype, cloc, d)
        issues += nested
        (denied if outcome == "deny" else permitted).append(at)
    if denied:
        return "deny", denied[0], issues
    if permitted:
        return "permit", permitted[0], issues
    return effect, where, issues


def _uncovered(cover: _Cover) -> Issue:
    """The issue for a permit that does not cover, or a rule that cannot be decided."""
    if cover.state == "no":
        expectation = "must cover disclosure of this referral to this destination at authoredOn"
    else:
        expectation = "must be decidable for this disclosure"
    return _issue(cover.where, f"{expectation} (got {cover.why})")


def _can_deny(prov: JsonDict) -> bool:
    """Whether a provision or anything nested in it could deny."""
    nested = [p for p in prov.get("provision") or [] if isinstance(p, dict)]
    return prov.get("type") != "permit" or any(_can_deny(p) for p in nested)


def _covers(prov: JsonDict, ploc: str, d: Disclosure) -> _Cover:
    """Whether every condition the provision states covers this disclosure."""
    found = _Cover("yes")
    for key, test in _CONDITIONS:
        value = prov.get(key)
        if value in (None, []):
            continue
        state, why, inner = test(value, d)
        if state == "no":
            return _Cover("no", f"{ploc}.{key}{inner}", why)
        if state == "unknown" and found.state == "yes":
            found = _Cover("unknown", f"{ploc}.{key}{inner}", why)
    return found


def _any(states: list[State]) -> State:
    return "yes" if "yes" in states else "unknown" if "unknown" in states else "no"


def _period(value: Any, d: Disclosure) -> Found:
    found = relation(value, d.at)
    if found is None:
        return "unknown", "a period this bridge cannot compute with", ""
    if found == "covers":
        return "yes", "", ""
    if found == "ended":
        return "no", "a period that ended before authoredOn", ".end"
    return "no", "a period that starts after authoredOn", ".start"


def _actors(value: Any, d: Disclosure) -> Found:
    states = [_actor(a.get("reference") if isinstance(a, dict) else None, d) for a in value]
    found = _any(states)
    if found == "unknown":
        system = d.destination.identifier.system if d.destination else "the destination's"
        return (
            found,
            "an actor that cannot be told apart from this destination (reference a resource in "
            f"the input, or identify it with system {system})",
            f"[{states.index('unknown')}].reference",
        )
    return found, "only parties other than this destination and the referring practice", ""


def _actor(ref: Any, d: Disclosure) -> State:
    if not isinstance(ref, dict) or d.destination is None:
        return "unknown"
    found = d.graph.resolve(ref, d.within)
    if found is not None and any(found.resource is p.resource for p in d.parties):
        return "yes"
    named = set(ids.identifier_pairs([ref.get("identifier")]))
    if found is not None:
        named |= set(ids.identifier_pairs(found.resource.get("identifier")))
    rtype = found.type if found is not None else ref.get("type")
    dest = d.destination.identifiers()
    party_ids = {i for p in d.parties for i in ids.identifier_pairs(p.resource.get("identifier"))}
    if named & (dest | party_ids):
        return "yes"
    if rtype in ("Patient", "RelatedPerson"):
        return "no"
    if rtype in (None, "Organization") and {s for s, _ in named} & {s for s, _ in dest}:
        return "no"
    return "unknown"


def _actions(value: Any, d: Disclosure) -> Found:
    states: list[State] = []
    for concept in value:
        codes = [c for s, c in _codings(concept) if s == CONSENT_ACTION]
        states.append("yes" if ACTIONS.intersection(codes) else "no" if codes else "unknown")
    found = _any(states)
    why = "actions without a consentaction code" if found == "unknown" else "other actions"
    return found, why, ""


def _coded(value: Any, table: dict[str, frozenset[str]], what: str) -> Found:
    """Codings in known systems match or not; a coding in another system cannot be read."""
    states: list[State] = []
    for system, code in _codings({"coding": value}):
        known = table.get(system)
        states.append("unknown" if known is None else "yes" if code in known else "no")
    found = _any(states)
    why = f"{what} this bridge cannot read" if found == "unknown" else f"other {what}"
    return found, why, ""


def _purposes(value: Any, d: Disclosure) -> Found:
    return _coded(value, {V3_ACT_REASON: PURPOSES}, "purposes (v3 ActReason)")


def _classes(value: Any, d: Disclosure) -> Found:
    return _coded(value, {RESOURCE_TYPES: CLASSES, MIME_TYPES: FHIR_MEDIA}, "classes")


def _codes(value: Any, d: Disclosure) -> Found:
    found = any(c in d.codes for concept in value for c in _codings(concept))
    return ("yes", "", "") if found else ("no", "codes that do not occur in this referral", "")


def _per_resource(value: Any, d: Disclosure) -> Found:
    return "unknown", "rules per resource or security label (decided for the whole referral)", ""


_CONDITIONS: Final[tuple[tuple[str, Callable[[Any, Disclosure], Found]], ...]] = (
    ("period", _period),
    ("actor", _actors),
    ("action", _actions),
    ("purpose", _purposes),
    ("class", _classes),
    ("code", _codes),
    ("dataPeriod", _period),
    ("data", _per_resource),
    ("securityLabel", _per_resource),
)


def _codings(concepts: Any) -> list[tuple[str, str]]:
    """``(system, code)`` of every coding in a CodeableConcept or a list of them."""
    return [(_ALIASES.get(system, system), code) for system, code in ids.codings(concepts)]
