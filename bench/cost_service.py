"""The real service for ``bench_cost.py``: its configuration, and its peak RSS (VmHWM) while
many clients send the worst admitted bodies at the same moment (and, before the limits, the
review's Task bodies).

The service is ``wor-bridge serve`` in its own process (``bench_service.Service``) with the
example configuration, no rate limit and 40 more GP clients (``KEYS``), so the per-client share
is not what binds; only counts, statuses and sizes are kept.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import bench_service
import cost_bodies as bodies
import requests
from bench_service import memory_mb

from wor_bridge.core.limits import InputLimits
from wor_bridge.demo.credentials import demo_configuration

LIMITS = InputLimits()
FHIR_JSON = "application/fhir+json"
SR, TASK = "/fhir/r4/ServiceRequest", "/fhir/r4/Task/{task}"
CEILINGS = {
    "max_elements": 1_000_000,
    "max_array_items": 1_000_000,
    "max_string_chars": 16_777_216,
    "max_number_digits": 4000,
    **dict.fromkeys(
        ("task_bytes", "observation_bytes", "feedback_bundle_bytes", "webhook_bytes"), 16 << 20
    ),
}
BEFORE = tuple((f"{k} = {getattr(LIMITS, k)}", f"{k} = {v}") for k, v in CEILINGS.items())
KEYS = [f"bench-client-key-{i:02d}" for i in range(40)]


def config_text(store: Path, edits: tuple[tuple[str, str], ...] = ()) -> str:
    """The example configuration: this store, no rate limit, 40 more GP clients, ``edits``."""
    text = demo_configuration()
    mappings = bench_service.ROOT / "mappings"
    text = text.replace('mappings_dir = "../mappings"', f'mappings_dir = "{mappings}"')
    text = text.replace('path = "wor-bridge.sqlite"', f'path = "{store}"')
    unlimited = (("rate_per_s = 10.0", "rate_per_s = 100000.0"), ("burst = 20", "burst = 100000"))
    for old, new in (*unlimited, *edits):
        if f"\n{old}" not in text:
            raise RuntimeError(f"config template changed: {old} not found")
        text = text.replace(f"\n{old}", f"\n{new}", 1)
    for n, key in enumerate(KEYS):
        text += (
            f'\n[[clients]]\nid = "bench-{n:02d}"\n'
            f'key_sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n'
            'scopes = ["referral:write", "task:read", "task:update", "feedback:write"]\n'
            f'source_system = "bench-{n:02d}"\n'
        )
    return text


def rss_run(
    work: Path,
    edits: tuple[tuple[str, str], ...],
    sends: list[tuple[str, str, bytes]],
    parallel: int,
    rounds: int,
) -> dict[str, Any]:
    """VmHWM of a real service while ``parallel`` clients send each of ``sends`` at once."""
    work.mkdir(parents=True, exist_ok=True)
    store = work / "store.sqlite"
    config = work / "wor-bridge.toml"
    config.write_text(config_text(store, edits), encoding="utf-8")
    service = bench_service.Service(config, store, work / "service.log", dispatcher=False)
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    tasks: dict[int, str] = {}

    def client(n: int, method: str, path: str, body: bytes) -> None:
        path = path.format(task=tasks.get(n, "x"))
        headers = {
            "Authorization": f"Bearer {KEYS[n]}",
            "Content-Type": FHIR_JSON,
            "If-Match": 'W/"1"',
        }
        with requests.Session() as session:
            session.trust_env = False
            answer = session.request(
                method, service.url + path, data=body, headers=headers, timeout=(3.05, 600)
            )
        with lock:
            statuses[answer.status_code] += 1

    with bench_service.running(service):
        service.wait_ready()
        ready = memory_mb(service.process.pid)
        if any("{task}" in path for _, path, _ in sends):  # a Task of its own per client
            for n in range(parallel):
                pushed = requests.post(
                    service.url + SR,
                    data=bodies.dumps(bodies.referral(n)),
                    headers={"Authorization": f"Bearer {KEYS[n]}", "Content-Type": FHIR_JSON},
                    timeout=(3.05, 60),
                )
                tasks[n] = pushed.headers["Location"].split("/_history/")[0].rsplit("/", 1)[-1]
        started = time.perf_counter()
        for _ in range(rounds):
            for method, path, body in sends:
                threads = [
                    threading.Thread(target=client, args=(n, method, path, body))
                    for n in range(parallel)
                ]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
        seconds = time.perf_counter() - started
        after = memory_mb(service.process.pid)
    return {
        "ready": ready,
        "after": after,
        "statuses": dict(sorted(statuses.items())),
        "seconds": round(seconds, 1),
    }


def service_runs(work: Path, parallel: int, rounds: int, baseline: int) -> dict[str, Any]:
    """The real service: default admission, room for every client, and before the limits."""
    sends = [
        ("POST", SR, bodies.dumps(bodies.worst_referral(LIMITS))),
        ("POST", SR, bodies.dumps(bodies.long_strings_referral(LIMITS, 1 << 20))),
        ("POST", SR, bodies.array_flood()),
    ]
    room = (("max_validations = 8", f"max_validations = {parallel}"),)
    out = {
        "default admission": rss_run(work / "rss-default", (), sends, parallel, rounds),
        f"max_validations = {parallel}": rss_run(work / "rss-room", room, sends, parallel, rounds),
    }
    if baseline:
        edits = (
            *BEFORE,
            ("max_validations = 8", "max_validations = 256"),
            ("max_validations_per_client = 4", "max_validations_per_client = 256"),
        )
        review = [("PUT", TASK, bodies.review_task())]
        out[f"before the limits, {baseline} review Tasks"] = rss_run(
            work / "rss-before", edits, review, baseline, 1
        )
    return out
