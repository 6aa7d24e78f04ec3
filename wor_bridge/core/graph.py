"""Find the ServiceRequest in the pushed resource and resolve references to the resources it needs.

Two input shapes (the README's input contract): a ServiceRequest with its resources *contained*
(references ``#id``), or a Bundle (``transaction``, ``batch`` or ``collection``) whose entries are
referenced as ``urn:uuid:`` fullUrls, absolute fullUrls or relative ``Type/id``. Every resource
found keeps its FHIRPath location, so issues can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from wor_bridge.core.fhir import JsonDict
from wor_bridge.errors import Issue, MappingError

BUNDLE_TYPES: Final = frozenset({"transaction", "batch", "collection"})


@dataclass(frozen=True, slots=True)
class Located:
    """A resource and its place in the input (a FHIRPath like ``Bundle.entry[2].resource``)."""

    resource: JsonDict
    location: str

    @property
    def type(self) -> str:
        """The resource type."""
        return str(self.resource.get("resourceType", ""))


class Graph:
    """The input's resources, indexed for reference resolution."""

    def __init__(self, service_request: Located, entries: list[tuple[str | None, Located]]) -> None:
        self.service_request = service_request
        self._contained: dict[str, Located] = {}
        for i, res in enumerate(service_request.resource.get("contained") or []):
            if isinstance(res, dict) and res.get("id"):
                loc = f"{service_request.location}.contained[{i}]"
                self._contained[f"#{res['id']}"] = Located(res, loc)
        self._by_url: dict[str, Located] = {}
        self._by_type_id: dict[str, Located] = {}
        for full_url, entry in entries:
            if full_url:
                self._by_url[full_url] = entry
            rid = entry.resource.get("id")
            if rid:
                self._by_type_id.setdefault(f"{entry.type}/{rid}", entry)

    def resolve(self, reference: Any) -> Located | None:
        """The resource a FHIR Reference points at inside the input, or None."""
        if not isinstance(reference, dict):
            return None
        ref = reference.get("reference")
        if not isinstance(ref, str) or not ref:
            return None
        if ref.startswith("#"):
            return self._contained.get(ref)
        found = self._by_url.get(ref) or self._by_type_id.get(ref)
        if found is None and "/" in ref and not ref.startswith("urn:"):
            tail = "/".join(ref.rstrip("/").split("/")[-2:])
            found = self._by_type_id.get(tail)
        return found


def build(root: JsonDict) -> Graph:
    """Index a ServiceRequest or a Bundle; refuse a Bundle of the wrong shape."""
    if root["resourceType"] == "ServiceRequest":
        return Graph(Located(root, "ServiceRequest"), [])
    btype = root.get("type")
    if btype not in BUNDLE_TYPES:
        raise MappingError(
            [
                Issue(
                    "not-supported",
                    "Bundle.type",
                    "must be transaction, batch or collection (got another Bundle type)",
                )
            ]
        )
    entries: list[tuple[str | None, Located]] = []
    requests: list[Located] = []
    for i, entry in enumerate(root.get("entry") or []):
        resource = entry.get("resource")
        if not isinstance(resource, dict):
            continue
        located = Located(resource, f"Bundle.entry[{i}].resource")
        full_url = entry.get("fullUrl")
        entries.append((full_url if isinstance(full_url, str) and full_url else None, located))
        if located.type == "ServiceRequest":
            requests.append(located)
    if len(requests) != 1:
        raise MappingError(
            [
                Issue(
                    "not-supported",
                    "Bundle.entry",
                    f"must contain exactly one ServiceRequest (got {len(requests)})",
                )
            ]
        )
    return Graph(requests[0], entries)
