"""Use case: the monitoring report a reader may see, over the monitoring tables.

Who sees what (deny by default): an operator (``admin``) every referral; a practice client the
referrals of its practice (``practice``, e.g. ``agb:01099990``); a municipality client those of
its municipality; a welfare-side client those routed to its organisation; a GP-system client
those it sent. The threshold may be raised by the caller, never lowered below the configured one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from wor_bridge import collection
from wor_bridge.core.monitoring import Report, compute_tallied
from wor_bridge.core.monitoring_facts import Trajectory
from wor_bridge.core.monitoring_grid import Breakdown, visible
from wor_bridge.core.monitoring_period import Period
from wor_bridge.core.monitoring_settings import MonitoringSettings
from wor_bridge.ports import Clock, MonitoringReader, OutboxStore
from wor_bridge.records import AuditEvent


@dataclass(frozen=True, slots=True)
class Reader:
    """Whose figures a caller may see."""

    user: str
    admin: bool = False
    practice: str | None = None
    municipality: str | None = None
    welfare: str | None = None
    source_system: str | None = None

    @property
    def scope(self) -> str:
        """The reader's part of the referrals, in words (printed on the report)."""
        if self.admin:
            return "alle verwijzingen"
        parts = [
            f"{name} {value}"
            for name, value in (
                ("praktijk", self.practice),
                ("gemeente", self.municipality),
                ("welzijnsorganisatie", self.welfare),
                ("bronsysteem", self.source_system),
            )
            if value
        ]
        return ", ".join(parts) or "geen"

    @property
    def where(self) -> dict[str, str] | None:
        """The facts this reader's referrals must have (None: every referral; empty: none)."""
        if self.admin:
            return None
        return {
            name: value
            for name, value in (
                ("practice", self.practice),
                ("municipality", self.municipality),
                ("welfare", self.welfare),
                ("source_system", self.source_system),
            )
            if value is not None
        }

    def sees(self, t: Trajectory) -> bool:
        """Whether this referral counts in the reader's figures."""
        return visible(t, self.where)


def monitoring_report(
    reader_store: MonitoringReader,
    settings: MonitoringSettings,
    clock: Clock,
    *,
    reader: Reader,
    period: Period,
    breakdown: Breakdown,
    threshold: int | None = None,
    since: dt.date | None = None,
    until: dt.date | None = None,
    audit: OutboxStore | None = None,
    channel: str = "cli",
) -> Report:
    """The report of the referrals ``reader`` may see (audited when ``audit`` is given). The
    cyclic garbage collector is paused while it is counted and computed
    (``collection.paused``)."""
    now = clock.now()
    limit = max(threshold or settings.threshold, settings.threshold)
    with collection.paused():  # millions of objects, no cycles (``wor_bridge.collection``)
        counted = reader_store.tallies(
            period=period, breakdown=breakdown, now=now, since=since, until=until,
            where=reader.where,
        )  # fmt: skip
        report = compute_tallied(
            counted,
            period=period,
            breakdown=breakdown,
            settings=settings,
            now=now,
            threshold=limit,
            scope=reader.scope,
        )
    if audit is not None:
        audit.audit(
            AuditEvent(
                event="monitoring_report",
                action="R",
                outcome="success",
                user=reader.user,
                responsible=reader.user,
                source_system="",
                object_type="MeasureReport",
                detail=f"{channel}; period={period}; breakdown={breakdown}; threshold={limit};"
                f" scope={reader.scope}",
            ),
            now,
        )
    return report
