"""One effect at the receiver for every destination type and every kind of request, when the
receiver applies a request and the answer is lost (the connection closes without an answer, or
the receiver dies halfway through it) and the bridge sends it again.

The matrix is built from what the code knows: every destination type in ``outbound.TYPES``, each
way it can create (``create`` modes; for ``fhir-r4`` the mapping's request and the delivery
mode), and every kind of message that type receives. A type without a case here fails
``test_every_destination_type_and_kind_has_a_case``, so a new type gets the same tests. The
receiver is a ``SimulatedFhirServer`` on loopback; the bridge side is the real use cases, the
real HTTP transport and the in-memory store on a fixed clock. "One effect" means: the receiver
holds exactly what one clean delivery leaves there (the same resources, the same number of each).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, get_args

import pytest
from pydantic import SecretStr

from tests.cases import case_input
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.http import RequestsTransport
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.connectors import outbound
from wor_bridge.connectors.outgoing import Kind
from wor_bridge.core import feedback as fb
from wor_bridge.core import outbox
from wor_bridge.core.delivery import Delivered, RetryLater
from wor_bridge.core.settings import Destination, Routing, Settings
from wor_bridge.demo.fhir_server import SimulatedFhirServer
from wor_bridge.usecases import deadline_alerts, delivery, intake, way_back
from wor_bridge.usecases.caller import Caller

START = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)
POLICY = outbox.RetryPolicy(base_s=1.0, cap_s=5.0, max_attempts=5, max_age_s=3600.0)
WHEN = "2026-11-04T10:00:00+01:00"
RECEIVER = "receiver"
GP_RECORD = "gp-record"
DROPS = ("close", "partial")

# How each destination type can create, as (label, destination changes).
MODES: dict[str, tuple[tuple[str, dict[str, Any]], ...]] = {
    "fhir-r4": (
        ("mapping-put", {"mapping": "wor-r4-default"}),
        ("mapping-post-if-none-exist", {"mapping": "wor-r4-ageband-bsn"}),
        ("delivery-put", {"mapping": "wor-r4-default", "delivery": "put"}),
    ),
    "notified-pull-stu3": (
        ("conditional", {"create": None}),
        ("put", {"create": "put"}),
        ("ta-np", {"pull_mode": "ta-np"}),  # Twiin-01 create once, Twiin-02 conditional update
    ),
    "zorgdomein-stu3": (("conditional", {"create": None}), ("put", {"create": "put"})),
}


@dataclass
class World:
    """The bridge's side (store, settings, clock, transport) and the two receivers."""

    store: MemoryOutboxStore
    settings: Settings
    clock: FixedClock
    transport: RequestsTransport
    welfare: SimulatedFhirServer
    gp: SimulatedFhirServer
    task_id: str = ""
    target_id: str = ""

    def deliver(self, limit: int = 10) -> list[delivery.Attempt]:
        """One dispatcher round (of at most ``limit`` attempts)."""
        return delivery.deliver_due(
            self.store,
            self.settings,
            self.transport,
            self.clock,
            POLICY,
            owner="w",
            lease_s=30,
            limit=limit,
            jitter=lambda: 0.5,
        )

    def deliver_all(self) -> None:
        """Rounds until nothing is due (the clock moves past every backoff)."""
        for _ in range(10):
            if not self.deliver():
                return
            self.clock.advance(10)
        raise AssertionError("the outbox did not drain")


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[SimulatedFhirServer, SimulatedFhirServer]]:
    """A welfare receiver and a GP record, started once for the module."""
    welfare = SimulatedFhirServer("/fhir").start()
    gp = SimulatedFhirServer("/gp").start()
    try:
        yield welfare, gp
    finally:
        welfare.stop()
        gp.stop()


@pytest.fixture
def servers(
    receivers: tuple[SimulatedFhirServer, SimulatedFhirServer],
) -> tuple[SimulatedFhirServer, SimulatedFhirServer]:
    """The two receivers, emptied for each test."""
    for server in receivers:
        server.reset()
    return receivers


def world(
    settings: Settings,
    servers: tuple[SimulatedFhirServer, SimulatedFhirServer],
    dtype: str,
    changes: dict[str, Any],
) -> Iterator[World]:
    """The example settings with one receiver of ``dtype`` (every referral goes there)."""
    welfare, gp = servers
    template = next(d for d in settings.destinations if d.type == dtype and d.mapping)
    receiver = template.model_copy(
        update={
            "id": RECEIVER,
            "endpoint": welfare.base_url,
            "mapping": template.mapping,
            **changes,
        }
    )
    Destination.model_validate(receiver.model_dump())  # the combination is a valid configuration
    record = settings.destination(GP_RECORD).model_copy(update={"endpoint": gp.base_url})
    pull = settings.pull.model_copy(update={"token_key": SecretStr("k" * 32)})  # for ta-np
    config = settings.model_copy(
        update={
            "destinations": (record, receiver),
            "routing": Routing(catch_all=RECEIVER),
            "pull": pull,
        }
    )
    clock = FixedClock(START)
    transport = RequestsTransport(clock)
    try:
        yield World(MemoryOutboxStore(), config, clock, transport, welfare, gp)
    finally:
        transport.close()


# --- the request kinds: each prepares a message, returns the receiver that gets it ---------------


def _referral(w: World) -> SimulatedFhirServer:
    """Queue the referral."""
    w.task_id = intake.accept_referral(
        w.store,
        w.settings,
        w.clock,
        data=case_input("accepted-contained"),
        content_type=None,
        caller=Caller("his"),
    ).task_id
    return w.welfare


def _delivered(w: World) -> None:
    _referral(w)
    w.deliver_all()


def _cancellation(w: World) -> SimulatedFhirServer:
    """Deliver the referral, then queue the GP's withdrawal (a Task update)."""
    _delivered(w)
    applied = way_back.apply_feedback(
        w.store,
        w.settings,
        w.clock,
        fb.Feedback(w.task_id, WHEN, status="cancelled", reason_code="gp-withdrew"),
        side="gp",
        caller=Caller("his", source_system=w.settings.output.source_system),
    )
    assert isinstance(applied, way_back.Applied)
    return w.welfare


def _amendment(w: World) -> SimulatedFhirServer:
    """Deliver the referral, then queue the GP system's change of it (a referral update)."""
    _delivered(w)
    data = json.loads(case_input("accepted-contained"))
    patient = next(c for c in data["contained"] if c["resourceType"] == "Patient")
    patient["telecom"][0]["value"] = "06-00000002"
    accepted = intake.accept_referral(
        w.store,
        w.settings,
        w.clock,
        data=json.dumps(data).encode(),
        content_type=None,
        caller=Caller("his"),
    )
    assert accepted.amended
    return w.welfare


def _feedback(w: World) -> SimulatedFhirServer:
    """Deliver the referral, then queue the welfare side's first contact for the GP record."""
    _delivered(w)
    applied = way_back.apply_feedback(
        w.store,
        w.settings,
        w.clock,
        fb.Feedback(
            w.task_id,
            WHEN,
            status="in-progress",
            business_status="first-contact",
            items=(fb.FeedbackItem("first-contact", WHEN), fb.FeedbackItem("note", WHEN, "ok")),
        ),
        side="welfare",
        caller=Caller("welfare"),
        destination=RECEIVER,
    )
    assert isinstance(applied, way_back.Applied)
    return w.gp


def _alert(w: World) -> SimulatedFhirServer:
    """Deliver the referral, let its first-contact deadline pass: the alert for the GP record."""
    _delivered(w)
    w.clock.advance(10 * 24 * 3600)
    assert deadline_alerts.check_deadlines(w.store, w.settings, w.clock) == [w.task_id]
    return w.gp


def _dead_letter(w: World) -> SimulatedFhirServer:
    """The receiver refuses the referral (a dead letter): the notice for the GP record."""
    w.welfare.fail_next(400)
    _referral(w)
    attempts = w.deliver(limit=1)  # only the referral: its notice waits for the next round
    assert [a.state for a in attempts] == ["dead"]
    return w.gp


@dataclass(frozen=True)
class Case:
    """A kind of request: the message kind it is, and how to queue one."""

    kind: Kind
    prepare: Callable[[World], SimulatedFhirServer]


CASES: dict[str, Case] = {
    "referral": Case("referral", _referral),
    "cancellation": Case("task-update", _cancellation),
    "amendment": Case("referral-update", _amendment),
    "gp-record-feedback": Case("record", _feedback),
    "gp-record-alert": Case("record", _alert),
    "gp-record-dead-letter": Case("record", _dead_letter),
}


def matrix() -> list[tuple[str, str, str]]:
    """(destination type, create mode, request kind) for everything the code can send."""
    return [
        (dtype, label, case)
        for dtype, connector in outbound.TYPES.items()
        for label, _ in MODES.get(dtype, ())
        for case, spec in CASES.items()
        if spec.kind in connector.kinds
    ]


def snapshot(server: SimulatedFhirServer) -> Counter[str]:
    """What the receiver holds: every resource without its server-assigned id, counted."""
    held: Counter[str] = Counter()
    for rtype in {t for t, _ in server.requests()} | _TYPES:
        for resource in server.resources(rtype):
            held[json.dumps({k: v for k, v in resource.items() if k != "id"}, sort_keys=True)] += 1
    return held


_TYPES = frozenset(
    {
        "Bundle",
        "Task",
        "Patient",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Consent",
        "ServiceRequest",
        "Observation",
        "Communication",
    }
)


def run(
    settings: Settings,
    servers: tuple[SimulatedFhirServer, SimulatedFhirServer],
    dtype: str,
    label: str,
    case: str,
    drop: str | None,
) -> tuple[Counter[str], int]:
    """Queue the case's message, lose the first answer (``drop``), deliver until done; what the
    receiver holds and how many write requests it got."""
    changes = dict(MODES[dtype])[label]
    for server in servers:
        server.reset()
    for w in world(settings, servers, dtype, changes):
        target = CASES[case].prepare(w)
        w.target_id = GP_RECORD if target is w.gp else RECEIVER
        before = len(target.requests())
        if drop is not None:
            target.drop_next(1, drop)
            first = w.deliver()
            assert [type(a.outcome) for a in first] == [RetryLater], "the answer was not lost"
            w.clock.advance(10)
        w.deliver_all()
        sent = [e for e in w.store.list_entries(None, 100) if e.destination == w.target_id]
        assert sent
        assert {e.state for e in sent} == {"delivered"}
        assert not any(isinstance(a, Delivered) for a in w.deliver())
        return snapshot(target), len(target.requests()) - before
    raise AssertionError("no world")


SENDS_NOTHING = frozenset(d for d, c in outbound.TYPES.items() if not c.on_the_wire)
"""Types that put nothing on the wire (no answer to lose): ``inbox`` keeps the referral at the
bridge; ``tests/test_console_inbox.py`` shows it sends no request for any kind it takes."""


def test_every_destination_type_and_kind_has_a_case() -> None:
    """Every destination type has create modes and a case for each kind it receives."""
    assert set(outbound.TYPES) == set(get_args(Destination.model_fields["type"].annotation))
    assert set(MODES) | SENDS_NOTHING == set(outbound.TYPES), "a type has no create modes here"
    covered = {(d, CASES[c].kind) for d, _, c in matrix()}
    needed = {
        (d, k) for d, conn in outbound.TYPES.items() if d not in SENDS_NOTHING for k in conn.kinds
    }
    assert covered == needed


@pytest.mark.parametrize(("dtype", "label", "case"), matrix())
def test_a_lost_answer_has_one_effect(
    settings: Settings,
    servers: tuple[SimulatedFhirServer, SimulatedFhirServer],
    dtype: str,
    label: str,
    case: str,
) -> None:
    """Applied, answer lost (closed or cut off), sent again: the effect of one delivery."""
    clean, clean_writes = run(settings, servers, dtype, label, case, None)
    assert sum(clean.values()) > 0, "the clean delivery left nothing at the receiver"
    for drop in DROPS:
        held, writes = run(settings, servers, dtype, label, case, drop)
        assert writes > clean_writes, f"{drop}: the request was not sent again"
        one_effect = held == clean  # compared whole; reported by count only (patient data)
        assert one_effect, (
            f"{drop}: {sum(held.values())} resources held, {sum(clean.values())} after one delivery"
        )


@pytest.mark.parametrize("dtype", ["notified-pull-stu3", "zorgdomein-stu3"])
def test_plain_create_is_at_least_once(
    settings: Settings,
    servers: tuple[SimulatedFhirServer, SimulatedFhirServer],
    dtype: str,
) -> None:
    """create = plain: a lost answer leaves a duplicate (the accepted risk; harness check)."""
    for w in world(settings, servers, dtype, {"create": "plain"}):
        assert w.settings.destination(RECEIVER).at_least_once
        target = _referral(w)
        target.drop_next(1, "close")
        w.deliver()
        w.clock.advance(10)
        w.deliver_all()
        created = "Task" if dtype == "notified-pull-stu3" else "Bundle"
        assert len(target.resources(created)) == 2
