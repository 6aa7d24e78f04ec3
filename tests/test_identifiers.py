"""Identifier systems (OID and URI forms) and the BSN 11-test."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wor_bridge.core import identifiers as ids


def test_oid_forms_normalise_to_fhir_nl_uris() -> None:
    """urn:oid and bare OIDs of BSN, AGB, URA, UZI, BIG and ICPC map to their URI forms."""
    assert ids.normalize_system("urn:oid:2.16.840.1.113883.2.4.6.3") == ids.BSN
    assert ids.normalize_system("2.16.840.1.113883.2.4.6.1") == ids.AGB
    assert ids.normalize_system("urn:oid:2.16.528.1.1007.3.3") == ids.URA
    assert ids.normalize_system("urn:oid:2.16.528.1.1007.3.1") == ids.UZI
    assert ids.normalize_system("urn:oid:2.16.528.1.1007.5.1") == ids.BIG
    assert ids.normalize_system("urn:oid:2.16.840.1.113883.2.4.4.31.1") == ids.ICPC_1_NL
    assert ids.normalize_system("urn:oid:2.16.840.1.113883.6.139") == ids.ICPC_2


def test_uri_forms_and_unknown_systems_are_kept() -> None:
    """URI forms stay as they are; an unknown system is returned unchanged."""
    assert ids.normalize_system(ids.BSN) == ids.BSN
    assert ids.normalize_system("urn:oid:1.2.3") == "urn:oid:1.2.3"


def test_bsn_11_test_accepts_test_range_and_rejects_near_misses() -> None:
    """Known-good synthetic BSNs pass; a changed last digit, wrong length or letters fail."""
    for good in ("999990007", "999990019", "999990020", "111222333"):
        assert ids.is_valid_bsn(good)
    for bad in ("999990008", "99999000", "9999900070", "99999000a", "000000000", "", "٩٩٩٩٩٠٠٠٧"):
        assert not ids.is_valid_bsn(bad)


@given(st.text(max_size=12))
def test_bsn_problem_description_never_repeats_the_value(value: str) -> None:
    """The diagnostic for a bad BSN states kind and length only, never the digits."""
    described = ids.describe_bsn_problem(value)
    if len(value) >= 3:
        assert value not in described


@given(st.integers(min_value=10_000_000, max_value=99_999_999))
def test_exactly_one_check_digit_completes_a_bsn(prefix: int) -> None:
    """For every 8-digit prefix at most one last digit makes a valid BSN (the 11-test)."""
    valid = [d for d in range(10) if ids.is_valid_bsn(f"{prefix}{d}")]
    assert len(valid) <= 1
