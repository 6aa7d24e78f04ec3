"""Backup and restore (issue 13): ``wor-bridge backup DEST`` while the real service takes
referrals, then a service on the restored copy delivers every referral acknowledged before the
backup started."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from contextlib import closing
from pathlib import Path

import requests

from tests.service_harness import (
    FHIR_JSON,
    HIS_KEY,
    ServiceProcess,
    auth,
    receiver,
    referral_variant,
    run_cli,
    service_requests,
    store_path,
    task_id_of,
    wait_until,
    write_config,
)
from wor_bridge.adapters.migrations import STEPS
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore


def _pusher(
    base_url: str, prefix: str, stop: threading.Event, acked: list[tuple[float, str]]
) -> None:
    """Push distinct referrals until ``stop``; note (monotonic time of the answer, referral id)
    for each one acknowledged (201)."""
    n = 0
    with requests.Session() as session:
        while not stop.is_set():
            n += 1
            referral_id = f"{prefix}-{n:04d}"
            response = session.post(
                f"{base_url}/fhir/r4/ServiceRequest",
                data=referral_variant("accepted-contained", referral_id),
                headers=auth(HIS_KEY, FHIR_JSON),
                timeout=10,
            )
            if response.status_code == 201:
                task_id_of(response)  # a Location naming the Task: it is stored
                acked.append((time.monotonic(), referral_id))


def test_backup_under_load_holds_every_acknowledged_referral_and_restores(
    tmp_path: Path,
) -> None:
    """Referrals pushed by two clients while ``backup`` runs: every one acknowledged before the
    backup started is in the copy, the copy passes ``PRAGMA integrity_check``, and a service on
    the restored copy delivers them (the first receiver refused everything, so all are pending)."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    with receiver() as down, receiver() as up:
        down.fail_next(503, times=100_000)  # nothing leaves the first store
        config = write_config(first, down.base_url, service={"rate_per_s": 1000.0, "burst": 1000})
        service = ServiceProcess(config).start()
        stop = threading.Event()
        acked: list[tuple[float, str]] = []
        pushers = [
            threading.Thread(target=_pusher, args=(service.base_url, f"BK{i}", stop, acked))
            for i in range(2)
        ]
        try:
            for thread in pushers:
                thread.start()
            wait_until(lambda: len(acked) >= 12, "12 acknowledged referrals")
            started = time.monotonic()
            backup = tmp_path / "store.bak"
            done = run_cli("backup", str(backup), "--config", str(config))
            finished = time.monotonic()
            wait_until(lambda: any(t > finished for t, _ in acked), "a referral after the backup")
        finally:
            stop.set()
            for thread in pushers:
                thread.join(20)
            service.stop()
        assert done.returncode == 0, done.stderr[-500:]
        assert f'"schema_version": {STEPS[-1].version}' in done.stdout
        before = {ref for t, ref in acked if t < started}
        assert len(before) >= 12
        with closing(sqlite3.connect(backup)) as copy:
            assert copy.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            rows = copy.execute("SELECT service_request_id, bundle FROM referral").fetchall()
        in_copy = {ref for ref in before if any(ref.encode() in bytes(b) for _, b in rows)}
        assert in_copy == before
        assert backup.stat().st_mode & 0o777 == 0o600

        restored = write_config(second, up.base_url)  # restore: copy into the store's place
        shutil.copyfile(backup, store_path(restored))
        again = ServiceProcess(restored).start()
        try:
            wait_until(
                lambda: all(service_requests(up, ref) for ref in before),
                "every referral acknowledged before the backup delivered",
                timeout_s=60,
            )
        finally:
            again.stop()
        assert all(len(service_requests(up, ref)) == 1 for ref in before)


def test_backup_refuses_a_missing_store_and_an_existing_destination(tmp_path: Path) -> None:
    """No store: exit 1 and nothing created; an existing DEST is never overwritten (exit 1)."""
    config = write_config(tmp_path, "http://127.0.0.1:9/fhir")
    missing = run_cli("backup", str(tmp_path / "b.bak"), "--config", str(config))
    assert missing.returncode == 1
    assert "no store file" in missing.stderr
    assert not store_path(config).exists()
    assert not (tmp_path / "b.bak").exists()
    SqliteOutboxStore(store_path(config)).close()
    taken = tmp_path / "taken.bak"
    taken.write_bytes(b"keep me")
    refused = run_cli("backup", str(taken), "--config", str(config))
    assert refused.returncode == 1
    assert "never overwrites" in refused.stderr
    assert taken.read_bytes() == b"keep me"
    into_dir = run_cli("backup", str(tmp_path), "--config", str(config))
    assert into_dir.returncode == 0
    assert len(list(tmp_path.glob("store.sqlite.*.bak"))) == 1
