"""The monitoring tables of the in-memory store, with the SQLite store's semantics: facts are
recorded once per referral, milestone times are set once, conversations keep the highest count,
activities and reasons are sets, and times round-trip through UNIX seconds as in SQLite.

``MonitoringRows`` is not locked itself: the store calls it under its own lock, inside the same
step as the event (the in-memory "transaction").
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Final, Protocol

from wor_bridge.core.monitoring_facts import Progress, ReferralFacts, Trajectory, monitoring_key
from wor_bridge.core.monitoring_grid import Breakdown, Tally, tallies, visible
from wor_bridge.core.monitoring_period import Period

_SET_ONCE: Final = (
    "accepted_at",
    "first_contact_at",
    "intake_at",
    "activity_at",
    "closed_at",
    "follow_up_at",
    "waiting_since",
)


def _round(moment: dt.datetime | None) -> dt.datetime | None:
    """As SQLite hands a time back (REAL UNIX seconds -> aware UTC)."""
    if moment is None:
        return None
    return dt.datetime.fromtimestamp(moment.timestamp(), tz=dt.UTC)


@dataclass(slots=True)
class MonitoringRows:
    """Trajectories by key, and the append-only event log (kind, status, code, time)."""

    rows: dict[str, Trajectory] = field(default_factory=dict)
    events: list[tuple[str, float, str]] = field(default_factory=list)

    def insert_facts(self, facts: ReferralFacts) -> None:
        """Record a new referral's facts (ignored when the key is known)."""
        if facts.key in self.rows:
            return
        stored = replace(
            facts,
            received_at=_round(facts.received_at) or facts.received_at,
            deadline_at=_round(facts.deadline_at),
            reasons=tuple(sorted(set(facts.reasons))),
        )
        self.rows[facts.key] = Trajectory(facts=stored)
        self.events.append((facts.key, facts.received_at.timestamp(), "referred"))

    def apply_progress(self, key: str, progress: Progress) -> None:
        """Add one change (set-once times, highest count, set of activities)."""
        row = self.rows.get(key)
        if row is not None:
            changes: dict[str, object] = {
                name: getattr(row, name) or _round(getattr(progress, name)) for name in _SET_ONCE
            }
            if progress.waiting_until is not None:
                changes["waiting_until"] = _round(progress.waiting_until)
            self.rows[key] = replace(
                row,
                status=progress.status,
                reason_code=progress.reason_code or row.reason_code,
                conversations=row.conversations
                if progress.conversations is None
                else max(row.conversations or 0, progress.conversations),
                activities=tuple(sorted(set(row.activities) | set(progress.activities))),
                **changes,  # type: ignore[arg-type]
            )
        self.events.append((key, progress.at.timestamp(), "task"))

    def note(self, task_id: str, kind: str, now: dt.datetime) -> None:
        """Feedback reached the GP record, or the referral's delivery was given up."""
        key = monitoring_key(task_id)
        row = self.rows.get(key)
        if row is None:
            return
        if kind == "feedback-delivered":
            self.rows[key] = replace(row, feedback_at=row.feedback_at or _round(now))
        else:
            self.rows[key] = replace(row, delivery_failed_at=row.delivery_failed_at or _round(now))
        self.events.append((key, now.timestamp(), kind))


class _Shared(Protocol):
    _lock: threading.Lock
    _monitoring: MonitoringRows


class MemoryMonitoringTables:
    """``MonitoringReader`` over ``MonitoringRows`` (a mixin of ``MemoryOutboxStore``)."""

    def trajectories(
        self: _Shared, since: dt.date | None = None, until: dt.date | None = None
    ) -> list[Trajectory]:
        """Referrals authored in ``[since, until)`` with their progress, oldest first."""
        with self._lock:
            rows = [
                r
                for r in self._monitoring.rows.values()
                if (since is None or r.facts.authored_on >= since)
                and (until is None or r.facts.authored_on < until)
            ]
        return sorted(rows, key=lambda r: (r.facts.authored_on, r.facts.received_at, r.facts.key))

    def tallies(
        self: _Shared,
        *,
        period: Period,
        breakdown: Breakdown,
        now: dt.datetime,
        since: dt.date | None = None,
        until: dt.date | None = None,
        where: Mapping[str, str] | None = None,
    ) -> dict[str, Tally]:
        """The pure path: ``monitoring_grid.tallies`` over the visible trajectories."""
        rows = MemoryMonitoringTables.trajectories(self, since, until)
        return tallies([t for t in rows if visible(t, where)], period, breakdown, now)
