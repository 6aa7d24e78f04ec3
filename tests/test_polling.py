"""Polling welfare FHIR servers: pytest-httpserver as the welfare system (real HTTP), the real
SqliteOutboxStore and RequestsTransport, a FixedClock; plus the pure search connector."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import datetime as dt
import json
import threading
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import structlog
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.cases import PATIENT_VALUES, case_input
from tests.service_harness import free_port, run_cli, store_path, to_toml, write_config
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.http import RequestsTransport
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.bootstrap import Components
from wor_bridge.config import load_app
from wor_bridge.connectors import fhir_poll
from wor_bridge.connectors.fhir_feedback import FeedbackFormatError
from wor_bridge.core import feedback as fb
from wor_bridge.core import outbox
from wor_bridge.core.settings import BUSINESS_STATUS_SYSTEM, Destination, Settings
from wor_bridge.metrics import Metrics
from wor_bridge.service.app import create_app
from wor_bridge.usecases import intake
from wor_bridge.usecases.caller import Caller
from wor_bridge.usecases.polling import Poller

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
VOORBEELD = "welzijn-voorbeeld"  # catch-all: accepted-contained goes here
RIVIERENLAND = "welzijn-rivierenland"
STAMP_1 = "2026-03-03T10:15:00.123+01:00"  # an offset with "+": must survive the query string
STAMP_2 = "2026-03-04T08:00:00Z"
STAMP_3 = "2026-03-05T08:00:00Z"
OTHER_UUID = "urn:uuid:0f0f0f0f-0000-4000-8000-000000000001"


class Welfare:
    """A welfare FHIR server on pytest-httpserver: Task searchsets by page, Observations by id.

    Search parameters are recorded, not applied: every search answers the pages as scripted.
    """

    def __init__(self, httpserver: HTTPServer) -> None:
        self.server = httpserver
        self.pages: list[list[dict[str, Any]]] = [[]]
        self.observations: dict[str, dict[str, Any]] = {}
        self.searches: list[dict[str, list[str]]] = []
        self.raw_queries: list[str] = []
        self.reads: list[str] = []
        self.search_status = 200
        self.observation_status = 200
        self.next_url: str | None = None  # overrides the next link of the first page
        self.searched = threading.Event()
        httpserver.expect_request("/fhir/Task", method="GET").respond_with_handler(self._search)
        httpserver.expect_request("/fhir/Observation/obs1", method="GET").respond_with_handler(
            self._read
        )
        httpserver.expect_request("/fhir/Observation/obs2", method="GET").respond_with_handler(
            self._read
        )

    def serve(self, *pages: list[dict[str, Any]]) -> None:
        """Answer searches with these pages (linked by ``next``)."""
        self.pages = list(pages) or [[]]

    def _search(self, request: Request) -> Response:
        self.raw_queries.append(request.query_string.decode("ascii"))
        query = parse_qs(request.query_string.decode("ascii"))
        self.searches.append(query)
        self.searched.set()
        if self.search_status != 200:
            return Response("{}", self.search_status, content_type="application/fhir+json")
        page = int(query.get("page", ["0"])[0])
        links = [{"relation": "self", "url": self.server.url_for("/fhir/Task")}]
        if page + 1 < len(self.pages):
            url = self.server.url_for(f"/fhir/Task?page={page + 1}")
            links.append({"relation": "next", "url": self.next_url or url})
        bundle = {
            "resourceType": "Bundle",
            "type": "searchset",
            "link": links,
            "entry": [
                {"fullUrl": f"urn:uuid:{i}", "resource": t, "search": {"mode": "match"}}
                for i, t in enumerate(self.pages[page])
            ],
        }
        return Response(json.dumps(bundle), 200, content_type="application/fhir+json")

    def _read(self, request: Request) -> Response:
        obs_id = request.path.rsplit("/", 1)[-1]
        self.reads.append(obs_id)
        if self.observation_status != 200 or obs_id not in self.observations:
            status = self.observation_status if self.observation_status != 200 else 404
            return Response("{}", status, content_type="application/fhir+json")
        body = json.dumps(self.observations[obs_id])
        return Response(body, 200, content_type="application/fhir+json")


@pytest.fixture
def clock() -> FixedClock:
    """A clock that moves only when a test says so."""
    return FixedClock(START)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteOutboxStore]:
    """A SQLite outbox in a real file."""
    store = SqliteOutboxStore(tmp_path / "outbox.sqlite")
    yield store
    store.close()


@pytest.fixture
def transport(clock: FixedClock) -> Iterator[RequestsTransport]:
    """The real HTTP transport on the fixed clock."""
    transport = RequestsTransport(clock)
    yield transport
    transport.close()


@pytest.fixture
def welfare(httpserver: HTTPServer) -> Welfare:
    """The welfare FHIR server of Voorbeeld."""
    return Welfare(httpserver)


@pytest.fixture
def config(httpserver: HTTPServer, settings: Settings) -> Settings:
    """The shipped settings with Voorbeeld polled at the test server."""
    destinations = tuple(
        d.model_copy(update={"endpoint": httpserver.url_for("/fhir"), "poll": True})
        if d.id == VOORBEELD
        else d
        for d in settings.destinations
    )
    return settings.model_copy(update={"destinations": destinations})


@pytest.fixture
def components(
    config: Settings, store: SqliteOutboxStore, transport: RequestsTransport, clock: FixedClock
) -> Components:
    """The components with the test store, transport, clock and settings."""
    app = dataclasses.replace(load_app(), core=config)
    policy = outbox.RetryPolicy(base_s=2.0, cap_s=900.0, max_attempts=12, max_age_s=3600.0)
    return Components(app, store, transport, clock, policy, "worker-test")


@pytest.fixture
def metrics(store: SqliteOutboxStore, clock: FixedClock) -> Metrics:
    """A metrics registry of its own."""
    return Metrics(lambda: store.stats(clock.now()))


@pytest.fixture
def poller(components: Components, metrics: Metrics) -> Poller:
    """The poller under test."""
    return Poller(components, metrics)


def accept(store: SqliteOutboxStore, settings: Settings, clock: FixedClock, case: str) -> str:
    """Accept a fixture referral; returns its bridge Task id."""
    accepted = intake.accept_referral(
        store,
        settings,
        clock,
        data=case_input(case),
        content_type=None,
        caller=Caller("test"),
    )
    return accepted.task_id


@pytest.fixture
def task_id(store: SqliteOutboxStore, config: Settings, clock: FixedClock) -> str:
    """The bridge Task id of the accepted-contained referral (routed to Voorbeeld)."""
    return accept(store, config, clock, "accepted-contained")


def welfare_task(
    store: SqliteOutboxStore,
    task_id: str,
    status: str,
    stamp: str,
    *,
    business: str | None = None,
    reason: str | None = None,
    output: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The Task the welfare side received, as it would show it after the coach's update."""
    record = store.get_task(task_id)
    assert record is not None
    bundle = json.loads(record.bundle)
    sent = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
    task: dict[str, Any] = copy.deepcopy(sent)
    task["meta"] = {**task.get("meta", {}), "versionId": "2", "lastUpdated": stamp}
    task["status"] = status
    task.pop("businessStatus", None)
    if business is not None:
        task["businessStatus"] = {"coding": [{"system": BUSINESS_STATUS_SYSTEM, "code": business}]}
    if reason is not None:
        task["statusReason"] = {"coding": [{"system": fb.CLOSURE_REASON, "code": reason}]}
    if output:
        task["output"] = [
            {
                "type": {"coding": [{"system": fb.FEEDBACK_ITEM, "code": "first-contact"}]},
                "valueReference": {"reference": ref},
            }
            for ref in output
        ]
    return task


def first_contact(obs_id: str, task_id: str) -> dict[str, Any]:
    """A feedback-item Observation: first contact on 3 March."""
    return {
        "resourceType": "Observation",
        "id": obs_id,
        "status": "final",
        "code": {"coding": [{"system": fb.FEEDBACK_ITEM, "code": "first-contact"}]},
        "focus": [{"reference": f"Task/{task_id}"}],
        "effectiveDateTime": "2026-03-03T10:00:00+01:00",
        "valueDateTime": "2026-03-03T10:00:00+01:00",
    }


def gp_entries(store: SqliteOutboxStore, task_id: str) -> list[str]:
    """Idempotency keys of the outbox messages for the GP record about ``task_id``."""
    return [
        e.idempotency_key
        for e in store.list_entries(None, 100)
        if e.task_id == task_id and e.destination == "gp-record"
    ]


def counted(metrics: Metrics, outcome: str) -> float:
    """The ``wor_bridge_feedback`` count of channel poll for ``outcome``."""
    value = metrics.registry.get_sample_value(
        "wor_bridge_feedback_total", {"channel": "poll", "outcome": outcome}
    )
    return value or 0.0


# --- the poller against a real HTTP server ------------------------------------------------------


def test_status_and_first_contact_reach_the_task_and_the_gp_outbox(
    welfare: Welfare, poller: Poller, store: SqliteOutboxStore, task_id: str, metrics: Metrics
) -> None:
    """A polled status and first contact update the Task, queue a GP message, move the cursor."""
    welfare.serve(
        [
            welfare_task(
                store,
                task_id,
                "in-progress",
                STAMP_1,
                business="first-contact",
                output=("Observation/obs1",),
            )
        ]
    )
    welfare.observations["obs1"] = first_contact("obs1", task_id)
    with structlog.testing.capture_logs() as logs:
        [round_] = poller.run_once()
    assert (round_.destination, round_.seen, round_.applied, round_.refused) == (VOORBEELD, 1, 1, 0)
    assert round_.complete
    assert round_.error is None
    task = store.get_task(task_id)
    assert task is not None
    assert (task.status, task.business_status) == ("in-progress", "first-contact")
    assert task.first_contact_at is not None
    assert len(store.known_items(task_id)) == 1
    assert len(gp_entries(store, task_id)) == 1
    assert store.poll_cursor(VOORBEELD) == STAMP_1
    assert welfare.reads == ["obs1"]
    assert "_lastUpdated" not in welfare.searches[0]
    assert counted(metrics, "applied") == 1
    [summary] = [e for e in logs if e["event"] == "poll_round"]
    assert (summary["tasks"], summary["applied"], summary["refused"]) == (1, 1, 0)
    assert not any(value in repr(logs) for value in PATIENT_VALUES)


def test_the_stored_cursor_is_sent_on_the_next_round(
    welfare: Welfare, poller: Poller, store: SqliteOutboxStore, task_id: str
) -> None:
    """The second round asks ``_lastUpdated=gt<cursor>`` with the server's timestamp intact."""
    welfare.serve([welfare_task(store, task_id, "accepted", STAMP_1, business="waiting-list")])
    poller.run_once()
    poller.run_once()
    assert "_lastUpdated" not in welfare.searches[0]
    assert welfare.searches[1]["_lastUpdated"] == [f"gt{STAMP_1}"]
    assert "_lastUpdated=gt2026-03-03T10:15:00.123%2B01:00" in welfare.raw_queries[1]
    assert welfare.searches[1]["_sort"] == ["_lastUpdated"]
    assert welfare.searches[1]["_count"] == ["100"]


def test_the_same_searchset_twice_has_one_effect(
    welfare: Welfare, poller: Poller, store: SqliteOutboxStore, task_id: str, metrics: Metrics
) -> None:
    """A repeat of the same Task and Observation changes nothing and queues nothing new."""
    welfare.serve(
        [
            welfare_task(
                store,
                task_id,
                "in-progress",
                STAMP_1,
                business="first-contact",
                output=("Observation/obs1",),
            )
        ]
    )
    welfare.observations["obs1"] = first_contact("obs1", task_id)
    poller.run_once()
    before = store.get_task(task_id)
    entries = gp_entries(store, task_id)
    [again] = poller.run_once()
    assert (again.applied, again.repeated, again.refused) == (0, 1, 0)
    assert store.get_task(task_id) == before
    assert gp_entries(store, task_id) == entries
    assert counted(metrics, "repeat") == 1


@pytest.mark.parametrize("late", ["requested", "in-progress"])
def test_an_out_of_order_task_is_refused(
    welfare: Welfare,
    poller: Poller,
    store: SqliteOutboxStore,
    task_id: str,
    metrics: Metrics,
    late: str,
) -> None:
    """A Task that goes back after completion is refused, changes nothing and raises nothing."""
    welfare.serve([welfare_task(store, task_id, "in-progress", STAMP_1, business="intake-done")])
    poller.run_once()
    done = welfare_task(store, task_id, "completed", STAMP_2, reason="completed-activity")
    welfare.serve([done])
    [first] = poller.run_once()
    assert first.applied == 1
    before = store.get_task(task_id)
    entries = gp_entries(store, task_id)
    welfare.serve([welfare_task(store, task_id, late, STAMP_3, business="first-contact")])
    with structlog.testing.capture_logs() as logs:
        [second] = poller.run_once()
    assert (second.applied, second.refused, second.complete) == (0, 1, True)
    after = store.get_task(task_id)
    assert after == before
    assert after is not None
    assert after.status == "completed"
    assert gp_entries(store, task_id) == entries
    assert counted(metrics, "refused") == 1
    [refusal] = [e for e in logs if e["event"] == "poll_task_refused"]
    assert refusal["destination"] == VOORBEELD
    assert refusal["status"] in (409, 422)
    assert store.poll_cursor(VOORBEELD) == STAMP_3


def test_a_jump_between_two_polls_is_applied(
    welfare: Welfare, poller: Poller, store: SqliteOutboxStore, task_id: str
) -> None:
    """requested -> (accepted ->) completed between two polls arrives as one jump: applied."""
    done = welfare_task(store, task_id, "completed", STAMP_1, reason="completed-activity")
    welfare.serve([done])
    [result] = poller.run_once()
    assert (result.applied, result.refused) == (1, 0)
    task = store.get_task(task_id)
    assert task is not None
    assert task.status == "completed"


def test_the_task_as_sent_is_no_update(
    welfare: Welfare, poller: Poller, store: SqliteOutboxStore, task_id: str
) -> None:
    """The Task still ``requested`` as the bridge sent it is no refusal and no change."""
    welfare.serve([welfare_task(store, task_id, "requested", STAMP_1, business="sent")])
    [round_] = poller.run_once()
    assert (round_.applied, round_.repeated, round_.refused) == (0, 1, 0)
    task = store.get_task(task_id)
    assert task is not None
    assert (task.status, task.version) == ("requested", 1)


def test_tasks_without_our_identifier_are_ignored(
    welfare: Welfare, poller: Poller, store: SqliteOutboxStore, task_id: str
) -> None:
    """Tasks whose identifier is not a Task id the bridge issued change nothing."""
    theirs = welfare_task(store, task_id, "in-progress", STAMP_1, business="first-contact")
    theirs["identifier"] = [{"system": "https://welzijn.example/task", "value": task_id}]
    unknown = welfare_task(store, task_id, "in-progress", STAMP_2, business="first-contact")
    unknown["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": OTHER_UUID}]
    welfare.serve([theirs, unknown])
    [round_] = poller.run_once()
    assert (round_.seen, round_.ignored, round_.applied, round_.refused) == (2, 2, 0, 0)
    task = store.get_task(task_id)
    assert task is not None
    assert task.status == "requested"
    assert gp_entries(store, task_id) == []
    assert store.poll_cursor(VOORBEELD) == STAMP_2


def test_a_task_of_another_destination_is_refused(
    welfare: Welfare, poller: Poller, store: SqliteOutboxStore, config: Settings, clock: FixedClock
) -> None:
    """Voorbeeld's server cannot move a Task that was routed to Rivierenland."""
    other = accept(store, config, clock, "accepted-route-by-practice-bsn-ageband")
    assert store.get_task(other) is not None
    welfare.serve([welfare_task(store, other, "in-progress", STAMP_1, business="first-contact")])
    [round_] = poller.run_once()
    assert (round_.applied, round_.refused) == (0, 1)
    task = store.get_task(other)
    assert task is not None
    assert (task.destination, task.status) == (RIVIERENLAND, "requested")


def test_an_over_long_status_reason_is_refused_not_forwarded(
    welfare: Welfare, poller: Poller, store: SqliteOutboxStore, task_id: str, config: Settings
) -> None:
    """A polled statusReason text over feedback.reason_max_chars is refused: nothing changes."""
    task = welfare_task(store, task_id, "on-hold", STAMP_1, reason="not-reachable")
    task["statusReason"]["text"] = "x" * (config.feedback.reason_max_chars + 1)
    welfare.serve([task])
    with structlog.testing.capture_logs() as logs:
        [round_] = poller.run_once()
    assert (round_.applied, round_.refused) == (0, 1)
    [refusal] = [e for e in logs if e["event"] == "poll_task_refused"]
    assert (refusal["code"], refusal["location"]) == ("too-long", "Task.statusReason.text")
    stored = store.get_task(task_id)
    assert stored is not None
    assert stored.status == "requested"
    assert gp_entries(store, task_id) == []


def test_paging_follows_next_links(
    welfare: Welfare, poller: Poller, store: SqliteOutboxStore, task_id: str
) -> None:
    """The Task on the second page is applied; the cursor is the latest of both pages."""
    foreign = welfare_task(store, task_id, "accepted", STAMP_1)
    foreign["identifier"] = []
    ours = welfare_task(store, task_id, "accepted", STAMP_2, business="waiting-list")
    welfare.serve([foreign], [ours])
    [round_] = poller.run_once()
    assert (round_.pages, round_.seen, round_.applied, round_.complete) == (2, 2, 1, True)
    assert welfare.searches[1]["page"] == ["1"]
    task = store.get_task(task_id)
    assert task is not None
    assert (task.status, task.business_status) == ("accepted", "waiting-list")
    assert store.poll_cursor(VOORBEELD) == STAMP_2


def test_a_next_link_to_another_host_is_not_followed(
    welfare: Welfare, poller: Poller, store: SqliteOutboxStore, task_id: str
) -> None:
    """A ``next`` link off the destination's server ends the round; the cursor stays put."""
    welfare.serve([welfare_task(store, task_id, "accepted", STAMP_1)], [])
    welfare.next_url = "http://elsewhere.invalid/fhir/Task?page=1"
    [round_] = poller.run_once()
    assert (round_.pages, round_.applied, round_.complete) == (1, 1, False)
    assert round_.error == "next link leaves the server"
    assert len(welfare.searches) == 1
    assert store.poll_cursor(VOORBEELD) is None


def test_a_server_error_ends_the_round_quietly(
    welfare: Welfare, poller: Poller, store: SqliteOutboxStore, task_id: str, metrics: Metrics
) -> None:
    """A 500 on the search ends the round without an exception and without moving the cursor."""
    welfare.search_status = 500
    [round_] = poller.run_once()
    assert (round_.pages, round_.complete, round_.error) == (0, False, "HTTP 500")
    assert store.poll_cursor(VOORBEELD) is None
    assert counted(metrics, "error") == 1
    task = store.get_task(task_id)
    assert task is not None
    assert task.status == "requested"


def test_an_unreachable_server_ends_the_round_quietly(
    components: Components, store: SqliteOutboxStore, config: Settings
) -> None:
    """A connection error ends the round for the destination; nothing is raised."""
    dead = f"http://127.0.0.1:{free_port()}/fhir"
    destinations = tuple(
        d.model_copy(update={"endpoint": dead}) if d.id == VOORBEELD else d
        for d in config.destinations
    )
    changed = config.model_copy(update={"destinations": destinations})
    poller = Poller(
        dataclasses.replace(components, config=dataclasses.replace(components.config, core=changed))
    )
    [round_] = poller.run_once()
    assert round_.error == "no response (connection)"
    assert store.poll_cursor(VOORBEELD) is None


def test_an_observation_error_ends_the_round_and_the_next_round_catches_up(
    welfare: Welfare, poller: Poller, store: SqliteOutboxStore, task_id: str
) -> None:
    """A 503 on an output Observation leaves the Task and the cursor for the next round."""
    welfare.serve(
        [
            welfare_task(
                store,
                task_id,
                "in-progress",
                STAMP_1,
                business="first-contact",
                output=("Observation/obs1",),
            )
        ]
    )
    welfare.observations["obs1"] = first_contact("obs1", task_id)
    welfare.observation_status = 503
    [failed] = poller.run_once()
    assert (failed.applied, failed.complete, failed.error) == (0, False, "HTTP 503")
    assert store.poll_cursor(VOORBEELD) is None
    welfare.observation_status = 200
    [caught_up] = poller.run_once()
    assert (caught_up.applied, caught_up.complete) == (1, True)
    assert len(store.known_items(task_id)) == 1


def test_a_missing_observation_is_skipped(
    welfare: Welfare, poller: Poller, store: SqliteOutboxStore, task_id: str
) -> None:
    """A 404 on one output Observation skips that item; the status and the other item apply."""
    welfare.serve(
        [
            welfare_task(
                store,
                task_id,
                "in-progress",
                STAMP_1,
                business="first-contact",
                output=("Observation/obs2", "Observation/obs1"),
            )
        ]
    )
    welfare.observations["obs1"] = first_contact("obs1", task_id)
    [round_] = poller.run_once()
    assert (round_.applied, round_.complete) == (1, True)
    assert welfare.reads == ["obs2", "obs1"]
    assert len(store.known_items(task_id)) == 1


def test_a_destination_without_poll_is_not_asked(
    httpserver: HTTPServer, settings: Settings, components: Components
) -> None:
    """Only destinations with ``poll = true`` are polled (the shipped example has none)."""
    plain = dataclasses.replace(
        components, config=dataclasses.replace(components.config, core=settings)
    )
    assert Poller(plain).run_once() == []
    assert len(httpserver.log) == 0


def test_the_thread_polls_until_stopped(welfare: Welfare, poller: Poller) -> None:
    """The worker thread polls at start and stops when asked."""
    poller.start()
    try:
        assert welfare.searched.wait(10)
        assert poller.alive
    finally:
        poller.stop()
    assert not poller.alive


def test_the_service_runs_the_poller_when_a_destination_is_polled(
    welfare: Welfare, components: Components
) -> None:
    """The app's lifespan starts the poller next to the dispatcher and stops it on shutdown."""
    app = create_app(components, start_dispatcher=True)

    async def serve() -> bool:
        async with app.router.lifespan_context(app):
            return await asyncio.to_thread(welfare.searched.wait, 10)

    assert asyncio.run(serve())


# --- the CLI -------------------------------------------------------------------------------------


def test_poll_once_cli_applies_and_exits_0(
    httpserver: HTTPServer, welfare: Welfare, tmp_path: Path, clock: FixedClock
) -> None:
    """``wor-bridge poll --once --config FILE`` polls once, prints the counts and exits 0."""
    path = write_config(tmp_path, httpserver.url_for("/fhir"))
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    for destination in raw["destinations"]:
        destination["poll"] = destination["id"] == VOORBEELD
    path.write_text(to_toml(raw), encoding="utf-8")
    settings = load_app(path).core
    store = SqliteOutboxStore(store_path(path))
    try:
        task_id = accept(store, settings, clock, "accepted-contained")
        welfare.serve([welfare_task(store, task_id, "accepted", STAMP_1, business="waiting-list")])
    finally:
        store.close()
    proc = run_cli("poll", "--once", "--config", str(path))
    assert proc.returncode == 0, "poll --once failed"
    assert "Traceback" not in proc.stderr
    assert not any(value in proc.stderr + proc.stdout for value in PATIENT_VALUES)
    [round_] = json.loads(proc.stdout)
    assert (round_["destination"], round_["applied"], round_["complete"]) == (VOORBEELD, 1, True)
    store = SqliteOutboxStore(store_path(path))
    try:
        task = store.get_task(task_id)
        assert task is not None
        assert (task.status, task.business_status) == ("accepted", "waiting-list")
        assert store.poll_cursor(VOORBEELD) == STAMP_1
    finally:
        store.close()


# --- the pure connector --------------------------------------------------------------------------


def _destination(endpoint: str = "https://welzijn.example/fhir/") -> Destination:
    return Destination.model_validate(
        {
            "id": "w",
            "name": "W",
            "identifier": {"system": "http://fhir.nl/fhir/NamingSystem/kvk", "value": "1"},
            "endpoint": endpoint,
            "poll": True,
        }
    )


def test_search_request_without_cursor_asks_everything() -> None:
    """The first search has no ``_lastUpdated``; later ones ask strictly after the cursor."""
    first = fhir_poll.search_request(_destination(), None)
    assert first.method == "GET"
    assert first.url == "https://welzijn.example/fhir/Task?_sort=_lastUpdated&_count=100"
    later = urlsplit(fhir_poll.search_request(_destination(), STAMP_1).url)
    assert parse_qs(later.query)["_lastUpdated"] == [f"gt{STAMP_1}"]
    assert "owner" not in parse_qs(later.query)


def test_parse_searchset_picks_tasks_with_the_bridge_identifier() -> None:
    """Only Tasks with the bridge's ``urn:uuid`` identifier are picked; all count for the cursor."""
    ours = "6c1f7a5e-4b0d-5d2e-9a51-0123456789ab"
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "next", "url": "https://welzijn.example/fhir?page=2"}],
        "entry": [
            {"resource": {"resourceType": "OperationOutcome"}},
            {
                "resource": {
                    "resourceType": "Task",
                    "meta": {"lastUpdated": STAMP_2},
                    "identifier": [
                        {"system": "https://x.example", "value": "1"},
                        {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{ours.upper()}"},
                    ],
                }
            },
            {
                "resource": {
                    "resourceType": "Task",
                    "meta": {"lastUpdated": STAMP_1},
                    "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:uuid:nope"}],
                }
            },
        ],
    }
    page = fhir_poll.parse_searchset(bundle)
    assert [task_id for task_id, _ in page.tasks] == [ours]
    assert page.others == 1
    assert page.stamps == (STAMP_2, STAMP_1)
    assert page.cursor == STAMP_2
    assert page.next_url == "https://welzijn.example/fhir?page=2"


@pytest.mark.parametrize(
    "bundle",
    [None, [], {"resourceType": "Task"}, {"resourceType": "Bundle", "type": "transaction"}],
)
def test_parse_searchset_refuses_what_is_no_searchset(bundle: object) -> None:
    """Anything but a searchset Bundle is a format error naming the location."""
    with pytest.raises(FeedbackFormatError):
        fhir_poll.parse_searchset(bundle)


def test_next_cursor_after_a_complete_round_is_the_latest() -> None:
    """A complete round moves the cursor to the latest timestamp, whatever the order."""
    assert fhir_poll.next_cursor([STAMP_2, STAMP_1], None, complete=True) == STAMP_2
    assert fhir_poll.next_cursor([], STAMP_1, complete=True) == STAMP_1
    assert fhir_poll.next_cursor([STAMP_1], STAMP_2, complete=True) == STAMP_2


def test_next_cursor_after_a_cut_short_round_keeps_what_is_certain() -> None:
    """A cut-short ascending round stops before its last timestamp; an unsorted one stays put."""
    stamps = [STAMP_1, STAMP_2, STAMP_3, STAMP_3]
    assert fhir_poll.next_cursor(stamps, None, complete=False) == STAMP_2
    assert fhir_poll.next_cursor([STAMP_3, STAMP_3], STAMP_1, complete=False) == STAMP_1
    assert fhir_poll.next_cursor([STAMP_2, STAMP_1, STAMP_3], None, complete=False) is None


def test_output_refs_and_observation_requests_stay_on_the_server() -> None:
    """Observation references resolve against the base; other hosts and types are not read."""
    dest = _destination()
    task = {
        "output": [
            {"valueReference": {"reference": "Observation/a"}},
            {"valueReference": {"reference": "Observation/a"}},
            {"valueReference": {"reference": "Patient/p"}},
            {"valueString": "x"},
            {"valueReference": {"reference": "#c1"}},
        ],
        "contained": [{"resourceType": "Observation", "id": "c1"}],
    }
    assert fhir_poll.output_refs(task) == ["Observation/a", "#c1"]
    assert fhir_poll.contained_observation(task, "#c1") == {
        "resourceType": "Observation",
        "id": "c1",
    }
    request = fhir_poll.observation_request(dest, "Observation/a")
    assert request is not None
    assert request.url == "https://welzijn.example/fhir/Observation/a"
    same = fhir_poll.observation_request(dest, "https://welzijn.example/fhir/Observation/b")
    assert same is not None
    for ref in (
        "https://elsewhere.example/fhir/Observation/b",
        "https://welzijn.example/fhirx/Observation/b",
        "urn:uuid:6c1f7a5e-4b0d-5d2e-9a51-0123456789ab",
        "#c1",
        "Patient/p",
    ):
        assert fhir_poll.observation_request(dest, ref) is None
    assert fhir_poll.next_request(dest, "https://elsewhere.example/fhir/Task?p=2") is None
    assert fhir_poll.next_request(dest, "https://welzijn.example/fhir?_getpages=x") is not None
