"""Faults on the PostgreSQL deployment: three real ``serve`` replicas on a private cluster,
referrals pushed round-robin while replicas are SIGKILLed at random and PostgreSQL itself crashes
(``immediate`` stop) and restarts once. A push without an answer is pushed again to another
replica, as a GP system does. Afterwards: every acknowledged referral delivered, one effect each
at the receiver (one ServiceRequest per referral, exactly the acknowledged Tasks), nothing dead.

The short version runs here; ``bench/fault_pg.py`` runs the long one.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests

from tests.pg_cluster import PrivateCluster
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
from wor_bridge.demo.fhir_server import SimulatedFhirServer

TIMEOUT = 15


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    """A started private PostgreSQL cluster, removed afterwards."""
    pg = PrivateCluster()
    try:
        pg.start()
        yield pg
    finally:
        pg.remove()


def push(proc: ServiceProcess, data: bytes) -> str | None:
    """The Task id when the replica acknowledged the referral (201/200), else None."""
    try:
        answer = requests.post(
            f"{proc.base_url}/fhir/r4/ServiceRequest",
            data=data,
            headers=auth(HIS_KEY, FHIR_JSON),
            timeout=TIMEOUT,
        )
    except requests.RequestException:
        return None
    return task_id_of(answer) if answer.status_code in (200, 201) else None


def all_delivered(proc: ServiceProcess, task_ids: set[str]) -> bool:
    """True when the replica shows every Task delivered (False while it cannot tell)."""
    try:
        for task_id in task_ids:
            answer = requests.get(
                f"{proc.base_url}/fhir/r4/Task/{task_id}", headers=auth(HIS_KEY), timeout=TIMEOUT
            )
            if answer.status_code != 200 or business_status(answer.json()) != "delivered":
                return False
    except requests.RequestException:
        return False
    return True


def run_faults(
    tmp_path: Path,
    cluster: PrivateCluster,
    sim: SimulatedFhirServer,
    *,
    referrals: int,
    kills: int,
    seed: int,
) -> dict[str, str]:
    """Push ``referrals`` round-robin over 3 replicas with ``kills`` random SIGKILLs and one
    PostgreSQL crash and restart halfway; recover; the acknowledged Task per referral."""
    chance = random.Random(seed)
    config = write_config(
        tmp_path,
        sim.base_url,
        store={"backend": "postgresql", "pool_size": 4},
        delivery={"lease_s": 2.0},
        service={"rate_per_s": 1000.0, "burst": 1000, "dispatcher_interval_s": 0.3},
        destination={"connect_timeout_s": 0.5, "read_timeout_s": 1.0},
    )
    env = {"WOR_BRIDGE_STORE__DSN": cluster.dsn}
    replicas = [ServiceProcess(config, env) for _ in range(3)]
    kill_at = set(chance.sample(range(1, referrals), kills))
    tasks: dict[str, str] = {}
    try:
        for proc in replicas:
            proc.start()
        for n in range(referrals):
            if n == referrals // 2:
                cluster.stop("immediate")  # a crash: recovery from the WAL
                cluster.start()
            if n in kill_at:
                victim = chance.choice(replicas)
                victim.kill()
                victim.start()
            referral_id = f"FAULT-{n}"
            data = referral_variant("accepted-contained", referral_id)
            for attempt in range(6):  # a GP system pushes again until it gets an answer
                task_id = push(replicas[(n + attempt) % 3], data)
                if task_id is not None:
                    tasks[referral_id] = task_id
                    break
        wait_until(
            lambda: all_delivered(replicas[0], set(tasks.values())),
            "every acknowledged referral delivered",
            timeout_s=60,
        )
    finally:
        for proc in replicas:
            proc.kill()
    return tasks


def assert_once_and_nothing_dead(
    sim: SimulatedFhirServer, cluster: PrivateCluster, tasks: dict[str, str]
) -> None:
    """One ServiceRequest per acknowledged referral, exactly their Tasks, no dead entry."""
    for referral_id in tasks:
        assert len(service_requests(sim, referral_id)) == 1, referral_id
    assert sorted(t["id"] for t in sim.resources("Task")) == sorted(tasks.values())
    with psycopg.connect(cluster.dsn) as conn:
        dead = conn.execute("SELECT count(*) FROM outbox WHERE state = 'dead'").fetchone()
    assert dead == (0,)


def test_replicas_killed_and_postgres_restarted_lose_and_duplicate_nothing(
    tmp_path: Path, cluster: PrivateCluster
) -> None:
    """3 replicas, 4 random SIGKILLs, one PostgreSQL crash: every acknowledged referral once."""
    seed = int(os.environ.get("WOR_BRIDGE_FAULT_SEED", "14"))
    with receiver() as sim:
        tasks = run_faults(tmp_path, cluster, sim, referrals=24, kills=4, seed=seed)
        assert len(tasks) >= 20  # nearly every push is acknowledged in the end
        assert_once_and_nothing_dead(sim, cluster, tasks)
