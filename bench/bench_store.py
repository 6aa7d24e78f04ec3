"""Benchmark of the store lifecycle on SQLite: upgrade of a previous-release store, backup,
purge (issue 13).

Builds a version-1 store (the schema of release c422c29, ``tests/data/store_v1_c422c29.sql``)
with ``--referrals`` copies of its first referral (a real mapped Bundle of a synthetic fixture
patient) and their outbox entries, every one delivered and its Task completed 40 days ago, plus
one audit record each from six years ago. Then times, on that file:

- ``upgrade``: ``SqliteOutboxStore(path)``: the backup before the upgrade and steps 2..N (the
  search columns are filled from every stored Bundle);
- ``backup``: ``wor-bridge backup``'s ``backup_store`` (online backup, integrity check, fsync);
- ``purge (nothing due)``: the daily purge's scan when nothing is due (payload cut-off before
  every referral ended, audit cut-off before every record);
- ``purge (all due)``: every referral's patient data and every old audit record removed, with
  ``secure_delete`` and the WAL truncated.

Run from the repository root::

    python bench/bench_store.py [--referrals 5000] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from wor_bridge.adapters.sqlite_backup import backup_store
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore

V1_SQL = Path(__file__).resolve().parent.parent / "tests" / "data" / "store_v1_c422c29.sql"
NOW = dt.datetime.now(dt.UTC)
ENDED = (NOW - dt.timedelta(days=40)).timestamp()
AUDITED = (NOW - dt.timedelta(days=6 * 365)).timestamp()


def build(path: Path, referrals: int) -> None:
    """A version-1 store with ``referrals`` completed, delivered referrals (one transaction)."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # as the store makes its files
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(V1_SQL.read_text())
    referral = conn.execute("SELECT * FROM referral WHERE rowid = 1").fetchone()
    entry = conn.execute("SELECT * FROM outbox WHERE id = 1").fetchone()
    audit = conn.execute("SELECT * FROM audit WHERE id = 1").fetchone()
    conn.execute("DELETE FROM feedback_item")
    conn.execute("DELETE FROM outbox")
    conn.execute("DELETE FROM referral")
    with conn:
        for n in range(referrals):
            task, key = f"bench-task-{n:07d}", f"bench-key-{n:07d}"
            row = list(referral)
            row[0], row[1], row[8], row[11] = task, key, ENDED, "completed"
            conn.execute(f"INSERT INTO referral VALUES ({','.join('?' * len(row))})", row)
            out = list(entry)
            out[0], out[1], out[2], out[4], out[10] = None, key, task, "delivered", ENDED
            conn.execute(f"INSERT INTO outbox VALUES ({','.join('?' * len(out))})", out)
            log = list(audit)
            log[0], log[1] = None, AUDITED
            conn.execute(f"INSERT INTO audit VALUES ({','.join('?' * len(log))})", log)
    conn.close()


def timed(what: str, results: dict[str, Any], action: Any) -> Any:
    """Run ``action``, note its seconds under ``what``."""
    started = time.perf_counter()
    value = action()
    results[what] = round(time.perf_counter() - started, 3)
    return value


def main() -> None:
    """Build, upgrade, back up and purge; print the seconds of each."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--referrals", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results: dict[str, Any] = {"referrals": args.referrals}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "store.sqlite"
        timed("build v1 store", results, lambda: build(path, args.referrals))
        results["store MB"] = round(path.stat().st_size / 1e6, 1)
        store = timed("upgrade", results, lambda: SqliteOutboxStore(path))
        made = timed("backup", results, lambda: backup_store(path, Path(tmp) / "b.bak", NOW))
        results["backup MB"] = round(made.size / 1e6, 1)
        early = NOW - dt.timedelta(days=3650)
        none = timed("purge (nothing due)", results, lambda: store.purge(early, early, NOW))
        cutoff = NOW - dt.timedelta(days=30)
        old = NOW - dt.timedelta(days=1826)
        done = timed("purge (all due)", results, lambda: store.purge(cutoff, old, NOW))
        results["counts"] = {"nothing due": none.detail(), "all due": done.detail()}
        store.close()
    if args.json:
        print(json.dumps(results))
        return
    for key, value in results.items():
        print(f"{key:>22}: {value}")


if __name__ == "__main__":
    main()
