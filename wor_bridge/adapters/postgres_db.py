"""The PostgreSQL side of the store's one SQL text: a psycopg 3 connection pool, statements
translated from the SQLite dialect the store's modules are written in, and ``LISTEN``.

Translation (``translate``, cached per statement): ``?`` placeholders become ``%s`` (a literal
``%`` becomes ``%%``; string literals are copied as they are), ``INSERT OR IGNORE`` becomes
``INSERT ... ON CONFLICT DO NOTHING`` (before any ``RETURNING``). Statements are bound on the
client (``psycopg.ClientCursor``), as SQLite binds them: a ``NULL`` parameter needs no type.
Rows are read by column name and by position, as ``sqlite3.Row`` is.

Connections come from a ``psycopg_pool.ConnectionPool`` (autocommit; each one checked when it is
lent, so a PostgreSQL restart costs the statements in flight, not the process). A read borrows a
connection for one statement; ``Database.write`` holds one for one transaction.
"""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final

import psycopg
import structlog
from psycopg_pool import ConnectionPool

log = structlog.get_logger("wor_bridge.adapters.postgres_db")

IDLE_CHECK_S: Final = 1.0
"""A pooled connection idle this long is checked before it is lent again."""
CHANNEL: Final = "wor_bridge_outbox"
"""The ``NOTIFY`` channel a trigger on ``outbox`` signals when a message is queued."""


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """The PostgreSQL text of one statement written for SQLite (see the module docstring)."""
    out: list[str] = []
    quoted = False
    for char in sql:
        if char == "'":
            quoted = not quoted
            out.append(char)
        elif char == "%":
            out.append("%%")
        elif char == "?" and not quoted:
            out.append("%s")
        else:
            out.append(char)
    text = "".join(out)
    if text.lstrip().upper().startswith("INSERT OR IGNORE INTO"):
        text = text.replace("INSERT OR IGNORE INTO", "INSERT INTO", 1)
        head, sep, tail = text.partition(" RETURNING ")
        text = f"{head} ON CONFLICT DO NOTHING{sep}{tail}"
    return text


class Row:
    """One result row, read as ``sqlite3.Row`` is: ``row["name"]``, ``row[0]``, unpacking."""

    __slots__ = ("_index", "_values")

    def __init__(self, index: dict[str, int], values: Sequence[Any]) -> None:
        self._index = index
        self._values = tuple(values)

    def __getitem__(self, key: str | int) -> Any:
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        """The column names, in order (so ``dict(row)`` works)."""
        return list(self._index)


class Result:
    """A statement's rows, fetched at once (so its connection can go back to the pool)."""

    def __init__(self, rows: list[Row], rowcount: int) -> None:
        self._rows = rows
        self._next = 0
        self.rowcount = rowcount

    def fetchone(self) -> Row | None:
        """The next row, or None."""
        if self._next >= len(self._rows):
            return None
        self._next += 1
        return self._rows[self._next - 1]

    def fetchall(self) -> list[Row]:
        """The rows not yet fetched."""
        rest = self._rows[self._next :]
        self._next = len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


def _run(conn: psycopg.Connection[Any], sql: str, parameters: Any) -> Result:
    cursor = conn.execute(translate(sql), parameters)
    if cursor.description is None:
        return Result([], cursor.rowcount)
    index = {column.name: i for i, column in enumerate(cursor.description)}
    return Result([Row(index, values) for values in cursor.fetchall()], cursor.rowcount)


class PgSession:
    """``SqlConnection`` on one borrowed connection (inside ``Database.write``'s transaction)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._conn = conn

    def execute(self, sql: str, parameters: Any = (), /) -> Result:
        """Run one statement."""
        return _run(self._conn, sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> Result:
        """Run one statement per parameter set; the rowcount is their sum."""
        total = 0
        for parameters in seq_of_parameters:
            total += _run(self._conn, sql, parameters).rowcount
        return Result([], total)


class PgReader:
    """``SqlConnection`` outside a transaction: each statement borrows a pooled connection."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self._pool = pool

    def execute(self, sql: str, parameters: Any = (), /) -> Result:
        """Run one statement in its own (autocommit) transaction."""
        with self._pool.connection() as conn:
            return _run(conn, sql, parameters)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Any], /) -> Result:
        """Run one statement per parameter set, in one transaction."""
        with self._pool.connection() as conn, conn.transaction():
            return PgSession(conn).executemany(sql, seq_of_parameters)


class Database:
    """A pool of connections to one PostgreSQL database (``dsn``: a libpq connection string)."""

    def __init__(self, dsn: str, *, pool_size: int = 10, timeout_s: float = 30.0) -> None:
        """Connect once first, so an unreachable database raises ``psycopg.OperationalError``
        at once (the DSN's ``connect_timeout``); then open the pool (``timeout_s``: the longest
        wait for a connection, at the start and when one is borrowed)."""
        psycopg.connect(dsn, autocommit=True).close()
        self.dsn = dsn
        self._last_used: weakref.WeakKeyDictionary[psycopg.Connection[Any], float] = (
            weakref.WeakKeyDictionary()
        )
        self.pool: ConnectionPool[Any] = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True, "cursor_factory": psycopg.ClientCursor},
            check=self._check,
            reset=self._returned,
            timeout=timeout_s,
            open=False,
            name="wor-bridge-store",
        )
        self.pool.open(wait=True, timeout=timeout_s)
        self.reader = PgReader(self.pool)

    def _returned(self, conn: psycopg.Connection[Any]) -> None:
        """Note when a connection went back to the pool (``reset`` callback)."""
        self._last_used[conn] = time.monotonic()

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        """Before lending a connection that was idle for ``IDLE_CHECK_S`` or more: an empty
        statement, so a connection broken by a database restart is replaced, not used (a busy
        connection is not checked: a round trip per borrow would cost more than the rare
        failure, which the caller sees as one failed statement)."""
        if time.monotonic() - self._last_used.get(conn, 0.0) >= IDLE_CHECK_S:
            ConnectionPool.check_connection(conn)

    @contextmanager
    def write(self) -> Iterator[PgSession]:
        """One transaction on one connection: committed when the block ends, else rolled back."""
        with self.pool.connection() as conn, conn.transaction():
            yield PgSession(conn)

    def close(self) -> None:
        """Close the pool (and every connection in it)."""
        self.pool.close()

    def listen(self, wake: Callable[[], None], stop: threading.Event, retry_s: float) -> None:
        """Call ``wake`` on every ``NOTIFY`` on ``CHANNEL`` until ``stop`` is set; reconnect
        after ``retry_s`` when the connection is lost (the caller keeps polling meanwhile)."""
        while not stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    wake()  # anything queued while not listening
                    while not stop.is_set():
                        for _ in conn.notifies(timeout=1.0, stop_after=1):
                            wake()
            except psycopg.Error as err:
                log.warning("store_listen_lost", error=type(err).__name__)
                stop.wait(retry_s)
