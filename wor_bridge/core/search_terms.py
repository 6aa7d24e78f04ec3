"""The terms a Task search is stored as (shared by ``core.search``, the port and the adapters)."""

from __future__ import annotations

from typing import Final

COLUMNS: Final = frozenset({"id", "his_system", "his_value", "focus", "owner", "status"})
"""What a search compares: the Task id, the HIS referral number (system, value), the
ServiceRequest id, the welfare Organization id, and the status as GET returns it
(``core.search.task_status``)."""

Alternative = tuple[tuple[str, str], ...]
"""Column equalities that all hold."""
