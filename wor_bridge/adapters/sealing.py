"""Encryption at rest for the store's patient columns: AES-GCM envelopes and blind indexes.

Backend-neutral (the SQLite and PostgreSQL stores): bytes in, bytes out. A **sealed value** is::

    b"\\x00wb" | version (1 byte, 1) | key id length (1 byte) | key id (ASCII) | nonce (12 bytes)
    | AES-256-GCM ciphertext with its 16-byte tag

The nonce is random (96 bits, ``os.urandom``) per value. The additional authenticated data is
the header (everything before the nonce) and the value's **context**, ``aad(table, column,
row)``: a ciphertext copied to another row or column, or altered, does not open
(``SealingError``). A plain JSON, XML or text value never starts with ``b"\\x00"``: with
encryption on, a value in clear is refused too, except by ``wor-bridge store rotate-key``
(``read_clear``), which seals the values of a store written before encryption was turned on.

**Keys** (``parse_keys``): entries ``ID:BASE64`` (32 random bytes, standard base64), separated by
whitespace, newlines or commas; ``#`` starts a comment. The first entry is the **active** key
(new values are sealed with it); the others only open older values. From each key two
sub-keys are derived with HKDF-SHA256 (RFC 5869, no salt): ``info`` ``wor_bridge/store/seal/v1``
for AES-GCM and ``wor_bridge/store/blind-index/v1`` for the blind index, so the key in the file
is never used directly.

A **blind index** makes equality search work on a column that must not hold the value:
``bi1:<key id>:<hex HMAC-SHA256(index key, value)>``; a search compares with the index under
every known key (``lookups``), so rows indexed under an older key are found until rotation has
moved them. AES-GCM with random nonces stays within its bounds (NIST SP 800-38D 8.3) below 2^32
values per key: rotate well before that.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from dataclasses import dataclass, field
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from wor_bridge.errors import StoreError

MAGIC: Final = b"\x00wb"
VERSION: Final = 1
NONCE_BYTES: Final = 12
KEY_BYTES: Final = 32
KEY_ID: Final = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
INDEX_PREFIX: Final = "bi1:"
_SEAL_INFO: Final = b"wor_bridge/store/seal/v1"
_INDEX_INFO: Final = b"wor_bridge/store/blind-index/v1"


class SealingError(StoreError):
    """A sealed value cannot be opened, or keys are missing or malformed; the message names
    the kind of problem and never a value. A ``StoreError``: the CLI prints it as one (exit 1);
    malformed keys reach the operator as ``ConfigError`` (``bootstrap.sealer_for``)."""


def aad(table: str, column: str, row: str) -> bytes:
    """The context a value is bound to: ``table``, ``column`` and the row's own key (a Task id,
    an outbox idempotency key, an audit record id)."""
    return "\x1f".join((table, column, row)).encode()


def is_sealed(stored: bytes | str | None) -> bool:
    """True when ``stored`` is a sealed value (whatever its key)."""
    return isinstance(stored, bytes) and stored.startswith(MAGIC)


def header(key_id: str) -> bytes:
    """The envelope's header for values sealed with ``key_id`` (a SQL prefix to compare)."""
    return MAGIC + bytes((VERSION, len(key_id))) + key_id.encode("ascii")


def _derive(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(secret)


@dataclass(frozen=True, slots=True)
class DataKey:
    """One key: its id and the two keys derived from it (never the key itself in a log)."""

    id: str
    seal_key: bytes = field(repr=False)
    index_key: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, key_id: str, secret: bytes) -> DataKey:
        """Derive the sealing and index keys from 32 secret bytes (``SealingError`` otherwise)."""
        if not KEY_ID.match(key_id):
            raise SealingError("a key id is 1 to 32 of A-Z a-z 0-9 _ -")
        if len(secret) != KEY_BYTES:
            raise SealingError(f"key {key_id}: expected {KEY_BYTES} bytes, found {len(secret)}")
        return cls(key_id, _derive(secret, _SEAL_INFO), _derive(secret, _INDEX_INFO))


def parse_keys(text: str) -> tuple[DataKey, ...]:
    """Keys from ``ID:BASE64`` entries, the active one first; ``SealingError`` names the entry
    by position when one is malformed, an id repeats or there is none."""
    entries = [
        part
        for line in text.splitlines()
        for part in re.split(r"[\s,]+", line.split("#", 1)[0])
        if part
    ]
    keys: list[DataKey] = []
    for n, entry in enumerate(entries, start=1):
        key_id, colon, encoded = entry.partition(":")
        if not colon:
            raise SealingError(f"key entry {n}: expected ID:BASE64")
        try:
            secret = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise SealingError(f"key entry {n}: the key is not base64") from None
        keys.append(DataKey.from_secret(key_id, secret))
    if not keys:
        raise SealingError("no key found (expected ID:BASE64 entries)")
    if len({k.id for k in keys}) != len(keys):
        raise SealingError("a key id occurs twice")
    return tuple(keys)


def new_key_entry(key_id: str) -> str:
    """A fresh ``ID:BASE64`` entry with 32 random bytes (``wor-bridge store new-key``)."""
    DataKey.from_secret(key_id, bytes(KEY_BYTES))  # checks the id
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_BYTES)).decode('ascii')}"


class Sealer(Protocol):
    """What the store adapters call for every patient column (``PLAIN`` or ``AesGcmSealer``)."""

    @property
    def active_key_id(self) -> str | None:
        """The key new values are sealed with (None: encryption off)."""

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """The value to store for ``plaintext`` in the context ``aad``."""

    def open(self, stored: bytes, aad: bytes) -> bytes:
        """The plaintext of a stored value (``SealingError`` when it does not open)."""

    def index(self, value: str) -> str:
        """What a blind-index column stores for ``value`` ('' stays '')."""

    def lookups(self, value: str) -> tuple[str, ...]:
        """The stored forms a search for ``value`` compares with (one per known key)."""


class PlainSealer:
    """``encryption = "off"``: values are stored as they are; a sealed value cannot be read."""

    active_key_id: None = None

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """``plaintext`` unchanged."""
        return plaintext

    def open(self, stored: bytes, aad: bytes) -> bytes:
        """``stored`` unchanged; ``SealingError`` for a sealed value (the key is not configured)."""
        if is_sealed(stored):
            raise SealingError(
                "the store holds encrypted values but [store] encryption is off: configure"
                ' encryption = "aes-gcm" and its key'
            )
        return stored

    def index(self, value: str) -> str:
        """``value`` unchanged."""
        return value

    def lookups(self, value: str) -> tuple[str, ...]:
        """Only ``value`` itself."""
        return (value,)


PLAIN: Final = PlainSealer()


class AesGcmSealer:
    """``encryption = "aes-gcm"``: seals with the active key, opens with any known key; a value
    in clear is refused unless ``read_clear`` (the rotation of a store from before encryption)."""

    def __init__(self, keys: tuple[DataKey, ...], *, read_clear: bool = False) -> None:
        if not keys:
            raise SealingError("no key configured")
        self.read_clear = read_clear
        self._active = keys[0]
        self._keys = {k.id: k for k in keys}
        self._ciphers = {k.id: AESGCM(k.seal_key) for k in keys}
        self._headers = {k.id: header(k.id) for k in keys}

    @property
    def active_key_id(self) -> str:
        """The id of the key new values are sealed with."""
        return self._active.id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every known key id, the active one first."""
        return tuple(self._keys)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """The envelope of ``plaintext`` under the active key, bound to ``aad``."""
        head = self._headers[self._active.id]
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._active.id].encrypt(nonce, plaintext, head + b"\x00" + aad)
        return head + nonce + sealed

    def open(self, stored: bytes, aad: bytes) -> bytes:
        """The plaintext; ``SealingError`` when the value is in clear (unless ``read_clear``:
        then as it is), its version or key id is unknown, or it does not authenticate here."""
        if not is_sealed(stored):
            if self.read_clear:
                return stored
            raise SealingError(
                "a value is in clear where a sealed one is expected (run wor-bridge store"
                " rotate-key on a store from before encryption)"
            )
        if len(stored) < 5 or stored[3] != VERSION:
            raise SealingError("a sealed value has an unknown envelope version")
        end = 5 + stored[4]
        key_id = stored[5:end].decode("ascii", "replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise SealingError(f"a sealed value names key {key_id!r}, which is not configured")
        nonce, sealed = stored[end : end + NONCE_BYTES], stored[end + NONCE_BYTES :]
        try:
            return cipher.decrypt(nonce, sealed, stored[:end] + b"\x00" + aad)
        except (InvalidTag, ValueError):
            raise SealingError(
                "a sealed value does not authenticate (altered, moved from another row, or"
                " sealed with another key of the same id)"
            ) from None

    def _index_with(self, key: DataKey, value: str) -> str:
        digest = hmac.new(key.index_key, value.encode(), hashlib.sha256).hexdigest()
        return f"{INDEX_PREFIX}{key.id}:{digest}"

    def index(self, value: str) -> str:
        """``bi1:<active key id>:<hex HMAC>`` of ``value``; '' stays '' (no value to find)."""
        return self._index_with(self._active, value) if value else ""

    def lookups(self, value: str) -> tuple[str, ...]:
        """The index of ``value`` under every known key, the active one first."""
        return tuple(self._index_with(k, value) for k in self._keys.values())


def _conforms(plain: PlainSealer, sealer: AesGcmSealer) -> tuple[Sealer, Sealer]:
    """Lets mypy check that both classes implement the protocol."""
    return plain, sealer
