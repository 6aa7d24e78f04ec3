"""The JSON pass's cost limits (core/jsonscan.py): refused at the location, with the limit, before
any model validation; never a value from the body in a diagnostic."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.cases import FIXTURES
from wor_bridge.core import jsonscan
from wor_bridge.core.limits import InputLimits
from wor_bridge.errors import InboundError

LIMITS = InputLimits()
SECRET = "Geheimwaarde"  # stands for a patient value: it must never come back


def _task(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Task", "status": "requested", "intent": "order", **extra}


def _refusal(body: bytes, limits: InputLimits = LIMITS) -> list[tuple[str, str, str]]:
    with pytest.raises(InboundError) as caught:
        jsonscan.load(body, limits)
    issues = [(i.code, i.expression, i.diagnostics) for i in caught.value.issues]
    assert all(SECRET not in d for _, _, d in issues)
    return issues


def _values(node: Any) -> int:
    """JSON values below the root (every property value and array item)."""
    if isinstance(node, dict):
        return sum(1 + _values(v) for v in node.values())
    if isinstance(node, list):
        return sum(1 + _values(v) for v in node)
    return 0


def test_five_thousand_digit_number_is_refused_at_its_location() -> None:
    """A 5,000-digit integer is too-costly at its FHIRPath with the limit, never converted."""
    body = json.dumps(_task(input=[{"type": {"text": SECRET}, "valueInteger": 0}])).encode()
    body = body.replace(b'"valueInteger": 0', b'"valueInteger": ' + b"7" * 5000)
    [(code, where, message)] = _refusal(body)
    assert (code, where) == ("too-costly", "Task.input[0].valueInteger")
    assert "at most 32 digits" in message
    assert "limits.max_number_digits" in message


def test_long_decimal_is_refused_like_a_long_integer() -> None:
    """A decimal with more digits than the limit is refused at its location too."""
    body = json.dumps(_task(priority="routine")).encode()
    body = body.replace(b'"priority": "routine"', b'"x": 0.' + b"1" * 40)
    assert _refusal(body)[0][:2] == ("too-costly", "Task")


def test_a_number_at_the_root_is_refused_without_conversion() -> None:
    """A body that is one huge number is refused at (body)."""
    assert _refusal(b"9" * 5000)[0][:2] == ("too-costly", "(body)")


def test_string_over_the_limit_is_refused_at_its_location() -> None:
    """A string longer than max_string_chars is too-costly at its path; the text stays out."""
    body = json.dumps(_task(note=[{"text": SECRET * 6000}])).encode()
    [(code, where, message)] = _refusal(body)
    assert (code, where) == ("too-costly", "Task.note[0].text")
    assert "65536 characters" in message


def test_array_over_the_limit_is_refused_at_its_location() -> None:
    """An array longer than max_array_items is too-costly at the array's path."""
    body = json.dumps(_task(identifier=[{"value": SECRET}] * 501)).encode()
    [(code, where, message)] = _refusal(body)
    assert (code, where) == ("too-costly", "Task.identifier")
    assert "at most 500 items" in message


def test_the_reported_flood_of_empty_identifiers_stops_at_the_element_limit() -> None:
    """330,000 empty identifier objects (the review's 1 MiB Task) are refused at (body)."""
    body = json.dumps(_task(identifier=[{}] * 330_000)).encode()
    [(code, where, message)] = _refusal(body)
    assert (code, where) == ("too-costly", "(body)")
    assert "at most 1500 elements" in message


@pytest.mark.parametrize("item", [b"[]", b'"ab"', b"1", b"1.5", b"true", b"{}", b'","'], ids=repr)
def test_floods_inside_one_array_are_refused_before_decoding(item: bytes) -> None:
    """A megabyte of small items in one array is refused from the bytes (no hook sees it)."""
    body = b'{"resourceType":"Task","x":[' + b",".join([item] * 200_000) + b"]}"
    assert _refusal(body)[0][:2] == ("too-costly", "(body)")


def test_many_object_members_are_refused() -> None:
    """An object with more members than max_elements is refused at (body)."""
    members = ",".join(f'"k{i}":1' for i in range(3000))
    assert _refusal(("{" + members + "}").encode())[0][:2] == ("too-costly", "(body)")


def test_nesting_deeper_than_the_limit_is_refused_once() -> None:
    """Objects nested beyond max_depth give one too-costly issue, below a located element."""
    deep: dict[str, Any] = {"url": "x"}
    for _ in range(40):
        deep = {"url": "x", "extension": [deep]}
    issues = _refusal(json.dumps(_task(extension=[deep])).encode())
    assert len(issues) == 1
    code, where, message = issues[0]
    assert code == "too-costly"
    assert where.startswith("Task.extension[0].extension[0]")
    assert "32 levels" in message


def test_deep_nesting_reported_however_far_from_the_root() -> None:
    """A too-deep finding survives bubbling up through hundreds of levels."""
    body = b'{"a":' * 900 + b"1" + b"}" * 900
    assert _refusal(body)[0][:2] == ("too-costly", "(body)")


def test_nesting_beyond_the_decoder_guard_is_refused() -> None:
    """Nesting past the decoder's recursion guard is too-costly, not a crash."""
    body = b'{"a":' + b"[" * 1500 + b"]" * 1500 + b"}"
    assert _refusal(body)[0][:2] == ("too-costly", "(body)")


def test_root_array_findings_carry_indices_only() -> None:
    """In a JSON Patch (a root array) a long value is located by indices, never names."""
    body = json.dumps([{"op": "replace", "path": "/status", SECRET: "x" * 70_000}]).encode()
    [(code, where, _)] = _refusal(body)
    assert (code, where) == ("too-costly", "(body)[0]")


def test_unknown_names_never_appear_in_a_location() -> None:
    """A limit hit below a name the model does not know stops the path before that name."""
    body = json.dumps(_task(**{SECRET: [{"v": "y" * 70_000}]})).encode()
    [(code, where, message)] = _refusal(body)
    assert (code, where) == ("too-costly", "Task")
    assert "not part of this FHIR R4 type" in message


def test_configured_limits_apply() -> None:
    """Smaller configured limits refuse what the defaults admit."""
    limits = InputLimits(max_elements=100, max_array_items=10)
    body = json.dumps(_task(identifier=[{"value": "a"}] * 11)).encode()
    assert _refusal(body, limits)[0][:2] == ("too-costly", "Task.identifier")
    assert jsonscan.load(body, LIMITS)["identifier"][10] == {"value": "a"}


def test_lax_mode_keeps_the_last_duplicate_and_strict_refuses_it() -> None:
    """Duplicates are refused in strict mode only (the intake); limits hold in both."""
    body = b'{"resourceType":"Task","status":"a","status":"b"}'
    assert jsonscan.load(body, LIMITS)["status"] == "b"
    issues = jsonscan.parse(body, LIMITS, strict=True).issues()
    assert [(i.code, i.expression) for i in issues] == [("structure", "Task.status")]


def test_every_fixture_input_is_far_inside_the_limits() -> None:
    """The shipped referral fixtures use a fraction of each default limit."""
    for path in sorted(FIXTURES.glob("accepted-*/input.json")):
        value = jsonscan.load(path.read_bytes(), LIMITS)
        assert _values(value) < LIMITS.max_elements // 4, path.parent.name


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(st.sampled_from('a,:"\\\u00e9{[')),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.text(st.sampled_from('k,:"\\'), max_size=4), inner, max_size=6)
    ),
    max_leaves=60,
)


@settings(max_examples=300, deadline=None)
@given(_JSON)
def test_byte_bound_never_exceeds_the_real_number_of_values(value: Any) -> None:
    """The pre-decoding bound is a lower bound: it never refuses a body within the limit."""
    body = json.dumps(value, ensure_ascii=False).encode()
    for limit in (0, 1, 3, 10):
        bound = jsonscan._values_at_least(body, limit)
        assert bound <= _values(value)
