"""Schema versions and migrations (issue 13, store lifecycle): the previous release's store
(commit c422c29, with data) upgraded without loss, a newer store refused, two processes
upgrading at once making one upgrade, a failing step leaving the earlier ones applied."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import structlog
from pytest_httpserver import HTTPServer

from tests.service_harness import write_config
from tests.test_intake_and_delivery import deliver, on
from wor_bridge.adapters import migrations
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.http import RequestsTransport
from wor_bridge.adapters.migrations import STEPS, Migration, upgrade
from wor_bridge.adapters.sqlite_schema import SqliteBackend
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.cli.main import main
from wor_bridge.core.settings import Settings
from wor_bridge.errors import StoreError, StoreVersionError
from wor_bridge.records import TaskSearch

V1_SQL = Path(__file__).parent / "data" / "store_v1_c422c29.sql"
TASKS = {  # task id -> outbox state in the v1 fixture
    "dbf5aba9-f274-51f3-b0fe-09a7fda3849d": "pending",
    "a5c7285d-7af4-5479-9400-b671fec8065f": "delivered",
    "0a1a05eb-f107-504f-a3dc-d6fbb0c7a70e": "dead",
    "41767a9a-07b5-53d3-8d56-967024673ffe": "pending",
}
LATEST = STEPS[-1].version


def v1_store(path: Path) -> Path:
    """Load the c422c29 store (schema and rows) into a WAL file at ``path``."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(V1_SQL.read_text())
    conn.close()
    return path


def versions(path: Path) -> list[int]:
    """The versions recorded in ``schema_version``, in order."""
    conn = sqlite3.connect(path)
    try:
        return [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    finally:
        conn.close()


def columns(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Every table's columns (name, type; in name order) and every index and trigger name, to
    compare two schemas."""
    conn = sqlite3.connect(path)
    try:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'index', 'trigger')"
                " AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        return {
            n: sorted((c[1], c[2]) for c in conn.execute(f"PRAGMA table_info({n})")) for n in names
        }
    finally:
        conn.close()


def test_steps_are_numbered_in_order_with_a_sqlite_body() -> None:
    """STEPS run 1..N without a gap and each has a SQLite body."""
    migrations.check_steps(STEPS, "sqlite")
    assert [m.version for m in STEPS] == list(range(1, LATEST + 1))


def test_previous_release_store_upgrades_without_loss(
    tmp_path: Path, httpserver: HTTPServer, settings: Settings
) -> None:
    """The c422c29 store with data is backed up, upgraded to the newest version, and every
    referral, outbox entry, audit row, feedback item and poll cursor is readable; the pending
    referrals are then delivered."""
    path = v1_store(tmp_path / "store.sqlite")
    store = SqliteOutboxStore(path)
    assert versions(path) == list(range(2, LATEST + 1))  # the steps applied to it
    assert columns(path) == columns(_fresh(tmp_path / "fresh.sqlite"))  # same as a new store
    backup = tmp_path / f"store.sqlite.v1-to-v{LATEST}.bak"
    assert backup.exists()
    assert backup.stat().st_mode & 0o777 == 0o600
    assert sqlite3.connect(backup).execute("SELECT COUNT(*) FROM referral").fetchone() == (4,)
    for task_id, state in TASKS.items():
        record = store.get_referral(task_id)
        assert record is not None
        assert record.state == state
        assert record.bundle.startswith(b'{"resourceType":"Bundle"')
        task = store.get_task(task_id)
        assert task is not None
        assert task.updated_at is not None
    assert len(store.list_entries(None, 100)) == 4
    assert [a["outcome"] for a in reversed(store.audit_records())] == [
        "accepted",
        "accepted",
        "accepted",
        "accepted",
        "duplicate",
        "accepted",
    ]
    assert store.item_task("feedback-item-1") == "a5c7285d-7af4-5479-9400-b671fec8065f"
    assert store.poll_cursor("welzijn-rivierenland") == "2026-03-02T09:05:00Z"
    page = store.search_tasks(TaskSearch(everyone=True, count=10))
    assert page.total == 4
    httpserver.expect_request("/fhir", method="POST").respond_with_json(
        {"resourceType": "Bundle", "type": "transaction-response"}, status=201
    )
    clock = FixedClock(dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC))
    transport = RequestsTransport(clock)
    try:
        attempts = deliver(store, on(httpserver, settings), transport, clock)
    finally:
        transport.close()
    assert sorted(a.state for a in attempts) == ["delivered", "delivered"]
    assert {store.get_referral(t).state for t in TASKS} == {"delivered", "dead"}  # type: ignore[union-attr]
    store.close()


def _fresh(path: Path) -> Path:
    SqliteOutboxStore(path).close()
    return path


def test_new_store_is_made_at_the_newest_version_without_backup(tmp_path: Path) -> None:
    """An empty file gets every step recorded and no backup (nothing to lose)."""
    path = _fresh(tmp_path / "new.sqlite")
    assert versions(path) == list(range(1, LATEST + 1))
    assert [p.name for p in tmp_path.iterdir() if ".bak" in p.name] == []
    SqliteOutboxStore(path).close()  # opening again: nothing to do
    assert versions(path) == list(range(1, LATEST + 1))


def test_unversioned_development_store_is_upgraded(tmp_path: Path) -> None:
    """A store of a build between the release and versions (no schema_version, some later
    columns present, one missing) is taken as version 1 and gets what it lacks."""
    path = _fresh(tmp_path / "dev.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("DROP TABLE schema_version")
    conn.execute("ALTER TABLE outbox DROP COLUMN requeued_at")
    conn.commit()
    conn.close()
    SqliteOutboxStore(path).close()
    assert versions(path) == list(range(2, LATEST + 1))
    assert columns(path) == columns(_fresh(tmp_path / "fresh.sqlite"))


def test_newer_store_is_refused(tmp_path: Path) -> None:
    """A store whose version is newer than the code raises StoreVersionError naming both."""
    path = _fresh(tmp_path / "store.sqlite")
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (?, 'from the future', 0)", (LATEST + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(StoreVersionError, match=f"schema version {LATEST + 1}.*up to {LATEST}"):
        SqliteOutboxStore(path)


def test_cli_refuses_a_newer_store_with_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``outbox list`` and ``serve`` on a newer store print the store error on one line and
    exit 1 (the service does not start)."""
    config = write_config(tmp_path, "http://127.0.0.1:9/fhir")
    store_path = tmp_path / "store.sqlite"
    _fresh(store_path)
    conn = sqlite3.connect(store_path)
    conn.execute("INSERT INTO schema_version VALUES (?, 'from the future', 0)", (LATEST + 7,))
    conn.commit()
    conn.close()
    for command in (["outbox", "list"], ["serve"]):
        try:
            assert main([*command, "--config", str(config)]) == 1
        finally:
            structlog.reset_defaults()  # the CLI configured logging on the captured stream
        err = capsys.readouterr().err
        assert "store error" in err
        assert f"schema version {LATEST + 7}" in err
        assert "Traceback" not in err


def test_failing_step_keeps_the_earlier_ones(tmp_path: Path) -> None:
    """A step that fails raises StoreError naming it; the steps before it stay recorded and
    the failed one's changes are rolled back."""
    path = v1_store(tmp_path / "store.sqlite")

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        conn.execute("SELECT no_such_column FROM referral")

    steps = (
        *STEPS[:2],
        Migration(3, "broken step", {"sqlite": broken}),
    )
    backend = SqliteBackend(path)
    with pytest.raises(StoreError, match="migration 3 \\(broken step\\) failed"):
        upgrade(backend, steps, lambda: dt.datetime.now(dt.UTC), str(path))
    backend.close()
    assert versions(path) == [2]
    assert "half_done" not in columns(path)


_RACER = """
import sys, time
from pathlib import Path
from wor_bridge.adapters.migrations import upgrade_sqlite
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
print(list(upgrade_sqlite(sys.argv[1]).applied))
"""


def test_two_processes_upgrading_at_once_make_one_upgrade(tmp_path: Path) -> None:
    """Two processes opening the old store together: one applies every step (one backup), the
    other waits on the lock and finds nothing to do."""
    path = v1_store(tmp_path / "store.sqlite")
    go = tmp_path / "go"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(path), str(go)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(0.5)  # both imported and waiting
    go.touch()
    outputs = sorted(r.communicate(timeout=60)[0].strip().splitlines()[-1] for r in racers)
    assert [r.returncode for r in racers] == [0, 0]
    assert outputs == sorted(["[]", str(list(range(2, LATEST + 1)))])
    assert versions(path) == list(range(2, LATEST + 1))
    assert len([p for p in tmp_path.iterdir() if ".bak" in p.name]) == 1


_KILLED_IN_BACKUP = """
import os, signal, sqlite3, sys
from wor_bridge.adapters.migrations import upgrade_sqlite

class Killed(sqlite3.Connection):
    def backup(self, target, **kw):
        def progress(status, remaining, total):
            if total - remaining >= 2:  # two pages copied: the process dies (kill -9)
                os.kill(os.getpid(), signal.SIGKILL)
        super().backup(target, pages=1, progress=progress)

plain = sqlite3.connect
sqlite3.connect = lambda *a, **kw: plain(*a, factory=Killed, **kw)
upgrade_sqlite(sys.argv[1])
"""


def test_a_backup_cut_short_by_kill_9_is_never_left_as_the_backup(tmp_path: Path) -> None:
    """An upgrade killed (SIGKILL) while it copies the store leaves no ``.bak`` file that is not
    a whole copy; the next start upgrades with a complete backup and clears the remains."""
    path = v1_store(tmp_path / "store.sqlite")
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_IN_BACKUP, str(path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert killed.returncode == -9
    assert versions_or_none(path) is None  # still the v1 store, unchanged
    assert [p.name for p in tmp_path.iterdir() if ".bak" in p.name] == []
    done = migrations.upgrade_sqlite(path)
    assert done.backup is not None
    assert done.backup.name == f"store.sqlite.v1-to-v{LATEST}.bak"
    conn = sqlite3.connect(done.backup)
    try:
        assert sorted(r[0] for r in conn.execute("SELECT task_id FROM referral")) == sorted(TASKS)
    finally:
        conn.close()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("store.sqlite-")) == [
        "store.sqlite",
        done.backup.name,
    ]


def versions_or_none(path: Path) -> list[int] | None:
    """``versions`` of a store, or None when it has no ``schema_version`` table (version 1)."""
    try:
        return versions(path)
    except sqlite3.OperationalError:
        return None


def _as_unprivileged(command: list[str]) -> list[str]:
    """``command`` as user nobody when running as root (root ignores directory modes)."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: a read-only directory cannot be made")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *command]


def test_a_read_only_store_directory_is_a_clear_store_error(tmp_path: Path) -> None:
    """An old store in a directory the service cannot write (no -wal, -shm or backup possible):
    ``outbox list`` and ``serve`` exit 1 with a store error naming the directory problem (no
    internal error, no traceback); the store stays at its version."""
    with contextlib.ExitStack() as stack:
        if os.geteuid() == 0:  # pytest's base directory is root's own (0700): nobody cannot enter
            tmp_path = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            tmp_path.chmod(0o755)
        _read_only_store_refused(tmp_path / "ro")


def _read_only_store_refused(folder: Path) -> None:
    folder.mkdir()
    config = write_config(folder, "http://127.0.0.1:9/fhir")
    v1_store(folder / "store.sqlite")
    if os.geteuid() == 0:
        for path in (folder, *folder.iterdir()):
            os.chown(path, 65534, 65534)
    folder.chmod(0o555)
    script = str(Path(sys.executable).parent / "wor-bridge")
    try:
        for command in (["outbox", "list"], ["serve"]):
            proc = subprocess.run(
                _as_unprivileged([script, *command, "--config", str(config)]),
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert proc.returncode == 1, command
            assert "store error" in proc.stderr, proc.stderr[-500:]
            assert "directory is not writable" in proc.stderr
            assert "internal error" not in proc.stderr
            assert "Traceback" not in proc.stderr
    finally:
        folder.chmod(0o755)
    assert versions_or_none(folder / "store.sqlite") is None
