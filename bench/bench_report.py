"""Benchmark of the monitoring report on SQLite or PostgreSQL: 100,000 referrals and 1,000,000
events.

Loads synthetic monitoring facts (no patient data exists in these tables) into a fresh SQLite
store through the store's own hook functions (``insert_facts``, ``apply_progress``), in one
transaction. With ``--store postgresql`` the store is a fresh PostgreSQL database (server:
``WOR_BRIDGE_TEST_PG``, else 127.0.0.1:5432 as ``postgres``; dropped afterwards), filled either
through the same hooks (``--load hooks``: about 12 minutes at this size, one statement per
round trip) or, by default, by ``COPY`` of the rows those hooks wrote into a SQLite store
(``--load copy``: the same rows, ``tests/test_bench_report_load.py``), then ``VACUUM ANALYZE``
(what autovacuum does to a table this size). Then it times
``usecases.monitoring.monitoring_report`` (counted by the store with ``GROUP BY``, figures,
suppression) and its JSON text as the service writes it (``report_json.json_text``), for a
few period/breakdown combinations (the median of 3 runs each; ``--all``: all 21 periods x
breakdowns).
``--before`` also times the earlier path on the same store (every referral read into a
``Trajectory`` and counted in Python: ``core.monitoring.compute`` over ``store.trajectories()``,
as the in-memory store still does) and checks that both reports are identical. Run from the
repository root::

    python bench/bench_report.py [--referrals 100000] [--events 1000000] [--all] [--before]
        [--json] [--store sqlite|postgresql] [--load copy|hooks]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

from wor_bridge import collection
from wor_bridge.adapters import sqlite_monitoring as hooks
from wor_bridge.adapters.postgres_store import PostgresOutboxStore
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.core.monitoring import Report, compute
from wor_bridge.core.monitoring_facts import Progress, ReferralFacts
from wor_bridge.core.monitoring_grid import BREAKDOWNS
from wor_bridge.core.monitoring_settings import MonitoringSettings
from wor_bridge.core.report_json import json_text
from wor_bridge.usecases.monitoring import Reader, monitoring_report

REASONS = ("eenzaamheid", "psychische-klachten", "vastlopen", "chronische-ziekte", "rouw-verlies")
TYPES = ("huisarts", "poh-ggz", "poh-somatiek", "praktijkverpleegkundige")
STATUSES = ("accepted", "in-progress", "in-progress", "completed", "cancelled")
START = dt.datetime(2025, 1, 1, 9, tzinfo=dt.UTC)
COMBINATIONS: tuple[tuple[str, str], ...] = (
    ("year", "total"), ("year", "practice"), ("quarter", "municipality"), ("month", "welfare"),
    ("year", "sex"), ("quarter", "age_band"), ("month", "referrer_type"),
    *((p, b) for p in ("month", "quarter", "year") for b in BREAKDOWNS
      if (p, b) not in {("year", "total"), ("year", "practice"), ("quarter", "municipality"),
                        ("month", "welfare"), ("year", "sex"), ("quarter", "age_band"),
                        ("month", "referrer_type")}),
)  # fmt: skip
"""The issue's combinations first (``--all``: then the other 14 of 3 periods x 7 breakdowns)."""


TABLES = ("monitoring_referral", "monitoring_reason", "monitoring_activity", "monitoring_event")
ADMIN = (
    os.environ.get("WOR_BRIDGE_TEST_PG") or "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)


@contextlib.contextmanager
def database(admin: str = ADMIN) -> Iterator[str]:
    """A fresh PostgreSQL database on the server of ``admin``; its DSN. Dropped afterwards."""
    name = f"wor_bridge_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
        try:
            params = psycopg.conninfo.conninfo_to_dict(admin)
            params["dbname"] = name
            yield psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in params.items()})
        finally:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def copy_rows(source: SqliteOutboxStore, target: PostgresOutboxStore) -> None:
    """Every row of the monitoring tables of ``source`` into the empty ones of ``target``
    (``COPY``, ids included; the event id sequence continues after them), then ``VACUUM
    ANALYZE`` them: what the hooks would have written into ``target`` directly."""
    reader = source._conn()
    with target.db.pool.connection() as conn:
        with conn.transaction():
            for table in TABLES:
                rows = reader.execute(f"SELECT * FROM {table}")
                names = ", ".join(column[0] for column in rows.description)
                with conn.cursor().copy(f"COPY {table} ({names}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(tuple(row))
            conn.execute(
                "SELECT setval(pg_get_serial_sequence('monitoring_event', 'id'),"
                " (SELECT MAX(id) FROM monitoring_event))"
            )
        for table in TABLES:
            conn.execute(f"VACUUM ANALYZE {table}")


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


def _sql(store: SqliteOutboxStore, period: Any, breakdown: Any) -> Report:
    return monitoring_report(store, MonitoringSettings(), _Clock(), reader=Reader("bench",
                             admin=True), period=period, breakdown=breakdown)  # fmt: skip


def _rows(store: SqliteOutboxStore, period: Any, breakdown: Any) -> Report:
    settings = MonitoringSettings()
    return compute(store.trajectories(), period=period, breakdown=breakdown, settings=settings,
                   now=_Clock().now(), scope=Reader("bench", admin=True).scope)  # fmt: skip


def timed(store: SqliteOutboxStore, period: Any, breakdown: Any, repeat: int = 3,
          path: Any = _sql) -> tuple[float, float, Report]:  # fmt: skip
    """Median of ``repeat`` runs of one report (read, compute, JSON text as the service
    writes it): wall-clock seconds and
    this process's CPU seconds (less moved by other work on the machine)."""
    seconds, cpu = [], []
    for _ in range(repeat):
        started, used = time.perf_counter(), time.process_time()
        report = path(store, period, breakdown)
        with collection.paused():  # as the service's ``render`` does
            json_text(report, ensure_ascii=False)
        seconds.append(time.perf_counter() - started)
        cpu.append(time.process_time() - used)
    return statistics.median(seconds), statistics.median(cpu), report


@contextlib.contextmanager
def open_store(kind: str, how: str, referrals: int, events: int) -> Iterator[
    tuple[SqliteOutboxStore, float]
]:  # fmt: skip
    """A fresh store of ``kind`` loaded with the synthetic facts, and the seconds the load took
    (``how``: ``hooks``, or ``copy`` of what the hooks wrote into a SQLite store)."""
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "sqlite":
            store = SqliteOutboxStore(Path(tmp) / "bench.sqlite")
            started = time.perf_counter()
            load(store, referrals, events)
            yield store, time.perf_counter() - started
            store.close()
            return
        with database() as dsn:
            pg = PostgresOutboxStore(dsn, pool_size=2)
            try:
                started = time.perf_counter()
                if how == "hooks":
                    load(pg, referrals, events)
                    for table in TABLES:
                        pg._conn().execute(f"VACUUM ANALYZE {table}")
                else:
                    source = SqliteOutboxStore(Path(tmp) / "source.sqlite")
                    load(source, referrals, events)
                    copy_rows(source, pg)
                    source.close()
                yield pg, time.perf_counter() - started
            finally:
                pg.close()


def main() -> None:
    """Load, count, time and print."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--referrals", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--before", action="store_true", help="also time the earlier path")
    parser.add_argument("--all", action="store_true", help="every period x breakdown (21)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--load", choices=("copy", "hooks"), default="copy",
                        help="PostgreSQL: COPY the hooks' SQLite rows, or hooks")  # fmt: skip
    args = parser.parse_args()
    with open_store(args.store, args.load, args.referrals, args.events) as (store, load_s):
        conn = store._conn()
        counts = {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("monitoring_referral", "monitoring_event")
        }
        results: dict[str, float] = {}
        cpu: dict[str, float] = {}
        before_load = os.getloadavg()[0]
        before: dict[str, float] = {}
        for p, b in COMBINATIONS if args.all else COMBINATIONS[:7]:
            seconds, used, report = timed(store, p, b)
            results[f"{p}/{b}"] = round(seconds, 3)
            cpu[f"{p}/{b}"] = round(used, 3)
            if args.before:
                seconds, _used, earlier = timed(store, p, b, path=_rows)
                before[f"{p}/{b}"] = round(seconds, 3)
                if earlier != report:
                    raise SystemExit(f"{p}/{b}: the two paths disagree")
    loads = [round(before_load, 2), round(os.getloadavg()[0], 2)]
    out: dict[str, Any] = {"store": args.store, "load_s": round(load_s, 1), **counts,
                           "report_s": results, "report_cpu_s": cpu,
                           "loadavg_1m": loads}  # fmt: skip
    if before:
        out["before_s"] = before
    if args.json:
        print(json.dumps(out))
        return
    how = f" ({args.load})" if args.store == "postgresql" else ""
    print(f"{args.store}: loaded {counts['monitoring_referral']} referrals,"
          f" {counts['monitoring_event']} events in {load_s:.1f} s{how}")  # fmt: skip
    print(f"1-minute load average: {out['loadavg_1m'][0]} before the reports, "
          f"{out['loadavg_1m'][1]} after; median of 3 runs each")  # fmt: skip
    for name, seconds in results.items():
        earlier = f"   (before: {before[name]:6.3f} s, same figures)" if name in before else ""
        print(f"report {name:22} {seconds:6.3f} s (CPU {cpu[name]:6.3f} s){earlier}")


if __name__ == "__main__":
    main()
