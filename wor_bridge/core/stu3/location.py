"""Issues of the R4 intake path, told in the STU3 input's terms (the STU3 intake's refusals).

The STU3 intake (``intake``) converts an STU3 ReferralRequest or Bundle to R4 and runs the one R4
path; that path names R4 elements (``ServiceRequest.code``, ``Consent.provision.period.end``).
``relocate`` names the element of the STU3 input the sender has to change instead:

- the resource type ``ServiceRequest`` is ``ReferralRequest``; its renamed elements are named as
  STU3 names them (``code`` → ``type``, ``requester`` → ``requester.agent``, ``performer`` →
  ``recipient``, ``performerType`` → ``specialty``, ``encounter`` → ``context``,
  ``requisition`` → ``groupIdentifier``, ``instantiatesCanonical`` → ``definition``), the
  inverse of ``request.TO_R4``; ``category`` (the WoR marker) is ``type``, where STU3 carries it;
- Consent (the inverse of ``consent.TO_R4``): ``performer`` → ``consentingParty``, the root
  ``provision``'s elements sit on the Consent, its nested provisions are ``except`` (whose
  ``code`` items are Codings), and the root ``provision.type``, which the intake derives from the
  STU3 base rule, is ``policyRule``;
- then the path is walked through the STU3 input with the STU3 element model: it stops at the
  last element STU3 defines (an R4-only element is reported at its holder, and the diagnostic
  names the R4 element), and an index is kept only where STU3 repeats the element.

Diagnostics get the STU3 wording where they name an element (``ServiceRequest`` →
``ReferralRequest``, "in code or category" → "in type"). Locations and diagnostics stay model
names and indices: never a value from the input. Pure.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Final

from wor_bridge.core import fhir
from wor_bridge.core.fhir import JsonDict
from wor_bridge.errors import Issue

Segment = tuple[str, tuple[int, ...]]

_PATH: Final = re.compile(r"^[A-Za-z]+(\[\d+\])*(\.[A-Za-z_][A-Za-z0-9_]*(\[\d+\])*)*$")
_SEGMENT: Final = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)((?:\[\d+\])*)")

_SERVICE_REQUEST: Final = {
    "code": ("type",),
    "requester": ("requester", "agent"),
    "performer": ("recipient",),
    "performerType": ("specialty",),
    "encounter": ("context",),
    "requisition": ("groupIdentifier",),
    "instantiatesCanonical": ("definition",),
}
_WHOLE: Final = {"category": ("type",)}
"""R4 elements whose STU3 place is another element as a whole (the rest of the path goes)."""

_WORDING: Final = (
    ("in code or category", "in type"),
    ("in code or reasonCode", "in type or reasonCode"),
    ("(got deny)", "(got the opt-out policyRule)"),
    ("the root provision denies", "the policyRule is opt-out"),
    ("policyRule, a declared policy or provision.type", "policyRule or a declared policy"),
    ("a nested deny", "an except of type deny"),
    ("v3-ActCode OPTIN, OPTINR, OPTOUT or OPTOUTE", "ConsentPolicy/opt-in or opt-out"),
    ("nested provision", "except"),
    ("ServiceRequest", "ReferralRequest"),
)
"""R4 wording -> STU3 wording; the root ``provision.type`` of an STU3 input is its policyRule."""


def _parse(expression: str) -> list[Segment] | None:
    """``Bundle.entry[2].resource.code`` -> ``[("Bundle", ()), ("entry", (2,)), ...]``."""
    if not _PATH.match(expression):
        return None
    return [
        (name, tuple(int(i) for i in re.findall(r"\d+", idx)))
        for name, idx in _SEGMENT.findall(expression)
    ]


def _last_resource(segments: list[Segment], r4_root: JsonDict) -> tuple[int, str]:
    """Where the innermost resource starts in ``segments`` (its index) and its R4 type."""
    node: Any = r4_root
    start, rtype = 0, str(r4_root.get("resourceType", ""))
    for at, (name, indices) in enumerate(segments[1:], 1):
        node = node.get(name) if isinstance(node, dict) else None
        for i in indices:
            node = node[i] if isinstance(node, list) and 0 <= i < len(node) else None
        if name in ("contained", "resource") and isinstance(node, dict):
            start, rtype = at, str(node.get("resourceType", ""))
    return start, rtype


def _consent(rel: list[Segment]) -> list[Segment]:
    """A path inside an R4 Consent as the STU3 Consent names it."""
    head, indices = rel[0]
    if head == "performer":
        return [("consentingParty", indices), *rel[1:]]
    if head == "policyRule" or (rel[1:2] == [("type", ())] and head == "provision"):
        return [("policyRule", ())]  # the root provision.type is the STU3 base rule
    if head != "provision":
        return rel
    inner = rel[1:2]
    if not inner or inner[0][0] != "provision":
        return rel[1:]  # the root provision's elements sit on the STU3 Consent
    rest = rel[2:]
    if rest[:1] and rest[0][0] == "code":  # an R4 concept per STU3 Coding: the Coding is the item
        rest = [rest[0], *rest[2:]] if rest[1:2] and rest[1][0] == "coding" else rest[:1]
    return [("except", inner[0][1]), *rest]


def _stu3_names(rtype: str, rel: list[Segment]) -> list[Segment]:
    """The rename part: R4 names inside one resource -> STU3 names."""
    if not rel:
        return rel
    if rtype == "Consent":
        return _consent(rel)
    if rtype != "ServiceRequest":
        return rel
    head, indices = rel[0]
    if head in _WHOLE:
        return [(name, ()) for name in _WHOLE[head]]
    names = _SERVICE_REQUEST.get(head)
    if names is None:
        return rel
    renamed = [(name, ()) for name in names[:-1]] + [(names[-1], indices)]
    return renamed + rel[1:]


def _walk_stu3(root: JsonDict, segments: list[Segment]) -> tuple[str, bool]:
    """The STU3 path of ``segments`` (after the root type) in ``root``, and whether complete."""
    rtype = str(root.get("resourceType", ""))
    out, type_name = rtype, rtype
    node: Any = root
    for name, indices in segments:
        info = fhir.stu3_elements(type_name).get(name) if type_name else None
        if info is None:
            return out, False
        out += f".{name}"
        node = node.get(name) if isinstance(node, dict) else None
        if info.is_list:
            for i in indices:
                out += f"[{i}]"
                node = node[i] if isinstance(node, list) and 0 <= i < len(node) else None
        elif indices not in ((), (0,)):
            return out, False
        if info.kind == "resource":
            found = node.get("resourceType") if isinstance(node, dict) else None
            type_name = (
                found if isinstance(found, str) and fhir.is_stu3_resource_type(found) else ""
            )
        elif info.kind == "complex":
            type_name = info.type_name
        else:
            type_name = ""
    return out, True


def _wording(diagnostics: str) -> str:
    for r4, stu3 in _WORDING:
        diagnostics = diagnostics.replace(r4, stu3)
    return diagnostics


def relocate(issue: Issue, r4_root: JsonDict, stu3_root: JsonDict) -> Issue:
    """``issue`` of the converted ``r4_root`` at its place in ``stu3_root``, in STU3 words."""
    segments = _parse(issue.expression)
    if segments is None:  # "(body)", "(content-type)": no element
        return dataclasses.replace(issue, diagnostics=_wording(issue.diagnostics))
    start, rtype = _last_resource(segments, r4_root)
    rel = segments[start + 1 :]
    mapped = segments[1 : start + 1] + _stu3_names(rtype, rel)
    where, complete = _walk_stu3(stu3_root, mapped)
    diagnostics = _wording(issue.diagnostics)
    if not complete:
        r4_element = ".".join(name for name, _ in rel)
        diagnostics += f" (read as FHIR R4 {rtype}.{r4_element}, which STU3 has no element for)"
    return dataclasses.replace(issue, expression=where, diagnostics=diagnostics)


def relocate_all(issues: tuple[Issue, ...], r4_root: JsonDict, stu3_root: JsonDict) -> list[Issue]:
    """Every issue relocated, in order; two that became the same issue are reported once."""
    out: list[Issue] = []
    for issue in issues:
        moved = relocate(issue, r4_root, stu3_root)
        if moved not in out:
            out.append(moved)
    return out
