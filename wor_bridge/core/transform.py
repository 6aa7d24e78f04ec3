"""The vocabulary of the mapping language: named transforms over FHIR JSON values.

Each transform takes the source element's value and a context and returns the value to write, or
``None`` to write nothing. They are allow-lists: a transform copies only the parts it names, so an
element (or extension) nobody listed can never travel. Mapping files refer to them by name; an
unknown name stops the program at start-up.

Names, contact points and addresses travel only when they are **current** at ``authoredOn``
(``core/period.py``): one with ``use`` old, or a ``period`` that ended before (or starts after)
the referral date, is dropped, not forwarded with its use/period. Data minimisation decides it:
the coach needs today's route to the patient; a former address or number is personal data the
referral's purpose does not need, and a receiver that ignores ``use``/``period`` would call it.

The nl-core mobile-phone marker is kept: zib ContactInformation (Nictiz R4 zib2020,
zib-ContactInformation-TelephoneNumbers) carries TelecomType on ``ContactPoint.system`` as the
``ext-CodeSpecification`` extension, and a mobile number as v3-AddressUse ``MC`` with no ``use``
(FHIR's ``use`` holds NumberType). The extension travels on ``_system``, and a mobile number
without ``use`` gets ``use`` mobile, so a receiver without nl-core knows it too.
"""

from __future__ import annotations

import copy as _copy
import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Final

from wor_bridge.core import identifiers as ids
from wor_bridge.core.period import Span, current
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
CODE_SPECIFICATION: Final = frozenset(
    {
        "http://nictiz.nl/fhir/StructureDefinition/ext-CodeSpecification",
        "http://nictiz.nl/fhir/StructureDefinition/code-specification",
    }
)
V3_ADDRESS_USE: Final = frozenset(
    {
        "http://terminology.hl7.org/CodeSystem/v3-AddressUse",
        "http://hl7.org/fhir/v3/AddressUse",
        "urn:oid:2.16.840.1.113883.5.1119",
    }
)
_SIMPLE_VALUE_KEYS: Final = ("valueString", "valueCode", "valueCoding")


@dataclass(frozen=True, slots=True)
class TransformContext:
    """What transforms may know besides the value: the referral date and the age bands."""

    reference_date: dt.date
    age_bands: tuple[int, ...]
    at: Span
    """``authoredOn`` as instants: what is current is judged against it."""


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
        concept = ext.get("valueCodeableConcept")
        if isinstance(concept, dict):  # codings only: free text never travels
            kept["valueCodeableConcept"] = {
                "coding": [
                    _pick(c, ("system", "code", "display")) for c in _list(concept, "coding")
                ]
            }
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


def _list(src: Any, key: str) -> list[dict[str, Any]]:
    found = src.get(key) if isinstance(src, dict) else None
    return [x for x in found if isinstance(x, dict)] if isinstance(found, list) else []


def human_names(value: Any, ctx: TransformContext) -> list[dict[str, Any]] | None:
    """Current names with their Dutch parts (voorvoegsels, partner name) and nothing else."""
    out = []
    for name in current(value, ctx.at):
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


def contact_points(value: Any, ctx: TransformContext) -> list[dict[str, Any]] | None:
    """Current phone numbers and e-mail addresses (system, value, use, rank, nl-core type)."""
    out = []
    for point in current(value, ctx.at):
        if point.get("system") in ("phone", "email", "sms") and point.get("value"):
            kept = _pick(point, ("system", "value", "use", "rank"))
            system_ext = _primitive_ext(point.get("_system"), CODE_SPECIFICATION)
            if system_ext and "use" not in kept and _is_mobile(system_ext):
                kept = {"system": kept["system"], "value": kept["value"], "use": "mobile", **kept}
            if system_ext:
                kept["_system"] = system_ext
            out.append(kept)
    return out or None


def _is_mobile(system_ext: dict[str, Any]) -> bool:
    """The nl-core TelecomType says mobile: v3-AddressUse ``MC`` in ext-CodeSpecification."""
    return any(
        c.get("system") in V3_ADDRESS_USE and c.get("code") == "MC"
        for ext in _list(system_ext, "extension")
        for c in _list(ext.get("valueCodeableConcept"), "coding")
    )


def addresses(value: Any, ctx: TransformContext) -> list[dict[str, Any]] | None:
    """Current postal addresses with Dutch street/house-number parts; no periods, no free
    extensions."""
    out = []
    keys = ("use", "type", "text", "line", "city", "district", "postalCode", "country")
    for address in current(value, ctx.at):
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
