"""Soak: SIGKILL the real service at random moments, for every destination type; count effects.

For each destination type the code knows (``outbound.TYPES``), the real service (``wor-bridge
serve``, durable SQLite store, dispatcher inside) delivers to a loopback ``SimulatedFhirServer``
while it is killed over and over: by this process after a random delay (anywhere: intake, between
commit and 202, mid-send), or by the receiver right after it applied a write and before it
answers (mid-answer); some answers are lost on purpose instead (closed, or cut off halfway). A
push that got no 202 is pushed again after the restart, as a GP system would. At the end every
acknowledged referral must have exactly one effect at the receiver: one ServiceRequest and Task
(fhir-r4), one notification Task (notified pull), one document (ZorgDomein-style).

Only counts are printed, never referral content. Run from the repository root::

    python bench/soak_exactly_once.py [--kills 100] [--types fhir-r4,zorgdomein-stu3] [--json]
        [--create conditional|put|plain]

Exit 0 when nothing was lost and nothing duplicated.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import re
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import bench_service
import requests
from bench_service import ROOT, Service, queue_counts

from wor_bridge import load_settings, logs
from wor_bridge.connectors import outbound, zorgdomein
from wor_bridge.demo.fhir_server import SimulatedFhirServer

PUSHED: Final = (ROOT / "fixtures" / "referral" / "accepted-contained" / "input.json").read_bytes()
MARKER: Final = b"VW-2026-0001"  # the fixture's HIS referral number (a business key)
HIS_KEY: Final = "example-his-key"  # the demo key (wor_bridge/demo/credentials.py)


class Hook:
    """The receiver's write hook: kills the armed service after its ``countdown``-th write."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pid: int | None = None
        self.countdown = 0
        self.kills = 0

    def arm(self, pid: int, countdown: int) -> None:
        """Kill ``pid`` right after the receiver applies its ``countdown``-th write from now."""
        with self.lock:
            self.pid, self.countdown = pid, countdown

    def __call__(self, _rtype: str, _resource: dict[str, Any]) -> None:
        with self.lock:
            if self.pid is None:
                return
            self.countdown -= 1
            if self.countdown > 0:
                return
            pid, self.pid = self.pid, None
            self.kills += 1
        with contextlib.suppress(ProcessLookupError):  # it may have died already
            os.kill(pid, signal.SIGKILL)


def effects(dtype: str, sim: SimulatedFhirServer, task_id: str) -> int:
    """How many times the referral with this Task took effect at the receiver."""
    value = f"urn:uuid:{task_id}"
    if dtype == "zorgdomein-stu3":
        doc = f"urn:uuid:{zorgdomein.document_id(task_id)}"
        return sum(1 for b in sim.resources("Bundle") if b["identifier"]["value"] == doc)
    tasks = sim.resources("Task")
    if dtype == "fhir-r4":
        return sum(1 for t in tasks if t.get("id") == task_id)
    return sum(1 for t in tasks if any(i.get("value") == value for i in t.get("identifier", [])))


COUNTERS: Final[dict[str, Callable[[SimulatedFhirServer, str], int]]] = {
    t: (lambda sim, task_id, t=t: effects(t, sim, task_id)) for t in outbound.TYPES
}


def config_for(work: Path, dtype: str, receiver_url: str, create: str | None) -> Path:
    """The example configuration, every referral to the example destination of ``dtype`` at the
    receiver, short timeouts and lease (a killed worker's entry is taken over soon), and the
    STU3 destinations' ``create`` when given."""
    destination = next(d for d in load_settings().destinations if d.type == dtype and d.mapping)
    path = bench_service.write_config(
        work,
        receiver_url,
        endpoint=str(destination.endpoint),
        extra=(
            (r'(?m)^catch_all = ".*"', f'catch_all = "{destination.id}"'),
            (r"(?m)^lease_s = .*$", "lease_s = 2.0"),
            (r"(?m)^base_s = .*$", "base_s = 0.1"),
            (r"(?m)^cap_s = .*$", "cap_s = 1.0"),
            (r"(?m)^dispatcher_interval_s = .*$", "dispatcher_interval_s = 0.1"),
        ),
    )
    text = path.read_text(encoding="utf-8").replace(
        "[[destinations]]\n", "[[destinations]]\nconnect_timeout_s = 0.3\nread_timeout_s = 0.6\n"
    )
    if create is not None:
        text = re.sub(r"(?m)^create = .*$", "", text)
        for stu3 in ("notified-pull-stu3", "zorgdomein-stu3"):
            text = text.replace(f'type = "{stu3}"\n', f'type = "{stu3}"\ncreate = "{create}"\n')
    path.write_text(text, encoding="utf-8")
    return path


def push(url: str, ref: str) -> str | None:
    """Push referral ``ref``; its Task id when acknowledged (202), else None."""
    try:
        answer = requests.post(
            f"{url}/fhir/r4/ServiceRequest",
            data=PUSHED.replace(MARKER, ref.encode()),
            headers={"Authorization": f"Bearer {HIS_KEY}", "Content-Type": "application/fhir+json"},
            timeout=5,
        )
    except requests.RequestException:
        return None
    if answer.status_code != 202:
        return None
    return str(answer.headers["Content-Location"].rsplit("/", 1)[-1])


def soak(dtype: str, kills: int, rng: random.Random, create: str | None) -> dict[str, Any]:
    """Kill the service ``kills`` times while it takes and delivers referrals to ``dtype``."""
    hook = Hook()
    sim = SimulatedFhirServer(on_write=hook).start()
    acked: dict[str, str] = {}
    unacked: list[str] = []
    killed = {"external": 0, "receiver": 0}
    dropped = 0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"soak-{dtype}-") as tmp:
        work = Path(tmp)
        config = config_for(work, dtype, sim.base_url, create)
        store, log = work / "store.sqlite", work / "service.log"
        n = 0
        while sum(killed.values()) < kills:
            service = Service(config, store, log)
            service.wait_ready()
            mode = rng.choice(("external", "receiver", "receiver", "drop"))
            if mode == "receiver":
                hook.arm(service.process.pid, rng.randint(1, 3))
            elif mode == "drop":
                sim.drop_next(1, rng.choice(("close", "partial")))
                dropped += 1
            else:
                timer = threading.Timer(rng.uniform(0.0, 0.4), service.process.kill)
                timer.start()
            for ref in [*unacked, *(f"SOAK-{dtype}-{n + i}" for i in range(rng.randint(1, 4)))]:
                task_id = push(service.url, ref)
                if task_id is None:
                    if ref not in unacked:
                        unacked.append(ref)
                else:
                    acked[ref] = task_id
                    if ref in unacked:
                        unacked.remove(ref)
            n += 4
            deadline = time.monotonic() + 1.5
            while service.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if service.process.poll() is None:
                service.process.kill()
                service.process.wait()
            else:
                killed["receiver" if mode == "receiver" else "external"] += 1
            if mode == "external":
                timer.cancel()
            hook.arm(0, 0)
            hook.pid = None
            service.stop()
        service = Service(config, store, log)
        service.wait_ready()
        for ref in unacked:  # the GP system pushes again what was never acknowledged
            task_id = push(service.url, ref)
            if task_id is not None:
                acked[ref] = task_id
        deadline = time.monotonic() + 120
        while queue_counts(store)["pending"] and time.monotonic() < deadline:
            time.sleep(0.2)
        service.stop()
        counts = [COUNTERS[dtype](sim, task_id) for task_id in acked.values()]
    sim.stop()
    return {
        "type": dtype,
        "kills": killed,
        "answers_lost": dropped,
        "acknowledged": len(acked),
        "writes_at_receiver": len(sim.requests()),
        "lost": sum(1 for c in counts if c == 0),
        "duplicated": sum(1 for c in counts if c > 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    """Run the soak per destination type; print the figures; 0 when exactly once held."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=100, help="kills per destination type")
    parser.add_argument("--types", default=",".join(sorted(outbound.TYPES)))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--create",
        choices=("conditional", "put", "plain"),
        default=None,
        help="the STU3 destinations' create setting (plain shows the at-least-once risk)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    logs.configure(logging.WARNING)
    rng = random.Random(args.seed)  # a reproducible schedule, not a secret
    results = [soak(t, args.kills, rng, args.create) for t in args.types.split(",")]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(
                f"{r['type']:<20} kills {sum(r['kills'].values()):>4} "
                f"(external {r['kills']['external']},"
                f" receiver mid-answer {r['kills']['receiver']}),"
                f" answers lost {r['answers_lost']:>3}, acknowledged {r['acknowledged']:>4},"
                f" receiver writes {r['writes_at_receiver']:>4}: lost {r['lost']},"
                f" duplicated {r['duplicated']} ({r['seconds']} s)"
            )
    return 0 if all(r["lost"] == 0 and r["duplicated"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
