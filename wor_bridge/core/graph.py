"""Find the ServiceRequest in the pushed resource and resolve references to the resources it needs.

Two input shapes (the README's input contract): a ServiceRequest with its resources *contained*
(references ``#id``), or a Bundle (``transaction``, ``batch`` or ``collection``) whose entries are
referenced as ``urn:uuid:`` fullUrls, absolute fullUrls or relative ``Type/id``. Every resource
found keeps its FHIRPath location, so issues can point at it.

References resolve as the R4 Bundle rules say (https://hl7.org/fhir/R4/bundle.html#references):

- ``#id``: a resource contained in the ServiceRequest; ``#`` alone: the ServiceRequest itself;
- a version-specific reference (``[base/]Type/id/_history/n``): drop the version, resolve, then
  keep the entries whose ``resource.meta.versionId`` is ``n``;
- an absolute URL or ``urn:``: the entries with that fullUrl (an http(s) URL that is no fullUrl
  falls back to its ``Type/id``, as senders often use their own base);
- a relative ``Type/id``: against the base of the referring entry's fullUrl when that is a
  RESTful URL, else (or when that finds nothing) the entries of that type and id;
- a conditional ``Type?identifier=[system|]value`` (transactions) and a logical reference
  (``identifier`` only, optionally ``type``): the resources carrying that identifier.

Ambiguity is refused, never resolved (400): ``build`` checks every reference in the input and
refuses one that matches more than one resource, two entries with the same fullUrl and version
(bdl-7) and two contained resources with the same id.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from wor_bridge.core import fhir, fhirpath
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.identifiers import normalize_system
from wor_bridge.errors import InboundError, Issue, MappingError

BUNDLE_TYPES: Final = frozenset({"transaction", "batch", "collection"})
_HISTORY: Final = re.compile(r"^(?P<base>.+)/_history/(?P<version>[A-Za-z0-9\-.]{1,64})$")
_RESTFUL: Final = re.compile(r"^(?P<base>https?://.+/)[A-Z][A-Za-z]+/[A-Za-z0-9\-.]{1,64}$")
_ABSOLUTE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")


@dataclass(frozen=True, slots=True)
class Located:
    """A resource and its place in the input (a FHIRPath like ``Bundle.entry[2].resource``)."""

    resource: JsonDict
    location: str

    @property
    def type(self) -> str:
        """The resource type."""
        return str(self.resource.get("resourceType", ""))


@dataclass(frozen=True, slots=True)
class _Entry:
    located: Located
    full_url: str | None
    version: str | None


def _version(resource: JsonDict) -> str | None:
    meta = resource.get("meta")
    version = meta.get("versionId") if isinstance(meta, dict) else None
    return version if isinstance(version, str) else None


def _identifier_key(system: object, value: object) -> tuple[str, str] | None:
    if isinstance(system, str) and isinstance(value, str) and system and value:
        return normalize_system(system), value
    return None


class Graph:
    """The input's resources, indexed for reference resolution."""

    def __init__(self, service_request: Located, entries: list[tuple[str | None, Located]]) -> None:
        self.service_request = service_request
        self._contained: dict[str, list[Located]] = {}
        for i, res in enumerate(service_request.resource.get("contained") or []):
            if isinstance(res, dict) and isinstance(res.get("id"), str):
                loc = f"{service_request.location}.contained[{i}]"
                self._contained.setdefault(f"#{res['id']}", []).append(Located(res, loc))
        self._entries = [_Entry(e, url, _version(e.resource)) for url, e in entries]
        self._by_url: dict[str, list[_Entry]] = {}
        self._by_type_id: dict[str, list[_Entry]] = {}
        for entry in self._entries:
            if entry.full_url:
                self._by_url.setdefault(entry.full_url, []).append(entry)
            rid = entry.located.resource.get("id")
            if isinstance(rid, str) and rid:
                self._by_type_id.setdefault(f"{entry.located.type}/{rid}", []).append(entry)
        self._resources = [e.located for e in self._entries]
        if all(r.resource is not service_request.resource for r in self._resources):
            self._resources.append(service_request)
        self._resources += [c for found in self._contained.values() for c in found]

    def resolve(self, reference: Any, where: str | None = None) -> Located | None:
        """The one resource a FHIR Reference at ``where`` points at in the input, or None."""
        found = self.matches(reference, where)
        return found[0] if len(found) == 1 else None

    def matches(self, reference: Any, where: str | None = None) -> list[Located]:
        """Every resource in the input that the Reference at ``where`` (a FHIRPath) matches."""
        if not isinstance(reference, dict):
            return []
        ref = reference.get("reference")
        if not isinstance(ref, str) or not ref:
            return self._by_identifier(reference.get("identifier"), reference.get("type"))
        if ref.startswith("#"):
            return [self.service_request] if ref == "#" else list(self._contained.get(ref, []))
        if "?" in ref:
            return self._conditional(ref)
        version = None
        if (m := _HISTORY.match(ref)) is not None:
            ref, version = m["base"], m["version"]
        found = self._by_base(ref, where)
        if version is not None:
            found = [e for e in found if e.version == version]
        return [e.located for e in found]

    def _by_base(self, ref: str, where: str | None) -> list[_Entry]:
        if _ABSOLUTE.match(ref):
            found = self._by_url.get(ref, [])
            if found or not ref.startswith(("http://", "https://")):
                return found
            return self._by_type_id.get("/".join(ref.rstrip("/").split("/")[-2:]), [])
        base = self._base_of(where)
        in_base = self._by_url.get(base + ref, []) if base is not None else []
        if in_base:
            return in_base
        return self._by_url.get(ref) or self._by_type_id.get(ref, [])

    def _base_of(self, where: str | None) -> str | None:
        """The RESTful base of the fullUrl of the entry that holds ``where``."""
        if where is None:
            return None
        for entry in self._entries:
            loc = entry.located.location
            if entry.full_url and (where == loc or where.startswith((f"{loc}.", f"{loc}["))):
                m = _RESTFUL.match(entry.full_url)
                return m["base"] if m else None
        return None

    def _by_identifier(self, identifier: object, rtype: object) -> list[Located]:
        if not isinstance(identifier, dict):
            return []
        key = _identifier_key(identifier.get("system"), identifier.get("value"))
        if key is None:
            return []
        return [
            r
            for r in self._resources
            if (not isinstance(rtype, str) or r.type == rtype)
            and any(
                isinstance(i, dict) and _identifier_key(i.get("system"), i.get("value")) == key
                for i in r.resource.get("identifier") or []
            )
        ]

    def _conditional(self, ref: str) -> list[Located]:
        """``Type?identifier=system|value``: the one search a referral's transaction needs."""
        rtype, _, query = ref.partition("?")
        params = parse_qsl(query, keep_blank_values=True)
        if len(params) != 1 or params[0][0] != "identifier" or "|" not in params[0][1]:
            return []
        system, _, value = params[0][1].partition("|")
        return self._by_identifier({"system": system, "value": value}, rtype)

    def ambiguities(self, roots: list[Located]) -> list[Issue]:
        """An issue for every Reference under ``roots`` that matches more than one resource."""
        issues = []
        for root in roots:
            for where, ref in fhirpath.references(root.resource, root.location):
                count = len(self.matches(ref, where))
                if count > 1:
                    issues.append(
                        Issue(
                            "multiple-matches",
                            where,
                            "must match exactly one resource in the input (got "
                            f"{count} matches; FHIR does not say which one is meant)",
                        )
                    )
        return issues


def _duplicate_ids(located: Located) -> list[Issue]:
    """Two resources contained in one resource with the same id: ``#id`` would be ambiguous."""
    first: dict[str, int] = {}
    issues = []
    for i, res in enumerate(located.resource.get("contained") or []):
        rid = res.get("id") if isinstance(res, dict) else None
        if not isinstance(rid, str):
            continue
        if rid in first:
            issues.append(
                Issue(
                    "structure",
                    f"{located.location}.contained[{i}].id",
                    "must be unique among the contained resources (got the same id as "
                    f"contained[{first[rid]}])",
                )
            )
        first.setdefault(rid, i)
    return issues


def _bdl7(entries: list[Any]) -> list[Issue]:
    """bdl-7: fullUrl unique, unless the entries differ in ``resource.meta.versionId``."""
    first: dict[tuple[str, str], int] = {}
    issues = []
    for i, entry in enumerate(entries):
        url = entry.get("fullUrl") if isinstance(entry, dict) else None
        if not isinstance(url, str):
            continue
        resource = entry.get("resource")
        key = (url, (_version(resource) if isinstance(resource, dict) else None) or "")
        if key in first:
            issues.append(
                Issue(
                    "invariant",
                    f"Bundle.entry[{i}].fullUrl",
                    "must be unique in the Bundle unless the entries differ in "
                    "resource.meta.versionId (bdl-7; got the fullUrl and version of "
                    f"Bundle.entry[{first[key]}])",
                )
            )
        first.setdefault(key, i)
    return issues


def build(root: JsonDict) -> Graph:
    """Index a ServiceRequest or a Bundle; refuse a Bundle of the wrong shape, and ambiguity."""
    if root["resourceType"] == "ServiceRequest":
        top = Located(root, "ServiceRequest")
        graph = Graph(top, [])
        _refuse_ambiguity(graph, [top], [])
        return graph
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
    raw_entries = root.get("entry") or []
    for i, entry in enumerate(raw_entries):
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
    graph = Graph(requests[0], entries)
    _refuse_ambiguity(graph, [located for _, located in entries], _bdl7(raw_entries))
    return graph


def _refuse_ambiguity(graph: Graph, roots: list[Located], issues: list[Issue]) -> None:
    for located in roots:
        issues += _duplicate_ids(located)
    issues += graph.ambiguities(roots)
    if issues:
        raise InboundError(issues[: fhir.MAX_ISSUES])
