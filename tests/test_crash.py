"""Acceptance: a SIGKILL at the worst moments loses no acknowledged referral and duplicates none.

The real service runs as a subprocess; ``WOR_BRIDGE_FAULT`` makes it SIGKILL itself (a) right
after the intake commit, before the 201 reaches the client, and (b) right after the receiver
answered 2xx, before the outbox marks the entry delivered; and (c) the receiver itself SIGKILLs
the bridge after applying a request, before answering it (mid-answer). (b) and (c) run for every
destination type the code knows. After a restart without the fault, every referral the client
saw acknowledged is delivered and the receiver (a ``SimulatedFhirServer`` in this process) holds
exactly one effect for each: one ServiceRequest and Task (fhir-r4), one notification Task
(notified pull), one document (ZorgDomein-style), counted per referral.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.service_harness import (
    FHIR_JSON,
    HIS_KEY,
    ServiceProcess,
    auth,
    business_status,
    outbox_states,
    receiver,
    referral_variant,
    service_requests,
    task_id_of,
    wait_until,
    write_config,
)
from wor_bridge import load_settings
from wor_bridge.connectors import outbound, zorgdomein
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


# --- every destination type: the receiver applied, the bridge never learnt it -----------------


def _referrals_at(sim: SimulatedFhirServer, task_id: str) -> int:
    """fhir-r4: the Tasks with this id (the ServiceRequests are counted per referral as well)."""
    return sum(1 for t in sim.resources("Task") if t.get("id") == task_id)


def _notifications_at(sim: SimulatedFhirServer, task_id: str) -> int:
    """notified-pull-stu3: the notification Tasks carrying this Task's identifier."""
    value = f"urn:uuid:{task_id}"
    return sum(
        1
        for t in sim.resources("Task")
        if any(i.get("value") == value for i in t.get("identifier") or [])
    )


def _documents_at(sim: SimulatedFhirServer, task_id: str) -> int:
    """zorgdomein-stu3: the document Bundles with this referral's document identifier."""
    value = f"urn:uuid:{zorgdomein.document_id(task_id)}"
    return sum(1 for b in sim.resources("Bundle") if b["identifier"]["value"] == value)


EFFECTS: dict[str, Callable[[SimulatedFhirServer, str], int]] = {
    "fhir-r4": _referrals_at,
    "notified-pull-stu3": _notifications_at,
    "zorgdomein-stu3": _documents_at,
}


def test_every_destination_type_has_a_crash_case() -> None:
    """Every destination type the code knows that sends something has an effect count here (a
    new type too); ``inbox`` sends nothing: there is no answer to die in the middle of."""
    assert set(EFFECTS) == {d for d, c in outbound.TYPES.items() if c.on_the_wire}


class _Killer:
    """The receiver's hook: once armed with a service, the next write it applies SIGKILLs that
    service's current run before the answer leaves (the bridge dies mid-answer, the receiver
    keeps the effect)."""

    def __init__(self) -> None:
        self.service: ServiceProcess | None = None

    def __call__(self, _rtype: str, _resource: dict[str, Any]) -> None:
        service, self.service = self.service, None
        if service is not None and service.pid is not None:
            os.kill(service.pid, signal.SIGKILL)


@pytest.mark.parametrize("dtype", sorted(EFFECTS))
def test_kill_after_send_redelivers_idempotently(tmp_path: Path, dtype: str) -> None:
    """Killed after the 2xx, then by the receiver mid-answer: one effect per referral."""
    killer = _Killer()
    sim = SimulatedFhirServer(on_write=killer).start()
    destination = next(d for d in load_settings().destinations if d.type == dtype and d.mapping)
    config = write_config(
        tmp_path,
        sim.base_url,
        delivery={"lease_s": 1.0},
        service={"rate_per_s": 1000.0, "burst": 1000},
        destination={"connect_timeout_s": 0.3, "read_timeout_s": 0.6},
        routing={"catch_all": destination.id},
    )
    service = ServiceProcess(config)
    try:
        _kill_after_send(service, sim, killer, dtype)
    finally:
        service.kill()
        sim.stop()


def _kill_after_send(
    service: ServiceProcess, sim: SimulatedFhirServer, killer: _Killer, dtype: str
) -> None:
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
    assert sim.requests() == []
    effects = EFFECTS[dtype]

    # the dispatcher delivers the first entry, the receiver answers 2xx, the process dies
    service.start({"WOR_BRIDGE_FAULT": "after_send"}, wait=False)
    assert service.wait_exit() == KILLED
    assert len(sim.requests()) == 1
    assert sum(effects(sim, t) for t in tasks.values()) == 1
    # the outbox never learnt of that success: every entry is still pending, unattempted
    states = [(state, attempts) for _, state, attempts, *_ in outbox_states(service.config)]
    assert states == [("pending", 0)] * len(referrals)

    # the receiver applies the next request and kills the bridge before it answers
    killer.service = service  # armed before the run starts: its first write is the one
    service.start(wait=False)
    assert service.wait_exit() == KILLED
    assert killer.service is None, "the receiver's kill did not fire"
    # (a repeat of the first referral finds it there and makes no write: it may go first)
    assert 2 <= len(sim.requests()) <= 3

    service.start()
    wait_delivered(service, tasks)
    counts = {referral_id: effects(sim, task_id) for referral_id, task_id in tasks.items()}
    assert counts == dict.fromkeys(tasks, 1), f"{dtype}: effects per referral {counts}"
    if dtype == "fhir-r4":
        assert_exactly_once(sim, tasks)
    # requests that reached the receiver before a kill were sent again after the restart
    assert len(sim.requests()) >= len(referrals) + 1
