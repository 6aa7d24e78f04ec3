"""The way back's use cases on the in-memory store: who may do what, and what travels where."""

from __future__ import annotations

import datetime as dt
import json

import pytest

import wor_bridge
from tests.cases import case_input
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.core import feedback as fb
from wor_bridge.core import fhir
from wor_bridge.core.settings import Settings
from wor_bridge.core.task import Refusal
from wor_bridge.usecases import deadline_alerts, intake, task_view, way_back
from wor_bridge.usecases.caller import Caller

WHEN = "2026-11-04T10:00:00+01:00"
GP = Caller("gp", source_system="his-example")
"""A GP-side caller of the system the fixture referral comes from (the configured one)."""


@pytest.fixture
def world(settings: Settings) -> tuple[MemoryOutboxStore, FixedClock, str]:
    """A store with the contained referral accepted, at a time before its deadline."""
    store = MemoryOutboxStore()
    clock = FixedClock(dt.datetime(2026, 11, 3, 9, 0, tzinfo=dt.UTC))
    accepted = intake.accept_referral(
        store,
        settings,
        clock,
        data=case_input("accepted-contained"),
        content_type=None,
        caller=Caller("his"),
    )
    return store, clock, accepted.task_id


def _apply(
    world: tuple[MemoryOutboxStore, FixedClock, str],
    settings: Settings,
    side: str = "welfare",
    destination: str | None = "welzijn-voorbeeld",
    **kw: object,
) -> way_back.Applied | Refusal:
    store, clock, task_id = world
    feedback = fb.Feedback(task_id=task_id, occurred_at=WHEN, **kw)  # type: ignore[arg-type]
    return way_back.apply_feedback(
        store,
        settings,
        clock,
        feedback,
        side=side,  # type: ignore[arg-type]
        caller=GP if destination is None else Caller("test"),
        destination=destination,
    )


def _messages(store: MemoryOutboxStore, prefix: str) -> list[dict[str, object]]:
    return [
        json.loads(e.payload)
        for e in store.list_entries(None, 100)
        if e.idempotency_key.startswith(prefix)
    ]


def _deliver_referral(world: tuple[MemoryOutboxStore, FixedClock, str]) -> None:
    store, clock, _ = world
    [entry] = store.claim_due("w", clock.now(), 60, 1)
    assert store.record_attempt(
        entry.id,
        "w",
        now=clock.now(),
        state="delivered",
        next_attempt_at=None,
        status=200,
        error=None,
    )


def test_gp_side_cancel_is_forwarded_to_the_welfare_destination(world, settings) -> None:
    """After delivery, a GP withdrawal updates the welfare side's Task through the outbox."""
    _deliver_referral(world)
    result = _apply(
        world, settings, side="gp", destination=None, status="cancelled", reason_code="gp-withdrew"
    )
    assert isinstance(result, way_back.Applied)
    store, _, task_id = world
    [update] = _messages(store, "task|")
    assert fhir.validate(update, "Bundle") == []
    task = update["entry"][0]["resource"]  # type: ignore[index]
    assert (task["id"], task["status"]) == (task_id, "cancelled")
    assert not _messages(store, "gp|")


def test_welfare_update_goes_to_the_gp_record_only(world, settings) -> None:
    """A welfare milestone reaches the GP record, not back to the welfare destination."""
    result = _apply(
        world,
        settings,
        status="in-progress",
        business_status="first-contact",
        items=(fb.FeedbackItem("first-contact", WHEN),),
    )
    assert isinstance(result, way_back.Applied)
    store, _, _ = world
    [bundle] = _messages(store, "gp|")
    kinds = [e["resource"]["resourceType"] for e in bundle["entry"]]  # type: ignore[index]
    assert kinds == ["Observation", "Task", "Communication"]
    assert not _messages(store, "task|")


def test_another_organisation_cannot_touch_the_task(world, settings) -> None:
    """A welfare client of another destination gets 404 (as for no Task) and changes nothing."""
    result = _apply(world, settings, destination="welzijn-rivierenland", status="accepted")
    assert result == way_back.NOT_FOUND
    store, _, task_id = world
    task = store.get_task(task_id)
    assert task is not None
    assert task.status == "requested"


def test_stale_version_is_refused(world, settings) -> None:
    """An update made against an old version is refused with 412."""
    store, clock, task_id = world
    result = way_back.apply_feedback(
        store,
        settings,
        clock,
        fb.Feedback(task_id=task_id, occurred_at=WHEN, status="accepted"),
        side="welfare",
        caller=Caller("t"),
        destination="welzijn-voorbeeld",
        expected_version=7,
    )
    assert isinstance(result, Refusal)
    assert result.http_status == 412


def test_items_that_fail_the_code_lists_are_refused(world, settings) -> None:
    """An activity category outside the CodeSystem or a PG score of 11 is refused with 422."""
    bad_category = _apply(
        world,
        settings,
        items=(fb.FeedbackItem("activity-started", WHEN, None, "paardrijden", "participant"),),
    )
    bad_score = _apply(world, settings, items=(fb.FeedbackItem("pg-zingeving", WHEN, 11),))
    long_note = _apply(world, settings, items=(fb.FeedbackItem("note", WHEN, "x" * 501),))
    for result in (bad_category, bad_score, long_note):
        assert isinstance(result, Refusal)
        assert result.http_status == 422


def test_deadline_alert_is_raised_once(world, settings) -> None:
    """Past the deadline without first contact: one alert message, and only one."""
    store, clock, task_id = world
    clock.set(dt.datetime(2026, 11, 20, tzinfo=dt.UTC))
    assert deadline_alerts.check_deadlines(store, settings, clock) == [task_id]
    assert deadline_alerts.check_deadlines(store, settings, clock) == []
    [alert] = _messages(store, "alert|")
    assert fhir.validate(alert, "Bundle") == []
    comm = alert["entry"][0]["resource"]  # type: ignore[index]
    assert comm["priority"] == "urgent"
    assert comm["recipient"][0]["identifier"]["value"] == "01000001"


def test_first_contact_in_time_means_no_alert(world, settings) -> None:
    """A first-contact milestone before the deadline prevents the alert."""
    _apply(world, settings, status="in-progress", business_status="first-contact")
    store, clock, _ = world
    clock.set(dt.datetime(2026, 11, 20, tzinfo=dt.UTC))
    assert deadline_alerts.check_deadlines(store, settings, clock) == []


def test_task_resource_shows_welfare_state_version_and_outputs(world, settings) -> None:
    """GET Task shows the welfare status, the version for If-Match and output references."""
    _apply(
        world,
        settings,
        status="in-progress",
        business_status="first-contact",
        items=(fb.FeedbackItem("first-contact", WHEN),),
    )
    store, clock, task_id = world
    task = task_view.read_task(store, clock, task_id, GP)
    assert isinstance(task, dict)
    assert (task["status"], task["meta"]["versionId"]) == ("in-progress", "2")
    assert task["businessStatus"]["coding"][0]["code"] == "first-contact"
    assert len(task["output"]) == 1
    assert fhir.validate(task, "Task") == []


def test_no_gp_record_configured_applies_without_forwarding(world) -> None:
    """Without feedback.gp_record the Task is updated but nothing is queued for a GP record."""
    plain = wor_bridge.load_settings()
    plain = plain.model_copy(
        update={"feedback": plain.feedback.model_copy(update={"gp_record": None})}
    )
    result = _apply(world, plain, status="accepted")
    assert isinstance(result, way_back.Applied)
    store, _, _ = world
    assert not _messages(store, "gp|")


def test_withdrawal_before_delivery_never_sends_the_referral(world, settings) -> None:
    """A GP withdrawal while the referral was never sent dead-letters it: no data, no cancel."""
    result = _apply(
        world, settings, side="gp", destination=None, status="cancelled", reason_code="gp-withdrew"
    )
    assert isinstance(result, way_back.Applied)
    store, clock, _ = world
    [referral] = store.list_entries(None, 10)
    assert (referral.state, referral.last_error) == ("dead", "withdrawn before delivery")
    assert not _messages(store, "task|")
    assert store.claim_due("w", clock.now(), 60, 10) == []


def test_messages_about_one_task_go_out_in_order(world, settings) -> None:
    """While the referral waits for a retry after a timeout, the later cancel is not claimable."""
    store, clock, _ = world
    [entry] = store.claim_due("w", clock.now(), 60, 1)
    later = clock.now() + dt.timedelta(minutes=10)
    store.record_attempt(
        entry.id,
        "w",
        now=clock.now(),
        state="pending",
        next_attempt_at=later,
        status=None,
        error="no response (timeout)",
    )
    _apply(
        world, settings, side="gp", destination=None, status="cancelled", reason_code="gp-withdrew"
    )
    [cancel] = [e for e in store.list_entries(None, 10) if e.idempotency_key.startswith("task|")]
    assert store.claim_due("w", clock.now(), 60, 10) == []  # the cancel waits for the referral
    claimed = store.claim_due("w", later, 60, 10)
    assert [e.id for e in claimed] == [entry.id]
    assert cancel.id != entry.id


def test_another_gp_system_cannot_touch_the_task(world, settings) -> None:
    """A GP-side caller speaking for another source system gets 404 on update and read."""
    store, clock, task_id = world
    other = Caller("his-2", source_system="his-other")
    feedback = fb.Feedback(
        task_id=task_id, occurred_at=WHEN, status="cancelled", reason_code="gp-withdrew"
    )
    result = way_back.apply_feedback(store, settings, clock, feedback, side="gp", caller=other)
    assert result == way_back.NOT_FOUND
    assert task_view.read_task(store, clock, task_id, other) == way_back.NOT_FOUND


def test_repeated_completion_has_one_effect(world, settings) -> None:
    """The same closure reported at two moments is one item: one Observation id, one message."""
    closed = fb.FeedbackItem("closed", WHEN, "completed-activity")
    later = fb.FeedbackItem("closed", "2026-11-05T09:00:00+01:00", "completed-activity")
    assert isinstance(_apply(world, settings, status="in-progress"), way_back.Applied)
    first = _apply(
        world, settings, status="completed", reason_code="completed-activity", items=(closed,)
    )
    store, _, _ = world
    sent = len(_messages(store, "gp|"))
    again = _apply(
        world, settings, status="completed", reason_code="completed-activity", items=(later,)
    )
    assert isinstance(first, way_back.Applied)
    assert isinstance(again, way_back.Applied)
    assert not again.changed
    assert len(_messages(store, "gp|")) == sent
