"""Cost limits on pushed referrals (inbound.read, JSON and XML) and their configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cases import REPO, case_input
from wor_bridge.config import load_app
from wor_bridge.core import inbound
from wor_bridge.core.limits import InputLimits
from wor_bridge.demo.credentials import demo_configuration
from wor_bridge.errors import InboundError

XML = "application/fhir+xml"
FIXTURE_XML = case_input("accepted-xml-contained")
AUTHORED = b'<authoredOn value="2026-11-02T10:15:00+01:00"/>'
SECRET = "Geheimwaarde"


def _refused(data: bytes, content_type: str | None, limits: InputLimits | None = None) -> list:
    with pytest.raises(InboundError) as caught:
        inbound.read(data, content_type, max_bytes=1 << 20, limits=limits)
    issues = [(i.code, i.expression, i.diagnostics) for i in caught.value.issues]
    assert all(SECRET not in d for _, _, d in issues)
    return issues


def _xml_with(extra: bytes) -> bytes:
    assert FIXTURE_XML.count(AUTHORED) == 1
    return FIXTURE_XML.replace(AUTHORED, AUTHORED + extra)


def test_fixture_xml_is_read_within_the_default_limits() -> None:
    """The shipped XML referral passes the limits (they refuse cost, not referrals)."""
    assert inbound.read(FIXTURE_XML, XML, max_bytes=1 << 20)["resourceType"] == "ServiceRequest"


def test_json_number_with_five_thousand_digits_is_an_inbound_error() -> None:
    """A 5,000-digit number in a pushed referral is a 400-class refusal, not a ValueError."""
    data = case_input("accepted-contained").replace(
        b'"status"', b'"x": ' + b"9" * 5000 + b', "status"', 1
    )
    issues = _refused(data, "application/fhir+json")
    assert issues[0][0] == "too-costly"
    assert "limits.max_number_digits" in issues[0][2]


def test_xml_with_more_elements_than_the_limit_is_refused_while_parsing() -> None:
    """XML holding more elements than max_elements is refused at (body) with the limit."""
    notes = b'<note><text value="x"/></note>' * 1200
    [(code, where, message)] = _refused(_xml_with(notes), XML)
    assert (code, where) == ("too-costly", "(body)")
    assert "at most 1500 elements" in message


def test_xml_repetitions_over_the_limit_are_refused_at_the_element() -> None:
    """An element repeated more often than max_array_items is refused at its FHIRPath."""
    notes = b'<note><text value="x"/></note>' * 12
    limits = InputLimits(max_array_items=10)
    [(code, where, message)] = _refused(_xml_with(notes), XML, limits)
    assert (code, where) == ("too-costly", "ServiceRequest.note")
    assert "at most 10 times" in message


def test_xml_value_over_the_string_limit_is_refused_at_the_element() -> None:
    """A value attribute longer than max_string_chars is refused at its FHIRPath, unquoted."""
    note = b'<note><text value="' + SECRET.encode() * 7000 + b'"/></note>'
    [(code, where, _)] = _refused(_xml_with(note), XML)
    assert (code, where) == ("too-costly", "ServiceRequest.note[0].text")


def test_xml_number_over_the_digit_limit_is_refused_at_the_element() -> None:
    """An integer value with more digits than the limit is refused before conversion."""
    quantity = b'<quantityQuantity><value value="' + b"1" * 5000 + b'"/></quantityQuantity>'
    data = FIXTURE_XML.replace(
        b'<subject><reference value="#pat"/></subject>',
        quantity + b'<subject><reference value="#pat"/></subject>',
        1,
    )
    [(code, where, message)] = _refused(data, XML)
    assert (code, where) == ("too-costly", "ServiceRequest.quantityQuantity.value")
    assert "limits.max_number_digits" in message


def test_xml_nesting_deeper_than_the_limit_is_refused_at_the_element() -> None:
    """Extensions nested beyond max_depth are refused at the element where nesting goes on."""
    inner = b'<extension url="u"><valueString value="x"/></extension>'
    for _ in range(12):
        inner = b'<extension url="u">' + inner + b"</extension>"
    [(code, where, message)] = _refused(_xml_with(inner), XML, InputLimits(max_depth=8))
    assert code == "too-costly"
    assert where.startswith("ServiceRequest.extension[0].extension[0]")
    assert "8 levels" in message


def test_limits_and_service_settings_come_from_the_toml(tmp_path: Path) -> None:
    """[limits] and the [service] connection settings are read from the configuration file."""
    text = demo_configuration()
    text = text.replace('mappings_dir = "../mappings"', f'mappings_dir = "{REPO / "mappings"}"')
    for old, new in (
        ("body_timeout_s = 20.0", "body_timeout_s = 3.5"),
        ("max_validations = 8", "max_validations = 2"),
        ("max_elements = 1500", "max_elements = 500"),
        ("task_bytes = 65536", "task_bytes = 4096"),
    ):
        text = text.replace(f"\n{old}", f"\n{new}", 1)
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    config = load_app(path)
    assert (config.core.limits.max_elements, config.core.limits.task_bytes) == (500, 4096)
    assert (config.service.body_timeout_s, config.service.max_validations) == (3.5, 2)


def test_the_example_configuration_states_every_limit() -> None:
    """config/wor-bridge.toml names every limit with its default (the README documents them)."""
    text = demo_configuration()
    config = load_app(REPO / "config" / "wor-bridge.toml")
    for name, value in config.core.limits.model_dump().items():
        assert f"\n{name} = {value}" in text, name
    for name in (
        "max_validations",
        "max_validations_per_client",
        "max_connections",
        "header_timeout_s",
        "body_timeout_s",
        "keep_alive_s",
        "max_header_bytes",
    ):
        assert f"\n{name} = {getattr(config.service, name)}" in text, name


def test_json_dumps_of_a_limit_refusal_holds_no_body_text() -> None:
    """The OperationOutcome text of a limit refusal names sizes and limits, not content."""
    data = json.dumps(
        {"resourceType": "Bundle", "type": "collection", "entry": [{"fullUrl": SECRET * 9000}]}
    ).encode()
    issues = _refused(data, None)
    assert issues[0][:2] == ("too-costly", "Bundle.entry[0].fullUrl")
