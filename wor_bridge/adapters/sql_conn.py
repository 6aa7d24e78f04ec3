"""What the store's SQL modules need of a database connection, on either engine.

``sqlite3.Connection`` has this shape as it is; ``postgres_db.PgSession`` gives it on a
PostgreSQL connection (``?`` placeholders, rows read by name or position). The store's modules
(``sqlite_store`` and its mixins) are typed against these Protocols, so one SQL text serves
both engines; where the engines differ the store class says so (``SqliteOutboxStore`` class
attributes such as ``_claim_lock``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol


class SqlCursor(Protocol):
    """The result of one statement: rows (by name and by position) and the affected count."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class SqlConnection(Protocol):
    """A connection (or one transaction on it) that runs statements with ``?`` placeholders."""

    def execute(self, sql: str, parameters: Any = (), /) -> SqlCursor: ...

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> SqlCursor: ...
