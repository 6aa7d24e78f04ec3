"""The OutboxStore's search contract (issue 18), held against SqliteOutboxStore (a real file) and
MemoryOutboxStore: Task searches within a tenancy, paging and order, ``meta.lastUpdated``
(``updated_at``) kept by every change of what ``GET Task`` returns, feedback items and a Task's
messages; and the SQLite migration of a file made before the search columns."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import sealed
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.ports import OutboxStore
from wor_bridge.records import AuditEvent, NewMessage, NewReferral, TaskSearch, TaskUpdate

T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
AUDIT = AuditEvent("test", "U", "success", "client", "", "his")
HIS = "urn:oid:2.16.528.1.1007.99.1234.1"


def at(seconds: float) -> dt.datetime:
    """``seconds`` after T0."""
    return T0 + dt.timedelta(seconds=seconds)


def referral(n: int, *, source: str = "his", destination: str = "welzijn-a") -> NewReferral:
    """A synthetic referral number ``n`` with its search keys (opaque markers, no patient data)."""
    return NewReferral(
        task_id=f"task-{n}",
        idempotency_key=f"{source}|ref-{n}|{destination}",
        source_system=source,
        destination=destination,
        mapping="wor-r4-default@1.0.0",
        patient_id=f"urn:uuid:patient-{n}",
        responsible="",
        client_id="client",
        bundle=b'{"resourceType":"Bundle","entry":[]}',
        service_request_id=f"request-{n}",
        his_system=HIS,
        his_value=f"REF-{n}",
        owner_id=f"org-{destination}",
    )


@pytest.fixture(params=["sqlite", "sqlite-sealed", "memory", "postgresql", "postgresql-sealed"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OutboxStore]:
    """A fresh store of each kind with three referrals: two from ``his`` (to a, b), one from
    ``other`` (to a), received one second apart."""
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
    impl.add_referral(referral(1), at(1))
    impl.add_referral(referral(2, destination="welzijn-b"), at(2))
    impl.add_referral(referral(3, source="other"), at(3))
    yield impl
    impl.close()


def ids(store: OutboxStore, **search: object) -> list[str]:
    """Task ids of a search (``everyone`` unless a tenancy is given)."""
    if "source_system" not in search and "destination" not in search:
        search.setdefault("everyone", True)
    page = store.search_tasks(TaskSearch(**search))  # type: ignore[arg-type]
    return [t.task_id for t in page.tasks]


def test_tenancy_is_part_of_every_search(store: OutboxStore) -> None:
    """A source system sees its referrals, a destination its Tasks, no tenancy nothing."""
    assert ids(store, source_system="his") == ["task-1", "task-2"]
    assert ids(store, destination="welzijn-a") == ["task-1", "task-3"]
    assert ids(store, source_system="nobody") == []
    assert store.search_tasks(TaskSearch()).total == 0
    assert ids(store) == ["task-1", "task-2", "task-3"]


def test_where_is_and_of_or_groups(store: OutboxStore) -> None:
    """Groups are ANDed, alternatives ORed, equalities in an alternative ANDed."""
    his_or_id = ((("his_system", HIS), ("his_value", "REF-2")), (("id", "task-3"),))
    assert ids(store, where=(his_or_id,)) == ["task-2", "task-3"]
    assert ids(store, where=(his_or_id, ((("owner", "org-welzijn-a"),),))) == ["task-3"]
    assert ids(store, where=(((("focus", "request-1"),),),)) == ["task-1"]
    assert ids(store, where=((),)) == []  # an empty group matches nothing
    assert ids(store, where=(((),),)) == ["task-1", "task-2", "task-3"]  # an empty alternative


def test_status_is_the_status_get_returns(store: OutboxStore) -> None:
    """Until the welfare side reports, a dead-lettered referral's Task searches as failed."""
    [claimed, *_] = store.claim_due("w", at(10), 60, 1)
    store.record_attempt(
        claimed.id, "w", now=at(11), state="dead", next_attempt_at=None, status=400, error="x"
    )
    assert ids(store, where=(((("status", "failed"),),),)) == [claimed.task_id]
    assert claimed.task_id not in ids(store, where=(((("status", "requested"),),),))


def test_updated_at_follows_intake_updates_and_delivery(store: OutboxStore) -> None:
    """updated_at: received, then every Task update, then a final delivery state."""
    assert store.get_task("task-1").updated_at == at(1)  # type: ignore[union-attr]
    update = TaskUpdate("accepted", None, None, None, False, (), None)
    assert store.save_task_update("task-1", 1, update, audit=AUDIT, now=at(20)) == 2
    assert store.get_task("task-1").updated_at == at(20)  # type: ignore[union-attr]
    [entry] = [e for e in store.claim_due("w", at(30), 60, 10) if e.task_id == "task-2"]
    store.record_attempt(
        entry.id, "w", now=at(31), state="delivered", next_attempt_at=None, status=201, error=None
    )
    task = store.get_task("task-2")
    assert task is not None
    assert (task.updated_at, task.received_at) == (at(31), at(2))


def test_updated_range_order_and_paging(store: OutboxStore) -> None:
    """from is inclusive, before exclusive; oldest first or newest first; offset and count."""
    assert ids(store, updated_from=at(2)) == ["task-2", "task-3"]
    assert ids(store, updated_before=at(2)) == ["task-1"]
    assert ids(store, newest_first=True) == ["task-3", "task-2", "task-1"]
    page = store.search_tasks(TaskSearch(everyone=True, offset=1, count=1))
    assert (page.total, [t.task_id for t in page.tasks]) == (3, ["task-2"])
    assert store.search_tasks(TaskSearch(everyone=True, count=0)).tasks == ()


def test_items_and_messages_of_a_task(store: OutboxStore) -> None:
    """A recorded item names its Task; a Task's messages come oldest first with destinations."""
    message = NewMessage("gp|task-1|1", "task-1", "gp-record", b'{"n":1}')
    update = TaskUpdate("accepted", None, None, None, False, ("item-1",), message)
    store.save_task_update("task-1", 1, update, audit=AUDIT, now=at(5))
    assert store.item_task("item-1") == "task-1"
    assert store.item_task("item-2") is None
    messages = store.task_messages("task-1")
    assert [d for d, _ in messages] == ["welzijn-a", "gp-record"]
    assert messages[1][1] == b'{"n":1}'


def test_an_older_sqlite_file_is_migrated(tmp_path: Path) -> None:
    """A store made before search columns and schema_version gets them, filled from its Bundles."""
    path = tmp_path / "old.sqlite"
    store = SqliteOutboxStore(path)
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": {"resourceType": "ServiceRequest", "identifier": [
                {"system": HIS, "value": "REF-9"}]}},
            {"resource": {"resourceType": "Task", "owner": {"reference": "urn:uuid:org-9"}}},
        ],
    }  # fmt: skip
    old = dataclasses.replace(referral(9), his_system="", his_value="", owner_id="")
    store.add_referral(dataclasses.replace(old, bundle=json.dumps(bundle).encode()), at(9))
    store.close()
    with sqlite3.connect(path) as db:  # as an older version left it
        for column in ("his_system", "his_value", "owner_id", "updated_at"):
            db.execute("DROP INDEX IF EXISTS referral_his")
            db.execute("DROP INDEX IF EXISTS referral_updated")
            db.execute(f"ALTER TABLE referral DROP COLUMN {column}")
        db.execute("DROP TABLE schema_version")  # a development build before schema versions
    again = SqliteOutboxStore(path)
    where = ((("his_system", HIS), ("his_value", "REF-9"), ("owner", "org-9")),)
    assert [t.task_id for t in again.search_tasks(TaskSearch(where=(where,), everyone=True)).tasks]
    assert again.get_task("task-9").updated_at == at(9)  # type: ignore[union-attr]
    again.close()
