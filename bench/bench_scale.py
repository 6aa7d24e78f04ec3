"""Benchmark of the regional deployment (issue 14): drain, intake capacity and store size, on
SQLite and on PostgreSQL with 1 to 3 replicas, in one run, side by side.

Against real ``wor-bridge serve`` processes (dispatchers inside) and a loopback
``SimulatedFhirServer`` in this process; PostgreSQL is the server of ``WOR_BRIDGE_TEST_PG`` (else
127.0.0.1:5432, user postgres), a fresh database per part, dropped afterwards.

* ``drain``: ``--drain-n`` referrals accepted into the store (the intake use case, in this
  process), then drained by the replicas' dispatchers (``delivery.concurrency`` =
  ``--concurrency``): SQLite with 1 worker and with ``--concurrency``, PostgreSQL with 1 and 3
  replicas; the rate from the first to the last ``delivered_at``. In the same run the same
  Bundles are POSTed by a bare sequential ``requests`` loop (``load_client.py bare``) to a fresh
  receiver; each drain is given as a ratio to it.
* ``intake``: open-loop load (``load_client.py intake``, round-robin over the replicas) at each
  of ``--rates`` for ``--duration`` s; the capacity is the highest rate whose p99 is at most
  50 ms with every answer 201; SQLite (1 process) and PostgreSQL with 1, 2 and 3 replicas.
* ``--encryption aes-gcm``: the drain and intake parts with the store encrypted at rest (one
  fresh key for the run; the stores this process fills use it too).
* ``big``: PostgreSQL with ``--big`` old rows (delivered referrals, bulk-inserted by SQL) against
  an empty database: drain rate and intake p99 at ``--big-rate``.

Only timings and counts are printed. Run from the repository root::

    python bench/bench_scale.py [--parts drain,intake,big] [--drain-n 2000] [--concurrency 8]
        [--latency-ms 0] [--rates 50,100,200,300,400,500] [--duration 5] [--big 1000000]
        [--encryption off|aes-gcm] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import requests
from bench_service import (
    GOAL_P99_MS,
    HIS_KEY,
    encryption_edits,
    free_port,
    load,
    machine,
    receiver,
    write_config,
)
from load_client import FIXTURE, referral_bodies

from wor_bridge import logs
from wor_bridge.adapters.clock import SystemClock
from wor_bridge.adapters.postgres_store import PostgresOutboxStore
from wor_bridge.adapters.sealing import PLAIN, AesGcmSealer, Sealer, parse_keys
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.config import load_app
from wor_bridge.usecases import intake
from wor_bridge.usecases.caller import Caller

ADMIN = os.environ.get("WOR_BRIDGE_TEST_PG") or "host=127.0.0.1 user=postgres dbname=postgres"


@contextlib.contextmanager
def database() -> Iterator[str]:
    """A fresh PostgreSQL database; its DSN. Dropped afterwards."""
    name = f"wor_bridge_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            params = psycopg.conninfo.conninfo_to_dict(ADMIN)
            params["dbname"] = name
            yield psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})
        finally:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Replicas:
    """``n`` ``serve`` processes on one store (``env`` names it), each on a free port."""

    def __init__(self, config: Path, n: int, env: dict[str, str], log: Path) -> None:
        self.urls: list[str] = []
        self.procs: list[subprocess.Popen[bytes]] = []
        self._log = log.open("ab")
        for _ in range(n):
            port = free_port()
            self.urls.append(f"http://127.0.0.1:{port}")
            self.procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "wor_bridge.cli", "serve", "--config", str(config)],
                    env={**os.environ, **env, "WOR_BRIDGE_SERVICE__PORT": str(port)},
                    stdout=subprocess.DEVNULL,
                    stderr=self._log,
                    cwd=config.parent,
                )
            )

    def wait_ready(self) -> None:
        """Wait until every replica answers ``/readyz``."""
        deadline = time.monotonic() + 120
        for url in self.urls:
            while True:
                with contextlib.suppress(requests.RequestException):
                    if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError("replicas not ready in time")
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM every replica and wait."""
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._log.close()


@contextlib.contextmanager
def replicas(config: Path, n: int, env: dict[str, str], log: Path) -> Iterator[Replicas]:
    """Started and ready replicas, stopped afterwards."""
    group = Replicas(config, n, env, log)
    try:
        group.wait_ready()
        yield group
    finally:
        group.stop()


def store_env(
    kind: str, where: str, concurrency: int = 1, dispatcher: bool = True
) -> dict[str, str]:
    """The environment that points ``serve`` at a store."""
    env = {
        "WOR_BRIDGE_DELIVERY__CONCURRENCY": str(concurrency),
        "WOR_BRIDGE_SERVICE__DISPATCHER": "true" if dispatcher else "false",
        "WOR_BRIDGE_SERVICE__DISPATCHER_BATCH": "200",
    }
    if kind == "postgresql":
        return {**env, "WOR_BRIDGE_STORE__BACKEND": "postgresql", "WOR_BRIDGE_STORE__DSN": where}
    return {**env, "WOR_BRIDGE_STORE__PATH": where}


Sealing = tuple[tuple[tuple[str, str], ...], Sealer]
"""``write_config`` edits for ``--encryption`` and the sealer of the stores this process opens."""
CLEAR: Sealing = ((), PLAIN)


def sealing(work: Path, mode: str) -> Sealing:
    """For ``--encryption``: nothing for ``off``; for ``aes-gcm`` one fresh key file in ``work``
    (``bench_service.encryption_edits``), the edits that use it and its sealer."""
    if mode == "off":
        return CLEAR
    edits = encryption_edits(work, mode)
    return edits, AesGcmSealer(parse_keys((work / "store.keys").read_text(encoding="utf-8")))


def open_store(kind: str, where: str, sealer: Sealer = PLAIN) -> SqliteOutboxStore:
    """The store object of a kind (a PostgreSQL store is a SqliteOutboxStore subclass)."""
    if kind == "postgresql":
        return PostgresOutboxStore(where, sealer=sealer)
    return SqliteOutboxStore(where, sealer=sealer)


def fill(config: Path, store: SqliteOutboxStore, prefix: str, n: int) -> None:
    """Accept ``n`` distinct referrals as the service would."""
    app = load_app(config)
    client = next(c for c in app.clients if "referral:write" in c.scopes)
    caller = Caller(client.id, client.source_system, client.on_behalf_of)
    clock = SystemClock()
    for body in referral_bodies(FIXTURE, prefix, n):
        intake.accept_referral(
            store, app.core, clock, data=body, content_type="application/fhir+json", caller=caller
        )


def requeue_all(store: SqliteOutboxStore) -> None:
    """Every entry pending again, due now, never tried (for the next drain of the same rows)."""
    with store._write() as conn:
        conn.execute(
            "UPDATE outbox SET state = 'pending', attempts = 0, delivered_at = NULL,"
            " next_attempt_at = 0, lease_owner = NULL, lease_until = NULL"
        )


def drained(store: SqliteOutboxStore, n: int, timeout_s: float) -> dict[str, Any]:
    """Wait until ``n`` entries (not bulk-loaded ones) are delivered; the rate from the first
    to the last delivery."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = store._conn().execute(
            "SELECT COUNT(*), MIN(delivered_at), MAX(delivered_at),"
            " SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END) FROM outbox WHERE state != 'pending'"
            " AND task_id NOT LIKE 'old-%'"  # the bulk-loaded rows of the big part
        )
        done, first, last, dead = rows.fetchone()
        if done >= n or time.monotonic() > deadline:
            span = (last - first) if done > 1 else 0.0
            rate = (done - 1) / span if span else 0.0
            return {"delivered": int(done), "dead": int(dead or 0), "per_s": round(rate, 1)}
        time.sleep(0.2)


def drain_part(
    work: Path, n: int, concurrency: int, latency_s: float = 0.0, sealed: Sealing = CLEAR
) -> dict[str, Any]:
    """SQLite 1 and ``concurrency`` workers, PostgreSQL 1 and 3 replicas; the bare loop. Every
    receiver answers each write after ``latency_s`` (0: loopback; else a receiver across a
    network). ``sealed``: encryption at rest (``sealing``)."""
    results: dict[str, Any] = {"n": n, "concurrency": concurrency, "latency_ms": latency_s * 1000}
    edits, sealer = sealed
    with receiver() as sim:
        config = write_config(work, sim.base_url, extra=edits)
    sqlite_path = str(work / "drain.sqlite")
    sqlite = open_store("sqlite", sqlite_path, sealer)
    fill(config, sqlite, "D", n)
    with receiver(latency_s) as bare_sim:
        bare = load(
            "bare", "--store", sqlite_path, "--config", str(config), "--url", bare_sim.base_url
        )
    results["bare_per_s"] = bare["rate_per_s"]
    with database() as dsn:
        pg = open_store("postgresql", dsn, sealer)
        fill(config, pg, "D", n)
        runs = (
            ("sqlite_1_worker", "sqlite", sqlite_path, sqlite, 1, 1),
            ("sqlite_concurrent", "sqlite", sqlite_path, sqlite, 1, concurrency),
            ("pg_1_replica", "postgresql", dsn, pg, 1, concurrency),
            ("pg_3_replicas", "postgresql", dsn, pg, 3, concurrency),
        )
        for label, kind, where, store, count, workers in runs:
            requeue_all(store)
            with receiver(latency_s) as sim:
                config = write_config(work, sim.base_url, extra=edits)
                env = store_env(kind, where, workers)
                with replicas(config, count, env, work / f"{label}.log"):
                    found = drained(store, n, max(120.0, n / 5))
            found["ratio_to_bare"] = round(found["per_s"] / bare["rate_per_s"], 2)
            results[label] = found
        pg.close()
    sqlite.close()
    return results


def capacity(work: Path, urls: list[str], rates: list[float], duration: float) -> dict[str, Any]:
    """Each rate in turn until one fails the goal; the highest that met it."""
    steps = []
    best = 0.0
    for i, rate in enumerate(rates):
        args = ["--url", ",".join(urls), "--key", HIS_KEY, "--rate", str(rate)]
        args += ["--duration", str(duration), "--prefix", f"{work.name}-{i}-{uuid.uuid4().hex[:6]}"]
        result = load("intake", *args, "--warmup", "1" if i == 0 else "0")
        ok = result["errors"] == 0 and result["latency_p99_ms"] <= GOAL_P99_MS
        steps.append(
            {k: result[k] for k in ("rate_target", "achieved_rate", "latency_p99_ms", "errors")}
        )
        if not ok:
            break
        best = rate
    return {"capacity_per_s": best, "steps": steps}


def intake_part(
    work: Path, rates: list[float], duration: float, edits: tuple[tuple[str, str], ...] = ()
) -> dict[str, Any]:
    """Intake capacity: SQLite 1 process; PostgreSQL 1, 2, 3 replicas (``edits``: the
    configuration edits of ``--encryption``)."""
    results: dict[str, Any] = {}
    with receiver() as sim:
        config = write_config(work, sim.base_url, extra=edits)
        env = store_env("sqlite", str(work / "intake.sqlite"))
        with replicas(config, 1, env, work / "intake-sqlite.log") as group:
            results["sqlite_1"] = capacity(work, group.urls, rates, duration)
        for count in (1, 2, 3):
            with (
                database() as dsn,
                replicas(
                    config, count, store_env("postgresql", dsn), work / f"intake-pg{count}.log"
                ) as group,
            ):
                results[f"pg_{count}"] = capacity(work, group.urls, rates, duration)
    return results


BULK = """
INSERT INTO referral (task_id, idempotency_key, source_system, destination, mapping, patient_id,
  responsible, client_id, received_at, bundle, service_request_id, status, his_system, his_value,
  owner_id, updated_at)
SELECT 'old-' || g, 'old|' || g, 'his', 'welzijn-voorbeeld', 'm', 'p', 'r', 'c', 1.7e9 + g,
  '\\x7b7d'::bytea, 'sr-' || g, 'completed', 'his', 'OLD-' || g, 'o', 1.7e9 + g
FROM generate_series(%(low)s, %(high)s) g;
INSERT INTO outbox (idempotency_key, task_id, destination, state, attempts, created_at,
  next_attempt_at, delivered_at, last_status, payload)
SELECT 'old|' || g, 'old-' || g, 'welzijn-voorbeeld', 'delivered', 1, 1.7e9 + g, 1.7e9 + g,
  1.7e9 + g, 200, '\\x7b7d'::bytea FROM generate_series(%(low)s, %(high)s) g;
"""


def big_part(work: Path, rows: int, n: int, rate: float, duration: float) -> dict[str, Any]:
    """Drain rate and intake p99 on an empty PostgreSQL store and on one with ``rows`` rows."""
    results: dict[str, Any] = {"rows": rows}
    for label, size in (("empty", 0), ("big", rows)):
        with database() as dsn:
            store = open_store("postgresql", dsn)
            started = time.perf_counter()
            with psycopg.connect(dsn, autocommit=True) as conn:
                for low in range(1, size + 1, 100_000):
                    params = {"low": low, "high": min(size, low + 99_999)}
                    for statement in BULK.split(";")[:-1]:
                        conn.execute(statement, params)
                conn.execute("ANALYZE")
            loaded_s = time.perf_counter() - started
            with receiver() as sim:
                config = write_config(work, sim.base_url)
                fill(config, store, f"B{label}", n)
                env = store_env("postgresql", dsn, 8)
                with replicas(config, 1, env, work / f"big-{label}.log") as group:
                    found = drained(store, n, max(120.0, n / 5))
                    load_result = load(
                        "intake", "--url", group.urls[0], "--key", HIS_KEY, "--rate", str(rate),
                        "--duration", str(duration), "--prefix", f"BI{label}", "--warmup", "1",
                    )  # fmt: skip
            store.close()
        results[label] = {
            "load_s": round(loaded_s, 1),
            "drain_per_s": found["per_s"],
            "intake_p99_ms": load_result["latency_p99_ms"],
            "intake_errors": load_result["errors"],
        }
    return results


def main(argv: list[str] | None = None) -> int:
    """Run the chosen parts; print figures (or one JSON object)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--parts", default="drain,intake,big")
    parser.add_argument("--drain-n", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="receiver delay per write")
    parser.add_argument("--rates", default="50,100,200,300,400,500")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--big-rate", type=float, default=50.0)
    parser.add_argument("--encryption", choices=("off", "aes-gcm"), default="off")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logs.configure(logging.WARNING)
    parts = set(args.parts.split(","))
    figures: dict[str, Any] = {"machine": machine(), "load_before": os.getloadavg()}
    figures["encryption"] = args.encryption
    with tempfile.TemporaryDirectory(prefix="wor-bridge-scale-") as tmp:
        work = Path(tmp)
        sealed = sealing(work, args.encryption)
        if "drain" in parts:
            figures["drain"] = drain_part(
                work, args.drain_n, args.concurrency, args.latency_ms / 1000, sealed
            )
        if "intake" in parts:
            rates = [float(r) for r in args.rates.split(",")]
            figures["intake"] = intake_part(work, rates, args.duration, sealed[0])
        if "big" in parts:
            figures["big"] = big_part(
                work, args.big, min(args.drain_n, 1000), args.big_rate, args.duration
            )
    figures["load_after"] = os.getloadavg()
    print(json.dumps(figures, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
