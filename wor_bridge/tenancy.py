"""Which clients the configuration may hold: every client speaks for exactly one side.

Checked at start-up (``config.load_app``); a client that breaks it stops the program.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wor_bridge.config import ClientSettings


def tenancy_problem(client: ClientSettings) -> str | None:
    """Why a client's tenancy is not configured (None when it is): fail closed at start-up.

    Every client that is not ``admin`` speaks for exactly one GP system (``source_system``) or
    one welfare organisation (``destination``); a client bound to neither would otherwise see
    every Task, and one bound to both would be on two sides at once. A client whose only scope
    is ``metrics:read`` (a Prometheus scraper) sees no Task and is bound to nothing.
    """
    if client.source_system is not None and client.destination is not None:
        return "set source_system (GP side) or destination (welfare side), not both"
    if "admin" in client.scopes or set(client.scopes) == {"metrics:read"}:
        return None
    if client.practice is not None or client.municipality is not None:
        if set(client.scopes) != {"report:read"}:
            return "a practice or municipality client may only have the scope report:read"
        return None
    if client.source_system is None and client.destination is None:
        return (
            "must be admin or bound to a source_system (GP side) or a destination "
            "(welfare side); a client bound to neither would see every Task"
        )
    return None
