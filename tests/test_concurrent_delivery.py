"""Concurrent deliveries (``delivery.concurrency``): several claim-send-record loops at once on the
real SQLite and PostgreSQL stores and the real HTTP transport, against a slow loopback receiver;
everything is delivered once and the messages about one Task still arrive in their order."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.test_intake_and_delivery import POLICY, START, VOORBEELD, accept
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.http import RequestsTransport
from wor_bridge.adapters.sealing import PLAIN
from wor_bridge.adapters.sqlite_rows import insert_message
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.core.settings import Settings
from wor_bridge.records import NewMessage
from wor_bridge.usecases import delivery


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqliteOutboxStore]:
    """An empty store of each engine."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_store")
        return
    sqlite = SqliteOutboxStore(tmp_path / "outbox.sqlite")
    yield sqlite
    sqlite.close()


class SlowReceiver(ThreadingHTTPServer):
    """A threaded loopback receiver answering every POST after 50 ms; notes the most requests
    it had in work at once and the order of the follow-up messages per Task."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.busy = 0
        self.most = 0
        self.order: dict[str, list[int]] = {}

    @property
    def url(self) -> str:
        """The base URL."""
        return f"http://127.0.0.1:{self.server_address[1]}/fhir"


class _Handler(BaseHTTPRequestHandler):
    server: SlowReceiver

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""

    def do_POST(self) -> None:
        """Count, wait 50 ms, note a follow-up's marker, answer 200."""
        receiver = self.server
        with receiver.lock:
            receiver.busy += 1
            receiver.most = max(receiver.most, receiver.busy)
        data = self.rfile.read(int(self.headers["Content-Length"])).decode()
        time.sleep(0.05)
        marker = re.search(r"seq-(\d)\|([0-9a-f-]+)", data)
        with receiver.lock:
            if marker is not None:
                receiver.order.setdefault(marker[2], []).append(int(marker[1]))
            receiver.busy -= 1
        self.send_response(200)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def receiver() -> Iterator[SlowReceiver]:
    """A started slow receiver, stopped afterwards."""
    server = SlowReceiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_concurrent_deliveries_deliver_all_once_in_task_order(
    receiver: SlowReceiver, settings: Settings, store: SqliteOutboxStore
) -> None:
    """4 workers: >1 request in work at once, each entry delivered once, per-Task order kept."""
    destinations = tuple(
        d.model_copy(update={"endpoint": receiver.url}) if d.id == VOORBEELD else d
        for d in settings.destinations
    )
    feedback = settings.feedback.model_copy(update={"gp_record": None})
    config = settings.model_copy(update={"destinations": destinations, "feedback": feedback})
    clock = FixedClock(START)
    tasks = [accept(store, config, clock, ref=f"CONC-{n}").task_id for n in range(8)]
    for task_id in tasks[:4]:
        for seq in (1, 2, 3):
            task = {"resourceType": "Task", "id": task_id, "status": "requested", "intent": "order"}
            task["description"] = f"seq-{seq}|{task_id}"  # opaque markers, no patient data
            payload = json.dumps(
                {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": task}]}
            )
            message = NewMessage(f"msg|{task_id}|{seq}", task_id, VOORBEELD, payload.encode())
            with store._write() as conn:  # follow-up messages, as amendments queue them
                insert_message(conn, PLAIN, message, clock.now())
    transport = RequestsTransport(clock)
    with ThreadPoolExecutor(4) as workers:
        attempts: list[delivery.Attempt] = []
        for _ in range(10):
            attempts += delivery.deliver_due(
                store,
                config,
                transport,
                clock,
                POLICY,
                owner="w",
                lease_s=60,
                limit=50,
                workers=workers,
                concurrency=4,
            )
    transport.close()
    assert sorted(a.entry_id for a in attempts) == sorted({a.entry_id for a in attempts})
    assert len(attempts) == 8 + 12
    assert {a.state for a in attempts} == {"delivered"}
    assert receiver.most > 1
    assert receiver.order == {task_id: [1, 2, 3] for task_id in tasks[:4]}
