"""The search side of the in-memory store (a mixin of ``MemoryOutboxStore``), with the SQLite
store's semantics: Task searches within a tenancy, the feedback Observations' Task, the messages
about a Task, and ``updated_at`` (``meta.lastUpdated``) kept current."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Protocol

from wor_bridge.adapters.memory_tasks import Row, from_ts, ts
from wor_bridge.core.search import task_status
from wor_bridge.records import NewReferral, TaskPage, TaskRecord, TaskSearch


class _Shared(Protocol):
    """What the search half uses of ``MemoryOutboxStore``."""

    _lock: threading.Lock
    _referrals: dict[str, tuple[NewReferral, float]]
    _rows: dict[int, Row]
    _by_key: dict[str, int]
    _tasks: dict[str, TaskRecord]
    _items: dict[str, str]


def touch_delivery(store: _Shared, row: Row, at: float) -> None:
    """A referral's own entry reached (or leaves) a final delivery state: its Task changed
    (the caller holds the lock)."""
    stored = store._referrals.get(row.task_id)
    task = store._tasks.get(row.task_id)
    if stored is None or task is None or stored[0].idempotency_key != row.idempotency_key:
        return
    if row.state in ("delivered", "dead"):
        store._tasks[row.task_id] = replace(task, updated_at=from_ts(at))


def _columns(store: _Shared, task: TaskRecord) -> dict[str, str]:
    referral, _ = store._referrals[task.task_id]
    own = store._rows[store._by_key[referral.idempotency_key]]
    return {
        "id": task.task_id,
        "his_system": referral.his_system,
        "his_value": referral.his_value,
        "focus": referral.service_request_id,
        "owner": referral.owner_id,
        "status": task_status(task.status, task.business_status, own.state)[0],
    }


def _matches(store: _Shared, task: TaskRecord, search: TaskSearch) -> bool:
    if not search.everyone:
        if search.source_system is None and search.destination is None:
            return False
        if search.source_system is not None and task.source_system != search.source_system:
            return False
        if search.destination is not None and task.destination != search.destination:
            return False
    columns = _columns(store, task)
    for group in search.where:
        if not any(all(columns[c] == v for c, v in alt) for alt in group):
            return False
    updated = ts(task.updated_at) if task.updated_at else 0.0
    if search.updated_from is not None and updated < ts(search.updated_from):
        return False
    return not (search.updated_before is not None and updated >= ts(search.updated_before))


class MemorySearchTables:
    """Task search, feedback-item lookup and a Task's messages, over the dictionaries."""

    def search_tasks(self: _Shared, search: TaskSearch) -> TaskPage:
        """The matching Tasks within the search's tenancy: one page and the total."""
        with self._lock:
            found = sorted(
                (t for t in self._tasks.values() if _matches(self, t, search)),
                key=lambda t: (ts(t.updated_at) if t.updated_at else 0.0, t.task_id),
                reverse=search.newest_first,
            )
        page = found[search.offset : search.offset + search.count]
        return TaskPage(len(found), tuple(page))

    def item_task(self: _Shared, key: str) -> str | None:
        """The Task id of a recorded feedback item."""
        with self._lock:
            return self._items.get(key)

    def task_messages(self: _Shared, task_id: str) -> list[tuple[str, bytes]]:
        """Destination and payload of the Task's outbox entries, oldest first."""
        with self._lock:
            rows = sorted(
                (r for r in self._rows.values() if r.task_id == task_id), key=lambda r: r.id
            )
            return [(r.destination, r.payload) for r in rows]
