"""Who calls a use case (client, source system, on whose behalf) and which Tasks it may touch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls: the authenticated client, its source system and on whose behalf.

    ``destination`` makes the caller welfare-side (that organisation's Tasks only); ``admin``
    callers see every Task. A caller with none of ``admin``, ``source_system`` and
    ``destination`` sees nothing: access is denied by default.
    """

    client_id: str
    source_system: str | None = None
    on_behalf_of: str = ""
    destination: str | None = None
    admin: bool = False


def may_access(
    caller: Caller, destination: str | None, task_destination: str, task_source_system: str
) -> bool:
    """Whether ``caller`` (acting for ``destination`` when welfare-side) may read or change a
    Task routed to ``task_destination`` from ``task_source_system``. Deny by default."""
    if caller.admin:
        return True
    acting_for = destination if destination is not None else caller.destination
    if acting_for is not None:
        return acting_for == task_destination
    if caller.source_system is not None:
        return caller.source_system == task_source_system
    return False
