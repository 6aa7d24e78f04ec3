"""STU3 intake: a GP system's STU3 referral -> the R4 input of the one intake path (pure).

Dutch GP-side systems that speak FHIR STU3 push a ``ReferralRequest`` with its resources
contained, or in a Bundle (``transaction``, ``batch``, ``collection``), JSON or XML. ``convert``

1. reads the bytes as ``inbound`` reads R4 (the same size limit, hardened XML, duplicate names,
   control characters), against the STU3 models (``fhir.resources.STU3``): 400 at the STU3 path;
2. refuses a resource of a type the conversion does not carry (400 ``not-supported`` at it):
   dropping it could hide what the R4 path refuses (an ambiguous reference, a duplicate
   ``fullUrl``) and the bridge forwards no clinical data anyway; and an empty Bundle entry (the
   conversion drops it, which would shift the entries the R4 path's refusals name);
3. converts with ``convert.to_r4`` / ``bundle_to_r4`` (the nine types; ``ReferralRequest`` ->
   ``ServiceRequest``, ``Consent`` per ``consent``);
4. states each STU3 Consent's base rule as the R4 root ``provision.type`` too: STU3 states it by
   ``policyRule`` alone (``http://hl7.org/fhir/ConsentPolicy/opt-in`` / ``opt-out``, STU3
   consent.html §6.2.5; an STU3 Consent has no root provision type), and R4 lets the root
   ``provision.type`` override the policy rule. So an STU3 **opt-out** is a root ``deny``, which
   the consent gate refuses, however the gate reads ``policyRule``; an opt-in is a ``permit``,
   exactly what the equivalent R4 referral says.

The result's ``r4`` bytes then go through exactly what R4 input goes through (``translation`` /
``usecases.intake``: R4 validation, references, gates, minimisation, routing, idempotency,
outbox); ``relocate`` tells that path's refusals in the STU3 input's terms (``location``).

What the conversion cannot carry never weakens a gate: the gates read the R4 result, so an STU3
element without an R4 counterpart (``ReferralRequest.description``, ``serviceRequested``,
``requester.onBehalfOf``, ``Consent.sourceIdentifier``) is simply not there (a gate that needs
it refuses); ``lost`` lists those elements by their STU3 path (names and indices only). An STU3
Consent is a privacy consent by definition (STU3 consent.html: the resource covers the privacy
use case only), which the conversion states as the R4 ``scope`` ``patient-privacy``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Final

from wor_bridge.core import fhir, inbound, translation
from wor_bridge.core.fhir import JsonDict, canonical_json
from wor_bridge.core.limits import InputLimits
from wor_bridge.core.settings import Settings
from wor_bridge.core.stu3 import consent as stu3_consent
from wor_bridge.core.stu3 import convert
from wor_bridge.core.stu3.location import relocate_all
from wor_bridge.errors import InboundError, Issue, RefusedError

R4_JSON: Final = "application/fhir+json; fhirVersion=4.0"
SUPPORTED: Final = tuple(sorted(convert.TO_R4.types))
"""STU3 resource types the conversion carries (everything else in the input is refused)."""

_LOST_NOTE: Final = (
    "must hold what FHIR R4 can express (the STU3 element is there, but the conversion has no R4 "
    "equivalent for it, e.g. a code outside the STU3 value set)"
)
_BASE_TYPES: Final = {"OPTIN": "permit", "OPTOUT": "deny"}
_STU3_MARK: Final = re.compile(rb'"resourceType"\s*:\s*"ReferralRequest"|<ReferralRequest[\s>/]')


@dataclass(frozen=True, slots=True)
class Converted:
    """An STU3 input converted to R4: the bytes the R4 path reads and what it could not carry."""

    r4: bytes
    lost: tuple[str, ...]
    """STU3 paths of the elements R4 cannot express (not read, not forwarded)."""
    stu3_root: JsonDict
    r4_root: JsonDict

    def relocate(self, err: RefusedError) -> RefusedError:
        """The R4 path's refusal with every issue at its place in the STU3 input; an issue at an
        element the conversion could not carry says so (e.g. an R4-only status code)."""
        issues = relocate_all(err.issues, self.r4_root, self.stu3_root)
        lost = frozenset(self.lost)
        return type(err)(
            [
                dataclasses.replace(i, diagnostics=_LOST_NOTE) if i.expression in lost else i
                for i in issues
            ]
        )

    def settings(self, settings: Settings) -> Settings:
        """``settings`` for the R4 bytes: the size limit applied to the STU3 input already, and
        the R4 form is slightly larger (a policy URI becomes a concept, the scope is stated)."""
        if len(self.r4) <= settings.max_body_bytes:
            return settings
        return settings.model_copy(update={"max_body_bytes": len(self.r4)})


def looks_stu3(data: bytes) -> bool:
    """True when the input holds an STU3 ReferralRequest (a JSON ``resourceType`` or an XML
    element of that name): the command line's auto-detection. R4 has no such resource type."""
    return _STU3_MARK.search(data) is not None


def _resources(root: JsonDict) -> list[tuple[str, Any]]:
    """Every resource in the input with its FHIRPath: the root, entries, contained ones."""
    rtype = str(root.get("resourceType"))
    found: list[tuple[str, Any]] = [(rtype, root)]
    for i, entry in enumerate(root.get("entry") or [] if rtype == "Bundle" else []):
        if isinstance(entry, dict) and isinstance(entry.get("resource"), dict):
            found.append((f"Bundle.entry[{i}].resource", entry["resource"]))
    for where, resource in list(found):
        for j, inner in enumerate(resource.get("contained") or []):
            found.append((f"{where}.contained[{j}]", inner))
    return found


def _unsupported(root: JsonDict) -> list[Issue]:
    """Resources the conversion does not carry, and empty entries (the conversion would drop
    them, and every later entry would be told at the wrong index)."""
    kinds = ", ".join(t for t in SUPPORTED if t != "Bundle")
    entries = root.get("entry") if root.get("resourceType") == "Bundle" else None
    empty = [
        Issue(
            "structure",
            f"Bundle.entry[{i}]",
            "must not be empty (FHIR ele-1: an element has a value or children)",
        )
        for i, entry in enumerate(entries if isinstance(entries, list) else [])
        if entry == {}
    ]
    return (
        empty
        + [
            Issue(
                "not-supported",
                where,
                f"must be one of the STU3 resource types the bridge reads ({kinds}; no clinical "
                f"data: it is never forwarded) (got {resource.get('resourceType')})",
            )
            for where, resource in _resources(root)[1:]  # the root is one (``inbound`` checked)
            if isinstance(resource, dict)
            and resource.get("resourceType") not in convert.TO_R4.types
        ][: fhir.MAX_ISSUES]
    )


def _state_base_rule(consent: JsonDict) -> None:
    """Add the root ``provision.type`` an STU3 ``policyRule`` opt-in/opt-out stands for."""
    codings = (consent.get("policyRule") or {}).get("coding") or []
    codes = {c.get("code") for c in codings if c.get("system") == stu3_consent.V3_ACT_CODE}
    base = [_BASE_TYPES[c] for c in codes if c in _BASE_TYPES]
    provision = consent.get("provision")
    if len(base) != 1 or (isinstance(provision, dict) and "type" in provision):
        return
    consent["provision"] = {"type": base[0], **(provision if isinstance(provision, dict) else {})}


def convert_input(
    data: bytes, content_type: str | None, *, max_bytes: int, limits: InputLimits | None = None
) -> Converted:
    """Read, check and convert STU3 input (see the module docstring); raises InboundError.

    ``limits``: the cost limits checked before any model validation (``inbound.read``)."""
    root = inbound.read(data, content_type, max_bytes=max_bytes, version="STU3", limits=limits)
    issues = _unsupported(root)
    if issues:
        raise InboundError(issues)
    if root.get("resourceType") == "Bundle":
        conversion = convert.bundle_to_r4(root)
    else:
        conversion = convert.to_r4(root)
    r4 = conversion.resource
    for _where, resource in _resources(r4):
        if isinstance(resource, dict) and resource.get("resourceType") == "Consent":
            _state_base_rule(resource)
    return Converted(canonical_json(r4), conversion.lost, root, r4)


def check(data: bytes, content_type: str | None, settings: Settings) -> translation.Checked:
    """``translation.check`` for STU3 input; refusals are located in the STU3 input."""
    converted = convert_input(
        data, content_type, max_bytes=settings.max_body_bytes, limits=settings.limits
    )
    try:
        return translation.check(converted.r4, R4_JSON, converted.settings(settings))
    except RefusedError as err:
        raise converted.relocate(err) from None


def translate(
    data: bytes, content_type: str | None, settings: Settings, source_system: str | None = None
) -> translation.Translated:
    """``translation.translate`` for STU3 input: the same Bundle as the equivalent R4 input."""
    converted = convert_input(
        data, content_type, max_bytes=settings.max_body_bytes, limits=settings.limits
    )
    try:
        return translation.translate(
            converted.r4, R4_JSON, converted.settings(settings), source_system
        )
    except RefusedError as err:
        raise converted.relocate(err) from None
