"""Feedback means what it says: a first contact counts even when consent keeps the item from the
GP record, and an Observation ``entered-in-error`` retracts the earlier item (the GP record gets
the correction)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from tests.cases import case_input
from tests.loopback_bridge import WELFARE, Bridge
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.core import feedback as fb
from wor_bridge.core.settings import Settings
from wor_bridge.core.task import Refusal
from wor_bridge.usecases import deadline_alerts, intake, way_back
from wor_bridge.usecases.caller import Caller

WHEN = "2026-11-04T10:00:00+01:00"
ITEM = "https://wor-bridge.nl/fhir/CodeSystem/feedback-item"


def _accepted(settings: Settings, case: str) -> tuple[MemoryOutboxStore, FixedClock, str]:
    store = MemoryOutboxStore()
    clock = FixedClock(dt.datetime(2026, 11, 3, 9, 0, tzinfo=dt.UTC))
    accepted = intake.accept_referral(
        store, settings, clock, data=case_input(case), content_type=None, caller=Caller("his")
    )
    return store, clock, accepted.task_id


def _welfare(
    store: MemoryOutboxStore, settings: Settings, clock: FixedClock, feedback: fb.Feedback
) -> way_back.Applied | Refusal:
    return way_back.apply_feedback(
        store,
        settings,
        clock,
        feedback,
        side="welfare",
        caller=Caller("welfare"),
        destination="welzijn-voorbeeld",
    )


@pytest.mark.parametrize("reported", [True, False])
def test_first_contact_kept_back_by_consent_still_stops_the_deadline_alert(
    settings: Settings, reported: bool
) -> None:
    """A first contact consent keeps from the GP record still stops the deadline alert."""
    store, clock, task_id = _accepted(settings, "accepted-email-only-no-bsn")
    items = (fb.FeedbackItem("first-contact", WHEN),) if reported else ()
    applied = _welfare(store, settings, clock, fb.Feedback(task_id, WHEN, "accepted", items=items))
    assert isinstance(applied, way_back.Applied)
    assert applied.dropped == len(items)
    clock.advance(30 * 24 * 3600)
    alerted = deadline_alerts.check_deadlines(store, settings, clock)
    assert alerted == ([] if reported else [task_id])
    task = store.get_task(task_id)
    assert task is not None
    assert (task.first_contact_at is not None) is reported


def test_retraction_of_a_withheld_item_has_no_effect(settings: Settings) -> None:
    """An item consent kept back, withdrawn later: nothing travels, nothing is refused."""
    store, clock, task_id = _accepted(settings, "accepted-email-only-no-bsn")
    item = fb.FeedbackItem("first-contact", WHEN)
    _welfare(store, settings, clock, fb.Feedback(task_id, WHEN, "accepted", items=(item,)))
    retraction = fb.FeedbackItem("first-contact", WHEN, retracted=True)
    result = _welfare(store, settings, clock, fb.Feedback(task_id, WHEN, items=(retraction,)))
    assert isinstance(result, way_back.Applied)
    assert (result.changed, result.dropped) == (False, 1)


def _observation(task_id: str, status: str = "final", when: str = WHEN) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": status,
        "code": {"coding": [{"system": ITEM, "code": "first-contact"}]},
        "focus": [{"reference": f"Task/{task_id}"}],
        "effectiveDateTime": when,
    }


def _post(bridge: Bridge, observation: dict[str, Any]) -> Any:
    headers = {**WELFARE, "Content-Type": "application/fhir+json"}
    return bridge.call(
        "POST", "/fhir/r4/Observation", content=json.dumps(observation).encode(), headers=headers
    )


def test_entered_in_error_retracts_the_item_in_the_gp_record(bridge: Bridge) -> None:
    """entered-in-error retracts the item at the GP record, once; a retraction of nothing: 422."""
    task_id = bridge.push()
    bridge.deliver()
    assert _post(bridge, _observation(task_id)).status_code == 201
    bridge.deliver()
    [reported] = bridge.gp.resources("Observation")
    assert reported["status"] == "final"
    assert bridge.get(task_id).json()["output"]
    answer = _post(bridge, _observation(task_id, "entered-in-error"))
    assert answer.status_code == 201, answer.json()
    assert answer.headers["location"].endswith(f"/Observation/{reported['id']}/_history/2")
    assert answer.json()["status"] == "entered-in-error"
    bridge.deliver()
    [corrected] = bridge.gp.resources("Observation")
    assert corrected["id"] == reported["id"]
    assert corrected["status"] == "entered-in-error"
    [task] = [t for t in bridge.gp.resources("Task") if t["id"] == task_id]
    assert "output" not in task
    assert "output" not in bridge.get(task_id).json()
    read = bridge.call("GET", f"/fhir/r4/Observation/{reported['id']}", headers=WELFARE)
    assert (read.status_code, read.headers["etag"]) == (200, 'W/"2"')
    assert read.json()["status"] == "entered-in-error"
    notes = [c["payload"][0]["contentString"] for c in bridge.gp.resources("Communication")]
    assert any("ingetrokken" in n for n in notes)
    writes = len(bridge.gp.requests())
    repeat = _post(bridge, _observation(task_id, "entered-in-error"))
    assert repeat.status_code == 200  # the same retraction again: no second effect
    bridge.deliver()
    assert len(bridge.gp.requests()) == writes
    nothing = _post(bridge, _observation(task_id, "entered-in-error", "2026-11-05T09:00:00+01:00"))
    assert nothing.status_code == 422  # another first-contact date: not the item reported
    other = {
        **_observation(task_id, "entered-in-error"),
        "code": {"coding": [{"system": ITEM, "code": "intake-done"}]},
    }
    refused = _post(bridge, other)
    assert refused.status_code == 422
    assert "retracts an earlier feedback item" in refused.json()["issue"][0]["diagnostics"]
