"""Long PostgreSQL fault run (issue 14): the test ``tests/test_pg_faults.py`` at length.

Each round starts a private PostgreSQL cluster (``initdb`` in a temporary directory, a free
port, the machine's PostgreSQL binaries) and three real ``wor-bridge serve`` replicas on it,
pushes ``--referrals`` referrals round-robin while ``--kills`` replicas are SIGKILLed at random
moments and PostgreSQL itself crashes (``immediate`` stop) and restarts halfway, then waits until
every acknowledged referral is delivered and checks: one ServiceRequest per acknowledged referral
at the receiver, exactly the acknowledged Tasks, nothing dead. Rounds use seeds ``--seed``,
``--seed + 1``, ...

Only counts are printed, never referral content. Run from the repository root::

    python bench/fault_pg.py [--rounds 5] [--referrals 200] [--kills 40] [--seed 1] [--json]

Exit 0 when every round lost and duplicated nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.pg_cluster import PrivateCluster  # noqa: E402 - after the repository root is on the path
from tests.service_harness import receiver  # noqa: E402
from tests.test_pg_faults import assert_once_and_nothing_dead, run_faults  # noqa: E402


def one_round(referrals: int, kills: int, seed: int) -> dict[str, Any]:
    """One cluster, three replicas, the faults; the counts and whether exactly-once held."""
    started = time.monotonic()
    cluster = PrivateCluster()
    try:
        cluster.start()
        with receiver() as sim, tempfile.TemporaryDirectory(prefix="fault-pg-") as tmp:
            tasks = run_faults(Path(tmp), cluster, sim, referrals=referrals, kills=kills, seed=seed)
            try:
                assert_once_and_nothing_dead(sim, cluster, tasks)
                held, problem = True, ""
            except AssertionError as err:  # the message names a referral id or a count
                held, problem = False, type(err).__name__
            return {
                "seed": seed,
                "pushed": referrals,
                "acknowledged": len(tasks),
                "received_tasks": len(sim.resources("Task")),
                "kills": kills,
                "exactly_once": held,
                "problem": problem,
                "seconds": round(time.monotonic() - started, 1),
            }
    finally:
        cluster.remove()


def main() -> int:
    """Run the rounds; print the figures; 0 when every round held."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--referrals", type=int, default=200)
    parser.add_argument("--kills", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.kills >= args.referrals:
        parser.error("--kills must be below --referrals")
    results = [one_round(args.referrals, args.kills, args.seed + i) for i in range(args.rounds)]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(
                f"seed {r['seed']}: {r['acknowledged']}/{r['pushed']} acknowledged,"
                f" {r['received_tasks']} Tasks received, {r['kills']} kills + 1 PostgreSQL"
                f" crash, exactly once: {r['exactly_once']} ({r['seconds']} s)"
            )
    return 0 if all(r["exactly_once"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
