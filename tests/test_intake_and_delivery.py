"""deliver_due end to end: the real SqliteOutboxStore and RequestsTransport against a
pytest-httpserver welfare endpoint, on a FixedClock."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tests.cases import PATIENT_VALUES, case_input
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.http import RequestsTransport
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.core import outbox
from wor_bridge.core.delivery import RetryLater
from wor_bridge.core.settings import DestinationAuth, Settings
from wor_bridge.records import OutboxEntry
from wor_bridge.usecases import delivery, intake
from wor_bridge.usecases.caller import Caller

START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
POLICY = outbox.RetryPolicy(base_s=2.0, cap_s=900.0, max_attempts=12, max_age_s=3 * 24 * 3600.0)
VOORBEELD = "welzijn-voorbeeld"  # catch-all: accepted-contained goes here
RIVIERENLAND = "welzijn-rivierenland"  # accepted-route-by-practice-bsn-ageband goes here
FHIR_JSON = "application/fhir+json; fhirVersion=4.0"
SECRET = "client-secret-for-tests"


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


def on(httpserver: HTTPServer, settings: Settings, **changes: dict[str, Any]) -> Settings:
    """The settings with Voorbeeld at ``/fhir`` and Rivierenland at ``/rivierenland`` on the
    test server, plus changes per destination (keyword: its id with ``_`` for ``-``), and no GP
    record (a dead letter's notice would otherwise be one more entry in each round)."""
    routes = {VOORBEELD: "/fhir", RIVIERENLAND: "/rivierenland"}
    destinations = tuple(
        d.model_copy(
            update={
                "endpoint": httpserver.url_for(routes[d.id]) if d.id in routes else d.endpoint,
                **changes.get(d.id.replace("-", "_"), {}),
            }
        )
        for d in settings.destinations
    )
    feedback = settings.feedback.model_copy(update={"gp_record": None})
    return settings.model_copy(update={"destinations": destinations, "feedback": feedback})


def accept(
    store: SqliteOutboxStore,
    settings: Settings,
    clock: FixedClock,
    case: str = "accepted-contained",
    ref: str | None = None,
) -> intake.Accepted:
    """Accept a fixture referral; ``ref`` replaces its ServiceRequest identifier (a new key)."""
    data = case_input(case)
    if ref is not None:
        document = json.loads(data)
        document["identifier"][0]["value"] = ref
        data = json.dumps(document).encode()
    return intake.accept_referral(
        store, settings, clock, data=data, content_type=None, caller=Caller("test")
    )


def deliver(
    store: SqliteOutboxStore,
    settings: Settings,
    transport: RequestsTransport,
    clock: FixedClock,
    *,
    policy: outbox.RetryPolicy = POLICY,
    owner: str = "worker-1",
) -> list[delivery.Attempt]:
    """One dispatcher round with half jitter (the first backoff is then 1 s)."""
    return delivery.deliver_due(
        store,
        settings,
        transport,
        clock,
        policy,
        owner=owner,
        lease_s=60,
        limit=20,
        jitter=lambda: 0.5,
    )


def entry_of(store: SqliteOutboxStore, accepted: intake.Accepted) -> OutboxEntry:
    """The stored outbox entry of an accepted referral."""
    entry = store.get_entry(accepted.outbox_id)
    assert entry is not None
    return entry


def paths(httpserver: HTTPServer) -> list[str]:
    """Paths the server received, in order."""
    return [request.path for request, _ in httpserver.log]


def test_201_delivers_the_stored_bundle(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    transport: RequestsTransport,
    clock: FixedClock,
) -> None:
    """A 201 marks the entry delivered; the receiver got the stored Bundle as one FHIR POST."""
    httpserver.expect_oneshot_request("/fhir", method="POST").respond_with_json(
        {"resourceType": "Bundle", "type": "transaction-response"}, status=201
    )
    config = on(httpserver, settings)
    accepted = accept(store, config, clock)
    attempts = deliver(store, config, transport, clock)
    httpserver.check_assertions()
    assert [(a.entry_id, a.destination, a.state) for a in attempts] == [
        (accepted.outbox_id, VOORBEELD, "delivered")
    ]
    entry = entry_of(store, accepted)
    assert (entry.state, entry.attempts, entry.last_error) == ("delivered", 1, None)
    assert entry.last_status == 201  # what the receiver answered
    assert entry.delivered_at == START
    request = httpserver.log[0][0]
    assert request.get_data() == entry.payload
    assert request.headers["Content-Type"] == FHIR_JSON
    assert re.fullmatch(r"[0-9a-f]{32}", request.headers["X-Request-Id"])
    record = store.get_referral(accepted.task_id)
    assert record is not None
    assert record.state == "delivered"
    assert deliver(store, config, transport, clock) == []
    assert len(httpserver.log) == 1


def test_503_then_201_retries_after_backoff(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    transport: RequestsTransport,
    clock: FixedClock,
) -> None:
    """A 503 keeps the entry pending until the backoff has passed; the next attempt delivers."""
    httpserver.expect_ordered_request("/fhir").respond_with_data("busy", 503)
    httpserver.expect_ordered_request("/fhir").respond_with_data("", 201)
    config = on(httpserver, settings)
    accepted = accept(store, config, clock)
    [first] = deliver(store, config, transport, clock)
    assert first.state == "pending"
    assert isinstance(first.outcome, RetryLater)
    entry = entry_of(store, accepted)
    assert (entry.state, entry.attempts, entry.last_status) == ("pending", 1, 503)
    assert entry.last_error == "HTTP 503"
    assert entry.next_attempt_at > clock.now()
    assert entry.next_attempt_at == START + dt.timedelta(seconds=1)
    assert deliver(store, config, transport, clock) == []  # not due yet: no request
    assert len(httpserver.log) == 1
    clock.advance(1)
    [second] = deliver(store, config, transport, clock)
    httpserver.check_assertions()
    assert (second.state, second.attempt) == ("delivered", 2)
    entry = entry_of(store, accepted)
    assert (entry.state, entry.attempts, entry.last_error) == ("delivered", 2, None)


def test_timeout_is_retried(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    transport: RequestsTransport,
    clock: FixedClock,
) -> None:
    """A receiver slower than ``read_timeout_s`` is a retry with no status, not a dead letter."""
    release = threading.Event()

    def slow(_: Request) -> Response:
        release.wait(3.0)
        return Response("", 201)

    httpserver.expect_request("/fhir").respond_with_handler(slow)
    config = on(httpserver, settings, welzijn_voorbeeld={"read_timeout_s": 0.3})
    accepted = accept(store, config, clock)
    try:
        [attempt] = deliver(store, config, transport, clock)
    finally:
        release.set()  # free the single-threaded server before the next test
        deadline = time.monotonic() + 5
        while not httpserver.log and time.monotonic() < deadline:
            time.sleep(0.01)
    assert attempt.outcome == RetryLater("no response (timeout)")
    assert attempt.duration_s < 3.0
    entry = entry_of(store, accepted)
    assert (entry.state, entry.attempts, entry.last_status) == ("pending", 1, None)
    assert entry.last_error == "no response (timeout)"
    assert entry.next_attempt_at > clock.now()


def test_400_is_dead_letter_with_redacted_reason(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    transport: RequestsTransport,
    clock: FixedClock,
) -> None:
    """A 400 is a dead letter at once; its reason names the issue code, never the diagnostics."""
    echoed = "Patient Pieter Jansen, Voorbeeldstraat 1, BSN 999990007, is a duplicate"
    httpserver.expect_request("/fhir").respond_with_json(
        {
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": "invalid", "diagnostics": echoed}],
        },
        status=400,
    )
    config = on(httpserver, settings)
    accepted = accept(store, config, clock)
    with structlog.testing.capture_logs() as logs:
        [attempt] = deliver(store, config, transport, clock)
    assert attempt.state == "dead"
    entry = entry_of(store, accepted)
    assert (entry.state, entry.attempts, entry.last_status) == ("dead", 1, 400)
    assert entry.last_error == "HTTP 400 (invalid)"
    delivery_audit = [r for r in store.audit_records() if r["event"] == "referral_delivery"]
    assert [r["outcome"] for r in delivery_audit] == ["rejected"]
    assert delivery_audit[0]["detail"] == "attempt 1; HTTP 400 (invalid)"
    for text in (entry.last_error, delivery_audit[0]["detail"], repr(logs)):
        assert not any(value in text for value in PATIENT_VALUES)
        assert "duplicate" not in text
    clock.advance(3600)
    assert deliver(store, config, transport, clock) == []


def test_429_retry_after_is_honoured(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    transport: RequestsTransport,
    clock: FixedClock,
) -> None:
    """A 429 with ``Retry-After: 120`` is not retried before 120 s have passed."""
    httpserver.expect_request("/fhir").respond_with_data("", 429, headers={"Retry-After": "120"})
    config = on(httpserver, settings)
    accepted = accept(store, config, clock)
    [attempt] = deliver(store, config, transport, clock)
    assert isinstance(attempt.outcome, RetryLater)
    assert attempt.outcome.retry_after_s == 120.0
    entry = entry_of(store, accepted)
    assert entry.state == "pending"
    assert entry.next_attempt_at >= START + dt.timedelta(seconds=120)
    clock.advance(119)
    assert deliver(store, config, transport, clock) == []
    assert len(httpserver.log) == 1


def test_one_bad_entry_does_not_block_another(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    transport: RequestsTransport,
    clock: FixedClock,
) -> None:
    """In one round a 400 at one destination is dead-lettered and the next entry still delivers."""
    httpserver.expect_request("/rivierenland").respond_with_data("", 400)
    httpserver.expect_request("/fhir").respond_with_data("", 201)
    config = on(httpserver, settings)
    bad = accept(store, config, clock, "accepted-route-by-practice-bsn-ageband")
    good = accept(store, config, clock)
    assert (bad.destination, good.destination) == (RIVIERENLAND, VOORBEELD)
    attempts = deliver(store, config, transport, clock)
    httpserver.check_assertions()
    assert [(a.entry_id, a.state) for a in attempts] == [
        (bad.outbox_id, "dead"),
        (good.outbox_id, "delivered"),
    ]
    assert paths(httpserver) == ["/rivierenland", "/fhir"]


class TokenIssuer:
    """A token endpoint handing out ``token-1``, ``token-2``... valid for ``expires_in`` s."""

    def __init__(self, expires_in: int) -> None:
        self.expires_in = expires_in
        self.calls = 0

    def __call__(self, request: Request) -> Response:
        """Issue the next token (only to the configured client)."""
        creds = request.authorization
        if creds is None or (creds.username, creds.password) != ("bridge", SECRET):
            return Response('{"error":"invalid_client"}', 401, content_type="application/json")
        self.calls += 1
        body = {
            "access_token": f"token-{self.calls}",
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        return Response(json.dumps(body), 200, content_type="application/json")


def test_oauth2_token_is_reused_then_refreshed_after_expiry(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    transport: RequestsTransport,
    clock: FixedClock,
) -> None:
    """Two deliveries share one client-credentials token; after it expires a new one is fetched."""
    issuer = TokenIssuer(expires_in=300)
    httpserver.expect_request("/token", method="POST").respond_with_handler(issuer)
    httpserver.expect_request("/fhir", method="POST").respond_with_data("", 201)
    auth = DestinationAuth(
        type="oauth2",
        token_url=httpserver.url_for("/token"),
        client_id="bridge",
        client_secret=SecretStr(SECRET),
    )
    config = on(httpserver, settings, welzijn_voorbeeld={"auth": auth})
    first = [accept(store, config, clock, ref=f"VW-OAUTH-{n}") for n in range(2)]
    attempts = deliver(store, config, transport, clock)
    assert [a.entry_id for a in attempts] == [a.outbox_id for a in first]
    assert {a.state for a in attempts} == {"delivered"}
    assert issuer.calls == 1
    clock.advance(300)
    late = accept(store, config, clock, ref="VW-OAUTH-late")
    [attempt] = deliver(store, config, transport, clock)
    assert (attempt.entry_id, attempt.state) == (late.outbox_id, "delivered")
    assert issuer.calls == 2
    httpserver.check_assertions()
    bearers = [r.headers.get("Authorization") for r, _ in httpserver.log if r.path == "/fhir"]
    assert bearers == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]


def test_put_delivery_sends_one_put_per_resource(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    transport: RequestsTransport,
    clock: FixedClock,
) -> None:
    """delivery = put: PUT [base]/Type/id per resource, in order, references as Type/id."""
    httpserver.expect_request(
        re.compile(r"^/fhir/[A-Za-z]+/[^/]+$"), method="PUT"
    ).respond_with_data("", 201)
    config = on(httpserver, settings, welzijn_voorbeeld={"delivery": "put"})
    accepted = accept(store, config, clock)
    [attempt] = deliver(store, config, transport, clock)
    httpserver.check_assertions()
    assert attempt.state == "delivered"
    resources = [e["resource"] for e in json.loads(entry_of(store, accepted).payload)["entry"]]
    assert len(resources) > 1
    assert paths(httpserver) == [f"/fhir/{r['resourceType']}/{r['id']}" for r in resources]
    assert [request.method for request, _ in httpserver.log] == ["PUT"] * len(resources)
    sent = [json.loads(request.get_data()) for request, _ in httpserver.log]
    local = {f"urn:uuid:{r['id']}": f"{r['resourceType']}/{r['id']}" for r in resources}
    assert [(r["resourceType"], r["id"]) for r in sent] == [
        (r["resourceType"], r["id"]) for r in resources
    ]
    text = json.dumps(sent)
    assert '"reference": "urn:uuid:' not in text
    for urn, relative in local.items():
        assert text.count(f'"reference": "{relative}"') == json.dumps(resources).count(
            f'"reference": "{urn}"'
        )
    assert {request.headers["Content-Type"] for request, _ in httpserver.log} == {FHIR_JSON}


def test_put_delivery_failing_midway_retries_the_whole_entry(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    transport: RequestsTransport,
    clock: FixedClock,
) -> None:
    """A 503 on the second PUT stops that attempt; the retry sends every resource again."""
    any_put = re.compile(r"^/fhir/[A-Za-z]+/[^/]+$")
    httpserver.expect_ordered_request(any_put, method="PUT").respond_with_data("", 201)
    httpserver.expect_ordered_request(any_put, method="PUT").respond_with_data("", 503)
    config = on(httpserver, settings, welzijn_voorbeeld={"delivery": "put"})
    accepted = accept(store, config, clock)
    [attempt] = deliver(store, config, transport, clock)
    assert attempt.state == "pending"
    assert len(httpserver.log) == 2
    httpserver.expect_request(any_put, method="PUT").respond_with_data("", 200)
    clock.advance(1)
    [retry] = deliver(store, config, transport, clock)
    assert retry.state == "delivered"
    count = len(json.loads(entry_of(store, accepted).payload)["entry"])
    assert len(httpserver.log) == 2 + count
    assert paths(httpserver)[2:][:2] == paths(httpserver)[:2]


def test_max_attempts_reached_is_dead(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    transport: RequestsTransport,
    clock: FixedClock,
) -> None:
    """When the last allowed attempt fails too, the entry becomes a dead letter."""
    httpserver.expect_request("/fhir").respond_with_data("", 503)
    config = on(httpserver, settings)
    accepted = accept(store, config, clock)
    policy = outbox.RetryPolicy(base_s=2.0, cap_s=900.0, max_attempts=3)
    states = []
    for _ in range(3):
        states += [a.state for a in deliver(store, config, transport, clock, policy=policy)]
        clock.advance(60)
    assert states == ["pending", "pending", "dead"]
    entry = entry_of(store, accepted)
    assert (entry.state, entry.attempts, entry.last_status) == ("dead", 3, 503)
    assert entry.last_error == "HTTP 503"
    clock.advance(3600)
    assert deliver(store, config, transport, clock, policy=policy) == []
    assert len(httpserver.log) == 3


def test_two_workers_never_claim_the_same_entry(
    settings: Settings, store: SqliteOutboxStore, tmp_path: Path, clock: FixedClock
) -> None:
    """Two owners claiming from the same SQLite file at once split the entries, none twice."""
    total = 300
    ids = {accept(store, settings, clock, ref=f"VW-MANY-{n}").outbox_id for n in range(total)}
    assert len(ids) == total
    start = threading.Barrier(2)
    claimed: dict[str, list[int]] = {}
    failures: list[BaseException] = []

    def work(owner: str) -> None:
        own = SqliteOutboxStore(tmp_path / "outbox.sqlite")  # a store object of its own
        try:
            got = claimed.setdefault(owner, [])
            start.wait(10)
            while batch := own.claim_due(owner, clock.now(), 600, 7):
                got.extend(entry.id for entry in batch)
        except BaseException as err:
            failures.append(err)
            raise
        finally:
            own.close()

    threads = [threading.Thread(target=work, args=(owner,)) for owner in ("w1", "w2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    first, second = claimed["w1"], claimed["w2"]
    assert not set(first) & set(second)
    assert len(first) + len(second) == total
    assert set(first) | set(second) == ids


def test_two_dispatchers_deliver_each_entry_once(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    tmp_path: Path,
    clock: FixedClock,
) -> None:
    """Two concurrent dispatchers, each with its own store object, send every entry exactly once."""
    httpserver.expect_request("/fhir").respond_with_data("", 201)
    config = on(httpserver, settings)
    total = 40
    for n in range(total):
        accept(store, config, clock, ref=f"VW-PAIR-{n}")
    start = threading.Barrier(2)
    failures: list[BaseException] = []

    def work(owner: str) -> None:
        own = SqliteOutboxStore(tmp_path / "outbox.sqlite")
        transport = RequestsTransport(clock)
        try:
            start.wait(10)
            while delivery.deliver_due(
                own, config, transport, clock, POLICY, owner=owner, lease_s=600, limit=3
            ):
                pass
        except BaseException as err:
            failures.append(err)
            raise
        finally:
            transport.close()
            own.close()

    threads = [threading.Thread(target=work, args=(owner,)) for owner in ("d1", "d2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert failures == []
    request_ids = [request.headers["X-Request-Id"] for request, _ in httpserver.log]
    assert len(request_ids) == len(set(request_ids)) == total
    assert store.stats(clock.now()).delivered == total


def test_destination_without_endpoint_is_retried_without_blocking(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    transport: RequestsTransport,
    clock: FixedClock,
) -> None:
    """An entry whose destination has no endpoint backs off; the next entry still delivers."""
    httpserver.expect_request("/fhir").respond_with_data("", 201)
    config = on(httpserver, settings, welzijn_rivierenland={"endpoint": None})
    bad = accept(store, config, clock, "accepted-route-by-practice-bsn-ageband")
    good = accept(store, config, clock)
    attempts = deliver(store, config, transport, clock)
    assert [(a.entry_id, a.state) for a in attempts] == [
        (bad.outbox_id, "pending"),
        (good.outbox_id, "delivered"),
    ]
    assert entry_of(store, bad).last_error == "cannot send (ValueError)"
    assert paths(httpserver) == ["/fhir"]


def test_entry_for_removed_destination_is_retried_without_blocking(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    transport: RequestsTransport,
    clock: FixedClock,
) -> None:
    """An entry whose destination left the configuration backs off; the next one delivers."""
    httpserver.expect_request("/fhir").respond_with_data("", 201)
    config = on(httpserver, settings)
    bad = accept(store, config, clock, "accepted-route-by-practice-bsn-ageband")
    good = accept(store, config, clock)
    routing = config.routing.model_copy(
        update={"practices": {}, "postcodes": (), "municipalities": {}}
    )
    without = config.model_copy(
        update={
            "destinations": tuple(d for d in config.destinations if d.id != RIVIERENLAND),
            "routing": routing,
        }
    )
    attempts = deliver(store, without, transport, clock)
    assert [(a.entry_id, a.state) for a in attempts] == [
        (bad.outbox_id, "pending"),
        (good.outbox_id, "delivered"),
    ]
    assert entry_of(store, bad).last_error == "cannot send (StopIteration)"


# --- bugs: one entry the dispatcher cannot handle stops the whole round -------------------------


def test_malformed_operation_outcome_does_not_block_the_round(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    transport: RequestsTransport,
    clock: FixedClock,
) -> None:
    """A receiver's malformed OperationOutcome dead-letters that entry; the next still delivers."""
    httpserver.expect_request("/rivierenland").respond_with_json(
        {"resourceType": "OperationOutcome", "issue": 1}, status=400
    )
    httpserver.expect_request("/fhir").respond_with_data("", 201)
    config = on(httpserver, settings)
    bad = accept(store, config, clock, "accepted-route-by-practice-bsn-ageband")
    good = accept(store, config, clock)
    attempts = deliver(store, config, transport, clock)
    assert [(a.entry_id, a.state) for a in attempts] == [
        (bad.outbox_id, "dead"),
        (good.outbox_id, "delivered"),
    ]


def test_odd_retry_after_does_not_block_the_round(
    httpserver: HTTPServer,
    settings: Settings,
    store: SqliteOutboxStore,
    transport: RequestsTransport,
    clock: FixedClock,
) -> None:
    """A 503 whose Retry-After is a latin-1 superscript two is a retry; the next one delivers."""
    httpserver.expect_request("/rivierenland").respond_with_data(
        "", 503, headers={"Retry-After": "\u00b2"}
    )
    httpserver.expect_request("/fhir").respond_with_data("", 201)
    config = on(httpserver, settings)
    bad = accept(store, config, clock, "accepted-route-by-practice-bsn-ageband")
    good = accept(store, config, clock)
    attempts = deliver(store, config, transport, clock)
    assert [(a.entry_id, a.state) for a in attempts] == [
        (bad.outbox_id, "pending"),
        (good.outbox_id, "delivered"),
    ]
