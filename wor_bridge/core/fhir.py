"""The only module that imports FHIR models: ``fhir.resources.R4B`` (R4 4.0.1 compatible), and
``fhir.resources.STU3`` for the Dutch platforms that speak STU3 (validation and element types).

Everything else in wor_bridge works on plain FHIR JSON dicts and calls these functions to validate
input, read XML, check output and serialise. Keeping the import here means a model upgrade (or a
switch of library) touches one file.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any, Final, Literal

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.STU3 import get_fhir_model_class as _stu3_model_class
from fhir_core import types as fhir_types
from pydantic import ValidationError

from wor_bridge.errors import Issue

FHIR_VERSION: Final = "4.0.1"
MAX_ISSUES: Final = 100

JsonDict = dict[str, Any]


Version = Literal["R4", "STU3"]
_LOOKUP: Final = {"R4": get_fhir_model_class, "STU3": _stu3_model_class}


@cache
def _model(resource_type: str, version: Version = "R4") -> Any:
    """The model class for a resource or data type (unknown types raise ValueError)."""
    try:
        return _LOOKUP[version](resource_type)
    except (KeyError, ValueError, AttributeError) as exc:
        raise ValueError(f"unknown FHIR {version} resource type") from exc


def is_resource_type(name: str, version: Version = "R4") -> bool:
    """True when ``name`` is a resource type the models of ``version`` know."""
    try:
        model = _model(name, version)
    except ValueError:
        return False
    return bool(getattr(model, "__resource_type__", None) == name)


@cache
def element_names(resource_type: str) -> frozenset[str]:
    """The JSON element names of a resource type (``birthDate``, ``_birthDate``, ...)."""
    fields = _model(resource_type).model_fields
    return frozenset((f.alias or name) for name, f in fields.items() if name != "fhir_comments")


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """The JSON names of the elements a ``_summary=true`` answer keeps (the models' summary
    flags, as the specification marks them)."""
    fields = _model(resource_type).model_fields
    return frozenset(
        (f.alias or name)
        for name, f in fields.items()
        if isinstance(f.json_schema_extra, dict)
        and f.json_schema_extra.get("summary_element_property")
    )


def validate(resource: JsonDict, location: str, version: Version = "R4") -> list[Issue]:
    """Validate a FHIR JSON resource against the models; return issues (empty when valid).

    ``location`` is the FHIRPath of the resource itself (e.g. ``Bundle``), used as the prefix of
    every issue's expression.
    """
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not is_resource_type(resource_type, version):
        return [
            Issue(
                "not-supported",
                location,
                f"must be a FHIR {version} resource (resourceType unknown)",
            )
        ]
    nested = _nested_type_issues(resource, location, version)
    if nested:
        return nested
    try:
        _model(resource_type, version).model_validate(resource)
    except ValidationError as exc:
        issues = issues_from_validation(exc, location)
        if version != "R4":
            issues = [_relabel(i, version) for i in issues]
        return issues
    except Exception:  # noqa: BLE001 - fhir_core raises TypeError/KeyError on some junk; refuse
        return [
            Issue(
                "structure",
                location,
                f"must be a FHIR {version} resource (unreadable structure)",
            )
        ]
    return []


def validate_stu3(resource: JsonDict, location: str) -> list[Issue]:
    """``validate`` against the STU3 models."""
    return validate(resource, location, "STU3")


def _relabel(issue: Issue, version: Version) -> Issue:
    """Say ``FHIR STU3`` where the shared wording says ``FHIR R4``."""
    return dataclasses.replace(
        issue, diagnostics=issue.diagnostics.replace("FHIR R4", f"FHIR {version}")
    )


def _nested_type_issues(resource: JsonDict, location: str, version: Version) -> list[Issue]:
    """Check ``contained`` and ``Bundle.entry.resource`` types before the models see them.

    The models look the type up before validating and fail with a bare TypeError/KeyError on a
    missing or unknown ``resourceType``; this names the place instead.
    """
    places: list[tuple[str, object]] = []
    contained = resource.get("contained")
    if isinstance(contained, list):
        places += [(f"{location}.contained[{i}]", r) for i, r in enumerate(contained)]
    entries = resource.get("entry") if resource.get("resourceType") == "Bundle" else None
    if isinstance(entries, list):
        for i, entry in enumerate(entries):
            if isinstance(entry, dict) and "resource" in entry:
                places.append((f"{location}.entry[{i}].resource", entry["resource"]))
    issues = []
    for where, res in places:
        rtype = res.get("resourceType") if isinstance(res, dict) else None
        if not isinstance(rtype, str) or not is_resource_type(rtype, version):
            issues.append(
                Issue(
                    "structure",
                    where,
                    f"must be a FHIR {version} resource with a known resourceType",
                )
            )
        elif isinstance(res, dict):
            issues += _nested_type_issues(res, where, version)
    return issues[:MAX_ISSUES]


ElementKind = Literal["boolean", "integer", "decimal", "string", "xhtml", "resource", "complex"]


@dataclass(frozen=True, slots=True)
class ElementInfo:
    """What the XML reader must know of an element: JSON kind, array or not, complex type name."""

    kind: ElementKind
    is_list: bool
    type_name: str = ""


_INTEGER_META: Final = (
    fhir_types.Integer,
    fhir_types.PositiveInt,
    fhir_types.UnsignedInt,
)


def _element_info(annotation: Any) -> ElementInfo:  # noqa: PLR0911 - one return per kind
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else annotation
    is_list = typing.get_origin(annotation) in (list, typing.List)  # noqa: UP006 - runtime check
    if is_list:
        annotation = typing.get_args(annotation)[0]
    if annotation is bool:
        return ElementInfo("boolean", is_list)
    if typing.get_origin(annotation) is typing.Annotated:
        meta = annotation.__metadata__
        if any(isinstance(m, _INTEGER_META) for m in meta):
            return ElementInfo("integer", is_list)
        if any(isinstance(m, fhir_types.Decimal) for m in meta):
            return ElementInfo("decimal", is_list)
        if any(isinstance(m, fhir_types.Xhtml) for m in meta):
            return ElementInfo("xhtml", is_list)
        return ElementInfo("string", is_list)
    name = getattr(annotation, "__name__", "")
    if name == "ResourceType":
        return ElementInfo("resource", is_list)
    if name.endswith("Type") and name[:-4]:
        return ElementInfo("complex", is_list, name[:-4])
    return ElementInfo("string", is_list)


@cache
def elements(type_name: str, version: Version = "R4") -> dict[str, ElementInfo]:
    """The elements of a resource or data type by JSON name (for reading FHIR XML)."""
    fields = _model(type_name, version).model_fields
    out: dict[str, ElementInfo] = {}
    for name, field in fields.items():
        alias = field.alias or name
        if name == "fhir_comments" or alias.startswith("_") or name == "resource_type":
            continue
        out[alias] = _element_info(field.annotation)
    return out


def issues_from_validation(exc: ValidationError, location: str) -> list[Issue]:
    """Describe pydantic errors as issues: location and expectation, never the input value.

    The location is a path of element names the models define, with indices: for a property the
    models do not know (``extra_forbidden``) it is the path of the element that holds it, since
    the property's name came from the body and may carry anything, patient data included.
    """
    issues: list[Issue] = []
    for err in exc.errors(include_url=False, include_input=True):
        if len(issues) >= MAX_ISSUES:
            break
        loc = err["loc"]
        if err["type"] == "extra_forbidden":
            loc = loc[:-1]
        path = fhirpath(location, loc)
        issues.append(Issue(_issue_code(err["type"]), path, _expectation(err)))
    return issues


def fhirpath(location: str, loc: Sequence[int | str]) -> str:
    """``("entry", 0, "resource", "birthDate")`` under ``Bundle`` -> ``Bundle.entry[0]...``."""
    out = location
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = f"_{part[: -len('__ext')]}" if part.endswith("__ext") else part
            out += f".{name}"
    return out


def _issue_code(err_type: str) -> Any:
    if err_type == "missing":
        return "required"
    if err_type == "extra_forbidden":
        return "structure"
    return "invalid"


_KIND_BY_TYPE: Final = {
    "string_type": "a string",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "decimal_type": "a decimal",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "list_type": "a JSON array",
    "dict_type": "a JSON object",
    "model_type": "a JSON object",
    "model_attributes_type": "a JSON object",
    "string_pattern_mismatch": "a value in the format FHIR defines for this element",
    "string_too_short": "a non-empty string",
    "value_error": "a value in the format FHIR defines for this element",
    "assertion_error": "consistent with the FHIR invariants of this element",
    "date_type": "a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD)",
    "datetime_type": "a FHIR dateTime",
}


def _expectation(err: Any) -> str:
    err_type: str = err["type"]
    got = _kind_of(err.get("input"))
    if err_type == "missing":
        return "must be present (a required element is missing)"
    if err_type == "extra_forbidden":
        return "must hold only elements of its FHIR R4 type (got a property it does not define)"
    if err_type in ("literal_error", "enum"):
        expected = err.get("ctx", {}).get("expected", "one of the codes of the bound value set")
        return f"must be {expected} ({got})"
    kind = _KIND_BY_TYPE.get(err_type, "valid FHIR R4 for this element")
    return f"must be {kind} ({got})"


def _kind_of(value: object) -> str:  # noqa: PLR0911 - one return per JSON kind
    """Describe a value by kind and size only."""
    if isinstance(value, str):
        return f"got a string of {len(value)} characters"
    if isinstance(value, bool):
        return "got a boolean"
    if isinstance(value, int | float):
        return "got a number"
    if isinstance(value, list):
        return f"got an array of {len(value)} items"
    if isinstance(value, dict):
        return "got an object"
    if value is None:
        return "got null"
    return f"got {type(value).__name__}"


def canonical_json(resource: JsonDict, *, pretty: bool = False) -> bytes:
    """The one serializer for emitted FHIR JSON: insertion order, UTF-8, no trailing spaces.

    Builders insert keys in a fixed order, so the same input always gives the same bytes.
    """
    if pretty:
        text = json.dumps(resource, ensure_ascii=False, indent=2)
    else:
        text = json.dumps(resource, ensure_ascii=False, separators=(",", ":"))
    return text.encode("utf-8")


def to_xml(resource: JsonDict, version: Version = "R4") -> bytes:
    """Serialise a FHIR JSON resource as FHIR XML through the R4B (or STU3) model."""
    model = _model(str(resource["resourceType"]), version).model_validate(resource)
    out: bytes = model.model_dump_xml()
    return out


def round_trip(resource: JsonDict) -> JsonDict:
    """Parse ``resource`` with the R4B models and dump it again (used by tests and the bench)."""
    model = _model(str(resource["resourceType"])).model_validate(resource)
    dumped: JsonDict = model.model_dump(mode="json")
    return dumped


def parse_and_serialize(data: bytes, version: Version = "R4") -> bytes:
    """The benchmark floor: parse FHIR JSON bytes with the models (R4B, or STU3) and serialise
    them once."""
    raw = json.loads(data)
    model = _model(str(raw["resourceType"]), version).model_validate(raw)
    out: str = model.model_dump_json()
    return out.encode("utf-8")


# --- STU3 (3.0.2), for Dutch platforms that speak it; see wor_bridge.core.stu3 --------------------


def is_stu3_resource_type(name: str) -> bool:
    """True when ``name`` is an STU3 resource type the models know."""
    return is_resource_type(name, "STU3")


def stu3_elements(type_name: str) -> dict[str, ElementInfo]:
    """The elements of an STU3 resource, data type or backbone element by JSON name."""
    return elements(type_name, "STU3")
