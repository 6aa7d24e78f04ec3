"""Where configuration values come from besides the TOML file: the environment, secret files, and
the one rule for relative paths.

Applied by ``config.load_app`` to the parsed TOML (a dict) before any validation, in this order:

1. **Environment**: ``WOR_BRIDGE_<KEY>__<KEY>...=value`` replaces (or adds) one value. Keys are
   matched case-insensitively; inside an array of tables (``[[destinations]]``, ``[[clients]]``,
   ``[[webhooks]]``, ...) a key is the entry's index (``WOR_BRIDGE_DESTINATIONS__0__ENDPOINT``)
   or its ``id`` with ``-`` written as ``_`` (``WOR_BRIDGE_CLIENTS__HIS_EXAMPLE__KEY_SHA256``).
   A value that starts with ``[``, ``{`` or ``"`` is read as JSON, anything else is the text
   itself (pydantic converts numbers and booleans). Variables without ``__`` whose first key is
   not a section of the configuration (``WOR_BRIDGE_FAULT``) are not configuration and are left
   alone; one with ``__`` and an unknown section (``WOR_BRIDGE_SERVCE__PORT``) is an error, so a
   misspelt override is never silently ignored.
2. **Secret files**: every secret ``S`` (``SECRET_KEYS``) may be given as ``S_file``, the path of
   a file holding it (one line; one trailing line break is removed). Setting both is an error.
3. **Paths** (``PATH_KEYS``): every relative path, wherever it is in the file, is resolved against
   the folder of the configuration file; files are checked to be readable (``FILE_KEYS``; the
   store's ``key_file`` is read and checked by ``bootstrap.sealer_for``).

Every problem raises ``ConfigError`` naming the file, the setting or variable, and what was
expected; never a secret's value.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from wor_bridge.errors import ConfigError

ENV_PREFIX: Final = "WOR_BRIDGE_"
SECRET_KEYS: Final = frozenset({"token", "client_secret", "secret", "token_key", "key_sha256"})
"""Settings that hold a secret (destination and directory tokens and OAuth client secrets,
webhook secrets, the pull token key, client key hashes): each may come from ``<key>_file``."""
FILE_KEYS: Final = frozenset(
    {
        "cert_file",
        "key_file",
        "ca_file",
        "client_ca_file",
        "jwt_public_key_file",
        "private_key_file",
    }
)
"""Settings naming a file that must be readable at start-up (TLS material, public keys, the
Twiin signing key ``auth.private_key_file``)."""
PATH_KEYS: Final = FILE_KEYS | {"mappings_dir", "path"}
"""Every setting that is a path: resolved against the configuration file's folder."""


def prepare(raw: dict[str, Any], source: Path, sections: frozenset[str]) -> dict[str, Any]:
    """``raw`` (the TOML of ``source``) with environment overrides, secret files and paths applied.

    ``sections`` are the configuration's top-level keys (which environment variables are
    configuration). Raises ``ConfigError``.
    """
    walked: dict[str, Any] = _walk(apply_environment(raw, os.environ, sections, source), source, ())
    return walked


def apply_environment(
    raw: dict[str, Any], environ: Mapping[str, str], sections: frozenset[str], source: Path
) -> dict[str, Any]:
    """``raw`` with every ``WOR_BRIDGE_...`` override of ``environ`` applied (see the module)."""
    result: dict[str, Any] = json.loads(json.dumps(raw))  # a deep copy; TOML values are JSON-like
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        keys = name[len(ENV_PREFIX) :].lower().split("__")
        if keys[0] not in sections:
            if len(keys) > 1:  # the configuration's form, a section the file cannot have
                raise ConfigError(
                    f"{source}: environment variable {name}: {keys[0]!r} is not a section of "
                    f"the configuration (expected one of {', '.join(sorted(sections))})"
                )
            continue
        if any(not k for k in keys):
            raise ConfigError(f"{source}: environment variable {name}: an empty key")
        _set(result, keys, _env_value(environ[name], name, source), name, source)
    return result


def _env_value(text: str, name: str, source: Path) -> Any:
    if text[:1] in ("[", "{", '"'):
        try:
            return json.loads(text)
        except ValueError:
            raise ConfigError(
                f'{source}: environment variable {name}: a value starting with [, {{ or " '
                "must be JSON"
            ) from None
    return text


def _set(
    node: dict[str, Any] | list[Any], keys: list[str], value: Any, name: str, source: Path
) -> None:
    key, rest = keys[0], keys[1:]
    slot: str | int = _index(node, key, name, source) if isinstance(node, list) else key
    if not rest:
        node[slot] = value  # type: ignore[index] # an int for a list, a str for a table
        return
    if isinstance(node, dict) and key not in node:
        node[key] = {}
    inner = node[slot]  # type: ignore[index]
    if not isinstance(inner, dict | list):
        raise ConfigError(
            f"{source}: environment variable {name}: {key} is a single value, not a table"
        )
    _set(inner, rest, value, name, source)


def _index(items: list[Any], key: str, name: str, source: Path) -> int:
    """The entry of an array of tables a key names: its index, or its ``id`` (``-`` as ``_``)."""
    if key.isdigit():
        if int(key) >= len(items):
            raise ConfigError(
                f"{source}: environment variable {name}: index {key} is beyond the "
                f"{len(items)} entries of the file"
            )
        return int(key)
    found = [
        n
        for n, item in enumerate(items)
        if isinstance(item, dict) and str(item.get("id", "")).lower().replace("-", "_") == key
    ]
    if len(found) != 1:
        what = "no entry" if not found else "more than one entry"
        raise ConfigError(
            f"{source}: environment variable {name}: {what} with the id {key!r} "
            "(expected an index or the id of exactly one entry, - written as _)"
        )
    return found[0]


def _walk(node: Any, source: Path, where: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_walk(item, source, (*where, str(n))) for n, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        setting = ".".join((*where, key))
        if key.endswith("_file") and key[: -len("_file")] in SECRET_KEYS:
            secret = key[: -len("_file")]
            if secret in node:
                raise ConfigError(f"{source}: {setting}: set {secret} or {key}, not both")
            out[secret] = read_secret(_resolve(value, source, setting), setting, source)
        elif key in PATH_KEYS and isinstance(value, str):
            out[key] = str(_resolve(value, source, setting))
            if key in FILE_KEYS and where != ("store",):  # the store's key file: sealer_for
                _check_readable(Path(out[key]), setting, source)
        else:
            out[key] = _walk(value, source, (*where, key))
    return out


def _resolve(value: Any, source: Path, setting: str) -> Path:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source}: {setting}: expected a path (a non-empty string)")
    path = Path(value).expanduser()
    return path if path.is_absolute() else (source.parent / path).resolve()


def _check_readable(path: Path, setting: str, source: Path) -> None:
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{source}: {setting}: cannot read {path} ({type(exc).__name__})"
        ) from None


def read_secret(path: Path, setting: str, source: Path) -> str:
    """The secret in ``path``: one line, one trailing line break removed (never printed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"{source}: {setting}: cannot read {path} ({type(exc).__name__})"
        ) from None
    text = text.removesuffix("\n").removesuffix("\r")
    if not text or "\n" in text or "\r" in text:
        raise ConfigError(f"{source}: {setting}: {path} must hold one non-empty line")
    return text


def check_unique_keys(clients: list[tuple[str, str | None]], source: Path) -> None:
    """Refuse two clients with the same key hash (``(id, key_sha256)`` pairs): a key would be
    both clients at once. Names the clients, never the hash."""
    seen: dict[str, str] = {}
    for client_id, digest in clients:
        if digest is None:
            continue
        if digest in seen:
            raise ConfigError(
                f"{source}: clients {seen[digest]} and {client_id} have the same key_sha256 "
                "(every client needs its own key: wor-bridge key new)"
            )
        seen[digest] = client_id
