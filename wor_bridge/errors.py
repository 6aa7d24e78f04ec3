"""The whole exception tree of wor_bridge.

```text
WorBridgeError
├── ConfigError       bad settings or mapping file: raised at start-up, stops the program
├── RefusedError      the input cannot be taken; carries every issue found (never the first only)
│   ├── InboundError  the bytes are not what the contract expects (not JSON/XML, not FHIR,
│   │                 wrong resource type, unsafe XML, too large)  -> HTTP 400
│   └── MappingError  parsed FHIR, but not a referral the bridge may forward (Z68, WoR marker,
│                     consent, validity, routing)                   -> HTTP 422
├── DeliveryError     no usable response from the other side
│   └── TransportError  connection error, timeout or TLS failure (kind says which)
├── StoreError        the store cannot be opened, upgraded or backed up      -> CLI exit 1
│   └── StoreVersionError  the store's schema is newer than the program      -> no start
└── (delivery *results* are values, not exceptions: see core/delivery.py)
```

Every issue names a FHIRPath location and the expectation. Messages never contain a value taken
from the input: they say what was expected and what *kind* of thing was found (a length, a count,
a type), so an exception can be logged without leaking patient data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

IssueCode = Literal[
    "invalid",
    "structure",
    "required",
    "value",
    "business-rule",
    "not-supported",
    "security",
    "too-costly",
    "timeout",
    "transient",
    "exception",
    "informational",
    "not-found",
    "conflict",
    "forbidden",
    "login",
    "throttled",
    "code-invalid",
    "too-long",
    "invariant",
    "multiple-matches",
]


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem with an input: a FHIR OperationOutcome.issue without the patient's value."""

    code: IssueCode
    expression: str
    diagnostics: str
    severity: Literal["fatal", "error", "warning", "information"] = "error"


class WorBridgeError(Exception):
    """Base of every error wor_bridge raises on purpose."""


class ConfigError(WorBridgeError):
    """The configuration or a mapping file is broken; the program must not start."""


class OperationError(WorBridgeError):
    """A command cannot do its work for a reason outside the input (no store at the configured
    path, the port is taken): the CLI prints the message as one line and exits 1."""


class RefusedError(WorBridgeError):
    """An input was refused; ``issues`` lists every problem found."""

    def __init__(self, issues: list[Issue]) -> None:
        if not issues:
            raise ValueError("a refusal needs at least one issue")
        self.issues: tuple[Issue, ...] = tuple(issues)
        first = issues[0]
        more = f" (+{len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(f"{first.expression}: {first.diagnostics}{more}")


class InboundError(RefusedError):
    """The bytes are not a FHIR R4 ServiceRequest or Bundle we can read."""


class MappingError(RefusedError):
    """The referral was read but may not be forwarded (gates, routing).

    ``consent_refused_for``: when the consent gate refused and the referral's own identifier
    (``ServiceRequest.identifier[0]``) was readable, that identifier as (normalised system,
    value), so that an earlier referral with it can be withdrawn (issue 10 section 5).
    """

    def __init__(
        self, issues: list[Issue], *, consent_refused_for: tuple[str, str] | None = None
    ) -> None:
        super().__init__(issues)
        self.consent_refused_for = consent_refused_for


class DeliveryError(WorBridgeError):
    """No usable response from the other side (connection error, timeout)."""


class TransportError(DeliveryError):
    """No usable HTTP response: ``kind`` is ``timeout``, ``connection``, ``tls`` or ``auth``."""

    def __init__(self, kind: str, detail: str = "") -> None:
        self.kind = kind
        super().__init__(f"{kind}{': ' + detail if detail else ''}")


class StoreError(WorBridgeError):
    """The store cannot be opened or upgraded (a migration failed, a backup could not be made);
    the message names the store file and the step, never a stored value."""


class StoreVersionError(StoreError):
    """The store's schema version is newer than this program knows: it must not start."""
