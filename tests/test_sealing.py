"""The codec that encrypts the store's patient columns (``adapters/sealing.py``)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import sealed
from wor_bridge.adapters.sealing import (
    PLAIN,
    AesGcmSealer,
    SealingError,
    aad,
    header,
    is_sealed,
    new_key_entry,
    parse_keys,
)

ROW = aad("referral", "bundle", "task-1")


def test_a_sealed_value_opens_in_its_own_context_only() -> None:
    """Sealed under a row's context it opens there, not in another row's or column's."""
    keys = sealed.sealer()
    stored = keys.seal(b'{"name":"Jansen"}', ROW)
    assert is_sealed(stored)
    assert b"Jansen" not in stored
    assert keys.open(stored, ROW) == b'{"name":"Jansen"}'
    for other in (aad("referral", "bundle", "task-2"), aad("outbox", "payload", "task-1")):
        with pytest.raises(SealingError, match="does not authenticate"):
            keys.open(stored, other)


def test_an_altered_byte_anywhere_is_refused() -> None:
    """Changing any byte of the envelope (header, nonce, ciphertext, tag) makes it not open."""
    keys = sealed.sealer()
    stored = keys.seal(b"0612345678", ROW)
    for n in range(len(stored)):
        changed = bytearray(stored)
        changed[n] ^= 0x01
        with pytest.raises(SealingError):
            keys.open(bytes(changed), ROW)


def test_each_seal_uses_a_fresh_nonce() -> None:
    """The same plaintext sealed twice gives two different values (random 96-bit nonce)."""
    keys = sealed.sealer()
    assert keys.seal(b"same", ROW) != keys.seal(b"same", ROW)


def test_older_keys_open_and_the_active_key_seals() -> None:
    """Values sealed with an older key open while that key is configured; new ones use the first."""
    text = sealed.entries("old")
    old = AesGcmSealer(parse_keys(text))
    stored = old.seal(b"value", ROW)
    rotated = AesGcmSealer(parse_keys(new_key_entry("new") + "\n" + text))
    assert rotated.active_key_id == "new"
    assert rotated.open(stored, ROW) == b"value"
    assert rotated.seal(b"value", ROW).startswith(header("new"))
    only_new = AesGcmSealer(parse_keys(new_key_entry("new")))
    with pytest.raises(SealingError, match="'old', which is not configured"):
        only_new.open(stored, ROW)


def test_a_key_with_the_same_id_but_other_bytes_does_not_open() -> None:
    """A replaced key under an old id is detected, never silently read as garbage."""
    stored = sealed.sealer("k1").seal(b"value", ROW)
    with pytest.raises(SealingError, match="does not authenticate"):
        sealed.sealer("k1").open(stored, ROW)


def test_values_in_clear_are_refused_unless_rotating_and_plain_refuses_sealed_ones() -> None:
    """With a key a value in clear is refused (read only by the rotation of an older store);
    with encryption off a sealed value is refused."""
    keys = sealed.sealer()
    with pytest.raises(SealingError, match="in clear where a sealed one is expected"):
        keys.open(b'{"resourceType":"Bundle"}', ROW)
    rotating = AesGcmSealer(parse_keys(sealed.entries("k1")), read_clear=True)
    assert rotating.open(b'{"resourceType":"Bundle"}', ROW) == b'{"resourceType":"Bundle"}'
    assert PLAIN.seal(b"x", ROW) == b"x"
    with pytest.raises(SealingError, match="encryption is off"):
        PLAIN.open(keys.seal(b"x", ROW), ROW)


def test_blind_index_is_keyed_stable_and_searchable_under_every_key() -> None:
    """The index of a value is the same each time, differs per key, and lookups cover all keys."""
    two = AesGcmSealer(parse_keys(sealed.entries("k2", "k1")))
    one = AesGcmSealer(parse_keys(sealed.entries("k1")))
    assert two.index("REF-1") == two.index("REF-1")
    assert two.index("REF-1").startswith("bi1:k2:")
    assert "REF-1" not in two.index("REF-1")
    assert two.index("REF-1") != two.index("REF-2")
    assert two.index("") == ""
    assert len(set(two.lookups("REF-1"))) == 2
    assert one.index("REF-1") not in two.lookups("REF-1")  # another k1: another index key


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no key found"),
        ("k1", "key entry 1: expected ID:BASE64"),
        ("k1:not base64!", "key entry 1: the key is not base64"),
        ("k1:" + base64.b64encode(b"short").decode(), "expected 32 bytes, found 5"),
        ("bad.id:" + base64.b64encode(bytes(32)).decode(), "a key id is"),
        (f"{new_key_entry('k1')},{new_key_entry('k1')}", "a key id occurs twice"),
    ],
)
def test_malformed_keys_are_refused_without_showing_them(text: str, problem: str) -> None:
    """Each kind of bad key text names the problem and the entry, never the key's bytes."""
    with pytest.raises(SealingError, match=problem) as caught:
        parse_keys(text)
    secret = text.partition(":")[2]
    assert not secret or secret not in str(caught.value)


def test_key_entries_allow_comments_commas_and_lines() -> None:
    """Comments, blank lines, commas and spaces separate entries; the first is active."""
    a, b = new_key_entry("a"), new_key_entry("b")
    keys = parse_keys(f"# store keys\n\n{a}  # current\n,{b}\n")
    assert [k.id for k in keys] == ["a", "b"]


@given(value=st.binary(max_size=2048), row=st.text(max_size=40), other=st.text(max_size=40))
def test_round_trip_and_context_binding_property(value: bytes, row: str, other: str) -> None:
    """Any bytes round-trip in their context and fail in any other row's context."""
    keys = SEALER
    stored = keys.seal(value, aad("outbox", "payload", row))
    assert keys.open(stored, aad("outbox", "payload", row)) == value
    if other != row:
        with pytest.raises(SealingError):
            keys.open(stored, aad("outbox", "payload", other))


SEALER = sealed.sealer()
