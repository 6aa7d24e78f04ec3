"""Benchmark of the mapping core (what ``wor-bridge map`` does, minus process start and file I/O).

Measures, in one run:

* mapping latency: ``wor_bridge.translate(data, None, settings)`` plus
  ``wor_bridge.canonical_json(bundle)`` per call, cycling over the accepted fixtures
  (``fixtures/referral/accepted-*/input.json`` and ``input.xml``);
* the floor: ``wor_bridge.core.fhir.parse_and_serialize`` on the serialised output Bundles, i.e.
  one parse with the fhir.resources R4B models and one serialisation;
* refusal latency of hostile XML (billion laughs, XXE).

Only timings and counts are printed, never fixture content. Run from the repository root::

    python bench/bench_map.py --n 2000 [--json]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import wor_bridge
from wor_bridge import logs
from wor_bridge.core.fhir import parse_and_serialize

ROOT = Path(__file__).resolve().parent.parent
REFERRALS = ROOT / "fixtures" / "referral"
HOSTILE = ("refused-billion-laughs", "refused-xxe")
WARMUP = 50
REFUSAL_CALLS = 1000


def load_fixtures() -> list[tuple[str, bytes]]:
    """Return (kind, bytes) for every accepted fixture input, kind being ``json`` or ``xml``."""
    found = sorted(REFERRALS.glob("accepted-*/input.json")) + sorted(
        REFERRALS.glob("accepted-*/input.xml")
    )
    return [(p.suffix.removeprefix("."), p.read_bytes()) for p in found]


def percentile(samples: list[int], pct: float) -> float:
    """Nearest-rank percentile of nanosecond samples, in nanoseconds."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


def time_calls(call: Callable[[bytes], object], inputs: list[bytes], n: int) -> list[int]:
    """Warm up, then time ``n`` calls cycling over ``inputs``; return nanoseconds per call."""
    for i in range(WARMUP):
        call(inputs[i % len(inputs)])
    samples: list[int] = []
    clock = time.perf_counter_ns
    for i in range(n):
        data = inputs[i % len(inputs)]
        start = clock()
        call(data)
        samples.append(clock() - start)
    return samples


def map_once(settings: wor_bridge.Settings) -> Callable[[bytes], bytes]:
    """The timed unit of work: translate and serialise, as ``wor-bridge map`` does."""

    def run(data: bytes) -> bytes:
        return wor_bridge.canonical_json(wor_bridge.translate(data, None, settings).bundle)

    return run


def refuse_once(settings: wor_bridge.Settings) -> Callable[[bytes], None]:
    """The timed unit for hostile input: translate must raise RefusedError."""

    def run(data: bytes) -> None:
        try:
            wor_bridge.translate(data, None, settings)
        except wor_bridge.RefusedError:
            return
        raise AssertionError("hostile fixture was not refused")

    return run


def ms(ns: float) -> float:
    """Nanoseconds to milliseconds, rounded for display."""
    return round(ns / 1e6, 3)


def measure(n: int) -> dict[str, Any]:
    """Run every measurement and return the figures as a flat dict."""
    settings = wor_bridge.load_settings()
    fixtures = load_fixtures()
    inputs = [data for _, data in fixtures]
    mapper = map_once(settings)
    samples = time_calls(mapper, inputs, n)
    outputs = [mapper(data) for data in inputs]
    floor = time_calls(parse_and_serialize, outputs, n)
    by_kind: dict[str, list[int]] = {"json": [], "xml": []}
    for i, ns in enumerate(samples):
        by_kind[fixtures[i % len(fixtures)][0]].append(ns)
    figures: dict[str, Any] = {
        "n": n,
        "fixtures": len(fixtures),
        "fixtures_json": sum(kind == "json" for kind, _ in fixtures),
        "fixtures_xml": sum(kind == "xml" for kind, _ in fixtures),
        "map_p50_ms": ms(percentile(samples, 50)),
        "map_p95_ms": ms(percentile(samples, 95)),
        "map_p99_ms": ms(percentile(samples, 99)),
        "throughput_per_s": round(n / (sum(samples) / 1e9), 1),
        "floor_p50_ms": ms(percentile(floor, 50)),
        "floor_p95_ms": ms(percentile(floor, 95)),
        "ratio_p50": round(percentile(floor, 50) / percentile(samples, 50), 3),
        "ratio_p95": round(percentile(floor, 95) / percentile(samples, 95), 3),
    }
    for kind, kind_samples in by_kind.items():
        if kind_samples:
            figures[f"map_{kind}_p50_ms"] = ms(percentile(kind_samples, 50))
            figures[f"map_{kind}_p95_ms"] = ms(percentile(kind_samples, 95))
    refuser = refuse_once(settings)
    for name in HOSTILE:
        hostile = time_calls(
            refuser, [(REFERRALS / name / "input.xml").read_bytes()], REFUSAL_CALLS
        )
        key = name.removeprefix("refused-").replace("-", "_")
        figures[f"refuse_{key}_p50_us"] = round(percentile(hostile, 50) / 1e3, 1)
        figures[f"refuse_{key}_max_us"] = round(max(hostile) / 1e3, 1)
    figures["goal_met"] = figures["map_p95_ms"] <= 5 and figures["ratio_p95"] >= 0.5
    figures["python"] = platform.python_version()
    figures["fhir_resources"] = importlib.metadata.version("fhir.resources")
    figures["command"] = f"python bench/bench_map.py --n {n}"
    return figures


def report(f: dict[str, Any]) -> None:
    """Print the figures as readable lines."""
    print(
        f"N={f['n']}  fixtures={f['fixtures']} ({f['fixtures_json']} JSON, {f['fixtures_xml']} XML)"
    )
    print(
        f"map:   p50 {f['map_p50_ms']} ms  p95 {f['map_p95_ms']} ms  p99 {f['map_p99_ms']} ms"
        f"  throughput {f['throughput_per_s']} referrals/s"
    )
    for kind in ("json", "xml"):
        if f"map_{kind}_p50_ms" in f:
            print(
                f"map {kind.upper()}: p50 {f[f'map_{kind}_p50_ms']} ms"
                f"  p95 {f[f'map_{kind}_p95_ms']} ms"
            )
    print(f"floor: p50 {f['floor_p50_ms']} ms  p95 {f['floor_p95_ms']} ms")
    print(
        f"ratio floor/map: p50 {f['ratio_p50']}  p95 {f['ratio_p95']}"
        f"  (goal: ratio >= 0.5 and map p95 <= 5 ms: {'met' if f['goal_met'] else 'NOT met'})"
    )
    for name in HOSTILE:
        key = name.removeprefix("refused-").replace("-", "_")
        print(
            f"refuse {name}: p50 {f[f'refuse_{key}_p50_us']} us"
            f"  max {f[f'refuse_{key}_max_us']} us  ({REFUSAL_CALLS} calls)"
        )
    print(f"Python {f['python']}  fhir.resources {f['fhir_resources']}")
    print(f"reproduce: {f['command']}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark and print the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000, help="timed calls per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be at least 1")
    logs.configure(logging.WARNING)  # as the CLI does: no log lines in stdout or timings
    figures = measure(args.n)
    if args.json:
        print(json.dumps(figures))
    else:
        report(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
