"""The vocabulary of the mapping language: named transforms over FHIR JSON values.

Each transform takes the source element's value and a context and returns the value to write, or
``None`` to write nothing. They are allow-lists: a transform copies only the parts it names, so an
element (or extension) nobody listed can never travel. Mapping files refer to them by name; an
unknown name stops the program at start-up.
"""

from __future__ import annotations

import copy as _copy
import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from wor_bridge.core import identifiers as ids
from wor_bridge.core.settings import LOCAL_BASE

AGE_BAND_URL: Final = f"{LOCAL_BASE}/StructureDefinition/age-band"

NAME_PART_EXTENSIONS: Final = frozenset(
    {
        "http://hl7.org/fhir/StructureDefinition/humanname-own-prefix",
        "http://hl7.org/fhir/StructureDefinition/humanname-own-name",
        "http://hl7.org/fhir/StructureDefinition/humanname-partner-prefix",
        "http://hl7.org/fhir/StructureDefinition/humanname-partner-name",
        "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier",
    }
)
NAME_EXTENSIONS: Final = frozenset(
    {"http://hl7.org/fhir/StructureDefinition/humanname-assembly-order"}
)
ADDRESS_LINE_EXTENSIONS: Final = frozenset(
    {
        "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-streetName",
        "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-houseNumber",
        "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-buildingNumberSuffix",
        "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-additionalLocator",
        "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-unitID",
    }
)
_SIMPLE_VALUE_KEYS: Final = ("valueString", "valueCode", "valueCoding")


@dataclass(frozen=True, slots=True)
class TransformContext:
    """What transforms may know besides the value: the referral date and the age bands."""

    reference_date: dt.date
    age_bands: tuple[int, ...]


Transform = Callable[[Any, TransformContext], Any]


@dataclass(frozen=True, slots=True)
class TransformSpec:
    """A registered transform and, where it writes a fixed element, that element's name."""

    fn: Transform
    fixed_target: str | None = None


def copy(value: Any, _ctx: TransformContext) -> Any:
    """Copy the element as it is (only for extra fields a destination switched on)."""
    return _copy.deepcopy(value)


def _extensions(value: Any, allowed: frozenset[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for ext in value if isinstance(value, list) else []:
        if not isinstance(ext, dict) or ext.get("url") not in allowed:
            continue
        kept = {"url": ext["url"]}
        for key in _SIMPLE_VALUE_KEYS:
            if key in ext:
                kept[key] = _copy.deepcopy(ext[key])
        out.append(kept)
    return out


def _primitive_ext(value: Any, allowed: frozenset[str]) -> dict[str, Any] | None:
    """Filter a primitive's ``_x`` companion (``{"extension": [...]}``) to allowed extensions."""
    if not isinstance(value, dict):
        return None
    exts = _extensions(value.get("extension"), allowed)
    return {"extension": exts} if exts else None


def _primitive_ext_list(value: Any, allowed: frozenset[str]) -> list[dict[str, Any] | None] | None:
    if not isinstance(value, list):
        return None
    out = [_primitive_ext(v, allowed) for v in value]
    return out if any(out) else None


def _pick(src: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    return {k: _copy.deepcopy(src[k]) for k in keys if k in src}


def human_names(value: Any, _ctx: TransformContext) -> list[dict[str, Any]] | None:
    """Names with their Dutch parts (voorvoegsels, partner name) and nothing else."""
    out = []
    for name in value if isinstance(value, list) else []:
        kept = _pick(name, ("use", "text", "family", "given", "prefix", "suffix"))
        ext = _extensions(name.get("extension"), NAME_EXTENSIONS)
        if ext:
            kept["extension"] = ext
        family_ext = _primitive_ext(name.get("_family"), NAME_PART_EXTENSIONS)
        if family_ext:
            kept["_family"] = family_ext
        given_ext = _primitive_ext_list(name.get("_given"), NAME_PART_EXTENSIONS)
        if given_ext:
            kept["_given"] = given_ext
        if kept:
            out.append(kept)
    return out or None


def contact_points(value: Any, _ctx: TransformContext) -> list[dict[str, Any]] | None:
    """Phone numbers and e-mail addresses (system, value, use, rank)."""
    out = []
    for point in value if isinstance(value, list) else []:
        if point.get("system") in ("phone", "email", "sms") and point.get("value"):
            out.append(_pick(point, ("system", "value", "use", "rank")))
    return out or None


def addresses(value: Any, _ctx: TransformContext) -> list[dict[str, Any]] | None:
    """Postal addresses with Dutch street/house-number parts; no periods, no free extensions."""
    out = []
    keys = ("use", "type", "text", "line", "city", "district", "postalCode", "country")
    for address in value if isinstance(value, list) else []:
        kept = _pick(address, keys)
        line_ext = _primitive_ext_list(address.get("_line"), ADDRESS_LINE_EXTENSIONS)
        if line_ext:
            kept["_line"] = line_ext
        if kept:
            out.append(kept)
    return out or None


def gender(value: Any, _ctx: TransformContext) -> str | None:
    """Administrative gender, if it is one of the four FHIR codes."""
    return value if value in ("male", "female", "other", "unknown") else None


def birth_year(value: Any, _ctx: TransformContext) -> str | None:
    """The year of birth only (a valid FHIR date of year precision)."""
    return value[:4] if isinstance(value, str) and len(value) >= 4 else None


def age_band(value: Any, ctx: TransformContext) -> list[dict[str, Any]] | None:
    """An age band at the referral date instead of the birth date, as an extension."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    born = dt.date.fromisoformat(value[:10])
    ref = ctx.reference_date
    age = ref.year - born.year - ((ref.month, ref.day) < (born.month, born.day))
    low, high = 0, None
    for edge in ctx.age_bands:
        if age >= edge:
            low = edge
        else:
            high = edge - 1
            break
    band: dict[str, Any] = {
        "low": {"value": low, "unit": "a", "system": "http://unitsofmeasure.org", "code": "a"}
    }
    if high is not None:
        band["high"] = {
            "value": high,
            "unit": "a",
            "system": "http://unitsofmeasure.org",
            "code": "a",
        }
    return [{"url": AGE_BAND_URL, "valueRange": band}]


def bsn_identifier(value: Any, _ctx: TransformContext) -> list[dict[str, Any]] | None:
    """The BSN (URI system form) only, when the destination is allowed to receive it."""
    out = []
    for ident in value if isinstance(value, list) else []:
        system = ident.get("system")
        if (
            isinstance(system, str)
            and ids.normalize_system(system) == ids.BSN
            and ident.get("value")
        ):
            out.append({"system": ids.BSN, "value": ident["value"]})
    return out[:1] or None


REGISTRY: Final[dict[str, TransformSpec]] = {
    "copy": TransformSpec(copy),
    "human_names": TransformSpec(human_names, "name"),
    "contact_points": TransformSpec(contact_points, "telecom"),
    "addresses": TransformSpec(addresses, "address"),
    "gender": TransformSpec(gender, "gender"),
    "birth_year": TransformSpec(birth_year, "birthDate"),
    "age_band": TransformSpec(age_band, "extension"),
    "bsn_identifier": TransformSpec(bsn_identifier, "identifier"),
}
