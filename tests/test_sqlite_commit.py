"""Group commit on SQLite (``adapters/sqlite_commit.py``): bodies of several threads share one
transaction, each undone alone when it fails, all failed when the commit fails, none returned
before its commit; and the SQLite store's writes go through it."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from wor_bridge.adapters.sqlite_commit import GroupCommit
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore

_SCHEMA = (
    "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
    "CREATE TABLE item (id INTEGER PRIMARY KEY, parent INTEGER"
    " REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[GroupCommit, Callable[[], set[int]]]]:
    """A GroupCommit on a new WAL file, and a reader of the committed item ids."""
    path = tmp_path / "group.sqlite"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.executescript(_SCHEMA)
    setup.close()

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def committed() -> set[int]:
        reader = sqlite3.connect(path)
        try:
            return {int(r[0]) for r in reader.execute("SELECT id FROM item")}
        finally:
            reader.close()

    group = GroupCommit(connect)
    yield group, committed
    group.drop()


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in 10 s")
        time.sleep(0.001)


def _run(bodies: list[Callable[[], None]]) -> list[BaseException | None]:
    """Start one thread per body, in order, each once the previous waits or runs; join."""
    results: list[BaseException | None] = [None] * len(bodies)

    def run(i: int) -> None:
        try:
            bodies[i]()
        except BaseException as err:
            results[i] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    return results


def test_threads_writing_at_once_share_commits_and_lose_nothing(db: tuple) -> None:
    """Eight threads of 25 writes each: every row committed, in far fewer commits than writes."""
    group, committed = db

    def writer(k: int) -> Callable[[], None]:
        def body() -> None:
            for i in range(25):
                with group.transaction() as conn:
                    conn.execute("INSERT INTO item (id) VALUES (?)", (k * 100 + i,))
                    time.sleep(0.001)  # holds the turn: the others queue behind it

        return body

    assert _run([writer(k) for k in range(8)]) == [None] * 8
    assert committed() == {k * 100 + i for k in range(8) for i in range(25)}
    assert group.commits < 200 / 2


def _hold_until_waiting(
    group: GroupCommit, n: int, row: int, started: threading.Event
) -> Callable[[], None]:
    """A body that inserts ``row``, sets ``started`` and keeps the turn until ``n`` threads
    wait behind it."""

    def body() -> None:
        with group.transaction() as conn:
            conn.execute("INSERT INTO item (id) VALUES (?)", (row,))
            started.set()
            _until(lambda: group.waiting >= n)

    return body


def test_a_failing_body_is_undone_alone_and_the_batch_commits(db: tuple) -> None:
    """Three bodies in one transaction, the middle one raises: only its row is missing."""
    group, committed = db

    started = threading.Event()

    def failing() -> None:
        started.wait(10)  # the holder's turn is taken
        with group.transaction() as conn:
            conn.execute("INSERT INTO item (id) VALUES (2)")
            raise ValueError("body fails")

    def last() -> None:
        started.wait(10)
        with group.transaction() as conn:
            conn.execute("INSERT INTO item (id) VALUES (3)")

    results = _run([_hold_until_waiting(group, 2, 1, started), failing, last])
    assert results[0] is None
    assert results[2] is None
    assert isinstance(results[1], ValueError)
    assert committed() == {1, 3}
    assert group.commits == 1


def test_a_failed_commit_fails_every_body_of_its_batch(db: tuple) -> None:
    """A deferred foreign key breaks the shared COMMIT: both bodies raise, neither row stays."""
    group, committed = db

    started = threading.Event()

    def orphan() -> None:
        started.wait(10)
        with group.transaction() as conn:
            conn.execute("INSERT INTO item (id, parent) VALUES (2, 99)")  # no parent 99

    results = _run([_hold_until_waiting(group, 1, 1, started), orphan])
    assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
    assert committed() == set()
    with group.transaction() as conn:  # the next transaction starts clean
        conn.execute("INSERT INTO item (id) VALUES (7)")
    assert committed() == {7}


def test_no_body_returns_before_its_commit(db: tuple) -> None:
    """Each thread, on leaving its block, finds its own row committed (seen by another reader)."""
    group, committed = db
    seen: dict[int, bool] = {}

    def writer(row: int) -> Callable[[], None]:
        def body() -> None:
            with group.transaction() as conn:
                conn.execute("INSERT INTO item (id) VALUES (?)", (row,))
                time.sleep(0.002)
            seen[row] = row in committed()

        return body

    assert _run([writer(r) for r in range(1, 7)]) == [None] * 6
    assert seen == dict.fromkeys(range(1, 7), True)


def test_a_durable_body_never_joins_a_lease_batch(db: tuple) -> None:
    """A durable body queued behind a non-durable one runs in its own synchronous=FULL commit."""
    group, committed = db
    levels: list[int] = []

    def lease() -> None:
        with group.transaction(durable=False) as conn:
            levels.append(int(conn.execute("PRAGMA synchronous").fetchone()[0]))
            conn.execute("INSERT INTO item (id) VALUES (1)")
            _until(lambda: group.waiting >= 1)

    def durable() -> None:
        _until(lambda: levels != [])
        with group.transaction() as conn:
            levels.append(int(conn.execute("PRAGMA synchronous").fetchone()[0]))
            conn.execute("INSERT INTO item (id) VALUES (2)")

    assert _run([lease, durable]) == [None, None]
    assert levels == [1, 2]  # NORMAL, then FULL
    assert group.commits == 2
    assert committed() == {1, 2}


def test_store_write_inside_a_write_is_refused_and_its_reads_see_it(tmp_path: Path) -> None:
    """In the SQLite store a nested write raises RuntimeError; a read inside a write sees it."""
    store = SqliteOutboxStore(tmp_path / "store.sqlite")
    try:
        with store._write() as conn:
            conn.execute("INSERT INTO ready_probe (id, at) VALUES (1, 12345.0)")
            read = store._conn().execute("SELECT at FROM ready_probe WHERE id = 1").fetchone()
            assert read[0] == 12345.0
            with pytest.raises(RuntimeError), store._write():
                pass
    finally:
        store.close()
