"""``/metrics`` on the real service: its own ``metrics:read`` scope and its own rate bucket.

A Prometheus scraper is configured with ``metrics:read`` only (bound to no side: it sees no Task);
a GP system's key that may also scrape takes its scrapes from a separate bucket, so scraping
never uses up the intake budget, and a runaway scraper is throttled (429) on its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.service_harness import (
    FHIR_JSON,
    HIS_KEY,
    ServiceProcess,
    auth,
    client,
    example_clients,
    receiver,
    referral_variant,
    running_service,
    write_config,
)

TIMEOUT = 10
SCRAPER_KEY = "test-scraper-key"
SCRAPING_HIS_KEY = "test-scraping-his-key"
BURST = 3


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """The service with a scraper and a GP system that may scrape; buckets of 3, refilled slowly."""
    with receiver() as sim:
        config = write_config(
            tmp_path_factory.mktemp("metrics"),
            sim.base_url,
            service={"rate_per_s": 0.001, "burst": BURST},
            clients=[
                *example_clients(),
                client("scraper", SCRAPER_KEY, ["metrics:read"]),
                client(
                    "his-scraping",
                    SCRAPING_HIS_KEY,
                    ["referral:write", "task:read", "metrics:read"],
                    source_system="his-example",
                ),
            ],
        )
        with running_service(config) as running:
            yield running


def _get(service: ServiceProcess, path: str, key: str | None) -> requests.Response:
    headers = auth(key) if key else {}
    return requests.get(service.base_url + path, headers=headers, timeout=TIMEOUT)


def test_scraper_reads_metrics_and_nothing_else(service: ServiceProcess) -> None:
    """``metrics:read`` gets the Prometheus text; a Task read with it is 403."""
    scraped = _get(service, "/metrics", SCRAPER_KEY)
    assert scraped.status_code == 200
    assert "wor_bridge_intake_total" in scraped.text
    assert scraped.headers["Content-Type"].startswith("text/plain")
    assert _get(service, "/fhir/r4/Task/unknown", SCRAPER_KEY).status_code == 403


def test_metrics_needs_the_scope(service: ServiceProcess) -> None:
    """A GP system's key without ``metrics:read`` is 403 at /metrics; no key is 401."""
    refused = _get(service, "/metrics", HIS_KEY)
    assert refused.status_code == 403
    assert "metrics:read" in refused.json()["issue"][0]["diagnostics"]
    assert _get(service, "/metrics", None).status_code == 401


def test_scraping_takes_nothing_from_the_intake_budget(service: ServiceProcess) -> None:
    """Scraping past the burst is 429 on the metrics bucket only; the same key then still
    pushes a referral (201) with its untouched API bucket."""
    statuses = [_get(service, "/metrics", SCRAPING_HIS_KEY).status_code for _ in range(BURST + 2)]
    assert statuses[:BURST] == [200] * BURST
    assert statuses[BURST:] == [429, 429]
    throttled = _get(service, "/metrics", SCRAPING_HIS_KEY)
    assert float(throttled.headers["Retry-After"]) > 0
    pushed = requests.post(
        service.base_url + "/fhir/r4/ServiceRequest",
        data=referral_variant("accepted-contained", "METRICS-1"),
        headers=auth(SCRAPING_HIS_KEY, FHIR_JSON),
        timeout=TIMEOUT,
    )
    assert pushed.status_code == 201
