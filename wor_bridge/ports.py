"""Ports: the I/O the use cases need, as Protocols. Adapters implement them; bootstrap wires them.

The values they carry are in ``records.py``.

Nothing outside ``bootstrap.py`` and the tests imports a concrete adapter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from wor_bridge.core.account import Account, Session
from wor_bridge.core.delivery import HttpRequest, HttpResponse
from wor_bridge.core.directory import DirectoryRecord, SyncState
from wor_bridge.core.monitoring_facts import Trajectory
from wor_bridge.core.monitoring_grid import Breakdown, Tally
from wor_bridge.core.monitoring_period import Period
from wor_bridge.core.outbox import State
from wor_bridge.core.settings import Destination
from wor_bridge.records import (
    Added,
    Amendment,
    AuditEvent,
    AuditQuery,
    AuditRecord,
    NewMessage,
    NewReferral,
    OutboxEntry,
    PurgeCounts,
    QueueStats,
    ReferralRecord,
    ResealCount,
    TaskPage,
    TaskRecord,
    TaskSearch,
    TaskUpdate,
)


class Clock(Protocol):
    """The time, injected (aware UTC datetimes)."""

    def now(self) -> dt.datetime:
        """The current time in UTC."""
        ...


class Transport(Protocol):
    """Sends one HTTP request to a destination, adding its authentication and TLS."""

    def send(self, request: HttpRequest, destination: Destination) -> HttpResponse:
        """The response; raises ``TransportError`` when there is none (timeout, connection)."""
        ...


class OutboxStore(Protocol):
    """Durable referrals, outbox and audit trail."""

    def add_referral(
        self, referral: NewReferral, now: dt.datetime, audit: AuditEvent | None = None
    ) -> Added:
        """Store the referral and its outbox entry atomically (idempotent on the key and on the
        Task id: a known referral routed elsewhere on a re-push is a duplicate, not a second
        delivery).

        ``audit`` is appended in the same transaction, its outcome set to ``accepted`` or
        ``duplicate``, so no intake is ever stored without its audit record (or the reverse).
        """
        ...

    def claim_due(
        self, owner: str, now: dt.datetime, lease_s: float, limit: int
    ) -> list[OutboxEntry]:
        """Lease up to ``limit`` due pending entries to ``owner``; nobody else gets them.

        Per Task and destination only the oldest pending entry is claimable, so messages about
        one referral reach a receiver in the order they were made.
        """
        ...

    def record_attempt(
        self,
        entry_id: int,
        owner: str,
        *,
        now: dt.datetime,
        state: State,
        next_attempt_at: dt.datetime | None,
        status: int | None,
        error: str | None,
        audit: AuditEvent | None = None,
        message: NewMessage | None = None,
    ) -> bool:
        """Record an attempt's result if ``owner`` still holds the lease; False if it lost it.

        ``audit`` is appended in the same transaction either way (the data was sent);
        ``message`` (a delivery notice for the GP record) only when the result is recorded.
        When the entry is a referral's own and it becomes delivered or dead, the referral's
        Task version goes up: the Task the GP reads changed.
        """
        ...

    def amend_referral(
        self, amendment: Amendment, now: dt.datetime, *, audit: AuditEvent
    ) -> int | None:
        """Store a changed referral with its messages and audit at once (optimistic lock on the
        Task version); the new Task version, or None when the version moved on."""
        ...

    def get_referral(self, task_id: str) -> ReferralRecord | None:
        """The referral with this Task id."""
        ...

    def get_entry(self, entry_id: int) -> OutboxEntry | None:
        """One outbox entry."""
        ...

    def list_entries(self, state: State | None, limit: int) -> list[OutboxEntry]:
        """Entries, newest first, optionally of one state."""
        ...

    def requeue(
        self,
        entry_ids: list[int],
        now: dt.datetime,
        *,
        wanted: State = "dead",
        messages: Mapping[int, NewMessage] | None = None,
    ) -> dict[int, str | None]:
        """Make entries in state ``wanted`` pending and due now, with a fresh retry budget
        (attempts 0, ``requeued_at`` now; ``created_at`` stays), each only when
        ``core.outbox.requeue_refusal`` allows it, decided in one transaction. Per id: None
        when requeued, else why not (``unknown`` for an id that does not exist). A requeued
        referral's Task version goes up, and ``messages[id]`` is queued with it."""
        ...

    def entry_ids(self, state: State, since: dt.datetime | None = None) -> list[int]:
        """Ids of entries in ``state`` (created at or after ``since``)."""
        ...

    def audit(self, event: AuditEvent, now: dt.datetime) -> None:
        """Append an audit record."""
        ...

    def use_once(self, key: str, expires_at: dt.datetime, now: dt.datetime) -> bool:
        """Remember ``key`` until ``expires_at``: True the first time, False while it is
        remembered (a replay). Keys expired at ``now`` are forgotten. Every process on the same
        store shares what is remembered, and it survives a restart."""
        ...

    def stats(self, now: dt.datetime) -> QueueStats:
        """Queue figures."""
        ...

    def purge(
        self,
        payload_before: dt.datetime,
        audit_before: dt.datetime,
        now: dt.datetime,
        *,
        audit: AuditEvent | None = None,
        dry_run: bool = False,
    ) -> PurgeCounts:
        """Retention (``core/retention.py``), in one transaction: the patient data of every
        referral that ended (Task in ``retention.FINISHED``, or its own entry dead) before
        ``payload_before`` and has no pending message is removed (Bundle -> its skeleton,
        patient id and reason text emptied, finished messages' payloads -> ``PURGED_PAYLOAD``,
        marked purged so they are never sent again); audit records before ``audit_before`` are
        removed (the only deletion the audit trail allows). ``audit`` is appended with the
        counts as its detail. ``dry_run``: the counts only, nothing changed or appended."""
        ...

    def ping(self) -> None:
        """Raise if the store is unreachable."""
        ...

    def check_writable(self, min_free_bytes: int = 0, *, probe: bool = True) -> str | None:
        """Whether a write acknowledged now is durable: None, or the first check that failed.

        Checks, cheapest first: the store is still the one opened (``store-removed``,
        ``store-replaced``: a file deleted or swapped under the service takes every later
        write with it at restart), free space where it writes (``disk-low``: below
        ``min_free_bytes``; 0 skips it), and with ``probe`` a real write committed in a
        transaction of its own (``store-not-writable``: read-only, locked past its timeout,
        I/O error). Never raises; names no path. The caller rate-limits ``probe``.
        """

    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake`` (from another thread) when any process queues a message in the store,
        where the store can tell (PostgreSQL ``LISTEN``/``NOTIFY``; SQLite and memory cannot:
        their dispatchers poll). Returns the function that stops it."""
        ...

    def get_task(self, task_id: str) -> TaskRecord | None:
        """The Task of a referral, or None."""
        ...

    def task_for_request(self, service_request_id: str) -> str | None:
        """The Task id of the referral whose ServiceRequest has this id."""
        ...

    def known_items(self, task_id: str) -> set[str]:
        """Keys of the feedback items already recorded for a Task."""
        ...

    def save_task_update(
        self,
        task_id: str,
        expected_version: int,
        update: TaskUpdate,
        *,
        audit: AuditEvent,
        now: dt.datetime,
    ) -> int | None:
        """Apply ``update`` if the Task is still at ``expected_version``: the new state, its
        item keys, its outbox message and its audit record in one transaction. Returns the new
        version, or None when another update came first."""
        ...

    def exclusive(self, name: str) -> AbstractContextManager[bool]:
        """Hold the lock ``name`` among the processes on this store while the block runs, if
        no other holds it: True when held, False (at once, without waiting) when another
        process holds it. PostgreSQL: an advisory lock, so one replica polls a destination at a
        time; SQLite and memory: always True (one process)."""
        ...

    def poll_cursor(self, destination: str) -> str | None:
        """The ``_lastUpdated`` high-water mark of the last poll of a destination."""
        ...

    def set_poll_cursor(self, destination: str, cursor: str) -> None:
        """Remember the high-water mark after a poll round."""
        ...

    def overdue_tasks(self, now: dt.datetime, limit: int) -> list[str]:
        """Tasks past their first-contact deadline, without first contact, not finished, not
        yet alerted."""
        ...

    def mark_alerted(
        self, task_id: str, message: NewMessage | None, *, audit: AuditEvent, now: dt.datetime
    ) -> bool:
        """Record the deadline alert once (with its outbox message and audit); False if done."""
        ...

    def search_tasks(self, search: TaskSearch) -> TaskPage:
        """The Tasks matching ``search`` (within its tenancy), one page, and their total."""
        ...

    def item_task(self, key: str) -> str | None:
        """The Task id of a recorded feedback item (its key is its Observation's id)."""
        ...

    def task_messages(self, task_id: str) -> list[tuple[str, bytes]]:
        """Destination and payload of every outbox entry about a Task, oldest first (the
        referral's own included)."""
        ...


class MonitoringReader(Protocol):
    """The monitoring tables (no patient data): what the figures are computed from.

    Written only by hooks inside ``add_referral``, ``save_task_update`` and ``record_attempt``
    (in their transactions); read here."""

    def trajectories(
        self, since: dt.date | None = None, until: dt.date | None = None
    ) -> list[Trajectory]:
        """Every referral authored (referral date) in ``[since, until)`` with its progress,
        oldest first."""
        ...

    def tallies(
        self,
        *,
        period: Period,
        breakdown: Breakdown,
        now: dt.datetime,
        since: dt.date | None = None,
        until: dt.date | None = None,
        where: Mapping[str, str] | None = None,
    ) -> dict[str, Tally]:
        """What ``monitoring_grid.tallies`` gives over the referrals ``trajectories(since,
        until)`` returns that are ``visible`` in ``where``: the counts per period label and
        group, in the same order, and the statistics' samples."""
        ...


class DirectoryReplica(Protocol):
    """The local replica of the care-services directory (GF Adressering) and its sync state.

    Writes never check references (L8 in docs/standards/gf-adressering-mcsd.md) and never let an
    older version replace a newer one (S6, ``core.directory.newer``), so applying the same
    changes twice, or out of order, leaves the same replica (S7).
    """

    def apply(self, records: Sequence[DirectoryRecord]) -> int:
        """Store each record that is newer than what is kept (a tombstone included), in one
        transaction; returns how many changed the replica."""
        ...

    def get(self, resource_type: str, resource_id: str) -> DirectoryRecord | None:
        """The kept version of a resource (a tombstone when deleted), or None."""
        ...

    def find(self, resource_type: str, key: str) -> list[DirectoryRecord]:
        """Live resources of a type with this index key (``ura|…``, ``providedBy|…``), by id."""
        ...

    def sync_state(self) -> SyncState:
        """Where the replica stands (empty at first)."""
        ...

    def save_sync_state(self, state: SyncState) -> None:
        """Remember where the replica stands after a round."""
        ...

    def counts(self) -> dict[str, int]:
        """Live resources per type (for the operator)."""
        ...


@runtime_checkable
class ResealingStore(Protocol):
    """A store whose patient columns can be moved to the active key (``store rotate-key``;
    ``adapters/sealing.py``)."""

    def reseal(self, limit: int) -> ResealCount:
        """Seal up to ``limit`` referrals and outbox entries again under the active key, in one
        transaction; zero counts when nothing is left. Raises ``SealingError`` without a key."""
        ...

    def audit_keys(self) -> dict[str, int]:
        """Audit records with a patient identifier per key that sealed them (``clear``: not
        sealed); audit records are append-only and keep their key."""
        ...


class AuditReader(Protocol):
    """Searches the append-only audit trail (the console's audit search and the NEN 7513 answer
    to "who accessed this patient's data")."""

    def find_audit(self, query: AuditQuery) -> list[AuditRecord]:
        """The records matching ``query``, newest first, at most ``query.limit``."""
        ...


class AccountStore(Protocol):
    """Console accounts, their sessions and failed sign-ins (in the store's file)."""

    def add_account(self, account: Account, now: dt.datetime) -> bool:
        """Store a new account; False when the username is taken."""
        ...

    def get_account(self, username: str) -> Account | None:
        """The account, or None."""
        ...

    def change_account(self, account: Account) -> bool:
        """Replace a stored account's fields (by username); False when unknown. Ends its
        sessions when it is disabled or its password changes."""
        ...

    def list_accounts(self) -> list[Account]:
        """Every account, by username."""
        ...

    def add_session(self, session: Session) -> None:
        """Store a new session."""
        ...

    def get_session(self, id_hash: str) -> Session | None:
        """The session with this id hash, or None."""
        ...

    def touch_session(self, id_hash: str, now: dt.datetime) -> None:
        """Mark the session used at ``now`` (its idle timeout starts again)."""
        ...

    def end_session(self, id_hash: str) -> None:
        """Forget the session (sign-out, timeout)."""
        ...

    def add_login_failure(self, key: str, now: dt.datetime) -> None:
        """Remember one failed sign-in for ``key`` (``user:<name>`` or ``addr:<ip>``)."""
        ...

    def login_failures(self, key: str, since: dt.datetime) -> int:
        """Failed sign-ins for ``key`` at or after ``since`` (older ones are forgotten)."""
        ...

    def clear_login_failures(self, key: str) -> None:
        """Forget the failed sign-ins for ``key`` (after a successful one)."""
        ...
