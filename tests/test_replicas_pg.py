"""Two real ``wor-bridge serve`` replicas on one PostgreSQL database behind no load balancer: the
same referral pushed to both at the same moment is one referral and one delivery; the Task
each answers is the same; a referral pushed to one is delivered by either, once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.pg import empty
from tests.service_harness import (
    FHIR_JSON,
    HIS_KEY,
    ServiceProcess,
    auth,
    business_status,
    receiver,
    referral_variant,
    service_requests,
    task_id_of,
    wait_until,
    write_config,
)
from tests.test_pg_concurrency import race
from wor_bridge.demo.fhir_server import SimulatedFhirServer

TIMEOUT = 20


def pg_config(tmp_path: Path, endpoint: str, **overrides: object) -> Path:
    """A test configuration whose store is PostgreSQL (the DSN comes from the environment)."""
    return write_config(
        tmp_path,
        endpoint,
        store={"backend": "postgresql", "pool_size": 4},
        service={"rate_per_s": 1000.0, "burst": 1000, "dispatcher_interval_s": 0.5},
        **overrides,
    )


@pytest.fixture
def sim() -> Iterator[SimulatedFhirServer]:
    """The welfare FHIR endpoint both replicas deliver to."""
    with receiver() as server:
        yield server


@pytest.fixture
def replicas(
    tmp_path: Path, sim: SimulatedFhirServer, pg_dsn: str
) -> Iterator[tuple[ServiceProcess, ServiceProcess]]:
    """Two started replicas on one emptied database; killed at the end."""
    empty(pg_dsn)
    config = pg_config(tmp_path, sim.base_url)
    procs = tuple(ServiceProcess(config, {"WOR_BRIDGE_STORE__DSN": pg_dsn}) for _ in range(2))
    try:
        for proc in procs:
            proc.start()
        yield procs[0], procs[1]
    finally:
        for proc in procs:
            proc.kill()


def push(service: ServiceProcess, data: bytes) -> requests.Response:
    """POST a referral as the GP system does."""
    return requests.post(
        f"{service.base_url}/fhir/r4/ServiceRequest",
        data=data,
        headers=auth(HIS_KEY, FHIR_JSON),
        timeout=TIMEOUT,
    )


def delivered(service: ServiceProcess, task_ids: set[str]) -> bool:
    """True when ``service`` shows every Task delivered."""
    for task_id in task_ids:
        response = requests.get(
            f"{service.base_url}/fhir/r4/Task/{task_id}", headers=auth(HIS_KEY), timeout=TIMEOUT
        )
        assert response.status_code == 200
        if business_status(response.json()) != "delivered":
            return False
    return True


def test_the_same_referral_pushed_to_two_replicas_at_once_is_one_referral_one_delivery(
    replicas: tuple[ServiceProcess, ServiceProcess], sim: SimulatedFhirServer
) -> None:
    """Both replicas acknowledge (one 201, one 200, one Task); the receiver gets one delivery."""
    first, second = replicas
    tasks: dict[str, str] = {}
    for n in range(8):
        referral_id = f"REPLICA-{n}"
        data = referral_variant("accepted-contained", referral_id)
        answers = race(lambda d=data: push(first, d), lambda d=data: push(second, d))
        assert sorted(a.status_code for a in answers) == [200, 201]
        assert task_id_of(answers[0]) == task_id_of(answers[1])
        tasks[referral_id] = task_id_of(answers[0])
    wait_until(lambda: delivered(first, set(tasks.values())), "every Task delivered")
    assert delivered(second, set(tasks.values()))
    for referral_id in tasks:
        assert len(service_requests(sim, referral_id)) == 1
    posts = [path for method, path in sim.requests() if method == "POST"]
    assert len(posts) == len(tasks), "one transaction per referral at the receiver"


def test_either_replica_delivers_what_the_other_accepted(
    replicas: tuple[ServiceProcess, ServiceProcess], sim: SimulatedFhirServer
) -> None:
    """Referrals pushed round-robin are each delivered once, whichever replica claims them."""
    tasks = {}
    for n in range(10):
        referral_id = f"ROUND-{n}"
        answer = push(replicas[n % 2], referral_variant("accepted-contained", referral_id))
        assert answer.status_code == 201
        tasks[referral_id] = task_id_of(answer)
    wait_until(lambda: delivered(replicas[1], set(tasks.values())), "every Task delivered")
    posts = [path for method, path in sim.requests() if method == "POST"]
    assert len(posts) == len(tasks)
    assert sorted(t["id"] for t in sim.resources("Task")) == sorted(tasks.values())
