"""Use case: the retention purge (``core/retention.py``), from ``wor-bridge purge`` and daily
inside the service (``Purger``: a thread that sleeps until ``[retention] purge_at`` UTC plus a
random delay up to ``jitter_s``, so replicas and sites do not all purge at the same second).

Each purge that removes something appends one NEN 7513 audit record (event ``retention_purge``,
action D, the counts as detail; no patient data) in the purge's own transaction; a purge that
finds nothing due changes nothing and is only logged.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import structlog

from wor_bridge.core import retention
from wor_bridge.ports import Clock, OutboxStore
from wor_bridge.records import AuditEvent, PurgeCounts

log = structlog.get_logger("wor_bridge.retention")


def purge(
    store: OutboxStore,
    settings: retention.RetentionSettings,
    clock: Clock,
    *,
    operator: str = "wor-bridge",
    dry_run: bool = False,
) -> PurgeCounts:
    """Purge what the retention settings say is due now; the counts (see ``OutboxStore.purge``)."""
    now = clock.now()
    payload_before, audit_before = retention.cutoffs(settings, now)
    event = AuditEvent(
        event="retention_purge",
        action="D",
        outcome="success",
        user=operator,
        responsible=operator,
        source_system="wor-bridge",
        object_type="Store",
    )
    counts = store.purge(payload_before, audit_before, now, dry_run=True)
    if not dry_run and (counts.referrals or counts.payloads or counts.audit):
        counts = store.purge(payload_before, audit_before, now, audit=event)
    log.info(
        "retention_purge",
        dry_run=dry_run,
        referrals=counts.referrals,
        payloads=counts.payloads,
        audit=counts.audit,
    )
    return counts


class Purger:
    """The daily purge in the service: ``start``/``stop`` like the dispatcher."""

    def __init__(
        self,
        store: OutboxStore,
        settings: retention.RetentionSettings,
        clock: Clock,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._jitter = jitter
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wor-bridge-purge", daemon=True)
        self.runs = 0

    def next_run(self) -> float:
        """Seconds until the next purge (the next ``purge_at`` plus the jitter)."""
        now = self._clock.now()
        delay = self._jitter() * self._settings.jitter_s
        return (retention.next_run(now, self._settings.purge_at, delay) - now).total_seconds()

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask the thread to stop and wait for it."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.wait(max(0.0, self.next_run())):
            try:
                purge(self._store, self._settings, self._clock)
                self.runs += 1
            except Exception as err:  # noqa: BLE001 - a failed purge is retried the next day
                log.error("retention_purge_failed", error=type(err).__name__)  # noqa: TRY400
