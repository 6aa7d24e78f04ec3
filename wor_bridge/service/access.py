"""Tenancy and the NEN 7513 trail of the service's routes that read or change patient data.

- **Tenancy fails closed.** A client sees a Task only when it is ``admin``, or welfare-side and
  the Task is routed to its ``destination``, or GP-side and the referral came from its
  ``source_system`` (``usecases.caller.may_access``); everything else is denied. A Task the
  caller may not see is answered exactly like one that does not exist (``not_found``).
- **Every request is audited, refusals included.** A route wraps its work in ``answer``: the
  ``Attempt`` it fills in (event, client, Task) becomes one audit record when nothing else
  recorded the request. The use cases record what they do (intake, a Task read, an applied
  update, a refused transition) and the notified-pull routes record their own; the store
  wrapper ``MarkingStore`` notes every record made while a request is current, so nothing is
  recorded twice and nothing is missed (401, 403, 404, 412, 428, 429, bad bodies, repeats).
  A Bundle of feedback is recorded per entry (``current`` nests).
- **On whose behalf.** GP side: the referrer of the referral (the requester's AGB/UZI in the
  stored Bundle) when the Task is the client's own, else the client's ``on_behalf_of``;
  welfare side (API clients, pull receivers, webhooks): the organisation, i.e. the destination
  id; admin: its ``on_behalf_of``, else its own id; unauthenticated: unknown (empty).

The patient of a record is the Task's when the request names a Task the bridge knows (from the
URL, or from an authenticated body), whether or not the caller may see it: a patient may ask
who tried to reach their referral.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final

from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from wor_bridge.config import ClientSettings
from wor_bridge.core import identifiers as ids
from wor_bridge.ports import Clock, OutboxStore
from wor_bridge.records import Added, AuditEvent, TaskRecord, TaskUpdate
from wor_bridge.service.bodies import BodyRefused
from wor_bridge.service.negotiation import BodyDecodeError
from wor_bridge.usecases.caller import Caller, may_access

UNKNOWN: Final = "(unknown)"


@dataclass(slots=True)
class Attempt:
    """One request (or one Bundle entry) as the audit trail records it; filled in by the route."""

    event: str
    action: str
    object_id: str = ""
    object_type: str = "Task"
    user: str = UNKNOWN
    client: ClientSettings | None = None
    task: TaskRecord | None = None
    recorded: bool = False
    outcome: str = ""
    """set when the status code does not tell (``no-change`` for a repeat)"""

    def by(self, client: ClientSettings) -> None:
        """The request's authenticated client."""
        self.client = client
        self.user = client.id


_CURRENT: ContextVar[Attempt | None] = ContextVar("wor_bridge_attempt", default=None)


def _mark() -> None:
    attempt = _CURRENT.get()
    if attempt is not None:
        attempt.recorded = True


class MarkingStore:
    """The store, noting on the current ``Attempt`` every audit record made for it."""

    def __init__(self, store: OutboxStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def audit(self, event: AuditEvent, now: Any) -> None:
        """Append an audit record (and note it)."""
        self._store.audit(event, now)
        _mark()

    def add_referral(self, referral: Any, now: Any, audit: AuditEvent | None = None) -> Added:
        """Store a referral with its audit record (and note it)."""
        added = self._store.add_referral(referral, now, audit)
        if audit is not None:
            _mark()
        return added

    def save_task_update(
        self,
        task_id: str,
        expected_version: int,
        update: TaskUpdate,
        *,
        audit: AuditEvent,
        now: Any,
    ) -> int | None:
        """Save a Task update with its audit record (noted when it was saved)."""
        version = self._store.save_task_update(
            task_id, expected_version, update, audit=audit, now=now
        )
        if version is not None:
            _mark()
        return version


def referrer(bundle: bytes) -> str:
    """``system|value`` of the referrer (the Task's requester, its AGB/UZI; else the
    Practitioner's) in a stored referral Bundle; empty when it names none."""
    try:
        data = json.loads(bundle)
        entries = {e["fullUrl"]: e["resource"] for e in data["entry"]}
        task = next(r for r in entries.values() if r.get("resourceType") == "Task")
        role = entries.get(task["requester"]["reference"], {})
        people = [role, entries.get((role.get("practitioner") or {}).get("reference"), {})]
    except (ValueError, KeyError, TypeError, StopIteration, AttributeError):
        return ""
    for person in people:
        for ident in person.get("identifier") or []:
            if ident.get("system") in ids.REFERRER_IDENTIFYING_SYSTEMS and ident.get("value"):
                return f"{ident['system']}|{ident['value']}"
    return ""


def on_behalf_of(client: ClientSettings | None, task: TaskRecord | None) -> str:
    """The responsible party on whose behalf ``client`` acts (see the module docstring)."""
    if client is None:
        return ""
    if client.destination is not None:
        return client.destination
    if client.source_system is None:  # admin
        return client.on_behalf_of or client.id
    if task is not None and task.source_system == client.source_system:
        return referrer(task.bundle) or client.on_behalf_of
    return client.on_behalf_of


def caller_of(client: ClientSettings, task: TaskRecord | None = None) -> Caller:
    """The use cases' view of ``client`` (acting on a known ``task``, when there is one)."""
    return Caller(
        client.id,
        client.source_system,
        on_behalf_of(client, task),
        client.destination,
        admin="admin" in client.scopes,
    )


def may_see(client: ClientSettings, task: TaskRecord) -> bool:
    """Whether ``client`` may read or change ``task`` (deny by default)."""
    return may_access(caller_of(client), client.destination, task.destination, task.source_system)


def outcome_of(status: int) -> str:
    """The audit outcome of an HTTP answer."""
    if status < 400:
        return "success"
    return "failed" if status >= 500 else "refused"


class AccessLog:
    """Looks Tasks up, decides visibility and writes the records routes did not get otherwise."""

    def __init__(
        self,
        store: OutboxStore,
        clock: Clock,
        refused: Callable[[BodyRefused], Response],
    ) -> None:
        self.store = store
        self.clock = clock
        self._refused = refused

    def task(self, task_id: str | None) -> TaskRecord | None:
        """The Task with this id (None for none or an unknown id)."""
        return self.store.get_task(task_id) if task_id else None

    def visible(self, client: ClientSettings, task: TaskRecord | None) -> TaskRecord | None:
        """``task`` when ``client`` may see it, else None (answered as unknown)."""
        return task if task is not None and may_see(client, task) else None

    def record(self, attempt: Attempt, status: int, detail: str = "") -> None:
        """One audit record for ``attempt`` answered with ``status``."""
        task = attempt.task
        self.store.audit(
            AuditEvent(
                event=attempt.event,
                action=attempt.action,
                outcome=attempt.outcome or outcome_of(status),
                user=attempt.user,
                responsible=on_behalf_of(attempt.client, task),
                source_system=task.source_system if task else "",
                patient_id=task.patient_id if task else "",
                object_type=attempt.object_type,
                object_id=task.task_id if task else attempt.object_id,
                detail=detail or f"HTTP {status}",
            ),
            self.clock.now(),
        )
        attempt.recorded = True

    @contextlib.contextmanager
    def current(self, attempt: Attempt) -> Iterator[Attempt]:
        """Make ``attempt`` the one that audit records made meanwhile belong to."""
        token = _CURRENT.set(attempt)
        try:
            yield attempt
        finally:
            _CURRENT.reset(token)

    async def answer(
        self, attempt: Attempt, handler: Callable[[], Awaitable[Response]]
    ) -> Response:
        """Run an async route under ``attempt``; record it if nothing else did."""
        with self.current(attempt):
            try:
                response = await handler()
            except BodyRefused as err:
                response = self._refused(err)
            except BodyDecodeError:  # answered 400 by the negotiation layer
                if not attempt.recorded:
                    await run_in_threadpool(self.record, attempt, 400)
                raise
            except Exception:
                if not attempt.recorded:
                    await run_in_threadpool(self.record, attempt, 500)
                raise
        if not attempt.recorded:
            await run_in_threadpool(self.record, attempt, response.status_code)
        return response

    def answer_sync(self, attempt: Attempt, handler: Callable[[], Response]) -> Response:
        """``answer`` for a route that runs in a worker thread."""
        with self.current(attempt):
            try:
                response = handler()
            except Exception:
                if not attempt.recorded:
                    self.record(attempt, 500)
                raise
        if not attempt.recorded:
            self.record(attempt, response.status_code)
        return response
