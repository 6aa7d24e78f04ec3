"""Read pushed bytes (FHIR R4 JSON or XML) into a validated FHIR JSON dict, or refuse.

``version="STU3"`` reads an STU3 ReferralRequest or Bundle the same way, against the STU3 models
(the STU3 intake, ``core/stu3/intake.py``, converts it to R4 afterwards).

Ambiguous input is refused, never resolved by "the last one wins":

- JSON is parsed in one pass (``jsonscan``) that records, bottom-up, a property name that occurs
  twice in one object (FHIR JSON: names SHALL be unique) and strings with control characters
  other than TAB, CR and LF (FHIR string rules) or unpaired surrogates; the findings become
  issues at their FHIRPath (``fhirpath.locate``: model names only).
- XML forbids those characters itself; a character reference to one (``&#0;``) is swapped for a
  marker before parsing so the refusal can name the element (``_XmlControl``). An element of
  maximum cardinality 1 that occurs twice is refused by ``fhirxml``.

XML is parsed with lxml hardened: any DOCTYPE is refused before parsing (so no entity can be
declared, let alone expanded: XXE and "billion laughs" fail in microseconds), and the parser itself
has DTD loading, entity resolution and network access off and the default depth/size guards on.

Cost is bounded before any model validation (``InputLimits``, HTTP 400 ``too-costly``): the JSON
pass counts values and stops at ``max_elements``, and refuses long arrays and strings, numbers
with too many digits and deep nesting at their location; XML elements and attributes are counted
while lxml parses (it stops at ``max_elements``), and ``fhirxml`` refuses the rest at the element.
"""

from __future__ import annotations

import io
import re
from typing import Any, Final, Literal

from lxml import etree

from wor_bridge.core import fhir, fhirpath, fhirxml, jsonscan, media
from wor_bridge.core.limits import InputLimits
from wor_bridge.errors import InboundError, Issue

FHIR_NS: Final = "http://hl7.org/fhir"
ACCEPTED_ROOTS: Final[dict[fhir.Version, tuple[str, str]]] = {
    "R4": ("ServiceRequest", "Bundle"),
    "STU3": ("ReferralRequest", "Bundle"),
}
Format = Literal["json", "xml"]

_DTD_MARKERS: Final = re.compile(rb"<!(DOCTYPE|ENTITY|ELEMENT|ATTLIST)", re.IGNORECASE)
_BOM: Final = b"\xef\xbb\xbf"
_GZIP_MAGIC: Final = b"\x1f\x8b"


def _refuse(code: Any, where: str, diagnostics: str) -> InboundError:
    return InboundError([Issue(code, where, diagnostics)])


def detect_format(data: bytes, content_type: str | None, version: fhir.Version = "R4") -> Format:
    """Pick JSON or XML from the media type, or from the first byte when none is given.

    A ``fhirVersion`` parameter other than ``version``'s (4.0, or 3.0) is refused (415 at
    ``(content-type)``).
    """
    if content_type:
        wrong = media.version_issue(content_type, version)
        if wrong is not None:
            raise InboundError([wrong])
        mtype = media.parse(content_type).type
        if mtype in media.JSON_TYPES:
            return "json"
        if mtype in media.XML_TYPES:
            return "xml"
        raise _refuse(
            "not-supported",
            "(content-type)",
            "must be application/fhir+json or application/fhir+xml (got another type)",
        )
    head = data.removeprefix(_BOM).lstrip()[:1]
    if head == b"{":
        return "json"
    if head == b"<":
        return "xml"
    raise _refuse("structure", "(body)", "must be FHIR JSON (starting with '{') or FHIR XML ('<')")


def read(
    data: bytes,
    content_type: str | None,
    *,
    max_bytes: int,
    version: fhir.Version = "R4",
    limits: InputLimits | None = None,
) -> fhir.JsonDict:
    """Parse and validate ``data``; return the root resource (a ServiceRequest or a Bundle; for
    ``version="STU3"`` a ReferralRequest or a Bundle, validated against the STU3 models).

    ``limits`` (default: the defaults of ``InputLimits``) are checked before model validation.
    """
    limits = limits or InputLimits()
    if len(data) > max_bytes:
        raise _refuse(
            "too-costly", "(body)", f"must be at most {max_bytes} bytes (got {len(data)} bytes)"
        )
    fmt = detect_format(data, content_type, version)
    if data.startswith(_GZIP_MAGIC):
        raise _refuse(
            "structure",
            "(body)",
            "must be uncompressed FHIR JSON or XML (got gzip-compressed bytes; over HTTP, "
            "send them with Content-Encoding: gzip)",
        )
    body = data.removeprefix(_BOM)
    if fmt == "json":
        return _read_json(body, version, limits)
    return _read_xml(body, version, limits)


def _read_json(body: bytes, version: fhir.Version, limits: InputLimits) -> fhir.JsonDict:
    parsed = jsonscan.parse(body, limits, strict=True, version=version)
    raw = parsed.value
    if not isinstance(raw, dict):
        raise _refuse("structure", "(body)", "must be a JSON object with a resourceType")
    resource_type = _check_root_type(raw.get("resourceType"), version)
    issues = parsed.issues()
    if issues:
        raise InboundError(issues)
    issues = fhir.validate(raw, resource_type, version)
    if issues:
        raise InboundError(issues)
    return raw


def _parse_xml(body: bytes, limits: InputLimits) -> etree._Element:
    """The root element, parsed by lxml hardened; elements and attributes (each a JSON value
    once converted) are counted as they are parsed, and the parse stops once there are more than
    ``limits.max_elements``."""
    events = etree.iterparse(
        io.BytesIO(body),
        events=("start",),
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=True,
    )
    count = 0
    for _, element in events:
        count += 1 + len(element.attrib)
        if count > limits.max_elements:
            raise jsonscan.too_many(limits.max_elements)
    root: etree._Element = events.root
    return root


_XML_CONTROL: Final = re.compile(
    rb"&#(?:0*(?:[0-8]|1[124-9]|2[0-9]|3[01])|[xX]0*(?:[0-8bBcCeEfF]|1[0-9a-fA-F]));"
    rb"|[\x00-\x08\x0b\x0c\x0e-\x1f]"
)
_MARKER: Final = "\ufdd0"  # a noncharacter XML allows in values: where a forbidden one stood
_MARKER_IN_XML: Final = re.compile(rb"\xef\xb7\x90|&#(?:[xX]0*[fF][dD][dD]0|0*64976);")


def _mark_controls(body: bytes) -> tuple[bytes, bool]:
    """Swap control characters (and references to them) for the marker, so the element that
    held one can be named after parsing; ``False`` when there were none or when the marker
    cannot be told apart (the parser then refuses the document without a location)."""
    ascii_compatible = body.lstrip()[:1] == b"<"
    if not ascii_compatible or not _XML_CONTROL.search(body) or _MARKER_IN_XML.search(body):
        return body, False
    return _XML_CONTROL.sub(b"&#xFDD0;", body), True


def _control_issues(resource: fhir.JsonDict, location: str) -> list[Issue]:
    found = list(fhirpath.strings_with(resource, _MARKER, location))[: fhir.MAX_ISSUES]
    rule = "must not contain control characters other than TAB, CR and LF (FHIR string rules"
    if not found:
        return [Issue("invalid", "(body)", f"{rule}; got one outside any FHIR value)")]
    return [
        Issue("invalid", where, f"{rule}; got a string of {n} characters)") for where, n in found
    ]


def _read_xml(body: bytes, version: fhir.Version, limits: InputLimits) -> fhir.JsonDict:
    if _DTD_MARKERS.search(body):
        raise _refuse(
            "security",
            "(body)",
            "must not contain a DOCTYPE or entity declarations (FHIR XML has none)",
        )
    body, marked = _mark_controls(body)
    try:
        root = _parse_xml(body, limits)
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno is not None else 0
        raise _refuse(
            "structure", "(body)", f"must be well-formed XML (error at line {line})"
        ) from None
    if root.getroottree().docinfo.internalDTD is not None:  # belt and braces after the scan
        raise _refuse("security", "(body)", "must not contain a DOCTYPE (FHIR XML has none)")
    qname = etree.QName(root)
    if qname.namespace != FHIR_NS:
        raise _refuse(
            "structure",
            "(body)",
            f"must be an element in the FHIR namespace {FHIR_NS} (got another namespace)",
        )
    resource_type = _check_root_type(qname.localname, version)
    result = fhirxml.read(root, version, limits)
    if isinstance(result, list):
        raise InboundError(result)
    if marked:
        raise InboundError(_control_issues(result, resource_type))
    issues = fhir.validate(result, resource_type, version)
    if issues:
        raise InboundError(issues)
    return result


def _check_root_type(resource_type: object, version: fhir.Version = "R4") -> str:
    roots = ACCEPTED_ROOTS[version]
    if isinstance(resource_type, str) and resource_type in roots:
        return resource_type
    what = f"no FHIR {version} resource type"
    if isinstance(resource_type, str) and fhir.is_resource_type(resource_type, version):
        what = resource_type  # a name from the finite set of FHIR types, never patient data
    raise _refuse("not-supported", "resourceType", f"must be {roots[0]} or {roots[1]} (got {what})")
