"""The background dispatcher: claims due outbox entries and delivers them, until stopped."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import structlog

from wor_bridge.bootstrap import Components
from wor_bridge.metrics import Metrics
from wor_bridge.usecases import deadline_alerts, delivery

log = structlog.get_logger("wor_bridge.dispatcher")


class Dispatcher:
    """A worker thread around ``delivery.deliver_due``."""

    def __init__(self, components: Components, metrics: Metrics | None = None) -> None:
        self._c = components
        self._metrics = metrics
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wor-bridge-dispatcher", daemon=True)
        self._unsubscribe: Callable[[], None] | None = None
        concurrency = components.config.delivery.concurrency
        self._workers = (
            ThreadPoolExecutor(concurrency, thread_name_prefix="wor-bridge-delivery")
            if concurrency > 1
            else None
        )

    def start(self) -> None:
        """Start the worker thread, woken also when another replica queues a message (where the
        store can tell: PostgreSQL ``NOTIFY``; the interval is the fallback)."""
        self._thread.start()
        self._unsubscribe = self._c.store.subscribe(self.wake)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the worker to stop and wait for it."""
        self._stop.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._workers is not None:
            self._workers.shutdown(wait=False, cancel_futures=True)

    def wake(self) -> None:
        """Run a round now (after an intake) instead of at the next interval."""
        self._wake.set()

    @property
    def alive(self) -> bool:
        """True while the worker thread runs."""
        return self._thread.is_alive()

    def run_once(self) -> list[delivery.Attempt]:
        """One round: deliver what is due now."""
        c = self._c
        service = c.config.service
        attempts = delivery.deliver_due(
            c.store,
            c.config.core,
            c.transport,
            c.clock,
            c.policy,
            owner=c.worker_id,
            lease_s=c.config.delivery.lease_s,
            limit=service.dispatcher_batch,
            directory=delivery.Directory(c.directory, c.config.directory),
            workers=self._workers,
            concurrency=c.config.delivery.concurrency,
        )
        if self._metrics is not None:
            for attempt in attempts:
                result = delivery.outcome_name(attempt.outcome)
                self._metrics.delivery_attempts.labels(attempt.destination, result).inc()
        return attempts

    def check_deadlines(self) -> list[str]:
        """Alert once for each Task past its first-contact deadline."""
        c = self._c
        alerted = deadline_alerts.check_deadlines(c.store, c.config.core, c.clock)
        if self._metrics is not None and alerted:
            self._metrics.deadline_alerts.inc(len(alerted))
        return alerted

    def _run(self) -> None:
        interval = self._c.config.service.dispatcher_interval_s
        every = self._c.config.core.feedback.deadline_check_interval_s
        last_check = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() - last_check >= every:
                    last_check = time.monotonic()
                    self.check_deadlines()
                busy = bool(self.run_once())
            except Exception as err:  # noqa: BLE001 - keep the worker alive; log the type only
                # no traceback: an exception's text may hold payload values
                log.error("dispatcher_round_failed", error=type(err).__name__)  # noqa: TRY400
                busy = False
            if not busy:
                self._wake.wait(interval)
                self._wake.clear()
