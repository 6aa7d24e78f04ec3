"""Reading the JSON files the configuration names: the local CodeSystems (and the JSON reader
``config.load_mapping`` uses). Every problem raises ``ConfigError`` naming the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wor_bridge.core import fhir
from wor_bridge.errors import ConfigError


def read_json(path: Path) -> Any:
    """The JSON document in ``path``; ConfigError when unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read JSON ({type(exc).__name__})") from None


def load_codesystem(path: Path) -> tuple[str, frozenset[str]]:
    """Validate a local CodeSystem with the R4 models; return its url and codes."""
    raw = read_json(path)
    issues = fhir.validate(raw, "CodeSystem") if isinstance(raw, dict) else []
    if not isinstance(raw, dict) or raw.get("resourceType") != "CodeSystem" or issues:
        detail = "; ".join(f"{i.expression}: {i.diagnostics}" for i in issues) or "not a CodeSystem"
        raise ConfigError(f"{path}: {detail}")
    codes: set[str] = set()
    stack = list(raw.get("concept") or [])
    while stack:
        concept = stack.pop()
        if concept["code"] in codes:
            raise ConfigError(f"{path}: duplicate code {concept['code']!r}")
        codes.add(concept["code"])
        stack.extend(concept.get("concept") or [])
    return str(raw["url"]), frozenset(codes)
