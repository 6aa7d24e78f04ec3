"""The pure use case: pushed bytes -> gated, routed referral -> transaction Bundle (or a refusal).

No I/O: settings come in as values, the result goes out as values. The service and the CLI are
thin shells around ``translate`` and ``check``.
"""

from __future__ import annotations

from dataclasses import dataclass

from wor_bridge.core import gates, graph, inbound, referral, resource_ids
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.identifiers import normalize_system
from wor_bridge.core.settings import Destination, Settings
from wor_bridge.errors import Issue, MappingError


@dataclass(frozen=True, slots=True)
class Checked:
    """A referral that passed every gate, and where it goes."""

    referral: gates.Referral
    destination: Destination


@dataclass(frozen=True, slots=True)
class Translated:
    """The Bundle for the destination plus the keys the outbox and the service need."""

    bundle: JsonDict
    destination: Destination
    ids: resource_ids.Ids
    mapping_ref: str
    referral: gates.Referral


def check(data: bytes, content_type: str | None, settings: Settings) -> Checked:
    """Read, gate and route ``data`` and decide its consent for that destination.

    Raises InboundError or MappingError with every issue.
    """
    root = inbound.read(
        data, content_type, max_bytes=settings.max_body_bytes, limits=settings.limits
    )
    g = graph.build(root)
    result = gates.check(g, settings)
    if isinstance(result, list):
        raise MappingError(result, consent_refused_for=_consent_refused_for(g, result))
    return Checked(result, result.destination)


def translate(
    data: bytes, content_type: str | None, settings: Settings, source_system: str | None = None
) -> Translated:
    """``check``, then build the destination's transaction Bundle.

    ``source_system`` (the authenticated sender) overrides ``output.source_system`` in the ids.
    """
    checked = check(data, content_type, settings)
    mapping = settings.mapping_for(checked.destination)
    output = settings.output
    if source_system is not None:
        output = output.model_copy(update={"source_system": source_system})
    bundle, ids = referral.to_bundle(checked.referral, checked.destination, mapping, output)
    return Translated(bundle, checked.destination, ids, mapping.ref, checked.referral)


def _within(expression: str, location: str) -> bool:
    return expression == location or expression.startswith((f"{location}.", f"{location}["))


def _consent_refused_for(g: graph.Graph, issues: list[Issue]) -> tuple[str, str] | None:
    """The referral's own identifier when a Consent the referral cites refuses (an issue inside
    that Consent); None otherwise (a push without a Consent is refused, but withdraws nothing: it
    says nothing about the patient's wish), or when the identifier is unreadable."""
    sr = g.service_request
    places: list[str] = []
    for ref in sr.resource.get("supportingInfo") or []:
        found = g.resolve(ref, f"{sr.location}.supportingInfo")
        if found is not None and found.type == "Consent":
            places.append(found.location)
    if not any(_within(i.expression, place) for i in issues for place in places):
        return None
    first = (sr.resource.get("identifier") or [None])[0]
    if not isinstance(first, dict):
        return None
    system, value = first.get("system"), first.get("value")
    if not (isinstance(system, str) and system and isinstance(value, str) and value.strip()):
        return None
    return normalize_system(system), value.strip()
