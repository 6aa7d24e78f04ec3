"""Dutch identifier and code systems: accept OID and URI forms, emit the URI form; the BSN 11-test.

Pure functions over strings. The table follows DOMAIN.md section 7 (fhir.nl NamingSystems).
"""

from __future__ import annotations

from typing import Any, Final

BSN: Final = "http://fhir.nl/fhir/NamingSystem/bsn"
AGB: Final = "http://fhir.nl/fhir/NamingSystem/agb-z"
URA: Final = "http://fhir.nl/fhir/NamingSystem/ura"
UZI: Final = "http://fhir.nl/fhir/NamingSystem/uzi-nr-pers"
BIG: Final = "http://fhir.nl/fhir/NamingSystem/big"
KVK: Final = "http://fhir.nl/fhir/NamingSystem/kvk"
ICPC_1_NL: Final = "http://hl7.org/fhir/sid/icpc-1-nl"
ICPC_2: Final = "http://hl7.org/fhir/sid/icpc-2"
SNOMED: Final = "http://snomed.info/sct"
URI_IDENTIFIER: Final = "urn:ietf:rfc:3986"

# KvK (Chamber of Commerce) numbers are written under three systems; the directory code treats
# them as one (docs/standards/gf-adressering-mcsd.md, section 3.4): the GF NamingSystem
# ``kvk-nummer`` [GF-fsh namingsystem.fsh], ``http://www.kvk.nl/`` [NUTS identification.md] and
# the system ZORG-AB returns [ZAB hydration_service.py].
KVK_SYSTEMS: Final = frozenset(
    {KVK, "http://www.kvk.nl/", "http://www.vzvz.nl/fhir/NamingSystem/kvk"}
)

_OIDS: Final[dict[str, str]] = {
    "2.16.840.1.113883.2.4.6.3": BSN,
    "2.16.840.1.113883.2.4.6.1": AGB,
    "2.16.528.1.1007.3.3": URA,
    "2.16.528.1.1007.3.1": UZI,
    "2.16.528.1.1007.5.1": BIG,
    "2.16.840.1.113883.2.4.4.31.1": ICPC_1_NL,
    "2.16.840.1.113883.6.139": ICPC_2,
    "2.16.840.1.113883.6.96": SNOMED,
}

PERSON_IDENTIFIER_SYSTEMS: Final = frozenset({AGB, UZI, BIG})
REFERRER_IDENTIFYING_SYSTEMS: Final = frozenset({AGB, UZI})
PRACTICE_IDENTIFYING_SYSTEMS: Final = frozenset({AGB, URA})
ICPC_SYSTEMS: Final = frozenset({ICPC_1_NL, ICPC_2})


_URI_TO_OID: Final[dict[str, str]] = {uri: f"urn:oid:{oid}" for oid, uri in _OIDS.items()}


def oid_form(system: str) -> str:
    """The ``urn:oid:`` form of a known system (what some STU3 partners expect); else unchanged."""
    return _URI_TO_OID.get(normalize_system(system), system.strip())


def normalize_system(system: str) -> str:
    """Return the URI form of a known identifier/code system (``urn:oid:`` or bare OID accepted).

    Unknown systems are returned unchanged.
    """
    key = system.strip()
    if key.startswith("urn:oid:"):
        key = key[len("urn:oid:") :]
    return _OIDS.get(key, system.strip())


def is_valid_bsn(value: str) -> bool:
    """True when ``value`` is nine digits that pass the 11-test (*elfproef*), and not all zeros."""
    if len(value) != 9 or not value.isascii() or not value.isdigit():
        return False
    digits = [int(c) for c in value]
    if not any(digits):
        return False
    total = sum(d * w for d, w in zip(digits[:8], range(9, 1, -1), strict=True)) - digits[8]
    return total % 11 == 0


def describe_bsn_problem(value: str) -> str:
    """Say what kind of value was found, without repeating it (for diagnostics)."""
    if not value.isascii() or not value.isdigit():
        return f"got {len(value)} characters, not all digits"
    if len(value) != 9:
        return f"got {len(value)} digits"
    return "got 9 digits that fail the 11-test"


def identifier_pairs(values: Any) -> list[tuple[str, str]]:
    """``(system in URI form, value)`` of FHIR Identifiers (a list of them, or one)."""
    out = []
    for ident in values if isinstance(values, list) else [values]:
        if isinstance(ident, dict):
            system, value = ident.get("system"), ident.get("value")
            if isinstance(system, str) and isinstance(value, str) and value.strip():
                out.append((normalize_system(system), value.strip()))
    return out


def identifiers_in(resource: dict[str, Any], systems: frozenset[str]) -> list[tuple[str, str]]:
    """``(system in URI form, value)`` of the resource's identifiers in ``systems``."""
    return [p for p in identifier_pairs(resource.get("identifier")) if p[0] in systems]


def codings(concepts: Any) -> list[tuple[str, str]]:
    """``(system in URI form, code)`` of every coding in a CodeableConcept or a list of them."""
    out = []
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        found = concept.get("coding") if isinstance(concept, dict) else None
        for c in found if isinstance(found, list) else []:
            system, code = (c.get("system"), c.get("code")) if isinstance(c, dict) else (0, 0)
            if isinstance(system, str) and isinstance(code, str):
                out.append((normalize_system(system), code))
    return out
