"""Group commit for SQLite: the write transactions of one process's threads share one commit.

SQLite admits one writer per file, and a ``synchronous = FULL`` commit waits for the disk (about
3 ms on the reference machine, docs/benchmarks.md "Group commit"). With one transaction per
write, threads that write at the same time queue on SQLite's busy handler, which sleeps them in
steps of 1, 2, 5, 10 ... ms, and each pays its own flush. Here they queue on a lock instead, and
a transaction is shared:

- the first thread begins ``BEGIN IMMEDIATE`` on the process's one write connection and runs
  its body inside a ``SAVEPOINT``;
- when its body ends while other threads wait for the lock, it hands the open transaction over
  and waits for the commit; the next thread runs its body in a savepoint of the same
  transaction, and so on, up to ``max_batch`` bodies;
- the last body's thread commits (one flush for the batch) and wakes the others.

Nothing is acknowledged before it is durable: a thread leaves ``transaction()`` only after the
commit that holds its body (or with that commit's error). A body that raises is rolled back to
its savepoint alone and its error raised in its own thread; the batch goes on. When the
transaction itself is lost (a failed ``COMMIT``, or an error after which SQLite rolled the whole
transaction back, such as ``SQLITE_FULL``), every body of the batch fails with that error.

A durable body never joins a batch that commits with ``synchronous = NORMAL`` (a lease, see
``SqliteOutboxStore._write``): that batch is committed first, since the setting cannot change
inside a transaction. Other processes writing the same file wait as before (``busy_timeout``).
"""

from __future__ import annotations

import copy
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

MAX_BATCH = 64
"""Bodies in one transaction at most: bounds the time a waiting thread's commit is delayed."""


class _Batch:
    """One shared transaction: how many bodies it holds, whether it commits durably, and how
    it ended (``done`` set; ``error`` the reason it was lost, or None)."""

    __slots__ = ("done", "durable", "error", "size")

    def __init__(self, durable: bool) -> None:
        self.size = 0
        self.durable = durable
        self.done = threading.Event()
        self.error: sqlite3.Error | None = None


class GroupCommit:
    """Write transactions of the threads of one process, grouped (see the module docstring).

    ``connect`` opens the write connection (autocommit mode, ``isolation_level=None``, and
    ``check_same_thread=False``: threads take turns on it under this object's lock); it is
    opened at the first write and again after ``drop()``. ``max_batch`` >= 1.
    """

    def __init__(
        self, connect: Callable[[], sqlite3.Connection], *, max_batch: int = MAX_BATCH
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._connect = connect
        self._max_batch = max_batch
        self._lock = threading.Lock()  # held by the thread whose body runs
        self._count = threading.Lock()  # guards _waiting
        self._waiting = 0
        self._conn: sqlite3.Connection | None = None
        self._batch: _Batch | None = None
        self.commits = 0
        """Transactions committed (a count for tests and benchmarks)."""

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """Run the block's statements in the shared transaction; return once they are
        committed (``synchronous = FULL`` when ``durable``, else ``NORMAL``).

        Raises the block's own exception (its statements undone, the batch unharmed), or the
        ``sqlite3.Error`` that lost the shared transaction (a copy per thread)."""
        with self._count:
            self._waiting += 1
        self._lock.acquire()
        with self._count:
            self._waiting -= 1
        try:
            batch = self._join(durable)
            conn = self._open()
        except BaseException:
            self._lock.release()
            raise
        try:
            conn.execute("SAVEPOINT body")
        except sqlite3.Error as err:
            self._lose(batch, err)
            raise
        try:
            yield conn
        except BaseException as err:
            self._undo(batch, conn, err)
            raise
        try:
            conn.execute("RELEASE body")
        except sqlite3.Error as err:
            self._lose(batch, err)
            raise
        self._finish(batch, wait=True)

    @property
    def waiting(self) -> int:
        """Threads waiting to run a body now (for tests and benchmarks)."""
        with self._count:
            return self._waiting

    def drop(self) -> None:
        """Close the write connection unless a transaction is open (the next write opens it)."""
        with self._lock:
            if self._conn is not None and self._batch is None:
                self._conn.close()
                self._conn = None

    # -- under self._lock ------------------------------------------------------------------

    def _join(self, durable: bool) -> _Batch:
        """The batch this body joins: the open one, or a new ``BEGIN IMMEDIATE``."""
        batch = self._batch
        if batch is not None and durable and not batch.durable:
            self._commit(batch)  # a lease batch cannot become durable: commit it first
            batch = None
        if batch is None:
            if self._conn is None:
                self._conn = self._connect()
            self._conn.execute("PRAGMA synchronous = " + ("FULL" if durable else "NORMAL"))
            self._conn.execute("BEGIN IMMEDIATE")
            batch = self._batch = _Batch(durable)
        batch.size += 1
        return batch

    def _open(self) -> sqlite3.Connection:
        """The write connection of the open batch."""
        if self._conn is None:  # _join opened it; a failed ROLLBACK closes it only in _end
            raise sqlite3.OperationalError("the write connection is closed")
        return self._conn

    def _undo(self, batch: _Batch, conn: sqlite3.Connection, err: BaseException) -> None:
        """The body raised ``err``: undo its statements alone (the batch goes on), or, when
        SQLite already rolled the whole transaction back (``SQLITE_FULL``, ``IOERR``...),
        fail the batch. Releases the lock; never raises (the caller raises ``err``)."""
        if not conn.in_transaction:
            self._lose(batch, err)
            return
        try:
            conn.execute("ROLLBACK TO body")
            conn.execute("RELEASE body")
        except sqlite3.Error as undo:
            self._lose(batch, undo)
            return
        with suppress(sqlite3.Error):  # the others' commit failed: they raise it, this ``err``
            self._finish(batch, wait=False)

    def _finish(self, batch: _Batch, *, wait: bool) -> None:
        """This body is done: hand the transaction over when threads wait for it and the batch
        has room, else commit it. Releases the lock; with ``wait``, waits for the commit and
        raises its error."""
        with self._count:
            hand_over = self._waiting > 0 and batch.size < self._max_batch
        if not hand_over:
            try:
                self._commit(batch)
            finally:
                self._lock.release()
            return
        self._lock.release()
        if wait:
            batch.done.wait()
            if batch.error is not None:
                raise copy.copy(batch.error) from batch.error

    def _commit(self, batch: _Batch) -> None:
        """``COMMIT`` the batch and wake its bodies; on failure, roll back and fail them all."""
        try:
            self._open().execute("COMMIT")
        except sqlite3.Error as err:
            self._end(batch, err)
            raise
        self.commits += 1
        self._end(batch, None)

    def _lose(self, batch: _Batch, err: BaseException) -> None:
        """The shared transaction cannot go on: roll it back, fail every body, release."""
        reason = err if isinstance(err, sqlite3.Error) else sqlite3.OperationalError(str(err))
        try:
            self._end(batch, reason)
        finally:
            self._lock.release()

    def _end(self, batch: _Batch, error: sqlite3.Error | None) -> None:
        """Close the batch (rolled back when ``error``) and wake the threads waiting for it."""
        if error is not None and self._conn is not None and self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                self._conn.close()  # unknown state: the next write opens a new connection
                self._conn = None
        self._batch = None
        batch.error = error
        batch.done.set()
