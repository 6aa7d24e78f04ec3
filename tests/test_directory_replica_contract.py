"""The DirectoryReplica contract, held against SqliteDirectoryReplica (a real file, shared with the
outbox store) and MemoryDirectoryReplica."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from wor_bridge.adapters.memory_directory import MemoryDirectoryReplica
from wor_bridge.adapters.postgres_store import PostgresDirectoryReplica
from wor_bridge.adapters.sqlite_directory import SqliteDirectoryReplica
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.core.directory import DirectoryRecord, SyncState
from wor_bridge.ports import DirectoryReplica

T0 = 1_740_819_600_000_000  # 2025-03-01T09:00:00Z in microseconds


def org(rid: str, at: int, version: str, *keys: str) -> DirectoryRecord:
    """A synthetic Organization record (the body is a marker, not a real resource)."""
    return DirectoryRecord("Organization", rid, at, version, f'{{"v":"{version}"}}'.encode(), keys)


def tombstone(rid: str, at: int, version: str) -> DirectoryRecord:
    """A deletion of an Organization."""
    return DirectoryRecord("Organization", rid, at, version, None)


@pytest.fixture(params=["sqlite", "memory", "postgresql"])
def replica(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[DirectoryReplica]:
    """A fresh replica of each kind (the SQLite one in a file that also holds the outbox, the
    PostgreSQL one in the store's database)."""
    if request.param == "postgresql":
        impl: DirectoryReplica = PostgresDirectoryReplica(request.getfixturevalue("pg_store"))
    elif request.param == "sqlite":
        SqliteOutboxStore(tmp_path / "store.sqlite").close()
        impl = SqliteDirectoryReplica(tmp_path / "store.sqlite")
    else:
        impl = MemoryDirectoryReplica()
    yield impl
    impl.close()


def test_an_empty_replica_knows_nothing(replica: DirectoryReplica) -> None:
    """No records, no counts, and a sync state that is not ready."""
    assert replica.get("Organization", "o1") is None
    assert replica.find("Organization", "kvk|1") == []
    assert replica.counts() == {}
    assert replica.sync_state() == SyncState()


def test_a_newer_version_replaces_the_kept_one(replica: DirectoryReplica) -> None:
    """S6: a later version is kept, with its body and keys."""
    assert replica.apply([org("o1", T0, "1", "kvk|1")]) == 1
    assert replica.apply([org("o1", T0 + 5, "2", "kvk|2")]) == 1
    kept = replica.get("Organization", "o1")
    assert kept == org("o1", T0 + 5, "2", "kvk|2")
    assert replica.find("Organization", "kvk|1") == []
    assert [r.id for r in replica.find("Organization", "kvk|2")] == ["o1"]


def test_an_older_version_never_overwrites_a_newer_one(replica: DirectoryReplica) -> None:
    """S6: a late older version changes nothing, in one batch or in two."""
    replica.apply([org("o1", T0 + 5, "2", "kvk|2")])
    assert replica.apply([org("o1", T0, "1", "kvk|1")]) == 0
    assert replica.apply([org("o2", T0 + 9, "2"), org("o2", T0, "1")]) == 1
    assert replica.get("Organization", "o1") == org("o1", T0 + 5, "2", "kvk|2")
    assert replica.get("Organization", "o2") == org("o2", T0 + 9, "2")


def test_applying_the_same_changes_twice_has_one_effect(replica: DirectoryReplica) -> None:
    """S7: a repeated page (an inclusive _since) changes nothing the second time."""
    page = [org("o1", T0, "1", "kvk|1"), org("o2", T0 + 1, "1", "kvk|1")]
    assert replica.apply(page) == 2
    assert replica.apply(page) == 0
    assert [r.id for r in replica.find("Organization", "kvk|1")] == ["o1", "o2"]


def test_a_deletion_is_a_tombstone_that_blocks_older_versions(replica: DirectoryReplica) -> None:
    """A deletion hides the resource and keeps its version: only a newer one revives it."""
    replica.apply([org("o1", T0, "1", "kvk|1"), tombstone("o1", T0 + 10, "2")])
    kept = replica.get("Organization", "o1")
    assert kept is not None
    assert (kept.deleted, kept.version_id, kept.keys) == (True, "2", ())
    assert replica.find("Organization", "kvk|1") == []
    assert replica.apply([org("o1", T0 + 5, "1", "kvk|1")]) == 0
    assert replica.apply([org("o1", T0 + 20, "3", "kvk|1")]) == 1
    assert [r.id for r in replica.find("Organization", "kvk|1")] == ["o1"]


def test_unresolved_references_are_accepted(replica: DirectoryReplica) -> None:
    """L8: a record whose keys point at resources the replica does not hold is stored."""
    service = DirectoryRecord(
        "HealthcareService", "s1", T0, "1", b"{}", ("providedBy|Organization/missing",)
    )
    assert replica.apply([service]) == 1
    assert replica.find("HealthcareService", "providedBy|Organization/missing") == [service]


def test_find_returns_live_resources_of_the_type_by_id(replica: DirectoryReplica) -> None:
    """find filters by type and key and orders by id."""
    replica.apply([org("b", T0, "1", "k"), org("a", T0, "1", "k")])
    replica.apply([DirectoryRecord("HealthcareService", "c", T0, "1", b"{}", ("k",))])
    assert [r.id for r in replica.find("Organization", "k")] == ["a", "b"]
    assert replica.counts() == {"HealthcareService": 1, "Organization": 2}


def test_the_sync_state_is_kept(replica: DirectoryReplica) -> None:
    """The watermark, readiness and time of the last good round come back as saved."""
    synced = dt.datetime(2025, 3, 1, 9, 0, 1, tzinfo=dt.UTC)
    state = SyncState("2025-03-01T09:00:00.000001+00:00", True, synced)
    replica.save_sync_state(state)
    assert replica.sync_state() == state
    replica.save_sync_state(SyncState())
    assert replica.sync_state() == SyncState()


def test_the_sqlite_replica_survives_a_reopen(tmp_path: Path) -> None:
    """Records and state are durable in the store's file."""
    first = SqliteDirectoryReplica(tmp_path / "store.sqlite")
    first.apply([org("o1", T0, "1", "kvk|1")])
    first.save_sync_state(SyncState("2025-03-01T09:00:00Z", True, None))
    first.close()
    again = SqliteDirectoryReplica(tmp_path / "store.sqlite")
    assert again.get("Organization", "o1") == org("o1", T0, "1", "kvk|1")
    assert again.sync_state() == SyncState("2025-03-01T09:00:00Z", True, None)
    again.close()
