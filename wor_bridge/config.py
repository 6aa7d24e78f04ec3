"""Load and check the configuration (TOML) and the mapping files; fail at start-up, not at 3 a.m.

Layout (paths in the TOML are relative to the TOML file)::

    config/wor-bridge.toml          settings, destinations, routing
    mappings/destinations/*.json    one declarative mapping per destination kind
    mappings/codesystems/*.json     the project's local FHIR R4 CodeSystems

Every problem raises ``ConfigError`` naming the file and the location inside it.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Final

import structlog
from pydantic import ValidationError

from wor_bridge.core import fhir
from wor_bridge.core.settings import DEFAULT_PATIENT_RULES, MappingFile, Settings
from wor_bridge.core.transform import REGISTRY
from wor_bridge.errors import ConfigError

REPO_ROOT: Final = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG: Final = REPO_ROOT / "config" / "wor-bridge.toml"
_DEFAULT_TARGETS: Final = frozenset(r.target for r in DEFAULT_PATIENT_RULES)

log = structlog.get_logger("wor_bridge.config")


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "(top)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read JSON ({type(exc).__name__})") from None


def load_mapping(path: Path) -> MappingFile:
    """Read and check one mapping file (transforms, targets, sources, duplicates)."""
    try:
        mapping = MappingFile.model_validate(_read_json(path))
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
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


def load_codesystem(path: Path) -> tuple[str, frozenset[str]]:
    """Validate a local CodeSystem with the R4 models; return its url and codes."""
    raw = _read_json(path)
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


def load(path: Path | None = None) -> Settings:
    """Load the TOML configuration at ``path`` (default: the shipped example) with its mappings."""
    path = (path or DEFAULT_CONFIG).resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    mappings_dir = (path.parent / str(raw.pop("mappings_dir", "../mappings"))).resolve()
    if not mappings_dir.is_dir():
        raise ConfigError(f"{path}: mappings_dir {mappings_dir} is not a directory")
    mappings: dict[str, MappingFile] = {}
    for file in sorted((mappings_dir / "destinations").glob("*.json")):
        mapping = load_mapping(file)
        if mapping.id in mappings:
            raise ConfigError(f"{file}: mapping id {mapping.id!r} defined twice")
        mappings[mapping.id] = mapping
    codes: dict[str, frozenset[str]] = {}
    for file in sorted((mappings_dir / "codesystems").glob("*.json")):
        url, found = load_codesystem(file)
        codes[url] = found
    try:
        settings = Settings.model_validate({**raw, "mappings": mappings, "codes": codes})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
    for mapping in mappings.values():
        for rule in mapping.patient:
            if rule.target not in _DEFAULT_TARGETS:
                log.info(
                    "mapping_extra_field_enabled",
                    mapping=mapping.ref,
                    target=rule.target,
                    transform=rule.transform,
                )
    return settings
