"""Concurrency decided by PostgreSQL: two store objects with pools of their own (as two replicas
have) on one database, racing on purpose with a barrier; every race has one winner."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.pg import empty
from tests.test_store_contract import T0, at, record, referral
from wor_bridge.adapters.postgres_store import PostgresOutboxStore
from wor_bridge.adapters.sealing import PLAIN
from wor_bridge.adapters.sqlite_rows import insert_message
from wor_bridge.records import AuditEvent, NewMessage


@pytest.fixture
def pair(pg_dsn: str) -> Iterator[tuple[PostgresOutboxStore, PostgresOutboxStore]]:
    """Two stores on one emptied database, as two replicas see it."""
    empty(pg_dsn)
    first = PostgresOutboxStore(pg_dsn, pool_size=4)
    second = PostgresOutboxStore(pg_dsn, pool_size=4)
    yield first, second
    first.close()
    second.close()


def race(*calls: Callable[[], Any]) -> list[Any]:
    """Run the calls in threads released at one moment; their results in order."""
    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def audit(outcome: str = "accepted") -> AuditEvent:
    """An intake audit record without patient data."""
    return AuditEvent("intake", "C", outcome, "client", "agb|1", "his", "p", "Task", "t", "")


def test_the_same_referral_stored_at_once_by_two_replicas_is_one_referral(
    pair: tuple[PostgresOutboxStore, PostgresOutboxStore],
) -> None:
    """Each referral added by both stores at one moment: one created, one duplicate, one entry."""
    first, second = pair
    for n in range(20):
        added = race(
            lambda n=n: first.add_referral(referral(n), T0, audit()),
            lambda n=n: second.add_referral(referral(n), T0, audit()),
        )
        assert sorted(a.created for a in added) == [False, True]
        assert (added[0].task_id, added[0].outbox_id) == (added[1].task_id, added[1].outbox_id)
    assert first.stats(T0).pending == 20
    outcomes = [r["outcome"] for r in first.audit_records()]
    assert outcomes.count("accepted") == outcomes.count("duplicate") == 20


def test_a_deadline_alert_and_a_jti_are_taken_once_across_replicas(
    pair: tuple[PostgresOutboxStore, PostgresOutboxStore],
) -> None:
    """``mark_alerted`` and ``use_once`` raced by two stores: exactly one True each time."""
    first, second = pair
    for n in range(10):
        first.add_referral(referral(n), T0)
        message = NewMessage(f"alert|task-{n}", f"task-{n}", "gp-record", b"{}")
        alerted = race(
            lambda n=n, m=message: first.mark_alerted(f"task-{n}", m, audit=audit(), now=at(1)),
            lambda n=n, m=message: second.mark_alerted(f"task-{n}", m, audit=audit(), now=at(1)),
        )
        assert sorted(alerted) == [False, True]
        used = race(
            lambda n=n: first.use_once(f"jti|{n}", at(60), T0),
            lambda n=n: second.use_once(f"jti|{n}", at(60), T0),
        )
        assert sorted(used) == [False, True]
    assert (
        len([e for e in first.list_entries("pending", 100) if e.destination == "gp-record"]) == 10
    )


def test_a_poll_lock_is_held_by_one_replica_at_a_time(
    pair: tuple[PostgresOutboxStore, PostgresOutboxStore],
) -> None:
    """While one store holds ``exclusive(name)`` the other is told no at once; then yes."""
    first, second = pair
    with first.exclusive("poll|welzijn-a") as held:
        assert held is True
        with second.exclusive("poll|welzijn-a") as other:
            assert other is False
        with second.exclusive("poll|welzijn-b") as elsewhere:
            assert elsewhere is True
    with second.exclusive("poll|welzijn-a") as after:
        assert after is True


def test_claims_by_two_replicas_are_disjoint_and_keep_per_task_order(
    pair: tuple[PostgresOutboxStore, PostgresOutboxStore],
) -> None:
    """Workers on both stores drain three messages per Task: each claimed once, in order."""
    first, second = pair
    for n in range(20):
        first.add_referral(referral(n), T0)
        for k in (1, 2):
            later = NewMessage(f"msg|{n}|{k}", f"task-{n}", "welzijn-a", b"{}")
            with first._write() as conn:  # follow-up messages, as an amendment queues them
                insert_message(conn, PLAIN, later, T0)
    claimed: list[tuple[str, int]] = []
    lock = threading.Lock()

    def drain(store: PostgresOutboxStore, owner: str) -> None:
        while batch := store.claim_due(owner, at(1), 600, 4):
            with lock:
                claimed.extend((e.task_id, e.id) for e in batch)
            for entry in batch:
                assert record(store, entry.id, owner, at(1), "delivered")

    race(*(lambda s=s, i=i: drain(s, f"w{i}") for i, s in enumerate((first, second) * 2)))
    ids = [entry_id for _, entry_id in claimed]
    assert len(ids) == len(set(ids)) == 60
    for n in range(20):
        mine = [entry_id for task, entry_id in claimed if task == f"task-{n}"]
        assert mine == sorted(mine)


def test_a_message_queued_by_one_replica_wakes_the_other(
    pair: tuple[PostgresOutboxStore, PostgresOutboxStore],
) -> None:
    """``subscribe`` on one store is called when the other queues a message (NOTIFY)."""
    first, second = pair
    woken = threading.Event()
    stop = first.subscribe(woken.set, retry_s=0.2)
    try:
        assert woken.wait(10)  # once when listening starts
        woken.clear()
        second.add_referral(referral(1), T0)
        assert woken.wait(10)
    finally:
        stop()


def test_the_write_probe_tells_a_writable_database_from_a_read_only_one(
    pair: tuple[PostgresOutboxStore, PostgresOutboxStore],
) -> None:
    """``check_writable``: None while commits work; ``store-not-writable`` once the database
    only accepts read-only transactions (as a standby does)."""
    first, _ = pair
    assert first.check_writable() is None
    assert first.check_writable(probe=False) is None
    name = first.db.reader.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
    first.db.reader.execute(f"ALTER DATABASE {name} SET default_transaction_read_only = on")
    try:
        reader = PostgresOutboxStore(first.db.dsn, pool_size=1, migrate=False)
        assert reader.check_writable() == "store-not-writable"
        reader.close()
    finally:
        first.db.reader.execute(f"ALTER DATABASE {name} RESET default_transaction_read_only")
