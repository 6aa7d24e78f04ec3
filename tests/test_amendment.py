"""Referral amendments (issue 10 section 5): a re-push with the same HIS identifier is a duplicate
when unchanged, an update when changed for the same organisation, a redirect when it now routes
elsewhere, refused once the Task has finished; a Consent that now refuses withdraws it."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import sealed
from tests.cases import case_input
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.adapters.sealing import PLAIN
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.core import amendment
from wor_bridge.core import feedback as fb
from wor_bridge.core.settings import Settings
from wor_bridge.errors import MappingError
from wor_bridge.ports import OutboxStore
from wor_bridge.usecases import intake, way_back
from wor_bridge.usecases.caller import Caller

START = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC)
GP = Caller("his-client", source_system="his-example")
WELFARE = Caller("welfare-client")
VOORBEELD = "welzijn-voorbeeld"
RIVIERENLAND = "welzijn-rivierenland"
JSON = "application/fhir+json"


@pytest.fixture(params=["memory", "sqlite", "sqlite-sealed", "postgresql-sealed"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OutboxStore]:
    """Every store adapter (SQLite in clear and sealed, PostgreSQL sealed): the amendment
    semantics are the port's, not one adapter's."""
    if request.param == "memory":
        yield MemoryOutboxStore()
        return
    if request.param == "postgresql-sealed":
        yield request.getfixturevalue("pg_sealed_store")
        return
    keys = sealed.sealer() if request.param == "sqlite-sealed" else PLAIN
    sqlite = SqliteOutboxStore(tmp_path / "outbox.sqlite", sealer=keys)
    yield sqlite
    sqlite.close()


@pytest.fixture
def clock() -> FixedClock:
    """A clock that moves only when a test says so."""
    return FixedClock(START)


def _referral(change: Callable[[dict[str, Any]], None] | None = None) -> bytes:
    data: dict[str, Any] = json.loads(case_input("accepted-contained"))
    if change is not None:
        change(data)
    return json.dumps(data).encode()


def _patient(data: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in data["contained"] if c["resourceType"] == "Patient")
    return found


def _new_phone(data: dict[str, Any]) -> None:
    _patient(data)["telecom"][0]["value"] = "06-00000002"


def _moved_to_tiel(data: dict[str, Any]) -> None:
    address = _patient(data)["address"][0]
    address.update({"postalCode": "4001 AB", "city": "Tiel", "district": "Tiel"})


def _consent_deny(data: dict[str, Any]) -> None:
    consent = next(c for c in data["contained"] if c["resourceType"] == "Consent")
    consent["provision"]["type"] = "deny"


def _push(
    store: OutboxStore, settings: Settings, clock: FixedClock, data: bytes
) -> intake.Accepted:
    return intake.accept_referral(store, settings, clock, data=data, content_type=JSON, caller=GP)


def _messages(store: OutboxStore) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind of key, destination, payload) of every outbox entry, oldest first."""
    entries = sorted(store.list_entries(None, 100), key=lambda e: e.id)
    return [
        (e.idempotency_key.split("|")[0], e.destination, json.loads(e.payload)) for e in entries
    ]


def _task(bundle: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task"
    )
    return found


def _deliver_all(store: OutboxStore, clock: FixedClock) -> None:
    """Mark every pending entry delivered (as the dispatcher would after a 2xx)."""
    for entry in store.claim_due("test", clock.now(), 30.0, 100):
        store.record_attempt(
            entry.id,
            "test",
            now=clock.now(),
            state="delivered",
            next_attempt_at=None,
            status=200,
            error=None,
        )


def test_the_same_referral_again_is_a_duplicate(
    store: OutboxStore, settings: Settings, clock: FixedClock
) -> None:
    """An unchanged re-push gives the same Task, no second message and no amendment."""
    first = _push(store, settings, clock, _referral())
    again = _push(store, settings, clock, _referral())
    assert (again.task_id, again.created, again.amended) == (first.task_id, False, False)
    assert len(_messages(store)) == 1


def test_a_changed_referral_is_an_update_for_the_same_organisation(
    store: OutboxStore, settings: Settings, clock: FixedClock
) -> None:
    """Changed content for the same organisation queues one tagged update after the referral,
    stores the new content and moves the Task version; the same change again adds nothing."""
    first = _push(store, settings, clock, _referral())
    _deliver_all(store, clock)
    before = store.get_task(first.task_id)
    assert before is not None
    changed = _push(store, settings, clock, _referral(_new_phone))
    assert (changed.task_id, changed.created, changed.amended) == (first.task_id, False, True)
    messages = _messages(store)
    assert [(k, d) for k, d, _ in messages] == [
        ("his-example", VOORBEELD),
        ("amend", VOORBEELD),
    ]
    update = messages[1][2]
    assert amendment.is_update(update)
    assert {e["resource"]["id"] for e in update["entry"]} == {
        e["resource"]["id"] for e in messages[0][2]["entry"]
    }
    after = store.get_task(first.task_id)
    assert after is not None
    assert after.version == before.version + 1
    assert after.bundle != before.bundle
    assert (after.status, after.destination) == ("requested", VOORBEELD)
    again = _push(store, settings, clock, _referral(_new_phone))
    assert (again.created, again.amended) == (False, False)
    assert len(_messages(store)) == 2


def test_an_update_keeps_the_welfare_sides_progress(
    store: OutboxStore, settings: Settings, clock: FixedClock
) -> None:
    """An amendment while the welfare side works on the referral keeps the Task's status."""
    first = _push(store, settings, clock, _referral())
    _deliver_all(store, clock)
    applied = way_back.apply_feedback(
        store,
        settings,
        clock,
        fb.Feedback(first.task_id, START.isoformat(), status="accepted"),
        side="welfare",
        caller=WELFARE,
        destination=VOORBEELD,
    )
    assert isinstance(applied, way_back.Applied)
    _push(store, settings, clock, _referral(_new_phone))
    task = store.get_task(first.task_id)
    assert task is not None
    assert task.status == "accepted"


def test_a_change_that_routes_elsewhere_cancels_there_and_refers_here(
    store: OutboxStore, settings: Settings, clock: FixedClock
) -> None:
    """A delivered referral that now routes to another organisation: the old one gets a
    cancellation with the code ``redirected`` (no free text), the new one the referral, the Task
    names the new organisation and starts again at requested."""
    first = _push(store, settings, clock, _referral())
    _deliver_all(store, clock)
    moved = _push(store, settings, clock, _referral(_moved_to_tiel))
    assert (moved.task_id, moved.amended, moved.destination) == (first.task_id, True, RIVIERENLAND)
    messages = _messages(store)
    assert [(k, d) for k, d, _ in messages] == [
        ("his-example", VOORBEELD),
        ("redirect", VOORBEELD),
        ("his-example", RIVIERENLAND),
    ]
    cancelled = _task(messages[1][2])
    assert cancelled["status"] == "cancelled"
    assert cancelled["statusReason"] == {
        "coding": [
            {
                "system": "https://wor-bridge.nl/fhir/CodeSystem/closure-reason",
                "code": "redirected",
            }
        ]
    }
    assert "text" not in cancelled["statusReason"]
    assert [e["resource"]["resourceType"] for e in messages[1][2]["entry"]] == ["Task"]
    assert "ServiceRequest" in {e["resource"]["resourceType"] for e in messages[2][2]["entry"]}
    task = store.get_task(first.task_id)
    assert task is not None
    assert (task.destination, task.status) == (RIVIERENLAND, "requested")
    owner = _task(json.loads(task.bundle))["owner"]["reference"]
    welfare = next(e for e in json.loads(task.bundle)["entry"] if e["fullUrl"] == owner)["resource"]
    assert (
        welfare["name"]
        != next(
            e
            for e in messages[0][2]["entry"]
            if e["fullUrl"] == _task(messages[0][2])["owner"]["reference"]
        )["resource"]["name"]
    )
    audit = [r for r in store.audit_records() if r["event"] == "referral_amended"]
    assert len(audit) == 1
    assert VOORBEELD in audit[0]["detail"]
    assert RIVIERENLAND in audit[0]["detail"]


def test_a_redirect_before_delivery_never_sends_the_old_referral(
    store: OutboxStore, settings: Settings, clock: FixedClock
) -> None:
    """When the old organisation never received the referral, its entry is withdrawn and it
    gets no cancellation: the new organisation is the only one that hears of it."""
    first = _push(store, settings, clock, _referral())
    _push(store, settings, clock, _referral(_moved_to_tiel))
    entries = sorted(store.list_entries(None, 100), key=lambda e: e.id)
    assert [(e.destination, e.state) for e in entries] == [
        (VOORBEELD, "dead"),
        (RIVIERENLAND, "pending"),
    ]
    record = store.get_referral(first.task_id)
    assert record is not None
    assert (record.destination, record.state) == (RIVIERENLAND, "pending")


def test_a_change_after_the_task_finished_is_refused(
    store: OutboxStore, settings: Settings, clock: FixedClock
) -> None:
    """Once the welfare side closed the Task, a changed re-push is refused at the identifier
    and nothing is queued; the unchanged re-push stays a duplicate."""
    first = _push(store, settings, clock, _referral())
    _deliver_all(store, clock)
    for status in ("accepted", "completed"):
        way_back.apply_feedback(
            store,
            settings,
            clock,
            fb.Feedback(
                first.task_id, START.isoformat(), status=status, reason_code="completed-activity"
            ),
            side="welfare",
            caller=WELFARE,
            destination=VOORBEELD,
        )
    task = store.get_task(first.task_id)
    assert task is not None
    assert task.status == "completed"
    count = len(_messages(store))
    with pytest.raises(MappingError) as refused:
        _push(store, settings, clock, _referral(_new_phone))
    assert [(i.code, i.expression) for i in refused.value.issues] == [
        ("business-rule", "ServiceRequest.identifier")
    ]
    assert len(_messages(store)) == count
    assert _push(store, settings, clock, _referral()).amended is False


def test_a_consent_that_now_refuses_withdraws_the_referral(
    store: OutboxStore, settings: Settings, clock: FixedClock
) -> None:
    """A re-push whose Consent now denies is refused, and the earlier referral is cancelled at
    the welfare side with the code ``consent-withdrawn``; nothing else is queued (no GP-record
    message) and pull access ends with the open Task."""
    first = _push(store, settings, clock, _referral())
    _deliver_all(store, clock)
    with pytest.raises(MappingError) as refused:
        _push(store, settings, clock, _referral(_consent_deny))
    issues = refused.value.issues
    assert any(i.severity == "error" and ".provision" in i.expression for i in issues)
    note = issues[-1]
    assert (note.severity, note.code) == ("information", "informational")
    assert first.task_id in note.diagnostics
    task = store.get_task(first.task_id)
    assert task is not None
    assert (task.status, task.reason_code) == ("cancelled", "consent-withdrawn")
    messages = _messages(store)
    assert [(k, d) for k, d, _ in messages] == [
        ("his-example", VOORBEELD),
        ("task", VOORBEELD),
    ]
    withdrawn = _task(messages[1][2])
    assert withdrawn["statusReason"]["coding"][0]["code"] == "consent-withdrawn"
    assert "text" not in withdrawn["statusReason"]


def test_a_consent_refusal_before_delivery_sends_nothing_at_all(
    store: OutboxStore, settings: Settings, clock: FixedClock
) -> None:
    """When the referral was not yet delivered, the withdrawal dead-letters it: the welfare
    organisation never receives the patient's data."""
    _push(store, settings, clock, _referral())
    with pytest.raises(MappingError):
        _push(store, settings, clock, _referral(_consent_deny))
    entries = store.list_entries(None, 100)
    assert [(e.destination, e.state) for e in entries] == [(VOORBEELD, "dead")]


def test_a_consent_refusal_of_an_unknown_referral_withdraws_nothing(
    store: OutboxStore, settings: Settings, clock: FixedClock
) -> None:
    """A first push refused for its Consent is only refused (no note, nothing stored)."""
    with pytest.raises(MappingError) as refused:
        _push(store, settings, clock, _referral(_consent_deny))
    assert all(i.severity == "error" for i in refused.value.issues)
    assert store.list_entries(None, 100) == []


def test_a_push_without_any_consent_withdraws_nothing(
    store: OutboxStore, settings: Settings, clock: FixedClock
) -> None:
    """A re-push that cites no Consent at all is refused but says nothing of the patient's wish:
    the earlier referral stays as it is."""
    first = _push(store, settings, clock, _referral())

    def no_consent(data: dict[str, Any]) -> None:
        data["supportingInfo"] = []

    with pytest.raises(MappingError) as refused:
        _push(store, settings, clock, _referral(no_consent))
    assert all(i.severity == "error" for i in refused.value.issues)
    task = store.get_task(first.task_id)
    assert task is not None
    assert task.status == "requested"


def test_another_gp_systems_push_never_touches_the_referral(
    store: OutboxStore, settings: Settings, clock: FixedClock
) -> None:
    """The same HIS identifier from another source system is another referral (another Task)."""
    first = _push(store, settings, clock, _referral())
    other = intake.accept_referral(
        store,
        settings,
        clock,
        data=_referral(_new_phone),
        content_type=JSON,
        caller=Caller("other-his", source_system="his-other"),
    )
    assert other.task_id != first.task_id
    assert other.created


def test_update_bundle_is_tagged_and_keeps_the_resources() -> None:
    """The update message differs from the referral only by its tag and its own Bundle id."""
    bundle = {"resourceType": "Bundle", "id": "b", "type": "transaction", "entry": []}
    update = amendment.update_bundle(copy.deepcopy(bundle), "f" * 32)
    assert amendment.is_update(update)
    assert not amendment.is_update(bundle)
    assert update["id"] != bundle["id"]
    assert update == amendment.update_bundle(copy.deepcopy(bundle), "f" * 32)
    assert {k: v for k, v in update.items() if k not in ("id", "meta")} == {
        k: v for k, v in bundle.items() if k != "id"
    }


@pytest.mark.parametrize(
    ("stored", "status", "new", "destination", "expected"),
    [
        (b"a", "requested", b"a", "x", "duplicate"),
        (b"a", "completed", b"a", "x", "duplicate"),
        (b"a", "completed", b"b", "x", "finished"),
        (b"a", "cancelled", b"b", "y", "finished"),
        (b"a", "accepted", b"b", "x", "update"),
        (b"a", "requested", b"b", "y", "redirect"),
        (b"a", "in-progress", b"a", "y", "redirect"),
    ],
)
def test_decide_table(
    stored: bytes, status: str, new: bytes, destination: str, expected: str
) -> None:
    """The decision table: unchanged, finished, same organisation, other organisation."""
    assert (
        amendment.decide(
            stored_bundle=stored,
            stored_destination="x",
            task_status=status,
            new_bundle=new,
            new_destination=destination,
        )
        == expected
    )
