"""Use case: keep the local replica of the care-services directory (the GF *Update Client*).

Rule numbers are those of ``docs/standards/gf-adressering-mcsd.md`` section 2 (sources there:
[GF] care-services.md national constraint 4, "Update Client", "Error handling and resilience";
[GF-uml] the sync diagrams; [FHIR] http.html#history):

- L1-L3, L5: the first round loads every configured type in the order of L4 with a search
  without parameters, following ``next`` until exhausted; each page is applied before the next
  is asked for. The server time of the very first page (``Bundle.meta.lastUpdated``) is the
  sync timestamp: one for the whole load (section 7.1 reads it "once").
- L6, S1: then, and in every later round, ``{Type}/_history?_since=<sync timestamp>`` per type.
  The new timestamp is the server time of the first history page of the round (section 7.2: the
  server's time of the response); ``_since`` is inclusive and applying is idempotent, so the
  overlap is harmless (L7, S7).
- S5: strictly sequential: one request at a time, each page applied before the next request.
- S6: entries are applied oldest first and never over a newer version (``core.directory``).
- L8: unresolved references are accepted; a broken entry is skipped and counted and never stops
  the sync (``connectors.mcsd.parse_page``).
- L9: the replica is ``ready`` (routing may use it) once the load and its catch-up completed.
- S8, S9: a 5xx, a timeout or a 429 is retried in the round after ``Retry-After`` (or a short
  exponential backoff) up to ``max_wait_s``; beyond that the round ends, the timestamp stays where
  it was, and the next round comes after exponential backoff (never before ``Retry-After``).
- S2-S4, S10: one interval for all types, ``interval_s`` plus a random ``0..jitter_s``.

Logs carry counts, types, statuses and entry locations; the directory holds organisation data,
and no value of it is logged.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import structlog

from wor_bridge.bootstrap import Components
from wor_bridge.connectors import mcsd
from wor_bridge.core.delivery import (
    Delivered,
    HttpRequest,
    HttpResponse,
    Outcome,
    RetryLater,
    classify_error,
    classify_response,
)
from wor_bridge.core.directory import DirectorySettings, SyncState, sync_delay_s
from wor_bridge.errors import ConfigError, TransportError
from wor_bridge.ports import DirectoryReplica

log = structlog.get_logger("wor_bridge.usecases.directory_sync")

TRIES: Final = 4
"""Attempts per request inside a round (S8, S9)."""
IN_ROUND_BASE_S: Final = 1.0
"""First backoff inside a round when the server names no ``Retry-After``."""


@dataclass(frozen=True, slots=True)
class SyncRound:
    """What one round did (counts only)."""

    mode: str
    """``initial`` (first load), ``full`` (a reload asked for) or ``delta``."""
    pages: int
    received: int
    applied: int
    broken: int
    complete: bool
    ready: bool
    since_moved: bool
    error: str | None = None
    retry_after_s: float | None = None


@dataclass(slots=True)
class _Tally:
    pages: int = 0
    received: int = 0
    applied: int = 0
    broken: int = 0


class _RoundEnded(Exception):  # noqa: N818 - control flow inside a round, never escapes it
    def __init__(self, reason: str, retry_after_s: float | None = None) -> None:
        self.reason = reason
        self.retry_after_s = retry_after_s
        super().__init__(reason)


class DirectorySync:
    """The Update Client: ``run_once`` for one round; ``start`` runs rounds in a thread."""

    def __init__(
        self,
        components: Components,
        *,
        sleep: Callable[[float], bool] | None = None,
        draw: Callable[[], float] = random.random,
    ) -> None:
        settings, replica = components.config.directory, components.directory
        if settings is None or replica is None:
            raise ConfigError("directory sync needs a [directory] section")
        self._c = components
        self._settings: DirectorySettings = settings
        self._replica: DirectoryReplica = replica
        self._target = settings.transport_destination()
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._draw = draw
        self._thread = threading.Thread(target=self._run, name="wor-bridge-directory", daemon=True)

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

    def run_once(self, *, full: bool = False) -> SyncRound:
        """One round: the initial load (or a ``full`` reload) and/or the ``_history`` deltas."""
        started = time.monotonic()
        state = self._replica.sync_state()
        initial = full or not state.ready or state.since is None
        mode = ("full" if state.ready else "initial") if initial else "delta"
        tally = _Tally()
        error, retry_after, since = None, None, state.since
        try:
            since = self._load(tally) if initial else state.since
            since = self._history(since or "", tally)
        except _RoundEnded as ended:
            error, retry_after = ended.reason, ended.retry_after_s
        complete = error is None
        if complete:
            self._replica.save_sync_state(SyncState(since, True, self._c.clock.now()))
        result = SyncRound(
            mode,
            tally.pages,
            tally.received,
            tally.applied,
            tally.broken,
            complete,
            complete or state.ready,
            complete and since != state.since,
            error,
            retry_after,
        )
        log.info(
            "directory_sync_round",
            mode=mode,
            pages=tally.pages,
            received=tally.received,
            applied=tally.applied,
            broken=tally.broken,
            complete=complete,
            ready=result.ready,
            since_moved=result.since_moved,
            error=error,
            duration_ms=round((time.monotonic() - started) * 1000),
        )
        return result

    def _load(self, tally: _Tally) -> str:
        """L1-L5: every type, all pages; returns the server time of the first page."""
        first: str | None = None
        base, size = self._settings.base_url, self._settings.page_size
        for resource_type in self._settings.resource_types:
            request: HttpRequest | None = mcsd.load_request(base, resource_type, size)
            pages = 0
            while request is not None:
                page = self._page(request, resource_type, history=False, tally=tally)
                if first is None:
                    first = page.server_time
                    if first is None:
                        raise _RoundEnded("the first page carries no server time")
                request, pages = self._next(page, pages)
        return first or ""

    def _history(self, since: str, tally: _Tally) -> str:
        """S1: the deltas of every type since ``since``; returns the new sync timestamp."""
        new: str | None = None
        base, size = self._settings.base_url, self._settings.page_size
        for resource_type in self._settings.resource_types:
            request: HttpRequest | None = mcsd.history_request(base, resource_type, since, size)
            pages = 0
            while request is not None:
                page = self._page(request, resource_type, history=True, tally=tally)
                new = new or page.server_time
                request, pages = self._next(page, pages)
        return new or since

    def _next(self, page: mcsd.Page, pages: int) -> tuple[HttpRequest | None, int]:
        if page.next_url is None:
            return None, pages + 1
        if pages + 1 >= self._settings.max_pages:
            raise _RoundEnded("page limit reached")
        request = mcsd.next_request(self._settings.base_url, page.next_url)
        if request is None:  # the directory's credentials must not go elsewhere
            raise _RoundEnded("next link leaves the directory")
        return request, pages + 1

    def _page(
        self, request: HttpRequest, resource_type: str, *, history: bool, tally: _Tally
    ) -> mcsd.Page:
        """Fetch (with S8/S9 retries), parse and apply one page."""
        response = self._fetch(request)
        try:
            body = json.loads(response.body)
        except (ValueError, RecursionError):
            raise _RoundEnded("unusable page (not JSON)") from None
        try:
            page = mcsd.parse_page(
                body, resource_type, history=history, date_header=response.headers.get("date")
            )
        except mcsd.McsdFormatError as err:
            raise _RoundEnded(f"unusable page ({err.location})") from None
        for location in page.broken:
            log.warning("directory_entry_skipped", resource_type=resource_type, location=location)
        tally.pages += 1
        tally.received += len(page.records)
        tally.broken += len(page.broken)
        tally.applied += self._replica.apply(page.records)
        return page

    def _fetch(self, request: HttpRequest) -> HttpResponse:
        for attempt in range(TRIES):
            outcome: Outcome
            try:
                response = self._c.transport.send(request, self._target)
            except TransportError as err:
                outcome = classify_error(err.kind)
            else:
                outcome = classify_response(response, self._c.clock.now())
                if isinstance(outcome, Delivered):
                    return response
            if not isinstance(outcome, RetryLater):
                raise _RoundEnded(outcome.reason)
            wait = outcome.retry_after_s
            if wait is None:
                wait = IN_ROUND_BASE_S * 2**attempt * (0.5 + self._draw() / 2)
            if attempt + 1 == TRIES or wait > self._settings.max_wait_s:
                raise _RoundEnded(outcome.reason, outcome.retry_after_s)
            log.info("directory_request_retried", status=outcome.status, wait_s=round(wait, 1))
            if self._sleep(wait):
                raise _RoundEnded("stopped")
        raise _RoundEnded("no answer")  # pragma: no cover - the loop always returns or raises

    def _run(self) -> None:
        failures = 0
        state = self._replica.sync_state()
        delay = 0.0
        if state.ready and state.synced_at is not None:
            elapsed = (self._c.clock.now() - state.synced_at).total_seconds()
            delay = sync_delay_s(self._settings, self._draw(), since_last_s=elapsed)
        while not self._stop.wait(delay):
            result: SyncRound | None = None
            try:
                result = self.run_once()
            except Exception as err:  # noqa: BLE001 - keep the worker alive; log the type only
                log.error("directory_sync_failed", error=type(err).__name__)  # noqa: TRY400
            failures = 0 if result is not None and result.complete else failures + 1
            delay = sync_delay_s(
                self._settings,
                self._draw(),
                failures=failures,
                retry_after_s=result.retry_after_s if result else None,
                since_last_s=0.0,
            )
