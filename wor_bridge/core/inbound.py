"""Read pushed bytes (FHIR R4 JSON or XML) into a validated FHIR JSON dict, or refuse.

XML is parsed with lxml hardened: any DOCTYPE is refused before parsing (so no entity can be
declared, let alone expanded: XXE and "billion laughs" fail in microseconds), and the parser itself
has DTD loading, entity resolution and network access off and the default depth/size guards on.
"""

from __future__ import annotations

import json
import re
from typing import Final, Literal

from lxml import etree

from wor_bridge.core import fhir, fhirxml
from wor_bridge.errors import InboundError, Issue

FHIR_NS: Final = "http://hl7.org/fhir"
ACCEPTED_ROOTS: Final = ("ServiceRequest", "Bundle")
Format = Literal["json", "xml"]

_JSON_TYPES: Final = {"application/fhir+json", "application/json", "application/json+fhir"}
_XML_TYPES: Final = {"application/fhir+xml", "application/xml", "text/xml", "application/xml+fhir"}
_DTD_MARKERS: Final = re.compile(rb"<!(DOCTYPE|ENTITY|ELEMENT|ATTLIST)", re.IGNORECASE)
_BOM: Final = b"\xef\xbb\xbf"


def detect_format(data: bytes, content_type: str | None) -> Format:
    """Pick JSON or XML from the media type, or from the first byte when none is given."""
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media in _JSON_TYPES:
            return "json"
        if media in _XML_TYPES:
            return "xml"
        raise InboundError(
            [
                Issue(
                    "not-supported",
                    "(content-type)",
                    "must be application/fhir+json or application/fhir+xml (got another type)",
                )
            ]
        )
    head = data.removeprefix(_BOM).lstrip()[:1]
    if head == b"{":
        return "json"
    if head == b"<":
        return "xml"
    raise InboundError(
        [Issue("structure", "(body)", "must be FHIR JSON (starting with '{') or FHIR XML ('<')")]
    )


def read(data: bytes, content_type: str | None, *, max_bytes: int) -> fhir.JsonDict:
    """Parse and validate ``data``; return the root resource (a ServiceRequest or a Bundle)."""
    if len(data) > max_bytes:
        raise InboundError(
            [
                Issue(
                    "too-costly",
                    "(body)",
                    f"must be at most {max_bytes} bytes (got {len(data)} bytes)",
                )
            ]
        )
    fmt = detect_format(data, content_type)
    body = data.removeprefix(_BOM)
    return _read_json(body) if fmt == "json" else _read_xml(body)


def _read_json(body: bytes) -> fhir.JsonDict:
    try:
        raw = json.loads(body)
    except UnicodeDecodeError:
        raise InboundError(
            [Issue("structure", "(body)", "must be UTF-8 encoded JSON (got undecodable bytes)")]
        ) from None
    except json.JSONDecodeError as exc:
        raise InboundError(
            [
                Issue(
                    "structure",
                    "(body)",
                    f"must be well-formed JSON (syntax error at line {exc.lineno}, "
                    f"column {exc.colno})",
                )
            ]
        ) from None
    except RecursionError:
        raise InboundError(
            [Issue("too-costly", "(body)", "must not nest JSON this deeply")]
        ) from None
    if not isinstance(raw, dict):
        raise InboundError(
            [Issue("structure", "(body)", "must be a JSON object with a resourceType")]
        )
    resource_type = _check_root_type(raw.get("resourceType"))
    issues = fhir.validate(raw, resource_type)
    if issues:
        raise InboundError(issues)
    return raw


def _hardened_parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_pis=True,
        collect_ids=False,
    )


def _read_xml(body: bytes) -> fhir.JsonDict:
    if _DTD_MARKERS.search(body):
        raise InboundError(
            [
                Issue(
                    "security",
                    "(body)",
                    "must not contain a DOCTYPE or entity declarations (FHIR XML has none)",
                )
            ]
        )
    try:
        root = etree.fromstring(body, parser=_hardened_parser())
    except etree.XMLSyntaxError as exc:
        line = exc.lineno if exc.lineno is not None else 0
        raise InboundError(
            [Issue("structure", "(body)", f"must be well-formed XML (error at line {line})")]
        ) from None
    if root.getroottree().docinfo.internalDTD is not None:  # belt and braces after the scan
        raise InboundError(
            [Issue("security", "(body)", "must not contain a DOCTYPE (FHIR XML has none)")]
        )
    qname = etree.QName(root)
    if qname.namespace != FHIR_NS:
        raise InboundError(
            [
                Issue(
                    "structure",
                    "(body)",
                    f"must be an element in the FHIR namespace {FHIR_NS} (got another namespace)",
                )
            ]
        )
    resource_type = _check_root_type(qname.localname)
    result = fhirxml.read(root)
    if isinstance(result, list):
        raise InboundError(result)
    issues = fhir.validate(result, resource_type)
    if issues:
        raise InboundError(issues)
    return result


def _check_root_type(resource_type: object) -> str:
    if isinstance(resource_type, str) and resource_type in ACCEPTED_ROOTS:
        return resource_type
    what = "no FHIR R4 resource type"
    if isinstance(resource_type, str) and fhir.is_resource_type(resource_type):
        what = resource_type  # a name from the finite set of FHIR types, never patient data
    raise InboundError(
        [
            Issue(
                "not-supported",
                "resourceType",
                f"must be ServiceRequest or Bundle (got {what})",
            )
        ]
    )
