"""Sealers for tests: AES-GCM with fresh random keys (``adapters/sealing.py``)."""

from __future__ import annotations

from wor_bridge.adapters.sealing import AesGcmSealer, new_key_entry, parse_keys


def entries(*key_ids: str) -> str:
    """Fresh ``ID:BASE64`` key entries, one line each, the first the active one."""
    return "\n".join(new_key_entry(key_id) for key_id in key_ids) + "\n"


def sealer(*key_ids: str) -> AesGcmSealer:
    """An AES-GCM sealer with fresh keys ``key_ids`` (default one key, ``k1``)."""
    return AesGcmSealer(parse_keys(entries(*(key_ids or ("k1",)))))
