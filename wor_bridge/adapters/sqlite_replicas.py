"""What processes sharing one store coordinate by, on SQLite (a mixin of ``SqliteOutboxStore``):
nothing to coordinate, as one SQLite file serves one process at a time for these purposes. The
PostgreSQL store overrides both (``LISTEN``/``NOTIFY``, advisory locks)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext


def _nothing() -> None:
    """Stops nothing."""


class SqliteReplicas:
    """``subscribe`` and ``exclusive`` of the port, for one process."""

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        """SQLite cannot notify other processes: their dispatchers poll. A no-op."""
        return _nothing

    def exclusive(self, name: str) -> AbstractContextManager[bool]:
        """Always held (see the port)."""
        return nullcontext(True)
