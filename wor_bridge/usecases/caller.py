"""Who calls a use case: the authenticated client, its source system and on whose behalf."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: the authenticated client, its source system and on whose behalf."""

    client_id: str
    source_system: str | None = None
    on_behalf_of: str = ""
