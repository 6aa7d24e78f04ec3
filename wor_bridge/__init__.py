"""wor_bridge: Welzijn op Recept referrals from Dutch GP systems to welfare organisations (FHIR R4).

Library entry points::

    import wor_bridge
    settings = wor_bridge.load_settings()               # the shipped example configuration
    bundle = wor_bridge.map_referral(data, "application/fhir+json", settings)

``map_referral`` returns the FHIR R4 transaction Bundle (a FHIR JSON dict) for the destination the
routing table chose. It raises ``InboundError`` (not readable FHIR; HTTP 400) or ``MappingError``
(not forwardable; HTTP 422), both ``RefusedError`` subclasses carrying every ``Issue``; turn them
into an OperationOutcome with ``operation_outcome(err.issues)``. A broken configuration raises
``ConfigError`` from ``load_settings``.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from wor_bridge.config import load as _load
from wor_bridge.core.fhir import JsonDict, canonical_json
from wor_bridge.core.outcome import operation_outcome
from wor_bridge.core.settings import Settings
from wor_bridge.core.translation import Checked, Translated, check, translate
from wor_bridge.errors import (
    ConfigError,
    DeliveryError,
    InboundError,
    Issue,
    MappingError,
    RefusedError,
    WorBridgeError,
)

__all__ = [
    "Checked",
    "ConfigError",
    "DeliveryError",
    "InboundError",
    "Issue",
    "MappingError",
    "RefusedError",
    "Settings",
    "Translated",
    "WorBridgeError",
    "canonical_json",
    "check",
    "load_settings",
    "map_referral",
    "operation_outcome",
    "translate",
    "validate_referral",
]


@cache
def _default_settings() -> Settings:
    return _load(None)


def load_settings(path: str | Path | None = None) -> Settings:
    """Load a TOML configuration (default: the shipped example in ``config/``)."""
    return _load(Path(path) if path is not None else None)


def map_referral(
    data: bytes, content_type: str | None = None, settings: Settings | None = None
) -> JsonDict:
    """Map a pushed Z68 referral (FHIR R4 JSON/XML bytes) to the destination's transaction Bundle.

    ``content_type`` is the HTTP media type; ``None`` detects JSON or XML from the content.
    """
    return translate(data, content_type, settings or _default_settings()).bundle


def validate_referral(
    data: bytes, content_type: str | None = None, settings: Settings | None = None
) -> Checked:
    """Run the gates and routing only; raises like ``map_referral``."""
    return check(data, content_type, settings or _default_settings())
