"""Benchmark of the STU3 side: rendering per destination type, and the notified-pull read path.

Measures, in one run:

* render latency: ``outbound.render(payload, destination, key, settings, created_at=...)`` per
  destination type (``fhir-r4``, ``notified-pull-stu3``, ``zorgdomein-stu3``; the first example
  destination of each type in ``config/wor-bridge.toml``), cycling over the stored R4 referral
  Bundles (``fixtures/referral/accepted-*/expected.bundle.json``);
* the baseline in the same run: one parse with the fhir.resources models and one serialisation
  (``model_dump_json``) of what render produced: the STU3 notification Task and the STU3 document
  Bundle through the STU3 models of ``wor_bridge.core.fhir``, the R4 Bundle through
  ``parse_and_serialize``; and ``fhir.validate(..., "STU3")`` alone (parse without serialising);
* ``notified_pull.pullable`` (every pullable resource converted to STU3: what each pull
  recomputes) and one audit record on a durable SQLite store (``synchronous=FULL``, one commit:
  what each pull writes), in this process;
* the pull path over loopback sockets against the real service (``wor-bridge serve`` in its own
  process, fresh SQLite store, dispatcher inside, a ``SimulatedFhirServer`` as the notified-pull
  receiver): ``--referrals`` referrals routed to Culemborg are pushed, their notifications awaited
  at the receiver, then with one ``requests.Session``: one ``POST /oauth/token`` per notification
  (HTTP Basic), then every ``input`` URL of every notification ``GET`` in one sequential loop; the
  baseline is ``GET /healthz`` on the same service with the same session, as many times;
* VmHWM of the service process.

Only timings, counts and sizes are printed, never fixture content. Run from the repository root::

    python bench/bench_stu3.py --n 2000 --referrals 50 [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import importlib.metadata
import json
import logging
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import bench_service
import requests
from bench_service import free_port, machine, memory_mb

from wor_bridge import logs
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.config import load_app
from wor_bridge.connectors import notified_pull, outbound
from wor_bridge.core import fhir
from wor_bridge.core.settings import Destination, Settings
from wor_bridge.demo.fhir_server import SimulatedFhirServer
from wor_bridge.records import AuditEvent

ROOT: Final = Path(__file__).resolve().parent.parent
REFERRALS: Final = ROOT / "fixtures" / "referral"
PUSHED: Final = REFERRALS / "accepted-contained" / "input.json"
TYPES: Final = ("fhir-r4", "notified-pull-stu3", "zorgdomein-stu3")
CREATED_AT: Final = "2026-11-02T09:30:00+01:00"
HIS_KEY: Final = "example-his-key"  # the demo key (wor_bridge/demo/credentials.py)
PULL_CLIENT: Final = ("viplive-receiver", "example-pull-secret")  # the example pull client
PULL_DESTINATION: Final = "welzijn-viplive"
TIMEOUT: Final = (3.05, 30.0)
WARMUP: Final = 50
HTTP_WARMUP: Final = 20
AUDIT_CALLS: Final = 300
NOTIFY_TIMEOUT_S: Final = 120.0


# --- statistics


def percentile(samples: list[int], pct: float) -> float:
    """Nearest-rank percentile of nanosecond samples, in nanoseconds."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


def ms(ns: float) -> float:
    """Nanoseconds to milliseconds, rounded for display."""
    return round(ns / 1e6, 3)


def summary(samples: list[int]) -> dict[str, float]:
    """p50/p95/p99 in ms."""
    return {f"p{p}_ms": ms(percentile(samples, p)) for p in (50, 95, 99)}


def time_calls(call: Callable[[int], object], n: int, cycle: int) -> list[int]:
    """Warm up, then time ``n`` calls of ``call(i % cycle)``; return nanoseconds per call."""
    for i in range(WARMUP):
        call(i % cycle)
    samples: list[int] = []
    clock = time.perf_counter_ns
    for i in range(n):
        start = clock()
        call(i % cycle)
        samples.append(clock() - start)
    return samples


# --- part 1: rendering in this process


def stu3_parse_and_serialize(data: bytes) -> bytes:
    """``fhir.parse_and_serialize`` with the STU3 models: one parse, one ``model_dump_json``."""
    return fhir.parse_and_serialize(data, "STU3")


def example_destinations(settings: Settings) -> dict[str, Destination]:
    """The first example destination of each type."""
    found: dict[str, Destination] = {}
    for destination in settings.destinations:
        found.setdefault(destination.type, destination)
    missing = set(TYPES) - set(found)
    if missing:
        raise RuntimeError(f"the example configuration has no destination of type {missing}")
    return found


def type_figures(
    kind: str, destination: Destination, settings: Settings, payloads: list[bytes], n: int
) -> dict[str, Any]:
    """Render, baseline and (STU3) validation timings for one destination type."""

    def render(i: int) -> bytes:
        rendered = outbound.render(
            payloads[i], destination, f"bench-{i}", settings, created_at=CREATED_AT
        )
        return rendered[0].body

    bodies = [render(i) for i in range(len(payloads))]
    stu3 = kind != "fhir-r4"
    parsed = [json.loads(b) for b in bodies]
    if stu3:
        invalid = sum(bool(fhir.validate(r, "resource", "STU3")) for r in parsed)
        if invalid:
            raise RuntimeError(f"{kind}: {invalid} rendered bodies are not valid STU3")
    floor = stu3_parse_and_serialize if stu3 else fhir.parse_and_serialize
    samples = time_calls(render, n, len(payloads))
    base = time_calls(lambda i: floor(bodies[i]), n, len(bodies))
    figures: dict[str, Any] = {
        "destination": destination.id,
        "body_bytes_mean": round(sum(map(len, bodies)) / len(bodies)),
        "render": summary(samples),
        "baseline": summary(base),
        "ratio_p50": round(percentile(base, 50) / percentile(samples, 50), 2),
        "ratio_p95": round(percentile(base, 95) / percentile(samples, 95), 2),
    }
    if stu3:
        check = time_calls(lambda i: fhir.validate(parsed[i], "resource", "STU3"), n, len(parsed))
        figures["validate"] = summary(check)
    return figures


def render_figures(settings: Settings, payloads: list[bytes], n: int) -> dict[str, Any]:
    """``type_figures`` for each destination type."""
    return {
        kind: type_figures(kind, destination, settings, payloads, n)
        for kind, destination in example_destinations(settings).items()
    }


def pullable_figures(payloads: list[bytes], n: int) -> dict[str, Any]:
    """``notified_pull.pullable`` on the parsed Bundle, as a pull does it (json.loads included)."""
    samples = time_calls(
        lambda i: notified_pull.pullable(json.loads(payloads[i])), n, len(payloads)
    )
    return {
        **summary(samples),
        "resources_mean": round(
            sum(len(notified_pull.pullable(json.loads(p))) for p in payloads) / len(payloads), 1
        ),
    }


def audit_figures(work: Path) -> dict[str, Any]:
    """One audit record per call on a fresh durable store (WAL, ``synchronous=FULL``)."""
    store = SqliteOutboxStore(work / "audit-only.sqlite")
    event = AuditEvent(
        event="referral_pull",
        action="R",
        outcome="served",
        user="bench",
        responsible=PULL_DESTINATION,
        source_system="bench",
        object_type="Patient",
        object_id="bench",
        detail="read",
    )
    now = dt.datetime.now(dt.UTC)
    try:
        samples = time_calls(lambda _: store.audit(event, now), AUDIT_CALLS, 1)
    finally:
        store.close()
    return {"calls": AUDIT_CALLS, **summary(samples)}


# --- part 2: the pull path against the real service


def write_config(directory: Path, receiver_url: str, service_url: str) -> Path:
    """bench_service's configuration with the receiver as notified-pull endpoint and the
    service as pull base URL."""
    return bench_service.write_config(
        directory,
        receiver_url,
        endpoint="http://127.0.0.1:8093/fhir",
        extra=((r'(?m)^base_url = "http://127\.0\.0\.1:8080"', f'base_url = "{service_url}"'),),
    )


@contextlib.contextmanager
def service(work: Path, receiver_url: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``python -m wor_bridge.cli serve`` on a free port, ready; stopped (SIGTERM) afterwards."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    config = write_config(work, receiver_url, url)
    env = dict(
        os.environ,
        WOR_BRIDGE_SERVICE__PORT=str(port),
        WOR_BRIDGE_STORE__PATH=str(work / "service.sqlite"),
        WOR_BRIDGE_SERVICE__DISPATCHER="true",
    )
    with (work / "service.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "wor_bridge.cli", "serve", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            cwd=work,
        )
        try:
            wait_ready(url, process)
            yield url, process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Wait for ``/readyz``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"service exited with {process.returncode} (see its log)")
        with contextlib.suppress(requests.RequestException):
            if requests.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise RuntimeError("service not ready in time")


def push_referrals(url: str, count: int) -> list[str]:
    """``count`` distinct referrals for a patient in Culemborg; their Task ids, in order."""
    template = PUSHED.read_bytes().replace(b'"Utrecht"', b'"Culemborg"')
    if b"VW-2026-0001" not in template:
        raise RuntimeError("fixture changed: no VW-2026-0001 to vary")
    headers = {"Authorization": f"Bearer {HIS_KEY}", "Content-Type": "application/fhir+json"}
    task_ids: list[str] = []
    with requests.Session() as session:
        session.trust_env = False
        for i in range(count):
            body = template.replace(b"VW-2026-0001", f"VW-BENCH-{i:05d}".encode())
            answer = session.post(
                f"{url}/fhir/r4/ServiceRequest", data=body, headers=headers, timeout=TIMEOUT
            )
            if answer.status_code != 201:
                raise RuntimeError(f"push {i}: HTTP {answer.status_code}")
            location = str(answer.headers["Location"])
            task_ids.append(location.split("/_history/", maxsplit=1)[0].rsplit("/", 1)[-1])
    return task_ids


def await_notifications(sim: SimulatedFhirServer, task_ids: list[str]) -> dict[str, list[str]]:
    """Wait until every Task's notification reached the receiver; its ``input`` URLs by Task."""
    deadline = time.monotonic() + NOTIFY_TIMEOUT_S
    while True:
        found: dict[str, list[str]] = {}
        for note in sim.resources("Task"):
            task_id = str(note["identifier"][0]["value"]).removeprefix("urn:uuid:")
            if note.get("status") == "requested":
                found[task_id] = [i["valueReference"]["reference"] for i in note.get("input") or []]
        if all(t in found for t in task_ids):
            return {t: found[t] for t in task_ids}
        if time.monotonic() > deadline:
            missing = sum(t not in found for t in task_ids)
            raise RuntimeError(f"{missing} notifications did not arrive in time")
        time.sleep(0.1)


def get_token(session: requests.Session, url: str, task_id: str) -> str:
    """A pull token for one Task (client credentials, HTTP Basic)."""
    answer = session.post(
        f"{url}/oauth/token",
        data={"grant_type": "client_credentials", "resource": f"urn:uuid:{task_id}"},
        auth=PULL_CLIENT,
        timeout=TIMEOUT,
    )
    if answer.status_code != 200:
        raise RuntimeError(f"token: HTTP {answer.status_code}")
    return str(answer.json()["access_token"])


def pull(session: requests.Session, target: str, token: str) -> int:
    """One pull; the body size."""
    answer = session.get(target, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)
    if answer.status_code != 200:
        raise RuntimeError(f"pull: HTTP {answer.status_code}")
    return len(answer.content)


def healthz(session: requests.Session, url: str) -> None:
    """The bare round trip through the same HTTP stack."""
    if session.get(f"{url}/healthz", timeout=TIMEOUT).status_code != 200:
        raise RuntimeError("healthz failed")


def audit_count(store: Path, event: str) -> int:
    """Audit records of one event (read-only connection)."""
    with contextlib.closing(sqlite3.connect(f"file:{store}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT COUNT(*) FROM audit WHERE event = ?", (event,)).fetchone()
    return int(row[0])


def pull_figures(work: Path, referrals: int) -> dict[str, Any]:
    """Push, await the notifications, then time tokens, pulls and healthz over one Session."""
    sim = SimulatedFhirServer().start()
    try:
        with service(work, sim.base_url) as (url, process):
            task_ids = push_referrals(url, referrals + 1)  # the first one is for the warm-up
            started = time.perf_counter()
            inputs = await_notifications(sim, task_ids)
            notify_s = time.perf_counter() - started
            clock = time.perf_counter_ns
            with requests.Session() as session:
                session.trust_env = False
                first = task_ids[0]
                warm_token = get_token(session, url, first)
                for i in range(HTTP_WARMUP):
                    pull(session, inputs[first][i % len(inputs[first])], warm_token)
                    healthz(session, url)
                tokens: dict[str, str] = {}
                token_ns: list[int] = []
                for task_id in task_ids[1:]:
                    start = clock()
                    tokens[task_id] = get_token(session, url, task_id)
                    token_ns.append(clock() - start)
                pull_ns: list[int] = []
                sizes = 0
                loop_start = clock()
                for task_id in task_ids[1:]:
                    for target in inputs[task_id]:
                        start = clock()
                        sizes += pull(session, target, tokens[task_id])
                        pull_ns.append(clock() - start)
                pull_wall = clock() - loop_start
                health_ns: list[int] = []
                loop_start = clock()
                for _ in range(len(pull_ns)):
                    start = clock()
                    healthz(session, url)
                    health_ns.append(clock() - start)
                health_wall = clock() - loop_start
            memory = memory_mb(process.pid)
        served = audit_count(work / "service.sqlite", "referral_pull")
        issued = audit_count(work / "service.sqlite", "pull_token")
    finally:
        sim.stop()
    return {
        "referrals": referrals,
        "notify_wait_s": round(notify_s, 2),
        "pulls": len(pull_ns),
        "pulls_per_referral": round(len(pull_ns) / referrals, 1),
        "pull_body_bytes_mean": round(sizes / len(pull_ns)),
        "token": summary(token_ns),
        "pull": summary(pull_ns),
        "pulls_per_s": round(len(pull_ns) / (pull_wall / 1e9), 1),
        "healthz": summary(health_ns),
        "healthz_per_s": round(len(health_ns) / (health_wall / 1e9), 1),
        "ratio_pull_p50_to_healthz_p50": round(
            percentile(pull_ns, 50) / percentile(health_ns, 50), 2
        ),
        "audit_pull_records": served,
        "audit_token_records": issued,
        "service_vmrss_mb": memory.get("VmRSS"),
        "service_vmhwm_mb": memory.get("VmHWM"),
    }


# --- the run


def measure(n: int, referrals: int) -> dict[str, Any]:
    """Run every measurement and return the figures."""
    settings = load_app().core
    payloads = [p.read_bytes() for p in sorted(REFERRALS.glob("accepted-*/expected.bundle.json"))]
    if not payloads:
        raise RuntimeError("no fixtures/referral/accepted-*/expected.bundle.json found")
    loadavg_start = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory(prefix="wor-bench-stu3-") as tmp:
        work = Path(tmp)
        figures: dict[str, Any] = {
            "n": n,
            "fixtures": len(payloads),
            "render": render_figures(settings, payloads, n),
            "pullable": pullable_figures(payloads, n),
            "audit_commit": audit_figures(work),
            "pull_path": pull_figures(work, referrals),
        }
    figures["loadavg_1m_start"] = loadavg_start
    figures["machine"] = machine()
    figures["fhir_resources"] = importlib.metadata.version("fhir.resources")
    figures["command"] = f"python bench/bench_stu3.py --n {n} --referrals {referrals}"
    return figures


def _line(label: str, s: dict[str, float]) -> str:
    return f"{label:<34} {s['p50_ms']:>8.3f} {s['p95_ms']:>8.3f} {s['p99_ms']:>8.3f}"


def report(f: dict[str, Any]) -> None:
    """Print the figures as a compact table."""
    print(f"N={f['n']} per measurement, {f['fixtures']} stored R4 referral Bundles")
    print(f"{'ms':<34} {'p50':>8} {'p95':>8} {'p99':>8}")
    for kind, r in f["render"].items():
        print(_line(f"render {kind}", r["render"]))
        label = "R4 parse+serialise" if kind == "fhir-r4" else "STU3 parse+serialise"
        print(_line(f"  baseline {label}", r["baseline"]))
        if "validate" in r:
            print(_line("  STU3 validate only", r["validate"]))
        print(
            f"  ratio baseline/render p50 {r['ratio_p50']}  p95 {r['ratio_p95']}"
            f"  (body {r['body_bytes_mean']} B, destination {r['destination']})"
        )
    print(_line("pullable (all resources to STU3)", f["pullable"]))
    print(_line(f"audit record, one commit ({f['audit_commit']['calls']})", f["audit_commit"]))
    p = f["pull_path"]
    print(
        f"pull path: {p['referrals']} referrals, {p['pulls']} pulls"
        f" ({p['pulls_per_referral']}/referral, {p['pull_body_bytes_mean']} B mean),"
        f" all notified {p['notify_wait_s']} s after the last push"
    )
    print(_line("  POST /oauth/token", p["token"]))
    print(_line("  GET /fhir/stu3/<Type>/<id>", p["pull"]))
    print(_line("  GET /healthz (baseline)", p["healthz"]))
    print(
        f"  pulls/s {p['pulls_per_s']}  healthz/s {p['healthz_per_s']}"
        f"  ratio pull p50 / healthz p50 {p['ratio_pull_p50_to_healthz_p50']}"
    )
    print(
        f"  audit records: {p['audit_pull_records']} referral_pull,"
        f" {p['audit_token_records']} pull_token (warm-up included)"
    )
    print(f"  service VmRSS {p['service_vmrss_mb']} MB  VmHWM {p['service_vmhwm_mb']} MB")
    m = f["machine"]
    print(f"machine: nproc {m['nproc']}  {m['cpu']}  {m['system']}")
    print(
        f"Python {m['python']}  fhir.resources {f['fhir_resources']}  SQLite {m['sqlite']}"
        f"  {m['date']}  load average (1 min) {f['loadavg_1m_start']} at start,"
        f" {m['loadavg_1m_end']} at end"
    )
    print(f"reproduce: {f['command']}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the benchmark and print the result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=2000, help="timed calls per in-process figure")
    parser.add_argument("--referrals", type=int, default=50, help="referrals pulled")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.n < 1 or args.referrals < 1:
        parser.error("--n and --referrals must be at least 1")
    logs.configure(logging.WARNING)  # as the CLI does: no log lines in stdout or timings
    figures = measure(args.n, args.referrals)
    if args.json:
        print(json.dumps(figures))
    else:
        report(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
