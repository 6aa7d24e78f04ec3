"""Reading the JSON files the configuration names: the mapping files and the local CodeSystems.
Every problem raises ``ConfigError`` naming the file and the location inside it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from wor_bridge.core import fhir
from wor_bridge.core.settings import MappingFile
from wor_bridge.core.transform import REGISTRY
from wor_bridge.errors import ConfigError


def describe(exc: ValidationError) -> str:
    """A pydantic error as ``location: message; ...`` (never the input values)."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "(top)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


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


def load_mapping(path: Path) -> MappingFile:
    """Read and check one mapping file (transforms, targets, sources, duplicates)."""
    try:
        mapping = MappingFile.model_validate(read_json(path))
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe(exc)}") from None
    patient_elements = fhir.element_names("Patient")
    seen: set[str] = set()
    for n, rule in enumerate(mapping.patient):
        where = f"{path}: patient[{n}]"
        spec = REGISTRY.get(rule.transform)
        if spec is None:
            raise ConfigError(
                f"{where}: unknown transform {rule.transform!r} (known: {sorted(REGISTRY)})"
            )
        if spec.fixed_target is not None and rule.target != spec.fixed_target:
            raise ConfigError(
                f"{where}: transform {rule.transform} writes {spec.fixed_target}, not {rule.target}"
            )
        for field in ("target", "source"):
            name = getattr(rule, field)
            if name not in patient_elements or name.startswith("_"):
                raise ConfigError(f"{where}: {field} {name!r} is not an element of FHIR R4 Patient")
        if rule.target in seen:
            raise ConfigError(f"{where}: duplicate target {rule.target!r}")
        seen.add(rule.target)
    return mapping
