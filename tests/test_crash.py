"""Acceptance: a SIGKILL at the worst moments loses no acknowledged referral and duplicates none.

The real service runs as a subprocess; ``WOR_BRIDGE_FAULT`` makes it SIGKILL itself (a) right
after the intake commit, before the 201 reaches the client, and (b) right after the receiver
answered 2xx, before the outbox marks the entry delivered. After a restart without the fault,
every referral the client saw acknowledged is delivered and the receiver (a
``SimulatedFhirServer`` in this process) holds exactly one ServiceRequest and one Task for each.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.service_harness import (
    FHIR_JSON,
    HIS_KEY,
    ServiceProcess,
    auth,
    business_status,
    outbox_states,
    posts_received,
    receiver,
    referral_variant,
    service_requests,
    task_id_of,
    wait_until,
    write_config,
)
from wor_bridge.demo.fhir_server import SimulatedFhirServer

TIMEOUT = 10
KILLED = -signal.SIGKILL


@pytest.fixture
def sim() -> Iterator[SimulatedFhirServer]:
    """A fresh simulated welfare FHIR endpoint for each scenario."""
    with receiver() as server:
        yield server


@pytest.fixture
def service(tmp_path: Path, sim: SimulatedFhirServer) -> Iterator[ServiceProcess]:
    """A (not yet started) service with a 1 s lease; killed at the end whatever happens."""
    config = write_config(
        tmp_path,
        sim.base_url,
        delivery={"lease_s": 1.0},
        service={"rate_per_s": 1000.0, "burst": 1000},  # the polling must not be throttled
        # the lease must outlast the slowest possible delivery (connect + read timeout)
        destination={"connect_timeout_s": 0.3, "read_timeout_s": 0.6},
    )
    proc = ServiceProcess(config)
    try:
        yield proc
    finally:
        proc.kill()


def push(service: ServiceProcess, data: bytes) -> requests.Response:
    """POST a referral as the GP system does."""
    return requests.post(
        f"{service.base_url}/fhir/r4/ServiceRequest",
        data=data,
        headers=auth(HIS_KEY, FHIR_JSON),
        timeout=TIMEOUT,
    )


def acknowledged(response: requests.Response) -> tuple[str, bool]:
    """The Task id of a 201 (new) or 200 (a re-push) and whether the referral was new."""
    assert response.status_code in (200, 201)
    return task_id_of(response), response.status_code == 201


def all_delivered(service: ServiceProcess, task_ids: set[str]) -> bool:
    """True when the bridge shows every Task as delivered."""
    for task_id in task_ids:
        response = requests.get(
            f"{service.base_url}/fhir/r4/Task/{task_id}", headers=auth(HIS_KEY), timeout=TIMEOUT
        )
        assert response.status_code == 200
        if business_status(response.json()) != "delivered":
            return False
    return True


def wait_delivered(service: ServiceProcess, tasks: dict[str, str]) -> None:
    """Wait until every Task is delivered; on a timeout show the outbox and the delivery logs."""
    try:
        wait_until(lambda: all_delivered(service, set(tasks.values())), "every Task delivered")
    except AssertionError as err:
        # ids, states and status codes only: no patient data
        events = [
            {k: e.get(k) for k in ("event", "outbox_id", "result", "state", "error", "lease_kept")}
            for e in service.log_events()
            if e.get("event") not in ("mapping_extra_field_enabled",)
        ]
        raise AssertionError(
            f"{err}; outbox {outbox_states(service.config)}; logs {events}"
        ) from None


def assert_exactly_once(sim: SimulatedFhirServer, tasks: dict[str, str]) -> None:
    """The receiver holds one ServiceRequest per referral and exactly the acknowledged Tasks."""
    for referral_id in tasks:
        count = len(service_requests(sim, referral_id))
        assert count == 1, f"{referral_id}: {count} ServiceRequests at the receiver"
    assert len(sim.resources("ServiceRequest")) == len(tasks)
    received = sorted(t["id"] for t in sim.resources("Task"))
    assert received == sorted(tasks.values())


def test_kill_after_commit_then_repush_delivers_once(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """Killed after the commit, before the 201: the re-push is a duplicate; one delivery each."""
    referrals = {
        f"CRASH-A-{n}": referral_variant("accepted-contained", f"CRASH-A-{n}") for n in (1, 2, 3)
    }
    crashed = ["CRASH-A-1", "CRASH-A-2"]
    for referral_id in crashed:
        service.start({"WOR_BRIDGE_FAULT": "after_commit"})
        with pytest.raises(requests.ConnectionError):
            push(service, referrals[referral_id])
        assert service.wait_exit() == KILLED

    service.start()
    tasks: dict[str, str] = {}
    for referral_id, data in referrals.items():
        task_id, created = acknowledged(push(service, data))
        tasks[referral_id] = task_id
        # the killed intakes were committed: their re-push is recognised, the new one is not
        assert created is (referral_id not in crashed)
    assert len(set(tasks.values())) == len(referrals)

    wait_delivered(service, tasks)
    assert_exactly_once(sim, tasks)
    # a second re-push after delivery changes nothing at the receiver
    for referral_id in crashed:
        assert acknowledged(push(service, referrals[referral_id])) == (tasks[referral_id], False)
    assert all_delivered(service, set(tasks.values()))
    assert_exactly_once(sim, tasks)


def test_kill_after_send_redelivers_idempotently(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """Killed after the 2xx, before marking delivered: redelivered once the lease expires."""
    referrals = {
        f"CRASH-B-{n}": referral_variant("accepted-contained", f"CRASH-B-{n}") for n in (1, 2, 3)
    }
    # every push is acknowledged before any delivery starts (dispatcher off)
    service.start({"WOR_BRIDGE_SERVICE__DISPATCHER": "false"})
    tasks: dict[str, str] = {}
    for referral_id, data in referrals.items():
        task_id, created = acknowledged(push(service, data))
        assert created
        tasks[referral_id] = task_id
    service.stop()
    assert posts_received(sim) == 0

    # the dispatcher delivers the first entry, the receiver answers 2xx, the process dies
    service.start({"WOR_BRIDGE_FAULT": "after_send"}, wait=False)
    assert service.wait_exit() == KILLED
    assert posts_received(sim) == 1
    assert len(sim.resources("Task")) == 1
    # the outbox never learnt of that success: every entry is still pending, unattempted
    states = [(state, attempts) for _, state, attempts, *_ in outbox_states(service.config)]
    assert states == [("pending", 0)] * len(referrals)

    service.start()
    wait_delivered(service, tasks)
    assert_exactly_once(sim, tasks)
    # the Bundle that reached the receiver before the kill was sent again after the restart
    assert posts_received(sim) == len(referrals) + 1
