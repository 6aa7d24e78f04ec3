"""What a FHIR REST answer looks like, pure: ``Prefer``, ``_summary``/``_elements``, searchset
and transaction-response Bundles (http.html, search.html, bundle.html).

- ``prefer`` reads ``Prefer: return=minimal | representation | OperationOutcome`` and
  ``handling=strict | lenient`` (RFC 7240; FHIR http.html#ops);
- ``subset`` applies ``_summary=true`` (the elements the models mark as summary) or
  ``_elements`` (the named top-level elements), always keeping ``id``, ``meta`` and the
  resource's mandatory elements, and tags the result ``SUBSETTED`` as FHIR requires;
- ``searchset`` and ``transaction_response`` build the Bundles a search and a transaction or
  batch push answer with.
"""

from __future__ import annotations

from typing import Any, Final

from wor_bridge.core import fhir

JsonDict = dict[str, Any]

SUBSETTED: Final = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
_ALWAYS: Final = frozenset({"resourceType", "id", "meta"})
_MANDATORY: Final = {
    "Task": frozenset({"status", "intent"}),
    "ServiceRequest": frozenset({"status", "intent", "subject"}),
    "Observation": frozenset({"status", "code"}),
}
RETURNS: Final = ("minimal", "representation", "OperationOutcome")


def prefer(header: str | None) -> dict[str, str]:
    """The preferences of a ``Prefer`` header (lower-case names, values as sent)."""
    out: dict[str, str] = {}
    for part in (header or "").replace(";", ",").split(","):
        name, _, value = part.strip().partition("=")
        if name:
            out.setdefault(name.strip().lower(), value.strip().strip('"'))
    return out


def subset(resource: JsonDict, summary: str, elements: tuple[str, ...]) -> JsonDict:
    """``resource`` as ``_summary``/``_elements`` ask (unchanged for false, data or none)."""
    rtype = str(resource.get("resourceType", ""))
    if summary == "true":
        keep = set(fhir.summary_elements(rtype))
    elif elements:
        keep = set(elements)
    else:
        return resource
    keep |= _ALWAYS | _MANDATORY.get(rtype, frozenset())
    out = {k: v for k, v in resource.items() if k in keep}
    meta = dict(out.get("meta") or {})
    meta["tag"] = [*(meta.get("tag") or []), SUBSETTED]
    out["meta"] = meta
    return {"resourceType": rtype, **{k: v for k, v in out.items() if k != "resourceType"}}


def searchset(
    total: int, resources: list[tuple[str, JsonDict]], links: list[dict[str, str]]
) -> JsonDict:
    """A searchset Bundle: ``total``, the paging ``links`` and one match entry per
    ``(fullUrl, resource)``."""
    bundle: JsonDict = {"resourceType": "Bundle", "type": "searchset", "total": total}
    bundle["link"] = links
    if resources:
        bundle["entry"] = [
            {"fullUrl": url, "resource": resource, "search": {"mode": "match"}}
            for url, resource in resources
        ]
    return bundle


def response_entry(
    status: str, location: str = "", etag: str = "", outcome: JsonDict | None = None
) -> JsonDict:
    """One ``Bundle.entry`` of a transaction-response or batch-response."""
    response: JsonDict = {"status": status}
    if location:
        response["location"] = location
    if etag:
        response["etag"] = etag
    if outcome is not None:
        response["outcome"] = outcome
    return {"response": response}


def transaction_response(kind: str, entries: list[JsonDict]) -> JsonDict:
    """The answer to a ``transaction`` or ``batch`` Bundle: one entry per request entry."""
    return {"resourceType": "Bundle", "type": f"{kind}-response", "entry": entries}
