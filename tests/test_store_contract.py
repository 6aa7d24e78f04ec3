"""The OutboxStore contract, held against SqliteOutboxStore (a real file) and MemoryOutboxStore."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import sealed
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.core import retention
from wor_bridge.core.outbox import State
from wor_bridge.ports import OutboxStore
from wor_bridge.records import (
    AuditEvent,
    NewMessage,
    NewReferral,
    PurgeCounts,
    QueueStats,
    TaskUpdate,
)

T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    """``seconds`` after T0."""
    return T0 + dt.timedelta(seconds=seconds)


def referral(n: int, *, task: str | None = None, destination: str = "welzijn-a") -> NewReferral:
    """A synthetic referral number ``n`` (no patient data: opaque markers only)."""
    return NewReferral(
        task_id=task or f"task-{n}",
        idempotency_key=f"his|ref-{n}|{destination}",
        source_system="his",
        destination=destination,
        mapping="wor-r4-default@1.0.0",
        patient_id=f"urn:uuid:patient-{n}",
        responsible="agb|01000001",
        client_id="client",
        bundle=f'{{"resourceType":"Bundle","n":{n}}}'.encode(),
    )


def record(
    store: OutboxStore,
    entry_id: int,
    owner: str,
    now: dt.datetime,
    state: State,
    *,
    next_at: dt.datetime | None = None,
    status: int | None = None,
    error: str | None = None,
) -> bool:
    """``record_attempt`` with the arguments a test does not care about left out."""
    return store.record_attempt(
        entry_id, owner, now=now, state=state, next_attempt_at=next_at, status=status, error=error
    )


@pytest.fixture(params=["sqlite", "sqlite-sealed", "memory", "postgresql", "postgresql-sealed"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OutboxStore]:
    """A fresh, empty store of each kind."""
    impl: SqliteOutboxStore | MemoryOutboxStore = (
        SqliteOutboxStore(tmp_path / "outbox.sqlite", sealer=sealed.sealer())
        if request.param == "sqlite-sealed"
        else SqliteOutboxStore(tmp_path / "outbox.sqlite")
        if request.param == "sqlite"
        else MemoryOutboxStore()
        if request.param == "memory"
        else request.getfixturevalue("pg_store")
        if request.param == "postgresql"
        else request.getfixturevalue("pg_sealed_store")
    )
    yield impl
    impl.close()


def audit_records(store: OutboxStore, limit: int = 1000) -> list[dict[str, Any]]:
    """The audit trail (both adapters offer ``audit_records`` beyond the Protocol)."""
    assert isinstance(store, SqliteOutboxStore | MemoryOutboxStore)
    return store.audit_records(limit)


def test_add_stores_a_pending_entry_due_now(store: OutboxStore) -> None:
    """A new referral gets a pending entry, due at once, with no attempts and its bundle."""
    added = store.add_referral(referral(1), T0)
    assert added.created
    assert added.task_id == "task-1"
    entry = store.get_entry(added.outbox_id)
    assert entry is not None
    assert entry.id == added.outbox_id
    assert entry.idempotency_key == "his|ref-1|welzijn-a"
    assert entry.task_id == "task-1"
    assert entry.destination == "welzijn-a"
    assert entry.state == "pending"
    assert entry.attempts == 0
    assert entry.created_at == T0
    assert entry.next_attempt_at == T0
    assert entry.delivered_at is None
    assert entry.last_status is None
    assert entry.last_error is None
    assert entry.payload == referral(1).bundle


def test_times_come_back_as_aware_utc(store: OutboxStore) -> None:
    """Datetimes given in another zone come back as the same instant in UTC."""
    cet = dt.timezone(dt.timedelta(hours=1))
    added = store.add_referral(referral(1), T0.astimezone(cet))
    entry = store.get_entry(added.outbox_id)
    assert entry is not None
    assert entry.created_at == T0
    assert entry.created_at.utcoffset() == dt.timedelta(0)


def test_add_is_idempotent_on_the_key(store: OutboxStore) -> None:
    """Adding the same key again returns the first entry, created=False, and stores nothing."""
    first = store.add_referral(referral(1), T0)
    changed = dataclasses.replace(referral(1), bundle=b'{"resourceType":"Bundle","v":2}')
    again = store.add_referral(changed, at(5))
    assert not again.created
    assert (again.task_id, again.outbox_id) == (first.task_id, first.outbox_id)
    entries = store.list_entries(None, 10)
    assert [e.id for e in entries] == [first.outbox_id]
    assert entries[0].payload == referral(1).bundle
    assert entries[0].created_at == T0


def test_ids_are_distinct_and_increasing(store: OutboxStore) -> None:
    """Each new key gets a new, larger outbox id."""
    ids = [store.add_referral(referral(n), T0).outbox_id for n in range(5)]
    assert ids == sorted(set(ids))


def test_same_task_routed_elsewhere_is_a_duplicate(store: OutboxStore) -> None:
    """A known Task id re-pushed to another destination is a duplicate: no second delivery."""
    first = store.add_referral(referral(1, task="task-x", destination="welzijn-a"), T0)
    second = store.add_referral(referral(2, task="task-x", destination="welzijn-b"), T0)
    assert not second.created
    assert (second.task_id, second.outbox_id) == ("task-x", first.outbox_id)
    record = store.get_referral("task-x")
    assert record is not None
    assert record.destination == "welzijn-a"
    assert record.patient_id == "urn:uuid:patient-1"
    assert len(store.list_entries(None, 10)) == 1


def test_get_referral_reflects_latest_entry(store: OutboxStore) -> None:
    """``get_referral`` returns the stored referral with its entry's state and attempts."""
    added = store.add_referral(referral(1), T0)
    found = store.get_referral("task-1")
    assert found is not None
    assert (found.task_id, found.destination, found.source_system) == (
        "task-1",
        "welzijn-a",
        "his",
    )
    assert found.patient_id == "urn:uuid:patient-1"
    assert found.bundle == referral(1).bundle
    assert (found.state, found.attempts) == ("pending", 0)
    store.claim_due("w", T0, 60, 10)
    record(store, added.outbox_id, "w", at(1), "dead", status=400, error="e")
    found = store.get_referral("task-1")
    assert found is not None
    assert (found.state, found.attempts) == ("dead", 1)


def test_unknown_ids_are_none(store: OutboxStore) -> None:
    """Unknown Task and entry ids give None."""
    assert store.get_referral("nope") is None
    assert store.get_entry(12345) is None


def test_claim_takes_due_pending_in_order_up_to_limit(store: OutboxStore) -> None:
    """A claim takes due entries only, oldest ``next_attempt_at`` first, then by id, up to limit."""
    a = store.add_referral(referral(1), at(10)).outbox_id
    b = store.add_referral(referral(2), at(0)).outbox_id
    c = store.add_referral(referral(3), at(0)).outbox_id
    store.add_referral(referral(4), at(100))  # not yet due
    claimed = store.claim_due("w", at(50), 60, 2)
    assert [e.id for e in claimed] == [b, c]
    claimed = store.claim_due("w", at(50), 60, 10)
    assert [e.id for e in claimed] == [a]


def test_claim_with_limit_zero_takes_nothing(store: OutboxStore) -> None:
    """A limit of 0 leases nothing, so another worker can still take the entry."""
    store.add_referral(referral(1), T0)
    assert store.claim_due("w1", T0, 60, 0) == []
    assert len(store.claim_due("w2", T0, 60, 10)) == 1


def test_leased_entry_is_not_claimed_again_until_lease_expires(store: OutboxStore) -> None:
    """A leased entry is invisible to every claim until the lease expires, then claimable."""
    added = store.add_referral(referral(1), T0)
    assert [e.id for e in store.claim_due("w1", T0, 60, 10)] == [added.outbox_id]
    assert store.claim_due("w2", at(59), 60, 10) == []
    assert store.claim_due("w1", at(59), 60, 10) == []
    assert [e.id for e in store.claim_due("w2", at(60), 60, 10)] == [added.outbox_id]


def test_lost_lease_cannot_record(store: OutboxStore) -> None:
    """After another worker took over an expired lease, the first worker's record is refused."""
    added = store.add_referral(referral(1), T0)
    store.claim_due("w1", T0, 60, 10)
    store.claim_due("w2", at(61), 60, 10)
    kept = record(store, added.outbox_id, "w1", at(62), "delivered", status=201)
    assert not kept
    entry = store.get_entry(added.outbox_id)
    assert entry is not None
    assert (entry.state, entry.attempts, entry.last_status) == ("pending", 0, None)
    assert record(store, added.outbox_id, "w2", at(62), "delivered", status=201)


def test_expired_lease_nobody_took_still_records(store: OutboxStore) -> None:
    """An owner whose lease expired may still record while no other worker has claimed it."""
    added = store.add_referral(referral(1), T0)
    store.claim_due("w1", T0, 60, 10)
    assert record(
        store,
        added.outbox_id,
        "w1",
        at(600),
        "pending",
        next_at=at(700),
        status=503,
        error="HTTP 503",
    )


def test_record_without_claim_or_by_stranger_is_refused(store: OutboxStore) -> None:
    """Recording needs the lease: unclaimed entries, other owners and unknown ids are refused."""
    added = store.add_referral(referral(1), T0)
    kwargs: dict[str, Any] = {
        "now": at(1),
        "state": "delivered",
        "next_attempt_at": None,
        "status": 200,
        "error": None,
    }
    assert not store.record_attempt(added.outbox_id, "w1", **kwargs)
    store.claim_due("w1", T0, 60, 10)
    assert not store.record_attempt(added.outbox_id, "w2", **kwargs)
    assert not store.record_attempt(added.outbox_id + 99, "w1", **kwargs)
    entry = store.get_entry(added.outbox_id)
    assert entry is not None
    assert (entry.state, entry.attempts) == ("pending", 0)


def test_record_delivered(store: OutboxStore) -> None:
    """Delivered: state, delivered_at, status, one attempt; the entry is no longer claimable."""
    added = store.add_referral(referral(1), T0)
    store.claim_due("w", T0, 60, 10)
    assert record(store, added.outbox_id, "w", at(3), "delivered", next_at=at(3), status=201)
    entry = store.get_entry(added.outbox_id)
    assert entry is not None
    assert (entry.state, entry.attempts, entry.last_status, entry.last_error) == (
        "delivered",
        1,
        201,
        None,
    )
    assert entry.delivered_at == at(3)
    assert store.claim_due("w", at(10_000), 60, 10) == []


def test_record_is_once_per_claim(store: OutboxStore) -> None:
    """Recording releases the lease: a second record on the same claim is refused."""
    added = store.add_referral(referral(1), T0)
    store.claim_due("w", T0, 60, 10)
    kwargs: dict[str, Any] = {
        "now": at(1),
        "state": "pending",
        "next_attempt_at": at(5),
        "status": 503,
        "error": "HTTP 503",
    }
    assert store.record_attempt(added.outbox_id, "w", **kwargs)
    assert not store.record_attempt(added.outbox_id, "w", **kwargs)
    entry = store.get_entry(added.outbox_id)
    assert entry is not None
    assert entry.attempts == 1


def test_record_retry_schedules_next_attempt(store: OutboxStore) -> None:
    """A retry keeps the entry pending, counts the attempt and makes it due only later."""
    added = store.add_referral(referral(1), T0)
    store.claim_due("w", T0, 60, 10)
    record(
        store, added.outbox_id, "w", at(1), "pending", next_at=at(30), status=503, error="HTTP 503"
    )
    entry = store.get_entry(added.outbox_id)
    assert entry is not None
    assert (entry.state, entry.attempts, entry.last_status, entry.last_error) == (
        "pending",
        1,
        503,
        "HTTP 503",
    )
    assert entry.next_attempt_at == at(30)
    assert entry.delivered_at is None
    assert store.claim_due("w", at(29), 60, 10) == []
    assert [e.attempts for e in store.claim_due("w", at(30), 60, 10)] == [1]


def test_record_without_next_attempt_means_now(store: OutboxStore) -> None:
    """``next_attempt_at=None`` stores the attempt time as the next attempt time."""
    added = store.add_referral(referral(1), T0)
    store.claim_due("w", T0, 60, 10)
    record(store, added.outbox_id, "w", at(7), "pending", error="no response (timeout)")
    entry = store.get_entry(added.outbox_id)
    assert entry is not None
    assert entry.next_attempt_at == at(7)
    assert entry.last_status is None


def test_dead_entry_is_not_claimed(store: OutboxStore) -> None:
    """A dead letter stays out of every later claim."""
    added = store.add_referral(referral(1), T0)
    store.claim_due("w", T0, 60, 10)
    record(store, added.outbox_id, "w", at(1), "dead", status=400, error="HTTP 400 (invalid)")
    assert store.claim_due("w", at(10_000), 60, 10) == []
    entry = store.get_entry(added.outbox_id)
    assert entry is not None
    assert (entry.state, entry.last_error) == ("dead", "HTTP 400 (invalid)")


def test_list_entries_newest_first_filtered_and_limited(store: OutboxStore) -> None:
    """``list_entries`` is newest first, optionally of one state, at most ``limit``."""
    ids = [store.add_referral(referral(n), T0).outbox_id for n in range(4)]
    store.claim_due("w", T0, 60, 1)
    record(store, ids[0], "w", at(1), "dead", status=400, error="x")
    assert [e.id for e in store.list_entries(None, 10)] == ids[::-1]
    assert [e.id for e in store.list_entries(None, 2)] == ids[:1:-1]
    assert [e.id for e in store.list_entries("dead", 10)] == [ids[0]]
    assert [e.id for e in store.list_entries("pending", 10)] == ids[:0:-1]
    assert store.list_entries("delivered", 10) == []


def test_entry_ids_by_state_and_since(store: OutboxStore) -> None:
    """``entry_ids`` lists ids of one state in id order, created at or after ``since``."""
    early = store.add_referral(referral(1), at(0)).outbox_id
    late = store.add_referral(referral(2), at(100)).outbox_id
    assert store.entry_ids("pending") == [early, late]
    assert store.entry_ids("pending", at(100)) == [late]
    assert store.entry_ids("pending", at(101)) == []
    assert store.entry_ids("dead") == []


def test_stats_counts_and_oldest_pending_age(store: OutboxStore) -> None:
    """Stats count entries per state and age the oldest pending entry from its creation."""
    assert store.stats(T0) == QueueStats(pending=0, dead=0, delivered=0, oldest_pending_age_s=0.0)
    a = store.add_referral(referral(1), at(0)).outbox_id
    b = store.add_referral(referral(2), at(10)).outbox_id
    store.add_referral(referral(3), at(20))
    store.claim_due("w", at(20), 60, 2)
    record(store, a, "w", at(21), "dead", status=400, error="x")
    record(store, b, "w", at(21), "delivered", status=200)
    stats = store.stats(at(50))
    assert (stats.pending, stats.dead, stats.delivered) == (1, 1, 1)
    assert stats.oldest_pending_age_s == pytest.approx(30.0)
    assert store.stats(at(0)).oldest_pending_age_s == 0.0  # never negative


def test_audit_is_appended_newest_first(store: OutboxStore) -> None:
    """Audit events are appended with their time and read back newest first."""
    for n in range(3):
        store.audit(
            AuditEvent(
                event="task_read",
                action="R",
                outcome="success",
                user=f"client-{n}",
                responsible="",
                source_system="his",
                patient_id=f"urn:uuid:patient-{n}",
                object_type="Task",
                object_id=f"task-{n}",
            ),
            at(n),
        )
    records = audit_records(store)
    assert [r["user"] for r in records] == ["client-2", "client-1", "client-0"]
    assert records[0]["at"] == pytest.approx(at(2).timestamp())
    assert records[0]["patient_id"] == "urn:uuid:patient-2"
    assert records[0]["detail"] == ""
    assert len(audit_records(store, 2)) == 2


def test_ping_on_a_working_store(store: OutboxStore) -> None:
    """``ping`` returns quietly on a usable store."""
    store.ping()  # raises when the store is unusable


def test_concurrent_claims_on_one_store_are_disjoint(store: OutboxStore) -> None:
    """Threads claiming from one store object never get the same entry, and miss none."""
    total = 120
    for n in range(total):
        store.add_referral(referral(n), T0)
    start = threading.Barrier(4)
    claimed: dict[str, list[int]] = {}

    def work(owner: str) -> None:
        start.wait()
        got = claimed.setdefault(owner, [])
        while batch := store.claim_due(owner, T0, 600, 7):
            got.extend(e.id for e in batch)
        if type(store) is SqliteOutboxStore:
            store.close()  # this thread's connection (a PostgreSQL store's pool is shared)

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    every = [i for ids in claimed.values() for i in ids]
    assert len(every) == len(set(every)) == total


def test_use_once_refuses_a_replay_until_the_key_expires(store: OutboxStore) -> None:
    """A key is taken once; while remembered it is refused; after its expiry it is forgotten."""
    assert store.use_once("jti|a", at(60), T0) is True
    assert store.use_once("jti|a", at(60), at(30)) is False
    assert store.use_once("jti|b", at(60), at(30)) is True
    assert store.use_once("jti|a", at(120), at(60)) is True  # expired at 60: forgotten


def test_use_once_is_shared_by_stores_on_one_file_and_survives_reopening(tmp_path: Path) -> None:
    """Two SQLite stores on one file (two processes) share the keys, also after a reopen."""
    first = SqliteOutboxStore(tmp_path / "shared.sqlite")
    second = SqliteOutboxStore(tmp_path / "shared.sqlite")
    assert first.use_once("jti|x", at(300), T0) is True
    assert second.use_once("jti|x", at(300), at(1)) is False
    first.close()
    second.close()
    reopened = SqliteOutboxStore(tmp_path / "shared.sqlite")
    assert reopened.use_once("jti|x", at(300), at(2)) is False
    reopened.close()


# --- retention (issue 13): purge ------------------------------------------------------------

DAY = 86_400.0
BUNDLE_WITH_PATIENT = (
    b'{"resourceType":"Bundle","type":"transaction","entry":['
    b'{"fullUrl":"urn:uuid:t","resource":{"resourceType":"Task","id":"t","status":"requested",'
    b'"intent":"order","for":{"reference":"urn:uuid:p"},"owner":{"reference":"urn:uuid:o"}}},'
    b'{"fullUrl":"urn:uuid:p","resource":{"resourceType":"Patient","id":"p",'
    b'"name":[{"family":"marker-family"}]}},'
    b'{"fullUrl":"urn:uuid:o","resource":{"resourceType":"Organization","id":"o"}}]}'
)


def _finish(
    store: OutboxStore,
    task_id: str,
    status: str,
    when: dt.datetime,
    message: NewMessage | None = None,
) -> None:
    """The welfare side reports the Task ``status`` at ``when`` (with a message to send)."""
    task = store.get_task(task_id)
    assert task is not None
    update = TaskUpdate(status, status, None, "free text about the patient", False, (), message)
    done = store.save_task_update(task_id, task.version, update, audit=_event(), now=when)
    assert done is not None


def _event() -> AuditEvent:
    return AuditEvent("task_update", "U", "success", "welfare", "", "welzijn-a")


def _deliver(store: OutboxStore, entry_id: int, when: dt.datetime, state: State) -> None:
    store.claim_due("w", when, 60, 100)
    assert record(store, entry_id, "w", when, state, status=201 if state == "delivered" else 422)


def test_purge_removes_patient_data_of_ended_referrals_only(store: OutboxStore) -> None:
    """Completed or dead before the cut-off and nothing pending: the Bundle becomes its skeleton,
    the patient id, reason text and finished payloads go (never sent again); ongoing, recent or
    still-sending referrals keep everything; a dry run changes nothing; the purge is audited."""
    ids = {}
    for n in range(1, 6):
        new = dataclasses.replace(referral(n), bundle=BUNDLE_WITH_PATIENT)
        ids[n] = store.add_referral(new, at(n)).outbox_id
    _deliver(store, ids[1], at(10), "delivered")
    feedback = NewMessage("gp|task-1", "task-1", "gp-record", BUNDLE_WITH_PATIENT)
    _finish(store, "task-1", "completed", at(20), feedback)  # 1: completed long ago -> purged
    gp_entry = max(e.id for e in store.list_entries("pending", 10) if e.task_id == "task-1")
    _deliver(store, gp_entry, at(21), "delivered")  # its feedback went to the GP record
    _deliver(store, ids[2], at(10), "dead")  # 2: delivery failed for good -> purged
    _deliver(store, ids[3], at(10), "delivered")  # 3: delivered, Task still requested -> kept
    _deliver(store, ids[4], at(10), "delivered")
    _finish(store, "task-4", "cancelled", at(40 * DAY))  # 4: ended after the cut-off -> kept
    _deliver(store, ids[5], at(10), "delivered")
    notice = NewMessage("gp|task-5", "task-5", "gp-record", b"{}")
    _finish(store, "task-5", "rejected", at(20), notice)  # 5: its notice still pending -> kept
    cutoff, now = at(30 * DAY), at(60 * DAY)
    dry = store.purge(cutoff, T0, now, audit=_event(), dry_run=True)
    assert dry == PurgeCounts(referrals=2, payloads=3, audit=0)
    assert store.get_task("task-1").patient_id == "urn:uuid:patient-1"  # type: ignore[union-attr]
    before = len(audit_records(store))
    assert store.purge(cutoff, T0, now, audit=_event()) == dry
    for n in (1, 2):
        task = store.get_task(f"task-{n}")
        assert task is not None
        assert (task.patient_id, task.reason_text) == ("", None)
        assert b"marker-family" not in task.bundle
        assert b'"for"' not in task.bundle
        assert b'"Organization"' in task.bundle  # the skeleton keeps the Task and its owner
        entry = store.get_entry(ids[n])
        assert entry is not None
        assert entry.payload == task.bundle  # the referral's own entry: its skeleton
    assert store.get_entry(gp_entry).payload == retention.PURGED_PAYLOAD  # type: ignore[union-attr]
    assert store.get_task("task-1").status == "completed"  # type: ignore[union-attr]
    for n in (3, 4, 5):
        assert store.get_task(f"task-{n}").patient_id == f"urn:uuid:patient-{n}"  # type: ignore[union-attr]
        assert store.get_entry(ids[n]).payload == BUNDLE_WITH_PATIENT  # type: ignore[union-attr]
    assert store.requeue([ids[2]], now) == {
        ids[2]: "its payload was purged (retention): there is nothing left to send"
    }
    records = audit_records(store)
    assert len(records) == before + 1
    assert records[0]["detail"] == "referrals=2 payloads=3 audit=0"
    assert store.purge(cutoff, T0, now) == PurgeCounts(0, 0, 0)  # done once


def test_purge_removes_audit_records_older_than_the_cutoff_only(store: OutboxStore) -> None:
    """Audit records before the audit cut-off go, later ones stay; ids are never reused."""
    for n in range(4):
        store.audit(_event(), at(n * DAY))
    counts = store.purge(T0, at(2 * DAY), at(3 * DAY), audit=_event())
    assert counts == PurgeCounts(referrals=0, payloads=0, audit=2)
    records = audit_records(store)
    assert [r["at"] for r in records[1:]] == [at(3 * DAY).timestamp(), at(2 * DAY).timestamp()]
    store.audit(_event(), at(4 * DAY))
    ids = [r["id"] for r in audit_records(store)]
    assert ids == sorted(ids, reverse=True)
    assert min(ids) > 2  # the removed records' ids are not given out again
