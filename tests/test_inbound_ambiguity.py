"""Ambiguous or unsafe input text is refused at its FHIRPath (issue 10 §3): duplicate JSON property
names, XML elements of maximum cardinality 1 twice, control characters in JSON and XML strings."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import wor_bridge
from tests.cases import PATIENT_VALUES, case_input
from wor_bridge.core import inbound
from wor_bridge.errors import InboundError, Issue

CONTAINED: dict[str, Any] = json.loads(case_input("accepted-contained"))
BUNDLED: dict[str, Any] = json.loads(case_input("accepted-bundle-transaction-urn"))
# Hypothesis draws the name, never the referral itself: a failure report shows no patient values.
ROOTS = {"contained": CONTAINED, "bundled": BUNDLED}
XML_CONTAINED = case_input("accepted-xml-contained")
FORBIDDEN = [c for c in map(chr, range(0x20)) if c not in "\t\r\n"]


def _refusal(data: bytes, content_type: str | None = None) -> list[Issue]:
    with pytest.raises(InboundError) as caught:
        inbound.read(data, content_type, max_bytes=1 << 20)
    return list(caught.value.issues)


def _no_patient_values(issues: list[Issue]) -> None:
    text = " ".join(f"{i.expression} {i.diagnostics}" for i in issues)
    leaks = [n for n, value in enumerate(PATIENT_VALUES) if value in text]
    assert not leaks, f"patient values #{leaks} in the refusal"  # indexes only


# --- duplicate property names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "where"),
    [
        (
            '{"resourceType":"ServiceRequest","status":"active","status":"draft"}',
            "ServiceRequest.status",
        ),
        (
            '{"resourceType":"ServiceRequest","subject":{"reference":"#a","reference":"#b"}}',
            "ServiceRequest.subject.reference",
        ),
        (
            '{"resourceType":"ServiceRequest","contained":[{"resourceType":"Patient",'
            '"name":[{"family":"A"},{"family":"B","family":"C"}]}]}',
            "ServiceRequest.contained[0].name[1].family",
        ),
        (
            '{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient"},'
            '"resource":{"resourceType":"Patient"}}]}',
            "Bundle.entry[0].resource",
        ),
        (
            '{"resourceType":"ServiceRequest","_status":{"id":"a","id":"b"}}',
            "ServiceRequest._status.id",
        ),
        ('{"resourceType":"ServiceRequest","zz":{"secret":1,"secret":2}}', "ServiceRequest"),
    ],
)
def test_duplicate_property_name_is_refused_at_its_location(text: str, where: str) -> None:
    """A property name twice in one JSON object is refused 400 `structure` at that object's name."""
    issues = _refusal(text.encode())
    assert [(i.code, i.expression) for i in issues] == [("structure", where)]
    assert "SHALL be unique" in issues[0].diagnostics


def test_unknown_duplicate_name_is_not_echoed() -> None:
    """A duplicated name that is no FHIR element is never repeated in the refusal."""
    issues = _refusal(b'{"resourceType":"ServiceRequest","note":[{"Jansen":1,"Jansen":2}]}')
    assert issues[0].expression == "ServiceRequest.note[0]"
    assert "Jansen" not in issues[0].diagnostics
    assert "not part of this FHIR R4 type" in issues[0].diagnostics


def test_handed_duplicate_consent_status_is_refused_not_last_wins(settings: Any) -> None:
    """The handed dup-json-keys case (Consent status rejected, then active) is refused 400."""
    with pytest.raises(InboundError) as caught:
        wor_bridge.translate(case_input("refused-duplicate-json-property"), None, settings)
    issue = caught.value.issues[0]
    assert (issue.code, issue.expression) == ("structure", "ServiceRequest.contained[4].status")


def _dump_with_duplicate(node: Any, target: int, counter: list[int]) -> str:
    """JSON text of ``node`` in which the ``target``-th object (pre-order) repeats its last
    property name (with a different value)."""
    if isinstance(node, dict):
        index = counter[0]
        counter[0] += 1
        parts = [
            f"{json.dumps(k)}:{_dump_with_duplicate(v, target, counter)}" for k, v in node.items()
        ]
        if index == target and node:
            parts.append(f'{json.dumps(list(node)[-1])}:"x"')
        return "{" + ",".join(parts) + "}"
    if isinstance(node, list):
        return "[" + ",".join(_dump_with_duplicate(v, target, counter) for v in node) + "]"
    return json.dumps(node)


def _objects(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + sum(_objects(v) for v in node.values())
    if isinstance(node, list):
        return sum(_objects(v) for v in node)
    return 0


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(sorted(ROOTS)))
def test_any_duplicated_key_anywhere_is_refused_with_a_location(name: str, data: Any) -> None:
    """Any object of a valid referral repeating a name is refused 400 `structure` at a FHIRPath."""
    root = ROOTS[name]
    target = data.draw(st.integers(0, _objects(root) - 1))
    text = _dump_with_duplicate(root, target, [0])
    issues = _refusal(text.encode())
    assert [i.code for i in issues] == ["structure"]
    assert issues[0].expression.startswith(root["resourceType"])
    _no_patient_values(issues)


# --- control characters -----------------------------------------------------------------------


def test_handed_nul_in_family_name_is_refused_at_the_name(settings: Any) -> None:
    """The handed nul-char-in-name case is refused 400 `invalid` at the family name."""
    with pytest.raises(InboundError) as caught:
        wor_bridge.translate(case_input("refused-control-char-in-name"), None, settings)
    issues = list(caught.value.issues)
    assert [(i.code, i.expression) for i in issues] == [
        ("invalid", "ServiceRequest.contained[0].name[0].family")
    ]
    _no_patient_values(issues)


@pytest.mark.parametrize("char", ["\t", "\r", "\n"])
def test_tab_cr_lf_are_allowed_in_strings(char: str) -> None:
    """TAB, CR and LF are valid in FHIR strings: no control-character refusal for them."""
    resource = json.loads(json.dumps(CONTAINED))
    resource["note"] = [{"text": f"a{char}b"}]
    assert inbound.read(json.dumps(resource).encode(), None, max_bytes=1 << 20)["note"]


def test_raw_control_character_in_json_is_refused_as_invalid() -> None:
    """A raw control character in a JSON string is refused 400 `invalid` with line and column."""
    issues = _refusal(b'{"resourceType":"ServiceRequest","status":"a\x01b"}')
    assert (issues[0].code, issues[0].expression) == ("invalid", "(body)")
    assert "line 1, column" in issues[0].diagnostics


def test_unpaired_surrogate_is_refused() -> None:
    """An unpaired surrogate escape (not valid Unicode, unencodable as UTF-8) is refused."""
    issues = _refusal(b'{"resourceType":"ServiceRequest","status":"\\ud800"}')
    assert (issues[0].code, issues[0].expression) == ("invalid", "ServiceRequest.status")


def test_control_character_in_a_property_name_is_refused_without_the_name() -> None:
    """A property name with a control character is refused at its object, name not repeated."""
    issues = _refusal(b'{"resourceType":"ServiceRequest","sta\\u0001tus":"active"}')
    assert (issues[0].code, issues[0].expression) == ("structure", "ServiceRequest")


def _strings(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, str):
        return [path]
    if isinstance(node, dict):
        return [p for k, v in node.items() if k != "resourceType" for p in _strings(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in _strings(v, (*path, i))]
    return []


def _fhirpath(root: Any, path: tuple[Any, ...]) -> str:
    out = root["resourceType"]
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), name=st.sampled_from(sorted(ROOTS)), char=st.sampled_from(FORBIDDEN))
def test_any_forbidden_control_char_anywhere_is_refused_at_that_string(
    name: str, char: str, data: Any
) -> None:
    """A forbidden control character in any string is refused 400 `invalid` at that string."""
    root = ROOTS[name]
    paths = _strings(root)
    path = data.draw(st.sampled_from(paths))
    resource = json.loads(json.dumps(root))
    holder = resource
    for part in path[:-1]:
        holder = holder[part]
    value: str = holder[path[-1]]
    at = data.draw(st.integers(0, len(value)))
    holder[path[-1]] = value[:at] + char + value[at:]
    issues = _refusal(json.dumps(resource).encode())
    assert [(i.code, i.expression) for i in issues] == [("invalid", _fhirpath(root, path))]
    _no_patient_values(issues)


_VALUES = re.compile(rb'value="([^"]*)"')


@hsettings(max_examples=100, deadline=None)
@given(data=st.data(), char=st.sampled_from(FORBIDDEN), hexadecimal=st.booleans())
def test_any_control_char_reference_in_xml_is_refused_with_a_location(
    char: str, hexadecimal: bool, data: Any
) -> None:
    """A control-character reference in any XML value is refused 400 `invalid` at an element."""
    spans = [m.span(1) for m in _VALUES.finditer(XML_CONTAINED)]
    start, end = data.draw(st.sampled_from(spans))
    at = data.draw(st.integers(start, end))
    ref = f"&#x{ord(char):X};" if hexadecimal else f"&#{ord(char)};"
    text = XML_CONTAINED[:at] + ref.encode() + XML_CONTAINED[at:]
    issues = _refusal(text, "application/fhir+xml")
    assert [i.code for i in issues] == ["invalid"]
    assert issues[0].expression.startswith("ServiceRequest")
    _no_patient_values(issues)


def test_raw_control_byte_in_xml_is_refused_at_its_element() -> None:
    """A raw control byte inside an XML attribute value is refused at that element's FHIRPath."""
    text = XML_CONTAINED.replace(b'<family value="', b'<family value="\x01', 1)
    issues = _refusal(text, "application/fhir+xml")
    assert issues[0].code == "invalid"
    assert re.fullmatch(
        r"ServiceRequest\.contained\[\d+\]\.name\[0\]\.family", issues[0].expression
    )


def test_control_char_outside_values_in_xml_is_refused() -> None:
    """A control character in an XML comment (no FHIR value to point at) is still refused."""
    text = XML_CONTAINED.replace(b"<status", b"<!-- \x02 --><status", 1)
    issues = _refusal(text, "application/fhir+xml")
    assert (issues[0].code, issues[0].expression) == ("invalid", "(body)")


# --- XML cardinality ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("inner", "where"),
    [
        (b'<status value="active"/><status value="draft"/>', "ServiceRequest.status"),
        (
            b'<subject><reference value="#a"/></subject><subject><reference value="#b"/></subject>',
            "ServiceRequest.subject",
        ),
        (
            b'<subject><reference value="#a"/><reference value="#b"/></subject>',
            "ServiceRequest.subject.reference",
        ),
        (
            b'<contained><Patient><gender value="male"/><gender value="female"/>'
            b"</Patient></contained>",
            "ServiceRequest.contained[0].gender",
        ),
    ],
)
def test_xml_element_of_cardinality_one_twice_is_refused(inner: bytes, where: str) -> None:
    """An XML element whose maximum cardinality is 1, given twice, is refused 400 `structure`."""
    text = b'<ServiceRequest xmlns="http://hl7.org/fhir">' + inner + b"</ServiceRequest>"
    issues = _refusal(text, "application/fhir+xml")
    assert ("structure", where) in [(i.code, i.expression) for i in issues]


def test_xml_repeating_elements_are_still_accepted() -> None:
    """Repeating elements (0..*) given several times stay valid: the contained XML referral maps."""
    assert inbound.read(XML_CONTAINED, "application/fhir+xml", max_bytes=1 << 20)["contained"]


def test_gzip_bytes_without_content_encoding_get_a_compression_message() -> None:
    """Compressed bytes sent as plain JSON are named as compressed, not as a charset problem."""
    issues = _refusal(b"\x1f\x8b\x08\x00rest", "application/fhir+json")
    assert "gzip-compressed" in issues[0].diagnostics
    assert "UTF-8" not in issues[0].diagnostics
