"""The monitoring tables' contract, held against SqliteOutboxStore and MemoryOutboxStore, and
against the SQLite and PostgreSQL stores with encryption at rest (their facts hold no patient
data, so sealing leaves them as they are)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import sealed
from tests.test_store_contract import T0, at, referral
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.core.monitoring_facts import Progress, ReferralFacts, monitoring_key
from wor_bridge.records import AuditEvent, NewMessage, TaskUpdate

Store = SqliteOutboxStore | MemoryOutboxStore


@pytest.fixture(params=["sqlite", "memory", "sqlite-sealed", "postgresql-sealed"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A fresh store of each kind."""
    impl: Store = (
        SqliteOutboxStore(tmp_path / "m.sqlite")
        if request.param == "sqlite"
        else SqliteOutboxStore(tmp_path / "m.sqlite", sealer=sealed.sealer())
        if request.param == "sqlite-sealed"
        else MemoryOutboxStore()
        if request.param == "memory"
        else request.getfixturevalue("pg_sealed_store")
    )
    yield impl
    impl.close()


def facts(n: int) -> ReferralFacts:
    """Synthetic facts of referral ``n`` (opaque values only)."""
    return ReferralFacts(
        key=monitoring_key(f"task-{n}"), received_at=T0, authored_on=T0.date(),
        practice="agb:01099990", source_system="his", referrer_type="poh-ggz", welfare="welzijn-a",
        municipality="Tiel", sex="female", age_band="65-74", reasons=("vastlopen", "eenzaamheid"),
        deadline_at=at(7 * 86400),
    )  # fmt: skip


def add(store: Store, n: int) -> None:
    """Store referral ``n`` with its facts."""
    store.add_referral(dataclasses.replace(referral(n), monitoring=facts(n)), T0)


def update(store: Store, n: int, version: int, progress: Progress, **kw: Any) -> int | None:
    """Save a Task update carrying ``progress``."""
    change = TaskUpdate(progress.status, progress.business_status, progress.reason_code, None,
                        False, (), kw.get("message"), progress=progress)  # fmt: skip
    audit = AuditEvent("task_update", "U", "success", "u", "r", "his")
    return store.save_task_update(f"task-{n}", version, change, audit=audit, now=progress.at)


def test_facts_are_recorded_with_the_referral(store: Store) -> None:
    """A stored referral has its facts (reasons sorted), in the window of its referral date."""
    add(store, 1)
    [row] = store.trajectories(T0.date(), T0.date() + dt.timedelta(days=1))
    assert row.facts == dataclasses.replace(facts(1), reasons=("eenzaamheid", "vastlopen"))
    assert row.status == "requested"
    assert store.trajectories(T0.date() + dt.timedelta(days=1)) == []


def test_a_duplicate_referral_records_no_second_fact(store: Store) -> None:
    """Pushing the same referral again leaves one row."""
    add(store, 1)
    add(store, 1)
    assert len(store.trajectories()) == 1


def test_milestones_are_set_once_and_conversations_keep_the_highest(store: Store) -> None:
    """A later report never moves a milestone back; the highest conversation count stays."""
    add(store, 1)
    first = Progress(at=at(60), status="in-progress", business_status="first-contact",
                     first_contact_at=at(60), conversations=3,
                     activities=(("natuur", "participant"),))  # fmt: skip
    later = Progress(at=at(120), status="in-progress", first_contact_at=at(120), conversations=2,
                     activities=(("koken-eten", "volunteer"),))  # fmt: skip
    assert update(store, 1, 1, first) == 2
    assert update(store, 1, 2, later) == 3
    [row] = store.trajectories()
    assert row.first_contact_at == at(60)
    assert row.conversations == 3
    assert row.activities == (("koken-eten", "volunteer"), ("natuur", "participant"))


def test_a_lost_update_records_no_progress(store: Store) -> None:
    """An update at a stale version changes nothing in the monitoring tables either."""
    add(store, 1)
    assert update(store, 1, 5, Progress(at=at(60), status="accepted", accepted_at=at(60))) is None
    [row] = store.trajectories()
    assert (row.status, row.accepted_at) == ("requested", None)


def test_feedback_delivered_to_the_gp_record_is_noted(store: Store) -> None:
    """Delivering a ``gp|`` message marks that feedback reached the referrer."""
    add(store, 1)
    message = NewMessage("gp|task-1|abc", "task-1", "gp-record", b"{}")
    update(store, 1, 1, Progress(at=at(60), status="accepted"), message=message)
    claimed = store.claim_due("w", at(61), 30, 10)  # the referral and the feedback message
    assert len(claimed) == 2
    for entry in claimed:
        store.record_attempt(entry.id, "w", now=at(70), state="delivered", next_attempt_at=None,
                             status=200, error=None)  # fmt: skip
    [row] = store.trajectories()
    assert row.feedback_at == at(70)


def test_a_referral_given_up_is_noted(store: Store) -> None:
    """A dead-lettered referral delivery is recorded as failed delivery."""
    add(store, 1)
    [entry] = store.claim_due("w", at(1), 30, 10)
    store.record_attempt(entry.id, "w", now=at(2), state="dead", next_attempt_at=None,
                         status=400, error="rejected")  # fmt: skip
    [row] = store.trajectories()
    assert row.delivery_failed_at == at(2)
    assert row.feedback_at is None
