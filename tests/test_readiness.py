"""Readiness of the real service: /readyz and the intake gate when a write would not be durable.

Each test runs ``wor-bridge serve`` on a free loopback port over a real SQLite file and breaks
the store the way operators and disks do: the file removed or replaced under the running
service, the file made read-only (``chattr +i``, which binds root too; ``chmod`` otherwise), the
write lock held by another process's transaction, and free disk below the threshold (the
threshold set above the real free space: filling a real disk is not done in a test). Then
``/readyz`` is 503 naming the check (never a path) and intake is 503 ``transient`` with
``Retry-After``, never 201. What each proves is in its docstring.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.cases import case_input
from tests.service_harness import (
    FHIR_JSON,
    HIS_KEY,
    ServiceProcess,
    auth,
    patient_value_hits,
    receiver,
    referral_variant,
    running_service,
    store_path,
    wait_until,
    write_config,
)
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.service.readiness import Readiness

TIMEOUT = 10
PROBE_S = 0.2


@contextlib.contextmanager
def _service(tmp_path: Path, **service: Any) -> Iterator[ServiceProcess]:
    with receiver() as sim:
        settings = {"readiness_probe_s": PROBE_S, **service}
        config = write_config(tmp_path, sim.base_url, service=settings)
        with running_service(config) as running:
            yield running


def _readyz(service: ServiceProcess) -> requests.Response:
    return requests.get(service.base_url + "/readyz", timeout=TIMEOUT)


def _push(service: ServiceProcess, referral_id: str, timeout: float = TIMEOUT) -> requests.Response:
    data = referral_variant("accepted-contained", referral_id)
    return requests.post(
        service.base_url + "/fhir/r4/ServiceRequest",
        data=data,
        headers=auth(HIS_KEY, FHIR_JSON),
        timeout=timeout,
    )


def _assert_not_ready(service: ServiceProcess, check: str, tmp_path: Path) -> None:
    """/readyz 503 naming ``check`` (no path), and a push refused 503 transient + Retry-After."""
    wait_until(lambda: _readyz(service).status_code == 503, f"/readyz 503 ({check})")
    ready = _readyz(service)
    assert check in ready.json()["checks"]
    assert str(tmp_path) not in ready.text
    assert ready.headers["Retry-After"] == "1"
    pushed = _push(service, f"READY-{check}")
    assert pushed.status_code == 503
    assert pushed.headers["Retry-After"] == "1"
    assert pushed.headers["Content-Type"].startswith("application/fhir+json")
    outcome = pushed.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [i["code"] for i in outcome["issue"]] == ["transient"]
    assert check in outcome["issue"][0]["diagnostics"]
    assert str(tmp_path) not in pushed.text
    assert "Location" not in pushed.headers


def test_ready_store_accepts(tmp_path: Path) -> None:
    """A healthy store: /readyz 200 and a push is 201 (the control for the tests below)."""
    with _service(tmp_path) as service:
        assert _readyz(service).json() == {"status": "ready"}
        assert _push(service, "READY-OK").status_code == 201


def test_removed_store_is_not_ready_and_refuses_intake(tmp_path: Path) -> None:
    """The store file deleted under the running service: 503, never 201 into the lost inode."""
    with _service(tmp_path) as service:
        assert _push(service, "READY-BEFORE").status_code == 201
        store = store_path(service.config)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{store}{suffix}").unlink(missing_ok=True)
        _assert_not_ready(service, "store-removed", tmp_path)
        lines = [e for e in service.log_events() if e.get("event") == "readiness_changed"]
        assert lines[-1]["check"] == "store-removed"


def test_replaced_store_is_not_ready(tmp_path: Path) -> None:
    """The store file swapped for a copy (a restore over a running service): 503 store-replaced."""
    with _service(tmp_path) as service:
        store = store_path(service.config)
        copy = tmp_path / "copy.sqlite"
        with (
            contextlib.closing(sqlite3.connect(store)) as source,
            contextlib.closing(sqlite3.connect(copy)) as target,
        ):
            source.backup(target)
        copy.replace(store)
        _assert_not_ready(service, "store-replaced", tmp_path)


def _make_read_only(path: Path) -> str | None:
    """Make ``path`` unwritable for a new opener, root included; how, or None if impossible."""
    if os.geteuid() == 0:
        chattr = shutil.which("chattr")
        if chattr is None:
            return None
        done = subprocess.run([chattr, "+i", str(path)], capture_output=True, check=False)
        method = "chattr" if done.returncode == 0 else None
    else:
        path.chmod(0o444)
        method = "chmod"
    if method is None:
        return None
    try:  # did it take? (a filesystem without the immutable flag, a capability missing)
        with path.open("r+b"):
            pass
    except PermissionError:
        return method
    _make_writable(path, method)
    return None


def _make_writable(path: Path, method: str) -> None:
    if method == "chattr":
        subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=True)
    else:
        path.chmod(0o644)


def test_read_only_store_is_not_ready_until_writable_again(tmp_path: Path) -> None:
    """The store file made read-only: the write probe (a new connection, as a restart or a new
    worker thread would open it) cannot commit, so 503 store-not-writable; writable again, the
    next probe makes the service ready and a push is 201 again.

    What it proves: a file that can no longer be opened for writing is caught. It does not
    prove that the service's already open connections fail (they keep their descriptors and,
    with WAL, may still commit into the WAL file): that is why a new connection probes."""
    with _service(tmp_path) as service:
        store = store_path(service.config)
        method = _make_read_only(store)
        if method is None:
            pytest.skip("cannot make a file read-only here (no chattr +i as root)")
        try:
            _assert_not_ready(service, "store-not-writable", tmp_path)
        finally:
            _make_writable(store, method)
        wait_until(lambda: _readyz(service).status_code == 200, "ready again")
        assert _push(service, "READY-AGAIN").status_code == 201


def test_store_locked_by_another_writer_is_not_ready(tmp_path: Path) -> None:
    """Another process holding the write lock past the probe's timeout (2 s): no commit is
    possible, 503 store-not-writable; released, ready again. Works as root too."""
    with _service(tmp_path) as service:
        holder = sqlite3.connect(store_path(service.config), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            time.sleep(PROBE_S)
            ready = _readyz(service)
            assert ready.status_code == 503
            assert ready.json()["checks"] == ["store-not-writable"]
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        wait_until(lambda: _readyz(service).status_code == 200, "ready once the lock is gone")


def test_low_disk_is_not_ready(tmp_path: Path) -> None:
    """Free space below ``service.min_free_disk_mb`` (set 1 TiB above the real free space):
    503 disk-low from the start, and pushes are refused."""
    free_mb = shutil.disk_usage(tmp_path).free // (1024 * 1024)
    with _service(tmp_path, min_free_disk_mb=free_mb + 1024 * 1024) as service:
        _assert_not_ready(service, "disk-low", tmp_path)


def test_probe_is_rate_limited_in_the_real_service(tmp_path: Path) -> None:
    """Twenty /readyz calls within the probe interval write the probe row once: a load balancer
    polling /readyz is no write amplifier."""
    with _service(tmp_path, readiness_probe_s=60.0) as service:
        store = store_path(service.config)
        for _ in range(20):
            assert _readyz(service).status_code == 200
        with contextlib.closing(sqlite3.connect(store)) as conn:
            first = conn.execute("SELECT at FROM ready_probe").fetchall()
        for _ in range(20):
            assert _readyz(service).status_code == 200
        with contextlib.closing(sqlite3.connect(store)) as conn:
            assert conn.execute("SELECT at FROM ready_probe").fetchall() == first
        assert len(first) == 1


class _CountingStore(MemoryOutboxStore):
    """A memory store that counts write probes and can be told to fail them."""

    def __init__(self) -> None:
        super().__init__()
        self.probes = 0
        self.failing: str | None = None

    def check_writable(self, min_free_bytes: int = 0, *, probe: bool = True) -> str | None:
        """Count probes; answer ``failing`` for them."""
        if probe:
            self.probes += 1
            return self.failing
        return None


def test_readiness_probes_at_most_once_per_interval() -> None:
    """Many threads asking at once: one probe per interval; a failed probe stands until the next."""
    store = _CountingStore()
    readiness = Readiness(store, min_free_bytes=0, probe_every_s=1.0)
    threads = [threading.Thread(target=readiness.problem) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert store.probes == 1
    store.failing = "store-not-writable"
    assert readiness.problem() is None  # the last probe stands until the interval is over
    time.sleep(1.05)
    assert readiness.problem() == "store-not-writable"
    store.failing = None
    assert readiness.problem() == "store-not-writable"  # until the next probe
    assert store.probes == 2


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_check_writable_on_a_fresh_store(kind: str, tmp_path: Path) -> None:
    """Both adapters: a fresh store is writable, with and without the probe."""
    store = SqliteOutboxStore(tmp_path / "s.sqlite") if kind == "sqlite" else MemoryOutboxStore()
    assert store.check_writable(1, probe=True) is None
    assert store.check_writable(0, probe=False) is None


def test_sqlite_check_writable_names_each_failure(tmp_path: Path) -> None:
    """SQLite: removed, replaced and low disk are each named; a new file at the path is not the
    store that was opened."""
    path = tmp_path / "s.sqlite"
    store = SqliteOutboxStore(path)
    assert store.check_writable(10**18, probe=False) == "disk-low"
    path.unlink()
    assert store.check_writable(probe=False) == "store-removed"
    assert store.check_writable(probe=True) == "store-removed"
    SqliteOutboxStore(path).close()  # a new, empty store at the same path
    assert store.check_writable(probe=True) == "store-replaced"


def test_unready_answers_hold_no_patient_value(tmp_path: Path) -> None:
    """The 503 answer to a full referral names the check only, never a value from the body."""
    with _service(tmp_path) as service:
        store_path(service.config).unlink()
        wait_until(lambda: _readyz(service).status_code == 503, "not ready")
        data = case_input("accepted-contained")
        pushed = requests.post(
            service.base_url + "/fhir/r4/ServiceRequest",
            data=data,
            headers=auth(HIS_KEY, FHIR_JSON),
            timeout=TIMEOUT,
        )
        assert pushed.status_code == 503
        assert patient_value_hits(pushed.text) == []


def test_not_ready_gates_reads_and_the_token_endpoint_but_not_health(tmp_path: Path) -> None:
    """Not ready: a Task read is 503 OperationOutcome, ``/oauth/token`` 503 RFC 6749 JSON;
    ``/healthz``, ``/metadata`` and ``/openapi.json`` still answer 200."""
    with _service(tmp_path) as service:
        store_path(service.config).unlink()
        wait_until(lambda: _readyz(service).status_code == 503, "not ready")
        url = service.base_url
        read = requests.get(f"{url}/fhir/r4/Task/x", headers=auth(HIS_KEY), timeout=TIMEOUT)
        assert read.status_code == 503
        assert read.json()["issue"][0]["code"] == "transient"
        token = requests.post(
            f"{url}/oauth/token", data={"grant_type": "client_credentials"}, timeout=TIMEOUT
        )
        assert token.status_code == 503
        assert token.json()["error"] == "invalid_request"
        assert token.headers["Retry-After"] == "1"
        for path in ("/healthz", "/fhir/r4/metadata", "/openapi.json"):
            assert requests.get(url + path, timeout=TIMEOUT).status_code == 200


def test_store_error_during_intake_is_503_not_500(tmp_path: Path) -> None:
    """A write lock held past the store's busy timeout (10 s) while the last probe said ready:
    the push fails inside the store, the catch-all probes again and answers 503
    store-not-writable with Retry-After (nothing was acknowledged), not a bare 500."""
    with _service(tmp_path, readiness_probe_s=60.0) as service:
        assert _readyz(service).status_code == 200  # the probe ran: ready for the next 60 s
        holder = sqlite3.connect(store_path(service.config), isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            pushed = _push(service, "READY-LOCKED", timeout=60)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert pushed.status_code == 503
        assert pushed.headers["Retry-After"] == "60"
        assert pushed.json()["issue"][0]["code"] == "transient"
        assert "store-not-writable" in pushed.json()["issue"][0]["diagnostics"]
