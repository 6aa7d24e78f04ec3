"""Prometheus metrics. Labels are outcomes, destinations and results: never patient data."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from wor_bridge.records import QueueStats

# the *_created series add nothing for one long-running process
disable_created_metrics()  # type: ignore[no-untyped-call]


class _QueueCollector(Collector):
    def __init__(self, stats: Callable[[], QueueStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[GaugeMetricFamily]:
        stats = self._stats()
        depth = GaugeMetricFamily(
            "wor_bridge_outbox_entries", "Outbox entries by state", labels=["state"]
        )
        depth.add_metric(["pending"], stats.pending)
        depth.add_metric(["dead"], stats.dead)
        depth.add_metric(["delivered"], stats.delivered)
        yield depth
        yield GaugeMetricFamily(
            "wor_bridge_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending outbox entry",
            value=stats.oldest_pending_age_s,
        )


class Metrics:
    """The service's metrics in their own registry."""

    def __init__(self, stats: Callable[[], QueueStats]) -> None:
        self.registry = CollectorRegistry()
        self.intake = Counter(
            "wor_bridge_intake",
            "Referral intakes by outcome (accepted, duplicate, refused, too_large)",
            ["outcome"],
            registry=self.registry,
        )
        self.delivery_attempts = Counter(
            "wor_bridge_delivery_attempts",
            "Delivery attempts by destination and result (delivered, retry, rejected)",
            ["destination", "result"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "wor_bridge_feedback",
            "Welfare-side updates by channel (fhir, webhook, poll) and outcome",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.feedback_withheld = Counter(
            "wor_bridge_feedback_items_withheld",
            "Feedback items not forwarded because the consent does not cover them",
            registry=self.registry,
        )
        self.deadline_alerts = Counter(
            "wor_bridge_first_contact_alerts",
            "First-contact deadlines that passed without first contact (alerted once each)",
            registry=self.registry,
        )
        self.intake_seconds = Histogram(
            "wor_bridge_intake_seconds",
            "Time to map, gate and durably store a referral",
            registry=self.registry,
        )
        self.registry.register(_QueueCollector(stats))
