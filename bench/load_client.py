"""Load processes for ``bench/bench_service.py``: an open-loop intake load and a bare POST loop.

Both run in their own process, apart from the service and the receiver, and print one JSON
object with timings and counts only (never a request or response body).

``intake``: open-loop load against the service's ``POST /fhir/r4/ServiceRequest``. Request ``i``
is due at ``t0 + i / rate``; it is sent then, whatever happened to earlier requests (asyncio and
aiohttp, many connections), and its latency is measured from its *scheduled* time to the end of its
response, so a stalled service cannot hide its stall by slowing the load down (no coordinated
omission). Each request is a distinct referral: the fixture's ServiceRequest identifier value is
replaced by ``<prefix>-<n>``. Every answer must be 201::

    python bench/load_client.py intake --url http://127.0.0.1:8080 --key KEY --rate 50 \
        --duration 20 --prefix R50

``bare``: the floor for delivery. Reads the outbox payloads (the mapped transaction Bundles) of a
store file through the store (its configuration's ``[store]`` keys open them) and POSTs them one
after the other with one ``requests.Session``, as fast as the receiver answers::

    python bench/load_client.py bare --store wor-bridge.sqlite --config wor-bridge.toml \
        --url http://127.0.0.1:8090/fhir
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import requests

from wor_bridge import bootstrap, logs
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.config import load_app

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "fixtures" / "referral" / "accepted-contained" / "input.json"
FHIR_JSON = "application/fhir+json"
START_DELAY_S = 0.2
"""Time between building the schedule and the first due request."""


def percentile(samples: list[float], pct: float) -> float:
    """Nearest-rank percentile (0 for no samples)."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def referral_bodies(fixture: Path, prefix: str, n: int) -> list[bytes]:
    """``n`` distinct referrals: the fixture with ServiceRequest.identifier[0].value varied."""
    template = json.loads(fixture.read_bytes())
    bodies = []
    for i in range(n):
        template["identifier"][0]["value"] = f"BENCH-{prefix}-{i:07d}"
        bodies.append(json.dumps(template, ensure_ascii=False).encode())
    return bodies


async def _send(
    client: aiohttp.ClientSession, url: str, body: bytes, due: float, record: dict[str, list[Any]]
) -> None:
    """Send one referral now and record (lag, latency from due, service time, status)."""
    sent = time.perf_counter()
    try:
        async with client.post(url, data=body) as response:
            await response.read()
            status: int | str = response.status
    except (aiohttp.ClientError, TimeoutError) as err:
        status = type(err).__name__
    done = time.perf_counter()
    record["lag"].append(sent - due)
    record["latency"].append(done - due)
    record["service"].append(done - sent)
    record["status"].append(status)
    record["done"].append(done)


async def open_loop(url: str, key: str, bodies: list[bytes], rate: float) -> dict[str, list[Any]]:
    """Send ``bodies`` at ``rate`` per second on a fixed schedule; return the raw records.
    ``url`` may name several services (comma-separated): requests go round-robin, as a load
    balancer sends them to replicas. (aiohttp: httpx's pool spent about 15 ms of CPU per request
    with hundreds of connections open, so at 150/s the load process, not the service, was the
    limit.)"""
    record: dict[str, list[Any]] = {k: [] for k in ("lag", "latency", "service", "status", "done")}
    headers = {"Authorization": f"Bearer {key}", "Content-Type": FHIR_JSON}
    targets = [f"{base}/fhir/r4/ServiceRequest" for base in url.split(",")]
    connector = aiohttp.TCPConnector(limit=512)
    timeout = aiohttp.ClientTimeout(total=60.0)
    async with aiohttp.ClientSession(
        headers=headers, connector=connector, timeout=timeout, trust_env=False
    ) as client:
        tasks = []
        t0 = time.perf_counter() + START_DELAY_S
        for i, body in enumerate(bodies):
            due = t0 + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            target = targets[i % len(targets)]
            tasks.append(asyncio.create_task(_send(client, target, body, due, record)))
        await asyncio.gather(*tasks)
        record["t0"] = [t0]
    return record


def summarise(record: dict[str, list[Any]], rate: float, duration_s: float) -> dict[str, Any]:
    """Latency percentiles (ms), achieved rate and error counts of one open-loop run."""
    statuses = Counter(str(s) for s in record["status"])
    n = len(record["status"])
    ok = statuses.get("201", 0)
    t0 = record["t0"][0]
    window = max(record["done"]) - t0 if record["done"] else 0.0

    def ms(values: list[float], pct: float) -> float:
        return round(percentile(values, pct) * 1000, 2)

    return {
        "rate_target": rate,
        "duration_s": duration_s,
        "requests": n,
        "accepted_201": ok,
        "errors": n - ok,
        "statuses": dict(statuses),
        "achieved_rate": round(ok / window, 1) if window else 0.0,
        "latency_p50_ms": ms(record["latency"], 50),
        "latency_p90_ms": ms(record["latency"], 90),
        "latency_p99_ms": ms(record["latency"], 99),
        "latency_max_ms": round(max(record["latency"], default=0.0) * 1000, 2),
        "service_p50_ms": ms(record["service"], 50),
        "service_p99_ms": ms(record["service"], 99),
        "send_lag_p99_ms": ms(record["lag"], 99),
        "send_lag_max_ms": round(max(record["lag"], default=0.0) * 1000, 2),
    }


def run_intake(args: argparse.Namespace) -> dict[str, Any]:
    """Optional warm-up, then the timed open-loop run."""
    if args.warmup > 0:
        warm = referral_bodies(args.fixture, f"{args.prefix}-W", max(1, int(args.warmup * 20)))
        asyncio.run(open_loop(args.url, args.key, warm, 20.0))
    bodies = referral_bodies(args.fixture, args.prefix, max(1, round(args.rate * args.duration)))
    record = asyncio.run(open_loop(args.url, args.key, bodies, args.rate))
    return summarise(record, args.rate, args.duration)


def run_bare(args: argparse.Namespace) -> dict[str, Any]:
    """POST every outbox payload of ``args.store`` to ``args.url`` with one session."""
    logs.configure(logging.WARNING)  # stdout carries the JSON summary only
    store = SqliteOutboxStore(args.store, sealer=bootstrap.sealer_for(load_app(args.config)))
    payloads = [e.payload for e in reversed(store.list_entries(None, 10**9))]
    store.close()
    session = requests.Session()
    session.trust_env = False  # as the service's transport: no proxy look-ups per request
    headers = {"Content-Type": f"{FHIR_JSON}; fhirVersion=4.0", "Accept": FHIR_JSON}
    statuses: Counter[int] = Counter()
    started = time.perf_counter()
    for payload in payloads:
        response = session.post(args.url, data=payload, headers=headers, timeout=(5, 30))
        _ = response.content
        statuses[response.status_code] += 1
    elapsed = time.perf_counter() - started
    session.close()
    n = len(payloads)
    return {
        "posts": n,
        "ok_200": statuses.get(200, 0),
        "statuses": {str(k): v for k, v in statuses.items()},
        "elapsed_s": round(elapsed, 3),
        "rate_per_s": round(n / elapsed, 1) if elapsed else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run one load and print its JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="mode", required=True)
    intake = sub.add_parser("intake", help="open-loop referral intake load")
    intake.add_argument("--url", required=True, help="service base URL(s), comma-separated")
    intake.add_argument("--key", required=True, help="client key (referral:write)")
    intake.add_argument("--rate", type=float, required=True, help="requests per second")
    intake.add_argument("--duration", type=float, default=20.0, help="seconds of timed load")
    intake.add_argument("--warmup", type=float, default=0.0, help="untimed seconds at 20/s")
    intake.add_argument("--prefix", required=True, help="makes identifiers unique per run")
    intake.add_argument("--fixture", type=Path, default=FIXTURE)
    bare = sub.add_parser("bare", help="bare requests.Session().post loop")
    bare.add_argument("--store", type=Path, required=True, help="SQLite store with the payloads")
    bare.add_argument("--config", type=Path, required=True, help="its TOML configuration")
    bare.add_argument("--url", required=True, help="receiver FHIR base URL")
    args = parser.parse_args(argv)
    result = run_intake(args) if args.mode == "intake" else run_bare(args)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
