"""Benchmark of what readiness and the access line cost per request (issue 13).

Times, on a fresh SQLite store in a temporary directory of the machine's disk:

- **cheap checks**: ``SqliteOutboxStore.check_writable(min_free_bytes, probe=False)``: the file
  identity (``stat``) and the free space (``statvfs``), what the gate runs on every request;
- **probe**: ``check_writable(min_free_bytes, probe=True)``: a new connection and one committed
  row update with ``synchronous = FULL`` (an fsync), at most once per ``readiness_probe_s``;
- **access line fields**: ``request_log.route_template`` against the service's real route table
  for a Task read path, and ``Authenticator.client`` for a presented key (SHA-256 and compare).

Run from the repository root::

    python bench/bench_readiness.py [--n 20000] [--probes 200] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from wor_bridge import bootstrap
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.config import StoreSettings, load_app
from wor_bridge.service.app import create_app
from wor_bridge.service.auth import Authenticator
from wor_bridge.service.request_log import route_template

HIS_KEY = "example-his-key"  # the example configuration's GP-system key (only its hash is stored)


def _time(fn: Callable[[], object], n: int) -> dict[str, float]:
    for _ in range(min(n, 100)):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    samples.sort()
    return {
        "median_us": round(statistics.median(samples) / 1000, 1),
        "p99_us": round(samples[int(len(samples) * 0.99) - 1] / 1000, 1),
    }


def main() -> None:
    """Print the figures (a table, or one JSON object with ``--json``)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--probes", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        store = SqliteOutboxStore(Path(tmp) / "store.sqlite")
        min_free = 64 * 1024 * 1024
        figures = {
            "cheap checks": _time(lambda: store.check_writable(min_free, probe=False), args.n),
            "probe": _time(lambda: store.check_writable(min_free, probe=True), args.probes),
        }
        config = load_app()  # the example configuration, with the store in the temporary folder
        store_settings = StoreSettings(path=f"{tmp}/service.sqlite", encryption="off")
        config = dataclasses.replace(config, store=store_settings)
        app = create_app(bootstrap.build(config), start_dispatcher=False)
        scope = {"path": "/fhir/r4/Task/0b6f3c1e-0000-4000-8000-000000000000", "method": "GET"}
        figures["route template"] = _time(lambda: route_template(app.router, scope), args.n)
        auth = Authenticator(config.clients, 10.0, 20)
        figures["client of a key"] = _time(lambda: auth.client(HIS_KEY), args.n)
    if args.json:
        print(json.dumps(figures))
        return
    for name, values in figures.items():
        print(f"{name:<18} median {values['median_us']:>9} us   p99 {values['p99_us']:>9} us")


if __name__ == "__main__":
    main()
