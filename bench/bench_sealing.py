"""Benchmark of encryption at rest: the store's intake and drain paths in clear and sealed.

In one process, on real SQLite files (WAL, ``synchronous=FULL``) or, with ``--backend
postgresql``, a fresh PostgreSQL database per round (the server of ``WOR_BRIDGE_TEST_PG``, else
127.0.0.1:5432 as postgres), alternating the two modes round by round so that other work on a
shared machine hits both alike:

* **accept**: ``usecases.intake.accept_referral`` of ``--n`` distinct referrals (map, gates and
  the durable store: what an intake request costs without HTTP);
* **drain reads**: ``claim_due`` in batches of 20 and ``get_entry`` of every entry, the store
  reads a dispatcher makes per delivery (the payload opened);
* **codec**: ``seal`` and ``open`` of one mapped referral Bundle, per call;
* **rewrite** (PostgreSQL, ``--rewrite N``): migration step 13 (the sealed text columns to
  ``bytea``) on a version-12 database of ``N`` referrals and ``N`` audit records (bulk-inserted
  by SQL, small rows), the time the upgrade holds ``referral`` and ``audit`` locked.

Only timings and sizes are printed, never referral content. Run from the repository root::

    python bench/bench_sealing.py [--n 300] [--rounds 3] [--backend sqlite|postgresql]
        [--rewrite 0] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from bench_scale import database
from load_client import FIXTURE, referral_bodies

from wor_bridge import logs
from wor_bridge.adapters import postgres_schema
from wor_bridge.adapters.clock import SystemClock
from wor_bridge.adapters.migrations import STEPS, upgrade
from wor_bridge.adapters.postgres_db import Database
from wor_bridge.adapters.postgres_store import PostgresOutboxStore
from wor_bridge.adapters.sealing import PLAIN, AesGcmSealer, Sealer, aad, new_key_entry, parse_keys
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.config import load_app
from wor_bridge.usecases import intake
from wor_bridge.usecases.caller import Caller

ROOT = Path(__file__).resolve().parent.parent


def one_round(
    work: Path, sealer: Sealer, bodies: list[bytes], tag: str, dsn: str | None = None
) -> dict[str, float]:
    """Accept ``bodies`` into a fresh store (a SQLite file in ``work``, or the PostgreSQL
    database ``dsn``), then claim and read every entry; seconds each."""
    app = load_app(ROOT / "config" / "wor-bridge.toml")
    client = next(c for c in app.clients if "referral:write" in c.scopes)
    caller = Caller(client.id, client.source_system, client.on_behalf_of)
    store: SqliteOutboxStore = (
        SqliteOutboxStore(work / f"{tag}.sqlite", sealer=sealer)
        if dsn is None
        else PostgresOutboxStore(dsn, pool_size=2, sealer=sealer)
    )
    clock = SystemClock()
    started = time.perf_counter()
    for body in bodies:
        intake.accept_referral(
            store, app.core, clock, data=body, content_type="application/fhir+json", caller=caller
        )
    accepted = time.perf_counter()
    later = clock.now() + dt.timedelta(seconds=1)
    claimed = 0
    while batch := store.claim_due("bench", later, 600.0, 20):
        for entry in batch:
            store.get_entry(entry.id)
        claimed += len(batch)
    drained = time.perf_counter()
    store.close()
    if claimed != len(bodies):
        raise RuntimeError("every accepted referral must be claimed once")
    return {"accept_s": accepted - started, "drain_reads_s": drained - accepted}


def referral_bundle(work: Path, body: bytes) -> bytes:
    """The mapped Bundle of one referral ``body`` (a scratch SQLite store in ``work``)."""
    one_round(work, PLAIN, [body], "codec")
    store = SqliteOutboxStore(work / "codec.sqlite")
    bundle = store.list_entries(None, 1)[0].payload
    store.close()
    return bundle


def codec(sealer: AesGcmSealer, bundle: bytes, n: int = 5000) -> dict[str, float]:
    """Microseconds per ``seal`` and per ``open`` of ``bundle`` (median of 5 runs of ``n``)."""
    context = aad("referral", "bundle", "bench")
    sealed = sealer.seal(bundle, context)
    seal_us, open_us = [], []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(n):
            sealer.seal(bundle, context)
        t1 = time.perf_counter()
        for _ in range(n):
            sealer.open(sealed, context)
        t2 = time.perf_counter()
        seal_us.append((t1 - t0) / n * 1e6)
        open_us.append((t2 - t1) / n * 1e6)
    return {"seal_us": statistics.median(seal_us), "open_us": statistics.median(open_us)}


_V12_ROWS = """
INSERT INTO referral (task_id, idempotency_key, source_system, destination, mapping, patient_id,
  responsible, client_id, received_at, bundle, reason_text, his_system, his_value, owner_id,
  updated_at)
SELECT 'old-' || g, 'old|' || g, 'his', 'welzijn-voorbeeld', 'm',
  'http://fhir.nl/fhir/NamingSystem/bsn|' || (100000000 + g), 'r', 'c', 1.7e9 + g,
  '\\x7b7d'::bytea, 'reden ' || g, 'his', 'OLD-' || g, 'o', 1.7e9 + g
FROM generate_series(%(low)s::int, %(high)s::int) g;
INSERT INTO audit (at, event, action, outcome, "user", responsible, source_system, patient_id,
  object_type, object_id, detail)
SELECT 1.7e9 + g, 'referral_intake', 'C', 'accepted', 'his', 'r', 'his',
  'http://fhir.nl/fhir/NamingSystem/bsn|' || (100000000 + g), 'Task', 'old-' || g, ''
FROM generate_series(%(low)s::int, %(high)s::int) g;
"""


def rewrite(rows: int) -> dict[str, float]:
    """Seconds of migration step 13 on a version-12 database of ``rows`` referrals and audit
    records (and of building it, not the product)."""
    with database() as dsn:
        db = Database(dsn, pool_size=2)
        try:
            upgrade(postgres_schema.PostgresBackend(db), STEPS[:12], SystemClock().now, "bench")
            started = time.perf_counter()
            with psycopg.connect(dsn, autocommit=True) as conn:
                for low in range(1, rows + 1, 100_000):
                    params = {"low": low, "high": min(rows, low + 99_999)}
                    for statement in _V12_ROWS.split(";")[:-1]:
                        conn.execute(statement, params)
                conn.execute("ANALYZE")
            built = time.perf_counter()
            done = upgrade(postgres_schema.PostgresBackend(db), STEPS, SystemClock().now, "bench")
            upgraded = time.perf_counter()
        finally:
            db.close()
    if done.applied != (13,):
        raise RuntimeError("the rewrite must apply step 13 alone")
    return {"rows": rows, "build_s": built - started, "step13_s": upgraded - built}


def main(argv: list[str] | None = None) -> int:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=300, help="referrals per round and mode")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode (alternating)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--rewrite", type=int, default=0, help="rows for the step-13 timing")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    logs.configure(logging.WARNING)
    sealer = AesGcmSealer(parse_keys(new_key_entry("bench")))
    modes: dict[str, Sealer] = {"clear": PLAIN, "aes-gcm": sealer}
    times: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory(prefix="wor-bench-sealing-") as tmp:
        for r in range(args.rounds):
            for name, mode in modes.items():
                bodies = referral_bodies(FIXTURE, f"{name}{r}", args.n)
                if args.backend == "sqlite":
                    times[name].append(one_round(Path(tmp), mode, bodies, f"{name}-{r}"))
                    continue
                with database() as dsn:
                    times[name].append(one_round(Path(tmp), mode, bodies, f"{name}-{r}", dsn))
        bundle = referral_bundle(Path(tmp), bodies[0])
    figures: dict[str, Any] = {
        "backend": args.backend,
        "n": args.n,
        "rounds": args.rounds,
        "bundle_bytes": len(bundle),
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "codec": {k: round(v, 1) for k, v in codec(sealer, bundle).items()},
    }
    for name, runs in times.items():
        accept = statistics.median(t["accept_s"] for t in runs) / args.n * 1000
        reads = statistics.median(t["drain_reads_s"] for t in runs) / args.n * 1000
        figures[name] = {"accept_ms": round(accept, 2), "drain_reads_ms": round(reads, 3)}
    if args.rewrite:
        figures["rewrite"] = {k: round(v, 2) for k, v in rewrite(args.rewrite).items()}
    figures["command"] = (
        f"python bench/bench_sealing.py --n {args.n} --rounds {args.rounds}"
        f" --backend {args.backend}" + (f" --rewrite {args.rewrite}" if args.rewrite else "")
    )
    if args.json:
        print(json.dumps(figures))
        return 0
    print(f"one mapped referral Bundle: {figures['bundle_bytes']} bytes")
    c = figures["codec"]
    print(f"codec: seal {c['seal_us']} us, open {c['open_us']} us per Bundle")
    for name in modes:
        f = figures[name]
        print(
            f"{name:>8}: accept {f['accept_ms']} ms per referral (map, gates, store);"
            f" drain reads {f['drain_reads_ms']} ms per entry (claim + get)"
        )
    print(f"median of {args.rounds} alternating rounds of {args.n} on {args.backend};", end=" ")
    print(f"load {figures['loadavg_1m']}")
    if args.rewrite:
        w = figures["rewrite"]
        print(f"step 13 on {w['rows']} referrals + audit records: {w['step13_s']} s")
    print(f"reproduce: {figures['command']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
