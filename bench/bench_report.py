"""Benchmark of the monitoring report on SQLite: 100,000 referrals and 1,000,000 events.

Loads synthetic monitoring facts (no patient data exists in these tables) into a fresh SQLite
store through the store's own hook functions (``insert_facts``, ``apply_progress``), in one
transaction, then times ``usecases.monitoring.monitoring_report`` (read + figures + suppression)
and its JSON rendering, for a few period/breakdown combinations. Run from the repository root::

    python bench/bench_report.py [--referrals 100000] [--events 1000000] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from wor_bridge.adapters import sqlite_monitoring as hooks
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.core.monitoring_facts import Progress, ReferralFacts
from wor_bridge.core.monitoring_settings import MonitoringSettings
from wor_bridge.core.report_formats import to_json
from wor_bridge.usecases.monitoring import Reader, monitoring_report

REASONS = ("eenzaamheid", "psychische-klachten", "vastlopen", "chronische-ziekte", "rouw-verlies")
TYPES = ("huisarts", "poh-ggz", "poh-somatiek", "praktijkverpleegkundige")
STATUSES = ("accepted", "in-progress", "in-progress", "completed", "cancelled")
START = dt.datetime(2025, 1, 1, 9, tzinfo=dt.UTC)


class _Clock:
    def now(self) -> dt.datetime:
        return dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def load(store: SqliteOutboxStore, referrals: int, events: int, seed: int = 7) -> None:
    """Synthetic facts and progress events, in one transaction (via the store's hooks)."""
    rng = random.Random(seed)
    per = events // referrals - 1  # one event is the referral itself
    with store._write() as conn:
        for n in range(referrals):
            received = START + dt.timedelta(minutes=rng.randrange(2 * 365 * 24 * 60))
            facts = ReferralFacts(
                key=f"k{n:07d}", received_at=received, authored_on=received.date(),
                practice=f"agb:0109{rng.randrange(300):04d}", source_system="his",
                referrer_type=rng.choice(TYPES), welfare=f"welzijn-{rng.randrange(8)}",
                municipality=f"gemeente-{rng.randrange(40)}", sex=rng.choice(("male", "female")),
                age_band=rng.choice(("18-29", "45-54", "65-74", "75-84")),
                reasons=tuple(sorted(rng.sample(REASONS, rng.randrange(1, 4)))),
                deadline_at=received + dt.timedelta(days=7),
            )  # fmt: skip
            hooks.insert_facts(conn, facts)
            moment = received
            for step in range(per):
                moment += dt.timedelta(hours=rng.randrange(1, 200))
                hooks.apply_progress(
                    conn, facts.key,
                    Progress(at=moment, status=STATUSES[min(step, 4)] if step < 5 else "completed",
                             first_contact_at=moment if step == 1 else None,
                             conversations=step, reason_code="completed-activity" if step > 4
                             else None, activities=(("natuur", "participant"),) if step == 3
                             else ()),
                )  # fmt: skip


def timed(store: SqliteOutboxStore, period: Any, breakdown: Any, repeat: int = 3) -> float:
    """Best of ``repeat`` wall-clock seconds for one report (read, compute, JSON)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        report = monitoring_report(store, MonitoringSettings(), _Clock(), reader=Reader("bench",
                                   admin=True), period=period, breakdown=breakdown)  # fmt: skip
        json.dumps(to_json(report))
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    """Load, count, time and print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--referrals", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = SqliteOutboxStore(Path(tmp) / "bench.sqlite")
        started = time.perf_counter()
        load(store, args.referrals, args.events)
        load_s = time.perf_counter() - started
        conn = store._conn()
        counts = {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("monitoring_referral", "monitoring_event")
        }
        results = {
            f"{p}/{b}": round(timed(store, p, b), 3)
            for p, b in (("year", "total"), ("quarter", "municipality"), ("month", "welfare"),
                         ("year", "practice"))
        }  # fmt: skip
    out = {"load_s": round(load_s, 1), **counts, "report_s": results}
    if args.json:
        print(json.dumps(out))
        return
    print(f"loaded {counts['monitoring_referral']} referrals, {counts['monitoring_event']} events"
          f" in {load_s:.1f} s")  # fmt: skip
    for name, seconds in results.items():
        print(f"report {name:22} {seconds:6.3f} s")


if __name__ == "__main__":
    main()
