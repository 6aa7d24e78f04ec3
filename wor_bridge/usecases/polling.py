"""The poller: asks welfare FHIR servers (destinations with ``poll = true``) what changed.

Every ``feedback.poll_interval_s`` (default 15 minutes, as the HL7 SDOH Clinical Care IG
recommends), for each polled destination: search its Tasks changed since the stored cursor
(``connectors.fhir_poll``), read the Observations each Task lists in ``output``, and hand status
and items to ``way_back.apply_feedback`` as the welfare side of *that* destination, so it can
only touch its own Tasks. A refusal (an illegal or out-of-order transition) is logged and counted,
never raised. A transport error or an unusable answer ends the round for that destination; the
cursor moves only as far as the round certainly got. Logs carry counts and ids, never patient data.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

import structlog

from wor_bridge.bootstrap import Components
from wor_bridge.connectors import fhir_feedback, fhir_poll
from wor_bridge.core import feedback as fb
from wor_bridge.core import fhir, free_text
from wor_bridge.core.delivery import HttpRequest, Rejected, RetryLater, classify_response
from wor_bridge.core.settings import Destination
from wor_bridge.core.task import Refusal
from wor_bridge.errors import TransportError
from wor_bridge.metrics import Metrics
from wor_bridge.usecases import way_back
from wor_bridge.usecases.caller import Caller

POLLED_TEXT: Final = free_text.Places(
    "Task.statusReason.text", "Task.owner", "Observation.valueString"
)
log = structlog.get_logger("wor_bridge.usecases.polling")

CHANNEL = "poll"
"""The ``channel`` label of the ``wor_bridge_feedback`` counter."""


@dataclass(frozen=True, slots=True)
class Round:
    """What one poll of one destination did (counts only: no patient data)."""

    destination: str
    pages: int
    seen: int
    applied: int
    repeated: int
    refused: int
    ignored: int
    complete: bool
    cursor: str | None
    error: str | None = None


@dataclass(slots=True)
class _Tally:
    pages: int = 0
    seen: int = 0
    applied: int = 0
    repeated: int = 0
    refused: int = 0
    ignored: int = 0


class _RoundEnded(Exception):  # noqa: N818 - control flow inside a round, never escapes it
    """The destination gave no usable answer; ``reason`` says why (no values)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def _next(destination: Destination, page: fhir_poll.Searchset) -> HttpRequest | None:
    """The request for the next page, None after the last; ends the round for a foreign link."""
    if page.next_url is None:
        return None
    request = fhir_poll.next_request(destination, page.next_url)
    if request is None:  # off the destination's server: its credentials must not go there
        raise _RoundEnded("next link leaves the server")
    return request


class Poller:
    """Polls the welfare FHIR servers of destinations with ``poll = true``; a thread runs it."""

    def __init__(self, components: Components, metrics: Metrics | None = None) -> None:
        self._c = components
        self._metrics = metrics
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wor-bridge-poller", daemon=True)

    @property
    def destinations(self) -> tuple[Destination, ...]:
        """The destinations this poller asks (``poll = true`` and an endpoint)."""
        return tuple(d for d in self._c.config.core.destinations if d.poll and d.endpoint)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the worker to stop and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @property
    def alive(self) -> bool:
        """True while the worker thread runs."""
        return self._thread.is_alive()

    def run_once(self) -> list[Round]:
        """One round: poll every polled destination once."""
        rounds = []
        for destination in self.destinations:
            try:
                rounds.append(self.poll(destination))
            except Exception as err:  # noqa: BLE001 - one destination must not stop the others
                # no traceback: an exception's text may hold values from the other side
                log.error("poll_failed", destination=destination.id, error=type(err).__name__)  # noqa: TRY400
                self._count("error")
        return rounds

    def poll(self, destination: Destination) -> Round:
        """Poll one destination: search, apply each of our Tasks, then move its cursor; unless
        another process on the store polls it right now (then nothing, ``error`` says so)."""
        with self._c.store.exclusive(f"poll|{destination.id}") as held:
            if not held:
                log.info("poll_round_skipped", destination=destination.id, reason="busy")
                cursor = self._c.store.poll_cursor(destination.id)
                return Round(destination.id, 0, 0, 0, 0, 0, 0, False, cursor, "polled elsewhere")
            return self._poll(destination)

    def _poll(self, destination: Destination) -> Round:
        started = time.monotonic()
        store = self._c.store
        old = store.poll_cursor(destination.id)
        tally = _Tally()
        done: list[str] = []  # lastUpdated of the pages handled completely
        request: HttpRequest | None = fhir_poll.search_request(destination, old)
        error = None
        try:
            while request is not None and tally.pages < fhir_poll.MAX_PAGES:
                page = self._page(destination, request)
                tally.pages += 1
                tally.seen += len(page.tasks) + page.others
                tally.ignored += page.others
                for task_id, task in page.tasks:
                    self._task(destination, task_id, task, tally)
                done += page.stamps
                request = _next(destination, page)
        except _RoundEnded as ended:
            error = ended.reason
            self._count("error")
        complete = error is None and request is None
        cursor = fhir_poll.next_cursor(done, old, complete=complete)
        if cursor is not None and cursor != old:
            store.set_poll_cursor(destination.id, cursor)
        result = Round(
            destination.id,
            tally.pages,
            tally.seen,
            tally.applied,
            tally.repeated,
            tally.refused,
            tally.ignored,
            complete,
            cursor,
            error,
        )
        log.info(
            "poll_round",
            destination=destination.id,
            pages=result.pages,
            tasks=result.seen,
            applied=result.applied,
            repeated=result.repeated,
            refused=result.refused,
            ignored=result.ignored,
            complete=complete,
            cursor_moved=cursor != old,
            error=error,
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return result

    def _send(self, destination: Destination, request: HttpRequest) -> tuple[int, Any]:
        """(status, parsed JSON body or None); ends the round when there is no usable answer."""
        try:
            response = self._c.transport.send(request, destination)
        except TransportError as err:
            raise _RoundEnded(f"no response ({err.kind})") from None
        outcome = classify_response(response, self._c.clock.now())
        if isinstance(outcome, RetryLater) or (
            isinstance(outcome, Rejected) and outcome.status not in (404, 410)
        ):
            raise _RoundEnded(outcome.reason)
        try:
            body = json.loads(response.body) if response.body else None
        except (ValueError, RecursionError):
            body = None
        return response.status, body

    def _page(self, destination: Destination, request: HttpRequest) -> fhir_poll.Searchset:
        status, body = self._send(destination, request)
        if status >= 300:
            raise _RoundEnded(f"HTTP {status}")
        try:
            return fhir_poll.parse_searchset(body)
        except fhir_feedback.FeedbackFormatError as err:
            raise _RoundEnded(f"unusable searchset ({err.location})") from None

    def _task(  # noqa: PLR0911 - one early return per refusal reason
        self, destination: Destination, task_id: str, task: Any, tally: _Tally
    ) -> None:
        """Apply one of our Tasks (with its output Observations) and count the result."""
        record = self._c.store.get_task(task_id)
        if record is None:
            tally.ignored += 1  # a bridge-style id we never issued
            self._count("ignored")
            return
        if record.destination != destination.id:
            self._refused(destination, task_id, tally, "forbidden", "Task")
            return
        issues = fhir.validate(task, "Task")
        if issues:
            self._refused(destination, task_id, tally, "invalid", issues[0].expression)
            return
        now = self._c.clock.now().isoformat(timespec="seconds")
        try:
            update = fhir_feedback.task_feedback(task_id, task, now)
        except fhir_feedback.FeedbackFormatError as err:
            self._refused(destination, task_id, tally, "invalid", err.location)
            return
        refs = fhir_poll.output_refs(task)
        if update.status == "requested" and record.status == "requested":
            if not refs:  # the Task as the bridge sent it: nothing to report yet
                tally.repeated += 1
                self._count("repeat")
                return
            update = dataclasses.replace(update, status=None, business_status=None)
        items = self._items(destination, task, refs)
        known = self._c.store.known_items(task_id)
        # an item withdrawn (entered-in-error) before any poll saw it: nothing to correct
        items = [i for i in items if not i.retracted or fb.item_key(task_id, i) in known]
        if items:
            update = dataclasses.replace(update, items=(*update.items, *items))
        long = free_text.too_long(update, self._c.config.core.feedback, POLLED_TEXT)
        if long is not None:  # never shortened, never forwarded: refused like a malformed Task
            self._refused(destination, task_id, tally, long.code, long.expression)
            return
        result = way_back.apply_feedback(
            self._c.store,
            self._c.config.core,
            self._c.clock,
            update,
            side="welfare",
            caller=Caller(f"poll:{destination.id}"),
            destination=destination.id,
            jump=True,
        )
        if isinstance(result, Refusal):
            self._refused(
                destination, task_id, tally, result.code, "Task", status=result.http_status
            )
            return
        if result.changed:
            tally.applied += 1
            self._count("applied")
        else:
            tally.repeated += 1
            self._count("repeat")
        if result.dropped and self._metrics is not None:
            self._metrics.feedback_withheld.inc(result.dropped)

    def _items(self, destination: Destination, task: Any, refs: list[str]) -> list[fb.FeedbackItem]:
        """Feedback items from the Observations in ``Task.output``; unusable ones are skipped."""
        items = []
        for index, ref in enumerate(refs):
            where = f"Task.output[{index}]"
            observation = fhir_poll.contained_observation(task, ref)
            if observation is None:
                request = fhir_poll.observation_request(destination, ref)
                if request is None:
                    log.warning("poll_item_skipped", destination=destination.id, location=where)
                    continue
                status, observation = self._send(destination, request)
                if status >= 300 or not isinstance(observation, dict):
                    log.warning("poll_item_skipped", destination=destination.id, location=where)
                    continue
            if observation.get("resourceType") != "Observation" or fhir.validate(
                observation, "Observation"
            ):
                log.warning("poll_item_skipped", destination=destination.id, location=where)
                continue
            try:
                items.append(fhir_feedback.observation_item(observation, where))
            except fhir_feedback.FeedbackFormatError as err:
                log.warning("poll_item_skipped", destination=destination.id, location=err.location)
        return items

    def _refused(
        self,
        destination: Destination,
        task_id: str,
        tally: _Tally,
        code: str,
        location: str,
        *,
        status: int = 422,
    ) -> None:
        tally.refused += 1
        self._count("refused")
        log.warning(
            "poll_task_refused",
            destination=destination.id,
            task_id=task_id,
            status=status,
            code=code,
            location=location,
        )

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.feedback.labels(CHANNEL, outcome).inc()

    def _run(self) -> None:
        interval = self._c.config.core.feedback.poll_interval_s
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as err:  # noqa: BLE001 - keep the worker alive; log the type only
                log.error("poll_round_failed", error=type(err).__name__)  # noqa: TRY400
            self._stop.wait(interval)
