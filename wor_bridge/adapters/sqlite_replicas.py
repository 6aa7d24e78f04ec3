"""What processes sharing one store coordinate by, on SQLite (a mixin of ``SqliteOutboxStore``):
nothing to coordinate, as one SQLite file serves one process at a time for these purposes. The
PostgreSQL store overrides both (``LISTEN``/``NOTIFY``, advisory locks)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import ClassVar


def _nothing() -> None:
    """Stops nothing."""


class SqliteReplicas:
    """``subscribe`` and ``exclusive`` of the port, for one process; and the SQL the engines
    differ in (the PostgreSQL store overrides these)."""

    _claim_lock: ClassVar[str] = ""
    """Appended to the claim's choice of rows (PostgreSQL: ``FOR UPDATE SKIP LOCKED``)."""
    _row_lock: ClassVar[str] = ""
    """Appended to a read that a transaction then changes (PostgreSQL: ``FOR UPDATE``)."""
    _claim_plan: ClassVar[tuple[str, ...]] = ()
    """Statements run in the claim's transaction before it (PostgreSQL: ``SET LOCAL`` planner
    settings that keep the claim on its index, whatever the statistics say)."""

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        """SQLite cannot notify other processes: their dispatchers poll. A no-op."""
        return _nothing

    def exclusive(self, name: str) -> AbstractContextManager[bool]:
        """Always held (see the port)."""
        return nullcontext(True)
