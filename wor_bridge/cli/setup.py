"""Installing and configuring: ``wor-bridge init DIR``, ``wor-bridge key new``, ``key hash``.

A client's key is never stored, only its SHA-256 (lower-case hex of the key's UTF-8 bytes), in
``[[clients]] key_sha256``. ``key hash`` reads the key from stdin and removes one trailing line
break, so ``echo KEY | wor-bridge key hash`` gives the right hash (``echo KEY | sha256sum`` hashes
the line break too and gives a wrong one).

Exit codes: 0 done, 1 refused (``init`` never overwrites), 64 a key that cannot be one.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from pathlib import Path
from typing import Any

from wor_bridge.adapters.sealing import new_key_entry
from wor_bridge.service.auth import hash_key
from wor_bridge.shipped import shipped

EXIT_USAGE = 64
STORE_KEY_ID = "k1"
"""Id of the store key ``init`` writes (rotation adds later ids: README, Encryption at rest)."""
KEY_BYTES = 32
"""Random bytes in a new key (256 bits; URL-safe base64, 43 characters)."""


def new_key() -> str:
    """A fresh random key (``secrets.token_urlsafe``)."""
    return secrets.token_urlsafe(KEY_BYTES)


def read_key(data: bytes) -> str:
    """The key in ``data`` (stdin): one trailing ``\\n`` or ``\\r\\n`` removed.

    Raises ``ValueError`` (no key in the message) when it is empty, not UTF-8, or holds
    whitespace or control characters (a second line, a space typed by mistake).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("the key is not UTF-8") from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text:
        raise ValueError("no key on stdin")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("a key is one line without spaces or control characters")
    return text


def _write_new(path: Path, text: str) -> None:
    """Create ``path`` (0600) with ``text``; ``FileExistsError`` when it exists."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def cmd_init(args: argparse.Namespace) -> int:
    """Write ``DIR/wor-bridge.toml`` with one GP-system client and a fresh key (printed once),
    and ``DIR/store.keys`` with a fresh store key (encryption at rest); both 0600."""
    folder: Path = args.dir
    target, keys = folder / "wor-bridge.toml", folder / "store.keys"
    key = new_key()
    text = shipped("config", "starter.toml").read_text(encoding="utf-8")
    text = text.replace("{key_sha256}", hash_key(key))
    if folder.exists() and not folder.is_dir():
        print(
            f"wor-bridge: {folder} is not a directory; init writes into a directory",
            file=sys.stderr,
        )
        return 1
    for existing in (target, keys):
        if existing.exists():
            print(f"wor-bridge: {existing} exists; init never overwrites it", file=sys.stderr)
            return 1
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_new(keys, new_key_entry(STORE_KEY_ID) + "\n")
        _write_new(target, text)
    except FileExistsError:
        print(f"wor-bridge: {folder} changed while init ran; nothing overwritten", file=sys.stderr)
        return 1
    except OSError as err:
        why = err.strerror or type(err).__name__
        print(f"wor-bridge: init cannot write into {folder}: {why}", file=sys.stderr)
        return 1
    print(f"wrote {target} and {keys} (the store key; back it up apart from the store)")
    print(f"key of client 'his' (shown once, not stored; give it to the GP system): {key}")
    print(f"next: edit the destination, then: wor-bridge serve --config {target}")
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    """``key new``: print a fresh key and its hash; ``key hash``: the hash of the key on stdin."""
    if args.action == "new":
        key = new_key()
        print(f"key        {key}")
        print(f"key_sha256 {hash_key(key)}")
        return 0
    try:
        key = read_key(sys.stdin.buffer.read())
    except ValueError as err:
        print(f"wor-bridge: key hash: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(hash_key(key))
    return 0


def add_commands(sub: Any) -> None:
    """Register ``init`` and ``key`` on the top-level subparsers."""
    init = sub.add_parser("init", help="write a starter configuration with a fresh client key")
    init.add_argument("dir", type=Path, help="folder for wor-bridge.toml (created if missing)")
    init.set_defaults(func=cmd_init)
    key = sub.add_parser("key", help="make a client key, or hash one for key_sha256")
    actions = key.add_subparsers(dest="action", required=True)
    actions.add_parser("new", help="print a fresh random key and its key_sha256")
    actions.add_parser("hash", help="print the key_sha256 of the key on stdin (one line)")
    key.set_defaults(func=cmd_key)
