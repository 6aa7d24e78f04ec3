"""In-memory ``DirectoryReplica``: the fake the contract tests hold to the same rules as SQLite.

Same decisions as ``SqliteDirectoryReplica``: a record replaces the kept one only when
``core.directory.newer`` says so; a deletion is a tombstone that keeps its version; ``find``
returns live resources by id; one lock guards everything. Nothing survives the process.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from wor_bridge.core.directory import DirectoryRecord, SyncState, newer
from wor_bridge.ports import DirectoryReplica


class MemoryDirectoryReplica:
    """``DirectoryReplica`` in a dictionary, thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: dict[tuple[str, str], DirectoryRecord] = {}
        self._state = SyncState()

    def close(self) -> None:
        """Nothing to release (kept for parity with ``SqliteDirectoryReplica``)."""

    def apply(self, records: Sequence[DirectoryRecord]) -> int:
        """Keep each record newer than the kept version."""
        changed = 0
        with self._lock:
            for record in records:
                key = (record.resource_type, record.id)
                kept = self._records.get(key)
                if kept is not None and not newer(record, kept):
                    continue
                keys = () if record.deleted else tuple(sorted(set(record.keys)))
                self._records[key] = DirectoryRecord(
                    record.resource_type,
                    record.id,
                    record.last_updated_us,
                    record.version_id,
                    record.body,
                    keys,
                )
                changed += 1
        return changed

    def get(self, resource_type: str, resource_id: str) -> DirectoryRecord | None:
        """The kept version (a tombstone when deleted), or None."""
        with self._lock:
            return self._records.get((resource_type, resource_id))

    def find(self, resource_type: str, key: str) -> list[DirectoryRecord]:
        """Live resources of a type with this key, by id."""
        with self._lock:
            found = [
                r
                for (kind, _), r in self._records.items()
                if kind == resource_type and not r.deleted and key in r.keys
            ]
        return sorted(found, key=lambda r: r.id)

    def sync_state(self) -> SyncState:
        """The kept state."""
        with self._lock:
            return self._state

    def save_sync_state(self, state: SyncState) -> None:
        """Replace the kept state."""
        with self._lock:
            self._state = state

    def counts(self) -> dict[str, int]:
        """Live resources per type."""
        with self._lock:
            counts: dict[str, int] = {}
            for (kind, _), record in self._records.items():
                if not record.deleted:
                    counts[kind] = counts.get(kind, 0) + 1
        return dict(sorted(counts.items()))


def _conforms(replica: MemoryDirectoryReplica) -> DirectoryReplica:
    """Lets mypy check that the class implements the port."""
    return replica
