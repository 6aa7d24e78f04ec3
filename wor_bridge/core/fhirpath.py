"""FHIRPath locations in FHIR JSON that name only what the R4 (or STU3) element model knows.

A refusal points at the place in the input (``Bundle.entry[2].resource.name[0].family``), but a
name the model does not know is the sender's text, not an element: it may be anything, patient
data included. ``locate`` therefore follows a raw path (property names and array indices) through
the element types of ``fhir.elements`` and stops at the last known element. ``references`` walks
a resource by those types and yields every ``Reference`` with its location; ``strings_with`` finds
the strings that contain a marker (the XML reader's stand-in for a forbidden character).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Final

from wor_bridge.core import fhir

Segment = str | int

_RESOURCE: Final = "(resource)"  # the next object's own resourceType decides its type


def _resource_type(node: object, version: fhir.Version = "R4") -> str | None:
    rtype = node.get("resourceType") if isinstance(node, dict) else None
    return rtype if isinstance(rtype, str) and fhir.is_resource_type(rtype, version) else None


def _step(
    type_name: str | None, node: object, name: str, version: fhir.Version = "R4"
) -> tuple[bool, str | None]:
    """Is ``name`` an element of the node's type, and which type do its values have?"""
    if type_name == _RESOURCE:
        type_name = _resource_type(node, version)
        if name == "resourceType":
            return type_name is not None, None
    if type_name is None:
        return False, None
    elements = fhir.elements(type_name, version)
    if name.startswith("_"):
        info = elements.get(name[1:])
        primitive = info is not None and info.kind not in ("complex", "resource")
        return primitive, "Element" if primitive else None
    info = elements.get(name)
    if info is None:
        return False, None
    if info.kind == "resource":
        return True, _RESOURCE
    return True, info.type_name if info.kind == "complex" else None


def locate(
    root: dict[str, Any], segments: Sequence[Segment], version: fhir.Version = "R4"
) -> tuple[str, bool]:
    """The FHIRPath of ``segments`` under the root resource, and whether every name was known.

    The path stops before the first name that is not an element of its parent's type (or that
    goes inside a primitive), so only model names (and indices) ever appear in it. ``version``
    picks the element model (R4, or STU3 for the STU3 intake).
    """
    start = _resource_type(root, version)
    if start is None:
        return "(body)", False
    out = start
    type_name: str | None = _RESOURCE
    node: object = root
    for seg in segments:
        if isinstance(seg, int):
            out += f"[{seg}]"
            node = node[seg] if isinstance(node, list) and 0 <= seg < len(node) else None
            continue
        known, next_type = _step(type_name, node, seg, version)
        if not known:
            return out, False
        out += f".{seg}"
        type_name = next_type
        node = node.get(seg) if isinstance(node, dict) else None
    return out, True


def references(resource: dict[str, Any], location: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every ``Reference`` in ``resource`` (contained resources included) with its FHIRPath."""
    yield from _references(resource, _RESOURCE, location)


def _references(
    node: dict[str, Any], type_name: str, location: str
) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, value in node.items():
        known, next_type = _step(type_name, node, name)
        if not known or next_type is None or next_type == "Element":
            continue
        items = value if isinstance(value, list) else [value]
        indexed = isinstance(value, list)
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            where = f"{location}.{name}" + (f"[{i}]" if indexed else "")
            if next_type == "Reference":
                yield where, item
            yield from _references(item, next_type, where)


def strings_with(node: object, marker: str, location: str) -> Iterator[tuple[str, int]]:
    """``(FHIRPath, length)`` of every string under ``node`` that contains ``marker``.

    For converted FHIR XML, whose element names the XML reader has already checked.
    """
    if isinstance(node, str):
        if marker in node:
            yield location, len(node)
    elif isinstance(node, dict):
        for name, value in node.items():
            if name != "resourceType":
                yield from strings_with(value, marker, f"{location}.{name}")
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from strings_with(item, marker, f"{location}[{i}]")
