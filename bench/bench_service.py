"""Benchmark of the service: intake latency under open-loop load, backlog drain, memory.

Measures, in one run, against the real service (``wor-bridge serve`` in its own process, durable
SQLite store, dispatcher inside, a loopback ``SimulatedFhirServer`` as the welfare endpoint):

* intake latency p50/p99/max at each ``--rates`` value for ``--duration`` seconds, from a separate
  open-loop load process (``bench/load_client.py intake``), measured from each request's scheduled
  send time, every request a distinct referral that must be answered 201; the dispatcher delivers
  concurrently, and the backlog left at the end of each rate and the time to clear it are noted;
* backlog drain: ``--drain-n`` referrals accepted (``intake.accept_referral`` on the store, in
  this process) while no service runs, then a fresh service whose dispatcher drains them to a
  fresh receiver (rate from the first to the last ``delivered_at``); then the same Bundles POSTed
  by a bare ``requests.Session().post`` loop (``bench/load_client.py bare``) to another fresh
  receiver, and the ratio of the two rates;
* VmRSS and VmHWM of the service process after the intake load and after the drain.

``--encryption aes-gcm`` runs the same with the store encrypted at rest (a fresh key file beside
the configuration); the default is ``off``, as the example configuration says.

The receivers run in this process; the service and the load run in their own processes. Only
timings, counts and sizes are printed, never referral content. Run from the repository root::

    python bench/bench_service.py [--duration 20] [--rates 20,50,100] [--drain-n 10000]
        [--encryption off|aes-gcm] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import platform
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests
from load_client import FIXTURE, referral_bodies

from wor_bridge import bootstrap, logs
from wor_bridge.adapters.clock import SystemClock
from wor_bridge.adapters.sealing import new_key_entry
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.config import load_app
from wor_bridge.demo.credentials import demo_configuration
from wor_bridge.demo.fhir_server import SimulatedFhirServer
from wor_bridge.usecases import intake
from wor_bridge.usecases.caller import Caller

ROOT = Path(__file__).resolve().parent.parent
LOAD_CLIENT = Path(__file__).resolve().parent / "load_client.py"
HIS_KEY = "example-his-key"  # the demo key (wor_bridge/demo/credentials.py)
ADMIN_KEY = "example-admin-key"  # the demo operations key (for /metrics)
CATCH_UP_TIMEOUT_S = 120.0
GOAL_P99_MS = 50.0
GOAL_P99_RATE = 50.0
GOAL_DRAIN_PER_S = 200.0
GOAL_DRAIN_RATIO = 0.3
GOAL_RSS_MB = 200.0


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    directory: Path,
    receiver_url: str,
    *,
    endpoint: str = "http://127.0.0.1:8090/fhir",
    extra: tuple[tuple[str, str], ...] = (),
) -> Path:
    """The example TOML with absolute mappings, the receiver at the destination whose example
    ``endpoint`` it replaces, no rate or admission limit (the load client stands for many GP
    systems), no GP record, and ``extra`` (pattern, line) edits."""
    text = demo_configuration()
    replacements = (
        (r'(?m)^mappings_dir = ".*"', f'mappings_dir = "{ROOT / "mappings"}"'),
        (r"(?m)^rate_per_s = [0-9.]+", "rate_per_s = 10000.0"),
        (r"(?m)^burst = [0-9]+", "burst = 10000"),
        # nor the admission limits: one load client stands for many GP systems
        (r"(?m)^max_validations = [0-9]+", "max_validations = 256"),
        (r"(?m)^max_validations_per_client = [0-9]+", "max_validations_per_client = 256"),
        (r"(?m)^max_connections = [0-9]+", "max_connections = 4096"),
        (rf'(?m)^endpoint = "{re.escape(endpoint)}"', f'endpoint = "{receiver_url}"'),
        # no GP record: the benches measure messages out, not feedback or deadline alerts
        (r"(?m)^gp_record = .*$", "# gp_record: off for the bench"),
        *extra,
    )
    for pattern, value in replacements:
        text, count = re.subn(pattern, value, text, count=1)
        if count != 1:
            raise RuntimeError(f"config template changed: {pattern} not found")
    path = directory / "wor-bridge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def encryption_edits(directory: Path, mode: str) -> tuple[tuple[str, str], ...]:
    """``write_config`` edits for ``--encryption``: none for ``off``; for ``aes-gcm`` a fresh
    key file in ``directory`` and the ``[store]`` lines that use it."""
    if mode == "off":
        return ()
    keys = directory / "store.keys"
    keys.write_text(new_key_entry("bench") + "\n", encoding="utf-8")
    keys.chmod(0o600)
    return ((r'(?m)^encryption = "off"', 'encryption = "aes-gcm"\nkey_file = "store.keys"'),)


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MB (MiB)."""
    found: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            found[name] = round(int(value.split()[0]) / 1024, 1)
    return found


class Service:
    """``python -m wor_bridge.cli serve`` in its own process, on a free port."""

    def __init__(self, config: Path, store: Path, log: Path, *, dispatcher: bool = True) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(
            os.environ,
            WOR_BRIDGE_SERVICE__PORT=str(self.port),
            WOR_BRIDGE_STORE__PATH=str(store),
            WOR_BRIDGE_SERVICE__DISPATCHER="true" if dispatcher else "false",
        )
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wor_bridge.cli", "serve", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            cwd=store.parent,
        )
        self.started = time.perf_counter()

    def wait_ready(self, timeout_s: float = 60.0) -> float:
        """Wait for ``/readyz``; return the seconds since the process started."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited with {self.process.returncode}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - self.started
            time.sleep(0.05)
        raise RuntimeError("service not ready in time")

    def intake_seconds(self) -> tuple[float, float]:
        """(sum, count) of the service's ``wor_bridge_intake_seconds`` histogram."""
        text = requests.get(
            f"{self.url}/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=5
        ).text
        values = dict.fromkeys(("sum", "count"), 0.0)
        for line in text.splitlines():
            for part in values:
                if line.startswith(f"wor_bridge_intake_seconds_{part} "):
                    values[part] = float(line.split()[1])
        return values["sum"], values["count"]

    def stop(self) -> None:
        """SIGTERM (uvicorn shuts down gracefully) and wait."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@contextlib.contextmanager
def running(service: Service) -> Iterator[Service]:
    """Stop the service whatever happens."""
    try:
        yield service
    finally:
        service.stop()


@contextlib.contextmanager
def receiver(latency_s: float = 0.0) -> Iterator[SimulatedFhirServer]:
    """A fresh loopback FHIR receiver in this process (``latency_s``: delay per write answer)."""
    server = SimulatedFhirServer(latency_s=latency_s).start()
    try:
        yield server
    finally:
        server.stop()


def queue_counts(store: Path) -> dict[str, int]:
    """Outbox entries per state (read-only connection)."""
    counts = dict.fromkeys(("pending", "delivered", "dead"), 0)
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as conn:
        for state, n in conn.execute("SELECT state, COUNT(*) FROM outbox GROUP BY state"):
            counts[state] = n
    return counts


def wait_drained(store: Path, expected: int, timeout_s: float) -> tuple[float, dict[str, int]]:
    """Poll until ``expected`` entries are delivered and none pending; (seconds, counts)."""
    started = time.perf_counter()
    while True:
        counts = queue_counts(store)
        if counts["pending"] == 0 and counts["delivered"] + counts["dead"] >= expected:
            return time.perf_counter() - started, counts
        if time.perf_counter() - started > timeout_s:
            return float("nan"), counts
        time.sleep(0.1)


def load(mode: str, *args: str) -> dict[str, Any]:
    """Run ``bench/load_client.py`` in its own process; its JSON summary."""
    done = subprocess.run(
        [sys.executable, str(LOAD_CLIENT), mode, *args],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def intake_phase(
    work: Path, rates: list[float], duration_s: float, encryption: str
) -> dict[str, Any]:
    """Open-loop intake at each rate with the dispatcher delivering concurrently."""
    store = work / "intake.sqlite"
    results: list[dict[str, Any]] = []
    with receiver() as sim:
        config = write_config(work, sim.base_url, extra=encryption_edits(work, encryption))
        with running(Service(config, store, work / "service-intake.log")) as service:
            ready_s = service.wait_ready()
            for n, rate in enumerate(rates):
                before = service.intake_seconds()
                args = ["--url", service.url, "--key", HIS_KEY, "--rate", str(rate)]
                args += ["--duration", str(duration_s), "--prefix", f"R{n}"]
                result = load("intake", *args, "--warmup", "2" if n == 0 else "0")
                counts_at_end = queue_counts(store)
                after = service.intake_seconds()
                accepted = after[1] - before[1]
                result["server_accept_mean_ms"] = (
                    round((after[0] - before[0]) / accepted * 1000, 2) if accepted else None
                )
                result["pending_at_end"] = counts_at_end["pending"]
                expected = int(after[1])
                result["catch_up_s"], counts = wait_drained(store, expected, CATCH_UP_TIMEOUT_S)
                result["catch_up_s"] = round(result["catch_up_s"], 2)
                result["dead"] = counts["dead"]
                results.append(result)
            memory = memory_mb(service.process.pid)
            total = int(service.intake_seconds()[1])
        counts = queue_counts(store)
        received = len(sim.resources("Task"))
    return {
        "rates": results,
        "service_ready_s": round(ready_s, 2),
        "rss_after_intake_mb": memory.get("VmRSS"),
        "hwm_after_intake_mb": memory.get("VmHWM"),
        "intake_total": total,
        "delivered_total": counts["delivered"],
        "dead_total": counts["dead"],
        "receiver_tasks": received,
    }


def fill_queue(config: Path, store_path: Path, n: int) -> float:
    """Accept ``n`` distinct referrals into the store as the service would; seconds taken."""
    app = load_app(config)
    client = next(c for c in app.clients if "referral:write" in c.scopes)
    caller = Caller(client.id, client.source_system, client.on_behalf_of)
    store = SqliteOutboxStore(store_path, sealer=bootstrap.sealer_for(app))
    clock = SystemClock()
    started = time.perf_counter()
    for body in referral_bodies(FIXTURE, "D", n):
        accepted = intake.accept_referral(
            store, app.core, clock, data=body, content_type="application/fhir+json", caller=caller
        )
        if not accepted.created:
            raise RuntimeError("drain referrals must be distinct")
    store.close()
    return time.perf_counter() - started


def delivered_span(store: Path) -> tuple[int, float, int]:
    """(delivered count, seconds from first to last delivery, total attempts)."""
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as conn:
        n, first, last, attempts = conn.execute(
            "SELECT COUNT(*), MIN(delivered_at), MAX(delivered_at), SUM(attempts) FROM outbox"
            " WHERE state = 'delivered'"
        ).fetchone()
    return int(n), float(last - first) if n else 0.0, int(attempts or 0)


def drain_phase(work: Path, n: int, encryption: str) -> dict[str, Any]:
    """Queue ``n`` referrals, drain them with the service's dispatcher, then the bare loop."""
    store = work / "drain.sqlite"
    with receiver() as sim:
        config = write_config(work, sim.base_url, extra=encryption_edits(work, encryption))
        fill_s = fill_queue(config, store, n)
        with running(Service(config, store, work / "service-drain.log")) as service:
            ready_s = service.wait_ready()
            wall_s, counts = wait_drained(store, n, max(CATCH_UP_TIMEOUT_S, n / 20))
            memory = memory_mb(service.process.pid)
        received = len(sim.resources("Task"))
    delivered, span_s, attempts = delivered_span(store)
    drain_rate = (delivered - 1) / span_s if span_s > 0 else 0.0
    with receiver() as bare_sim:
        bare = load(
            "bare", "--store", str(store), "--config", str(config), "--url", bare_sim.base_url
        )
        bare_received = len(bare_sim.resources("Task"))
    return {
        "n": n,
        "fill_s": round(fill_s, 1),
        "fill_per_s": round(n / fill_s, 1),
        "service_ready_s": round(ready_s, 2),
        "drain_wall_s": round(wall_s, 2),
        "drain_span_s": round(span_s, 2),
        "drain_per_s": round(drain_rate, 1),
        "delivered": delivered,
        "dead": counts["dead"],
        "attempts": attempts,
        "receiver_tasks": received,
        "rss_after_drain_mb": memory.get("VmRSS"),
        "hwm_after_drain_mb": memory.get("VmHWM"),
        "bare_per_s": bare["rate_per_s"],
        "bare_elapsed_s": bare["elapsed_s"],
        "bare_ok": bare["ok_200"],
        "bare_receiver_tasks": bare_received,
        "ratio": round(drain_rate / bare["rate_per_s"], 3) if bare["rate_per_s"] else 0.0,
    }


def machine() -> dict[str, Any]:
    """Facts about the machine and the interpreter."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d"),
        "loadavg_1m_end": round(os.getloadavg()[0], 2),
    }


def goals(f: dict[str, Any]) -> dict[str, bool | None]:
    """Each goal of the issue: met (True), missed (False) or not measured (None)."""
    at_goal = [r for r in f["intake"]["rates"] if r["rate_target"] == GOAL_P99_RATE]
    drain = f["drain"]
    hwm = max(f["intake"]["hwm_after_intake_mb"] or 0.0, drain["hwm_after_drain_mb"] or 0.0)
    return {
        "intake_p99_at_50_per_s_le_50ms": at_goal[0]["latency_p99_ms"] <= GOAL_P99_MS
        if at_goal
        else None,
        "intake_every_request_201": all(r["errors"] == 0 for r in f["intake"]["rates"]),
        "drain_ge_200_per_s": drain["drain_per_s"] >= GOAL_DRAIN_PER_S,
        "drain_ge_0.3x_bare": drain["ratio"] >= GOAL_DRAIN_RATIO,
        "service_vmhwm_le_200mb": hwm <= GOAL_RSS_MB,
    }


def report(f: dict[str, Any]) -> None:
    """Print the figures as readable lines."""
    intake = f["intake"]
    print(f"store encryption: {f['encryption']}")
    print(f"intake ({f['duration_s']} s per rate, open loop, latency from scheduled send time):")
    for r in intake["rates"]:
        print(
            f"  {r['rate_target']:>5g}/s: p50 {r['latency_p50_ms']} ms  p90 {r['latency_p90_ms']}"
            f"  p99 {r['latency_p99_ms']}  max {r['latency_max_ms']} ms"
            f"  achieved {r['achieved_rate']}/s  201s {r['accepted_201']}/{r['requests']}"
            f"  errors {r['errors']}"
        )
        print(
            f"          server accept mean {r['server_accept_mean_ms']} ms"
            f"  send lag p99 {r['send_lag_p99_ms']} ms"
            f"  backlog at end {r['pending_at_end']}  cleared in {r['catch_up_s']} s"
        )
    print(
        f"  totals: accepted {intake['intake_total']}  delivered {intake['delivered_total']}"
        f"  dead {intake['dead_total']}  receiver Tasks {intake['receiver_tasks']}"
    )
    print(
        f"  service RSS after intake: VmRSS {intake['rss_after_intake_mb']} MB"
        f"  VmHWM {intake['hwm_after_intake_mb']} MB"
    )
    d = f["drain"]
    print(f"drain: {d['n']} queued in {d['fill_s']} s ({d['fill_per_s']}/s, in-process accept)")
    print(
        f"  dispatcher: {d['drain_per_s']}/s (first to last delivery {d['drain_span_s']} s;"
        f" {d['drain_wall_s']} s from ready to empty)  delivered {d['delivered']}"
        f"  dead {d['dead']}  attempts {d['attempts']}  receiver Tasks {d['receiver_tasks']}"
    )
    print(
        f"  bare requests loop: {d['bare_per_s']}/s ({d['bare_elapsed_s']} s, {d['bare_ok']} x 200)"
        f"  ratio dispatcher/bare {d['ratio']}"
    )
    print(
        f"  service RSS after drain: VmRSS {d['rss_after_drain_mb']} MB"
        f"  VmHWM {d['hwm_after_drain_mb']} MB"
    )
    for name, met in f["goals"].items():
        print(f"goal {name}: {'not measured' if met is None else 'met' if met else 'NOT met'}")
    m = f["machine"]
    print(f"machine: nproc {m['nproc']}  {m['cpu']}  {m['system']}")
    print(
        f"Python {m['python']}  SQLite {m['sqlite']}  {m['date']}  load average (1 min):"
        f" {f['loadavg_1m_start']} at start, {m['loadavg_1m_end']} at end (the bench adds"
        " about 1.5; well above that, other work on the machine skewed the figures)"
    )
    print(f"reproduce: {f['command']}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run both phases and print the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per rate")
    parser.add_argument("--rates", default="20,50,100", help="comma-separated requests/s")
    parser.add_argument("--drain-n", type=int, default=10_000, help="referrals to drain")
    parser.add_argument(
        "--encryption", choices=("off", "aes-gcm"), default="off", help="[store] encryption"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if args.duration <= 0 or args.drain_n < 2 or not rates or min(rates) <= 0:
        parser.error("--duration and --rates must be positive and --drain-n at least 2")
    logs.configure(logging.WARNING)  # as the CLI does: no log lines in stdout
    with tempfile.TemporaryDirectory(prefix="wor-bench-") as tmp:
        work = Path(tmp)
        figures: dict[str, Any] = {
            "loadavg_1m_start": round(os.getloadavg()[0], 2),
            "duration_s": args.duration,
            "encryption": args.encryption,
            "intake": intake_phase(work, rates, args.duration, args.encryption),
            "drain": drain_phase(work, args.drain_n, args.encryption),
            "machine": machine(),
        }
    figures["goals"] = goals(figures)
    figures["command"] = (
        f"python bench/bench_service.py --duration {args.duration:g} --rates {args.rates}"
        f" --drain-n {args.drain_n} --encryption {args.encryption}"
    )
    if args.json:
        print(json.dumps(figures))
    else:
        report(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
