"""A referral amendment reaches every destination type as an update of what it holds: the new
content arrives, nothing is created twice, and the receiver's Task is left alone."""

from __future__ import annotations

import json

import pytest

from tests.test_exactly_once import MODES, _amendment, _delivered, servers, world  # noqa: F401
from wor_bridge.core.settings import Settings
from wor_bridge.demo.fhir_server import SimulatedFhirServer

NEW_PHONE = "06-00000002"  # the synthetic number the amendment writes


def _holds(server: SimulatedFhirServer, rtype: str) -> list[dict[str, object]]:
    return list(server.resources(rtype))


@pytest.mark.parametrize(
    ("dtype", "label"), [(d, label) for d, modes in MODES.items() for label, _ in modes]
)
def test_an_amendment_updates_what_the_receiver_holds(
    settings: Settings,
    servers: tuple[SimulatedFhirServer, SimulatedFhirServer],  # noqa: F811
    dtype: str,
    label: str,
) -> None:
    """After the change: FHIR R4 holds the new phone on the same Patient (one Patient, one
    ServiceRequest, the Task as the referral left it); notified pull still holds one notification
    Task, now updated (TA mode: a second Notification in the same group); ZorgDomein holds a
    second document, without a Task of its own."""
    changes = dict(MODES[dtype])[label]
    for w in world(settings, servers, dtype, changes):
        _delivered(w)
        before = {t: json.dumps(_holds(w.welfare, t), sort_keys=True) for t in ("Task", "Bundle")}
        _amendment(w)
        w.deliver_all()
        entries = w.store.list_entries(None, 100)
        assert {e.state for e in entries} == {"delivered"}
        if dtype == "fhir-r4":
            patients = _holds(w.welfare, "Patient")
            assert len(patients) == 1
            assert NEW_PHONE in json.dumps(patients[0])
            assert len(_holds(w.welfare, "ServiceRequest")) == 1
            assert json.dumps(_holds(w.welfare, "Task"), sort_keys=True) == before["Task"]
        elif label == "ta-np":  # Twiin-01 again: a second Notification in the same group
            tasks = _holds(w.welfare, "Task")
            assert len(tasks) == 2
            assert len({json.dumps(t["groupIdentifier"]) for t in tasks}) == 1
            assert len({json.dumps(t["identifier"]) for t in tasks}) == 2
            assert NEW_PHONE not in json.dumps(tasks)  # a notification carries no personal data
        elif dtype == "notified-pull-stu3":
            tasks = _holds(w.welfare, "Task")
            assert len(tasks) == 1
            assert json.dumps(tasks, sort_keys=True) != before["Task"]
            assert NEW_PHONE not in json.dumps(tasks)  # a notification carries no personal data
        else:
            documents = _holds(w.welfare, "Bundle")
            assert len(documents) == 2
            newest = next(
                d for d in documents if json.dumps(d, sort_keys=True) not in before["Bundle"]
            )
            kinds = [e["resource"]["resourceType"] for e in newest["entry"]]  # type: ignore[index,union-attr]
            assert "Task" not in kinds
            assert NEW_PHONE in json.dumps(newest)
