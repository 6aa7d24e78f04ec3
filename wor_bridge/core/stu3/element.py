"""Schema-driven copying between FHIR R4 and STU3 JSON, shared by the resource families.

Both versions' element tables come from ``fhir`` (``elements`` for R4, ``stu3_elements`` for
STU3), so the walk knows the type of every element on both sides. An element is copied when the
target type has an element of the same name; otherwise its path goes into ``Walk.lost`` (names and
indices only, never values). What differs by more than presence is a ``Rule`` in a ``Spec`` keyed
by ``(source type, target type)``: renames, restructures, code tables. Cardinality differences
(list in one version, single in the other) and reference renames (``ServiceRequest/x`` ⇄
``ReferralRequest/x``) are handled here for every element.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from wor_bridge.core.fhir import ElementInfo, JsonDict

Schema = Callable[[str], Mapping[str, ElementInfo]]
Pairs = list[tuple[str, Any]]
Rule = Callable[["Slot"], Pairs]

# ``value[x]`` of Extension, Task input/output, Observation component (not Quantity.value).
_CHOICE_VALUE: Final = re.compile(r"value[A-Z]\w*")
# Elements whose string value is a (possibly conditional or absolute) reference to a resource.
_REFERENCE_STRINGS: Final = frozenset(
    {("Reference", "reference"), ("BundleEntry", "fullUrl"), ("BundleEntryRequest", "url")}
)


@dataclass(frozen=True)
class Spec:
    """How one source type becomes one target type: per-element rules and added elements."""

    rules: Mapping[str, Rule] = field(default_factory=dict)
    added: Callable[[JsonDict], Pairs] | None = None
    needs: tuple[str, ...] = ()  # target elements without which a nested object is lost whole


@dataclass(frozen=True)
class Direction:
    """One conversion direction: the two schemas, the supported resource types, the specs."""

    source: Schema
    target: Schema
    types: Mapping[str, str]
    specs: Mapping[tuple[str, str], Spec]

    def rename_reference(self, value: str) -> str:
        """``ServiceRequest/x`` -> ``ReferralRequest/x`` (also absolute, versioned, conditional)."""
        head, mark, query = value.partition("?")
        parts = head.split("/")
        at = _type_segment(parts)
        parts[at] = self.types.get(parts[at], parts[at])
        return "/".join(parts) + mark + query


@dataclass
class Walk:
    """The state of one conversion: its direction and the paths that could not be expressed."""

    direction: Direction
    lost: list[str] = field(default_factory=list)

    def lose(self, path: str) -> Pairs:
        """Record ``path`` as not expressible; return no target elements."""
        self.lost.append(path)
        return []


@dataclass(frozen=True)
class Slot:
    """One element of a source object: its key, value, path and owning types."""

    key: str
    value: Any
    path: str
    src_type: str
    tgt_type: str
    owner: JsonDict
    walk: Walk

    @property
    def name(self) -> str:
        """The element name without the ``_`` of a primitive's extension object."""
        return self.key.removeprefix("_")

    def fit_as(self, target_key: str, tgt_owner: str | None = None) -> Any:
        """The value fitted to element ``target_key`` of ``tgt_owner`` (default: the owner)."""
        direction = self.walk.direction
        src = direction.source(self.src_type)[self.name]
        tgt = direction.target(tgt_owner or self.tgt_type)[target_key]
        if self.key != self.name:  # a primitive's extension objects: Element (list if it is)
            src, tgt = _element(src.is_list), _element(tgt.is_list)
        reference = (self.src_type, self.name) in _REFERENCE_STRINGS
        return fit_value(self.value, src, tgt, self.path, self.walk, reference=reference)

    def target_type_of(self, target_key: str) -> str:
        """The target type name of element ``target_key`` of the owning target type."""
        return self.walk.direction.target(self.tgt_type)[target_key].type_name


def _type_segment(parts: list[str]) -> int:
    """Where the type is in ``[base/]Type/id[/_history/v]`` or a bare ``Type`` (split on /)."""
    if len(parts) >= 4 and parts[-2] == "_history":
        return len(parts) - 4
    return len(parts) - 2 if len(parts) >= 2 else 0


def _element(is_list: bool) -> ElementInfo:
    """The type of ``_x``, the extension object(s) of primitive element ``x``."""
    return ElementInfo("complex", is_list, "Element")


def convert_resource(resource: Any, path: str, walk: Walk) -> JsonDict:
    """Convert one resource of a supported type; ValueError names an unsupported type."""
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    target = walk.direction.types.get(rtype) if isinstance(rtype, str) else None
    if target is None:
        raise ValueError(f"STU3 conversion does not support resource type {rtype!r}")
    return {"resourceType": target, **fit_object(resource, str(rtype), target, path, walk)}


def fit_object(obj: JsonDict, src_type: str, tgt_type: str, path: str, walk: Walk) -> JsonDict:
    """Copy ``obj`` (a ``src_type``) as a ``tgt_type``: rules first, then same-named elements."""
    spec = walk.direction.specs.get((src_type, tgt_type), Spec())
    out: JsonDict = {}
    for key, value in obj.items():
        if key == "resourceType":
            continue
        slot = Slot(key, value, f"{path}.{key}", src_type, tgt_type, obj, walk)
        rule = spec.rules.get(key) or (_ext_rule(spec, key) if key.startswith("_") else None)
        _merge(out, rule(slot) if rule else copy_same(slot), slot)
    if spec.added is not None:
        for key, value in spec.added(obj):
            out.setdefault(key, value)
    return out


def _ext_rule(spec: Spec, key: str) -> Rule | None:
    """A renamed primitive's ``_x`` follows its rename; other rules do not apply to ``_x``."""
    rule = spec.rules.get(key[1:])
    return rule if isinstance(rule, Rename) else None


def _merge(out: JsonDict, pairs: Pairs, slot: Slot) -> None:
    """Add target elements; lists extend, objects combine, a clash loses the source element."""
    for key, value in pairs:
        if _is_empty(value):
            continue
        if key not in out:
            out[key] = value
        elif isinstance(out[key], list) and isinstance(value, list):
            out[key] = out[key] + value
        elif isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = {**out[key], **value}
        else:
            slot.walk.lose(slot.path)


def _is_empty(value: Any) -> bool:
    """FHIR JSON has no empty objects or arrays: an element emptied by losses disappears."""
    if isinstance(value, list):
        return all(item is None for item in value)
    return value is None or value == {}


def copy_same(slot: Slot) -> Pairs:
    """Copy an element the target type has under the same name; lose it otherwise."""
    direction = slot.walk.direction
    src = direction.source(slot.src_type).get(slot.name)
    tgt = direction.target(slot.tgt_type).get(slot.name)
    if src is None or tgt is None or (slot.key == slot.name and src.kind != tgt.kind):
        return slot.walk.lose(slot.path)
    return [(slot.key, slot.fit_as(slot.name))]


def fit_value(
    value: Any, src: ElementInfo, tgt: ElementInfo, path: str, walk: Walk, *, reference: bool
) -> Any:
    """Fit a value between element kinds and cardinalities (extra list items are lost)."""
    if isinstance(value, list) and not tgt.is_list:
        for i in range(1, len(value)):
            walk.lose(f"{path}[{i}]")
        first = value[0] if value else None
        return _fit_item(first, src, tgt, f"{path}[0]", walk, reference=reference)
    if isinstance(value, list):
        items = [
            _fit_item(item, src, tgt, f"{path}[{i}]", walk, reference=reference)
            for i, item in enumerate(value)
        ]
        if tgt.type_name == "Element":  # a primitive's extensions stay aligned with its values
            return [item or None for item in items]
        return [item for item in items if not _is_empty(item)]
    fitted = _fit_item(value, src, tgt, path, walk, reference=reference)
    return [fitted] if tgt.is_list else fitted


def _fit_item(
    value: Any, src: ElementInfo, tgt: ElementInfo, path: str, walk: Walk, *, reference: bool
) -> Any:
    if src.kind == "resource":
        return convert_resource(value, path, walk)
    if src.kind == "complex" and isinstance(value, dict):
        mark = len(walk.lost)
        fitted = fit_object(value, src.type_name, tgt.type_name, path, walk)
        if not _incomplete(value, fitted, walk.direction.specs.get((src.type_name, tgt.type_name))):
            return fitted
        del walk.lost[mark:]  # the object as a whole is what cannot be expressed
        walk.lose(path)
        return None
    if reference and isinstance(value, str):
        return walk.direction.rename_reference(value)
    return value


def _incomplete(source: JsonDict, fitted: JsonDict, spec: Spec | None) -> bool:
    """True when a needed element did not survive: a ``value[x]`` the source had, or a need."""
    had_value = any(_CHOICE_VALUE.fullmatch(key) for key in source)
    if had_value and not any(_CHOICE_VALUE.fullmatch(key) for key in fitted):
        return True
    return spec is not None and any(name not in fitted for name in spec.needs)


# --- rules shared by the families -------------------------------------------------------------


@dataclass(frozen=True)
class Rename:
    """The element (and its ``_x``) under another name of the same owner."""

    target: str

    def __call__(self, slot: Slot) -> Pairs:
        """Fit the value to the renamed element."""
        prefix = "_" if slot.key.startswith("_") else ""
        return [(prefix + self.target, slot.fit_as(self.target))]


@dataclass(frozen=True)
class Into:
    """The element moved into a child object of the owner (``period`` -> ``provision.period``)."""

    container: str
    target: str

    def __call__(self, slot: Slot) -> Pairs:
        """Fit the value to ``container.target`` and emit the container."""
        inner = slot.target_type_of(self.container)
        return [(self.container, {self.target: slot.fit_as(self.target, inner)})]


@dataclass(frozen=True)
class Wrap:
    """A reference that the target nests in an object (R4 ``requester`` -> ``requester.agent``)."""

    inner: str

    def __call__(self, slot: Slot) -> Pairs:
        """Emit ``{inner: reference}`` under the same name."""
        return [(slot.key, {self.inner: slot.fit_as(self.inner, slot.target_type_of(slot.key))})]


@dataclass(frozen=True)
class Unwrap:
    """The inverse of ``Wrap``: keep ``inner``, lose the object's other elements."""

    inner: str

    def __call__(self, slot: Slot) -> Pairs:
        """Emit the inner reference under the same name."""
        value = slot.value if isinstance(slot.value, dict) else {}
        for key in value:
            if key != self.inner:
                slot.walk.lose(f"{slot.path}.{key}")
        if self.inner not in value:
            return []
        direction = slot.walk.direction
        holder = direction.source(slot.src_type)[slot.key].type_name
        src = direction.source(holder)[self.inner]
        tgt = direction.target(slot.tgt_type)[slot.key]
        path = f"{slot.path}.{self.inner}"
        return [
            (slot.key, fit_value(value[self.inner], src, tgt, path, slot.walk, reference=False))
        ]


@dataclass(frozen=True)
class Codes:
    """A code element whose value sets differ: ``table`` renames, ``same`` pass, others are lost."""

    table: Mapping[str, str]
    same: frozenset[str]

    def __call__(self, slot: Slot) -> Pairs:
        """Map the code or lose it."""
        value = slot.value
        if isinstance(value, str) and (value in self.table or value in self.same):
            return [(slot.key, self.table.get(value, value))]
        return slot.walk.lose(slot.path)


def lose(slot: Slot) -> Pairs:
    """A rule for an element the target cannot express."""
    return slot.walk.lose(slot.path)


def context_to_encounter(slot: Slot) -> Pairs:
    """STU3 ``context`` (Encounter | EpisodeOfCare) -> R4 ``encounter`` (Encounter only)."""
    reference = slot.value.get("reference", "") if isinstance(slot.value, dict) else ""
    if re.search(r"(^|/)EpisodeOfCare/", str(reference)):
        return slot.walk.lose(slot.path)
    return Rename("encounter")(slot)


@dataclass(frozen=True)
class CanonicalsToReferences:
    """R4 ``canonical`` strings -> STU3 ``Reference`` objects (``{"reference": url}``)."""

    target: str

    def __call__(self, slot: Slot) -> Pairs:
        """Wrap each canonical URL in a Reference."""
        if isinstance(slot.value, list):
            return [(self.target, [{"reference": v} for v in slot.value])]
        return [(self.target, {"reference": slot.value})]


@dataclass(frozen=True)
class ReferencesToCanonicals:
    """STU3 ``Reference`` objects -> R4 ``canonical`` strings; other Reference parts are lost."""

    target: str

    def __call__(self, slot: Slot) -> Pairs:
        """Unwrap each Reference's URL."""
        if not isinstance(slot.value, list):
            return [(self.target, _reference_url(slot.value, slot.path, slot.walk))]
        urls = [_reference_url(v, f"{slot.path}[{i}]", slot.walk) for i, v in enumerate(slot.value)]
        return [(self.target, [u for u in urls if u is not None])]


def _reference_url(reference: Any, path: str, walk: Walk) -> str | None:
    items: Iterable[str] = reference if isinstance(reference, dict) else ()
    for key in items:
        if key != "reference":
            walk.lose(f"{path}.{key}")
    url = reference.get("reference") if isinstance(reference, dict) else None
    return url if isinstance(url, str) else None
