"""The directory Update Client against a real loopback mCSD server (SimulatedDirectory): paged
initial load, the _history catch-up and deltas, 429 and 5xx, broken entries, unresolved
references, the worker thread and ``wor-bridge directory sync --once``."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.directory_cases import KVK_VOORBEELD, endpoint, lookup, organization, service
from wor_bridge import bootstrap
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.http import RequestsTransport
from wor_bridge.adapters.sqlite_directory import SqliteDirectoryReplica
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.bootstrap import Components
from wor_bridge.config import load_app
from wor_bridge.core import outbox
from wor_bridge.core.directory import DirectorySettings
from wor_bridge.demo.credentials import demo_configuration
from wor_bridge.demo.mcsd_server import SimulatedDirectory
from wor_bridge.usecases import directory_routing
from wor_bridge.usecases.directory_sync import DirectorySync

REPO = Path(__file__).resolve().parents[1]
NOW = dt.datetime(2025, 3, 20, 12, 0, tzinfo=dt.UTC)
POLICY = outbox.RetryPolicy(base_s=2.0, cap_s=900.0, max_attempts=12, max_age_s=3600.0)


@pytest.fixture
def directory() -> Iterator[SimulatedDirectory]:
    """A loopback directory with one welfare organisation (KvK under the www.kvk.nl system),
    a department offering the service, a cut-over Endpoint pair and two other organisations."""
    server = SimulatedDirectory().start()
    server.put(organization("o-voorbeeld", kvk=KVK_VOORBEELD, kvk_system="http://www.kvk.nl/"))
    server.put(organization("o-dept", part_of="o-voorbeeld"))
    server.put(organization("o-other", ura="11111111"))
    server.put(organization("o-third", kvk="90000077"))
    server.put(service("s-wor", "o-dept", ["e-old", "e-new"]))
    server.put(endpoint("e-old", "https://old.example/fhir", period={"end": "2025-03-14"}))
    server.put(endpoint("e-new", "https://new.example/fhir", period={"start": "2025-03-15"}))
    yield server
    server.stop()


@pytest.fixture
def components(directory: SimulatedDirectory, tmp_path: Path) -> Iterator[Components]:
    """Store, replica (in the store's file), real transport, fixed clock, page size 2."""
    settings = DirectorySettings(base_url=directory.base_url, page_size=2, max_wait_s=60)
    app = dataclasses.replace(load_app(), directory=settings)
    store = SqliteOutboxStore(tmp_path / "store.sqlite")
    replica = SqliteDirectoryReplica(tmp_path / "store.sqlite")
    clock = FixedClock(NOW)
    transport = RequestsTransport(clock)
    yield Components(app, store, transport, clock, POLICY, "worker-test", replica)
    transport.close()
    replica.close()
    store.close()


@dataclasses.dataclass
class Sleeper:
    """Records the waits asked for instead of sleeping."""

    waits: list[float] = dataclasses.field(default_factory=list)

    def __call__(self, seconds: float) -> bool:
        """Record; never asks to stop."""
        self.waits.append(seconds)
        return False


@pytest.fixture
def sleeper() -> Sleeper:
    """A fake sleep."""
    return Sleeper()


@pytest.fixture
def sync(components: Components, sleeper: Sleeper) -> DirectorySync:
    """The Update Client with a fake sleep and a fixed draw."""
    return DirectorySync(components, sleep=sleeper, draw=lambda: 0.5)


def route(components: Components) -> directory_routing.Resolved | directory_routing.Unresolved:
    """Where welzijn-voorbeeld (routed by the directory only) is delivered at NOW."""
    destination = components.config.core.destination("welzijn-voorbeeld")
    bare = destination.model_copy(update={"endpoint": None, "directory": lookup()})
    return directory_routing.resolve(components.directory, components.config.directory, bare, NOW)


def test_initial_load_pages_then_catches_up_from_the_first_page_time(
    sync: DirectorySync, directory: SimulatedDirectory, components: Components
) -> None:
    """L1-L6: types paged in L4 order, then _history since the first page's server time; ready."""
    result = sync.run_once()
    assert (result.mode, result.complete, result.ready, result.broken) == ("initial", True, True, 0)
    seen = directory.requests()
    loads = [(r.path, r.query.get("_offset")) for r in seen if "_history" not in r.path]
    assert loads == [
        ("/Organization", None),
        ("/Organization", "2"),
        ("/HealthcareService", None),
        ("/Endpoint", None),
    ]
    histories = [r for r in seen if r.path.endswith("/_history")]
    assert [r.path for r in histories] == [
        "/Organization/_history",
        "/HealthcareService/_history",
        "/Endpoint/_history",
    ]
    assert {r.query["_since"] for r in histories} == {seen[0].server_time}
    assert components.directory is not None
    assert components.directory.counts() == {
        "Endpoint": 2,
        "HealthcareService": 1,
        "Organization": 4,
    }
    assert components.directory.sync_state().since == histories[0].server_time


def test_a_change_during_the_load_is_caught_up(
    sync: DirectorySync, directory: SimulatedDirectory, components: Components
) -> None:
    """L6: an Organization changed after its pages were read arrives through the catch-up."""

    def change_once(path: str) -> None:
        if path == "/Endpoint":
            directory.on_answer(None)
            directory.put(organization("o-late", kvk="90000088"))

    directory.on_answer(change_once)
    assert sync.run_once().complete
    assert components.directory is not None
    assert [r.id for r in components.directory.find("Organization", "kvk|90000088")] == ["o-late"]


def test_a_delta_round_applies_what_changed_since_the_watermark(
    sync: DirectorySync, directory: SimulatedDirectory, components: Components
) -> None:
    """S1/S10: the next round asks _history since the stored server time and moves it on."""
    sync.run_once()
    assert components.directory is not None
    before = components.directory.sync_state().since
    directory.put(endpoint("e-new", "https://newer.example/fhir", period={"start": "2025-03-15"}))
    result = sync.run_once()
    assert (result.mode, result.complete, result.since_moved) == ("delta", True, True)
    deltas = [r for r in directory.requests() if r.path.endswith("/_history")][-3:]
    assert {r.query["_since"] for r in deltas} == {before}
    kept = components.directory.get("Endpoint", "e-new")
    assert kept is not None
    assert kept.version_id == "2"
    assert b"newer.example" in (kept.body or b"")


def test_versions_arriving_together_keep_the_newest(
    sync: DirectorySync, directory: SimulatedDirectory, components: Components
) -> None:
    """S6: a history page lists several versions newest first; the newest one is kept."""
    sync.run_once()
    for n in (2, 3, 4):
        directory.put(endpoint("e-new", f"https://v{n}.example/fhir"))
    sync.run_once()
    assert components.directory is not None
    kept = components.directory.get("Endpoint", "e-new")
    assert kept is not None
    assert (kept.version_id, b"v4.example" in (kept.body or b"")) == ("4", True)


def test_a_withdrawal_by_status_and_a_deletion_reach_the_replica(
    sync: DirectorySync, directory: SimulatedDirectory, components: Components
) -> None:
    """GF constraint 3: a status change withdraws the endpoint; a DELETE becomes a tombstone."""
    sync.run_once()
    directory.put(endpoint("e-new", "https://new.example/fhir", status="entered-in-error"))
    directory.delete("Organization", "o-third")
    sync.run_once()
    assert components.directory is not None
    gone = components.directory.get("Organization", "o-third")
    assert gone is not None
    assert gone.deleted
    assert components.directory.find("Organization", "kvk|90000077") == []
    found = route(components)
    assert isinstance(found, directory_routing.Unresolved)
    assert "active and in its period" in found.reason


def test_a_429_waits_for_retry_after_and_the_round_completes(
    sync: DirectorySync, directory: SimulatedDirectory, sleeper: Sleeper
) -> None:
    """S9: Retry-After is honoured before the same request is asked again."""
    sync.run_once()
    directory.fail_next(429, retry_after="7")
    result = sync.run_once()
    assert (result.complete, sleeper.waits) == (True, [7.0])
    first, again = [r for r in directory.requests() if r.path.endswith("/_history")][3:5]
    assert (first.path, first.query, first.server_time) == (again.path, again.query, None)


def test_a_long_retry_after_ends_the_round_and_keeps_the_watermark(
    sync: DirectorySync, directory: SimulatedDirectory, components: Components, sleeper: Sleeper
) -> None:
    """S8/S9: beyond max_wait_s the round ends; the next one resumes from the same watermark."""
    sync.run_once()
    assert components.directory is not None
    before = components.directory.sync_state()
    directory.fail_next(429, retry_after="3600")
    result = sync.run_once()
    assert (result.complete, result.ready, result.retry_after_s, sleeper.waits) == (
        False,
        True,
        3600.0,
        [],
    )
    assert components.directory.sync_state() == before
    assert sync.run_once().complete
    since = [r.query["_since"] for r in directory.requests() if "_since" in r.query]
    assert since[-1] == before.since


def test_server_errors_are_retried_with_backoff_then_end_the_round(
    sync: DirectorySync, directory: SimulatedDirectory, sleeper: Sleeper
) -> None:
    """S8: 5xx answers are retried with exponential backoff; then the round ends."""
    directory.fail_next(503, times=4)
    result = sync.run_once()
    assert (result.complete, result.ready, result.error) == (False, False, "HTTP 503 (transient)")
    assert sleeper.waits == [0.75, 1.5, 3.0]
    assert sync.run_once().ready


def test_a_broken_entry_does_not_stop_the_sync(
    sync: DirectorySync, directory: SimulatedDirectory, components: Components
) -> None:
    """L8: an unusable entry is skipped and counted; everything else is applied."""
    directory.add_broken("Endpoint", {"resource": {"resourceType": "Endpoint", "id": "bad"}})
    directory.add_broken("Endpoint", {"resource": {"resourceType": "Endpoint", "id": 7}})
    result = sync.run_once()
    assert (result.complete, result.ready, result.broken) == (True, True, 4)
    assert components.directory is not None
    assert components.directory.counts()["Endpoint"] == 2
    assert components.directory.get("Endpoint", "bad") is None


def test_an_unresolved_reference_is_accepted_and_resolves_later(
    sync: DirectorySync, directory: SimulatedDirectory, components: Components
) -> None:
    """L8: a service naming a missing Endpoint is kept; the Endpoint's later delta completes it."""
    directory.put(service("s-wor", "o-dept", ["e-later"]))
    sync.run_once()
    missing = route(components)
    assert isinstance(missing, directory_routing.Unresolved)
    assert "no known Endpoint" in missing.reason
    directory.put(endpoint("e-later", "https://later.example/fhir"))
    sync.run_once()
    found = route(components)
    assert isinstance(found, directory_routing.Resolved)
    assert found.destination.endpoint == "https://later.example/fhir"


def test_a_full_reload_runs_the_initial_load_again(
    sync: DirectorySync, directory: SimulatedDirectory
) -> None:
    """L10: ``full`` loads every type again and stays ready."""
    sync.run_once()
    result = sync.run_once(full=True)
    assert (result.mode, result.complete, result.ready) == ("full", True, True)
    assert sum(1 for r in directory.requests() if r.path == "/Endpoint") == 2


def test_the_worker_thread_loads_at_start_and_stops(components: Components) -> None:
    """The service's thread runs the initial load at once and stops when asked."""
    worker = DirectorySync(components)
    worker.start()
    deadline = time.monotonic() + 10
    assert components.directory is not None
    while not components.directory.sync_state().ready and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.stop()
    assert components.directory.sync_state().ready
    assert not worker.alive


def test_cli_directory_sync_once_prints_a_summary(
    directory: SimulatedDirectory, tmp_path: Path
) -> None:
    """`directory sync --once` syncs, prints counts (no values), exits 0; a rerun is a delta."""
    text = demo_configuration()
    text = re.sub(r"(?m)^mappings_dir\s*=.*$", f'mappings_dir = "{REPO / "mappings"}"', text)
    text = re.sub(r'(?m)^path = "wor-bridge.sqlite".*$', f'path = "{tmp_path / "s.sqlite"}"', text)
    text += f'\n[directory]\nbase_url = "{directory.base_url}"\n'
    toml = tmp_path / "wor-bridge.toml"
    toml.write_text(text, encoding="utf-8")
    bootstrap.load(toml)  # the store exists (the service made it); operator commands never do
    runs = []
    for _ in range(2):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "wor_bridge.cli",
                "directory",
                "sync",
                "--once",
                "--config",
                toml,
            ],
            capture_output=True,
            cwd=tmp_path,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr.decode()[-500:]
        assert b"Traceback" not in proc.stderr
        runs.append(json.loads(proc.stdout))
    assert [r["mode"] for r in runs] == ["initial", "delta"]
    assert runs[0]["resources"] == {"Endpoint": 2, "HealthcareService": 1, "Organization": 4}
    assert b"example" not in proc.stdout + proc.stderr
