"""Golden files per channel: a welfare system's input -> the Bundle the GP record receives.

Each case under ``fixtures/channels/<channel>/<case>/`` holds the input as the welfare side sends
it (``input.json``: a Task or an Observation for the FHIR channel, the sender's own JSON for the
webhook channel), the reviewed GP-record transaction Bundle (``expected.gp-bundle.json``) and two
lines about the case (``case.md``). The input goes through the channel's connector into a
``Feedback``, which ``way_back.apply_feedback`` applies to the stored ``accepted-contained``
referral (in a ``MemoryOutboxStore``, on a ``FixedClock``); the outbox message for the GP record is
compared with the golden. ``--update-goldens`` rewrites the expected files (review the diff).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cases import PATIENT_VALUES, REPO, case_input
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.connectors import fhir_feedback, webhook
from wor_bridge.core import feedback as fb
from wor_bridge.core import fhir
from wor_bridge.core.settings import Settings
from wor_bridge.core.task import Refusal
from wor_bridge.usecases import intake, way_back
from wor_bridge.usecases.caller import Caller

Json = dict[str, Any]
GOLDEN = REPO / "fixtures" / "channels"
WEBHOOK_MAPPING = REPO / "mappings" / "feedback" / "welzijn-json.json"
REFERRAL = "accepted-contained"
HIS = {"system": "urn:oid:2.16.528.1.1007.99.1234.1", "value": "VW-2026-0001"}
REFERRER = {"system": "http://fhir.nl/fhir/NamingSystem/agb-z", "value": "01000001"}
BSN = "999990007"
WELFARE = Caller("welzijn-voorbeeld-system")
HIS_CALLER = Caller("his-example", "his-example", "practice")
START = dt.datetime(2026, 11, 3, 8, 0, tzinfo=dt.UTC)
BEFORE_AT = "2026-11-03T09:00:00+01:00"


@dataclass(frozen=True)
class Case:
    """One channel input, the Task state it meets, and what the GP record must receive."""

    channel: str
    name: str
    before: tuple[str, str | None] | None
    about: str
    status: str
    codes: tuple[str, ...]

    @property
    def folder(self) -> Path:
        """Where the case's files are."""
        return GOLDEN / self.channel / self.name

    @property
    def id(self) -> str:
        """``channel/name``."""
        return f"{self.channel}/{self.name}"


CASES = (
    Case(
        "fhir",
        "task-accepted-waiting-list",
        None,
        "PUT Task: accepted, businessStatus waiting-list.",
        "accepted",
        (),
    ),
    Case(
        "fhir",
        "task-failed-not-reachable",
        None,
        "PUT Task: failed with statusReason not-reachable (the closure reason is an item too).",
        "failed",
        ("closed",),
    ),
    Case(
        "fhir",
        "task-completed-conversations",
        ("in-progress", "first-contact"),
        "PUT Task: completed/closed with closure reason completed-conversations and a reason text.",
        "completed",
        ("closed",),
    ),
    Case(
        "fhir",
        "observation-conversation-count",
        ("in-progress", "first-contact"),
        "POST Observation basedOn ServiceRequest/<id>: conversation-count 3.",
        "in-progress",
        ("conversation-count",),
    ),
    Case(
        "fhir",
        "observation-activity-started",
        ("in-progress", "first-contact"),
        "POST Observation focus Task/<id>: activity Bewegen & sporten, role participant.",
        "in-progress",
        ("activity-started",),
    ),
    Case(
        "webhook",
        "first-contact",
        None,
        "Signed JSON: status bezig, milestone eerste_contact with its date.",
        "in-progress",
        ("first-contact",),
    ),
    Case(
        "webhook",
        "activity-started",
        ("in-progress", "first-contact"),
        "Signed JSON: milestone activiteit_gestart, bewegen as deelnemer.",
        "in-progress",
        ("activity-started",),
    ),
    Case(
        "webhook",
        "completed-with-activity",
        ("in-progress", "activity-started"),
        "Signed JSON: afgerond (afgerond_activiteit), 4 conversations, follow-up 3, note, coach.",
        "completed",
        ("closed", "conversation-count", "follow-up", "note"),
    ),
    Case(
        "webhook",
        "not-reachable",
        None,
        "Signed JSON: niet_bereikbaar with closure reason and a reason text.",
        "failed",
        ("closed",),
    ),
)
BY_ID = {case.id: case for case in CASES}
IDS = [case.id for case in CASES]


def _feedback(
    case: Case, settings: Settings, store: MemoryOutboxStore, clock: FixedClock
) -> fb.Feedback:
    """The channel's connector applied to the case's input, as the service's routes do."""
    raw = (case.folder / "input.json").read_bytes()
    if case.channel == "webhook":
        return webhook.parse(webhook.load_mapping(WEBHOOK_MAPPING, settings.codes), raw)
    data: Json = json.loads(raw)
    now = clock.now().isoformat(timespec="seconds")
    if data["resourceType"] == "Task":
        return fhir_feedback.task_feedback(str(data["id"]), data, now)
    request_id, task_id = fhir_feedback.referenced_ids(data)
    task_id = task_id or store.task_for_request(request_id or "")
    assert task_id, "the Observation must point at the referral"
    item = fhir_feedback.observation_item(data, "Observation")
    return fb.Feedback(task_id=task_id, occurred_at=item.effective, items=(item,))


def _gp_bundle(case: Case, settings: Settings) -> Json:
    """The GP-record message the case's input produces."""
    store, clock = MemoryOutboxStore(), FixedClock(START)
    accepted = intake.accept_referral(
        store, settings, clock, data=case_input(REFERRAL), content_type=None, caller=HIS_CALLER
    )
    if case.before is not None:
        status, business = case.before
        earlier = fb.Feedback(accepted.task_id, BEFORE_AT, status, business)
        assert isinstance(_apply(store, settings, clock, earlier), way_back.Applied)
    known = {e.id for e in store.list_entries(None, -1)}
    clock.advance(3600)
    result = _apply(store, settings, clock, _feedback(case, settings, store, clock))
    assert isinstance(result, way_back.Applied), result
    assert result.changed
    assert result.dropped == 0
    [entry] = [e for e in store.list_entries(None, -1) if e.id not in known]
    assert entry.destination == settings.feedback.gp_record == "gp-record"
    assert entry.task_id == accepted.task_id
    bundle: Json = json.loads(entry.payload)
    return bundle


def _apply(
    store: MemoryOutboxStore, settings: Settings, clock: FixedClock, feedback: fb.Feedback
) -> way_back.Applied | Refusal:
    return way_back.apply_feedback(
        store,
        settings,
        clock,
        feedback,
        side="welfare",
        caller=WELFARE,
        destination="welzijn-voorbeeld",
    )


def _compare(path: Path, produced: bytes, update: bool) -> None:
    if update or not path.exists():
        path.write_bytes(produced + b"\n")
        if not update:
            pytest.fail(f"{path.parent.name}: golden {path.name} was missing; written, review it")
    assert produced + b"\n" == path.read_bytes(), f"{path.parent.name}: differs from {path.name}"


def _golden(case: Case) -> Json:
    data: Json = json.loads((case.folder / "expected.gp-bundle.json").read_bytes())
    return data


def _entries(bundle: Json, rtype: str) -> list[Json]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


# --- goldens ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", IDS)
def test_channel_input_maps_to_golden_gp_bundle(
    case_id: str, settings: Settings, update_goldens: bool
) -> None:
    """Each channel input yields exactly its reviewed GP-record Bundle."""
    case = BY_ID[case_id]
    produced = fhir.canonical_json(_gp_bundle(case, settings), pretty=True)
    _compare(case.folder / "expected.gp-bundle.json", produced, update_goldens)


@pytest.mark.parametrize("case_id", IDS)
def test_case_description_is_current(case_id: str, update_goldens: bool) -> None:
    """case.md holds the case's two lines: what arrives, from which state, what must travel."""
    case = BY_ID[case_id]
    before = "requested/-" if case.before is None else f"{case.before[0]}/{case.before[1] or '-'}"
    items = ", ".join(case.codes) or "none"
    text = (
        f"{case.about} Referral {REFERRAL}; Task before: {before}.\n"
        f"Expect: Task {case.status}; Observations: {items}; a Communication to the referrer."
    )
    _compare(case.folder / "case.md", text.encode(), update_goldens)


def test_golden_folders_hold_only_known_cases() -> None:
    """Every folder under fixtures/channels is a case of this module, with its three files."""
    found = sorted(f"{p.parent.name}/{p.name}" for p in GOLDEN.glob("*/*") if p.is_dir())
    assert found == sorted(IDS)
    for case in CASES:
        names = sorted(p.name for p in case.folder.iterdir())
        assert names == ["case.md", "expected.gp-bundle.json", "input.json"], case.id


def test_each_channel_and_input_kind_is_covered() -> None:
    """The FHIR channel has Task and Observation inputs; the webhook channel has JSON inputs."""
    kinds = {
        (case.channel, json.loads((case.folder / "input.json").read_bytes()).get("resourceType"))
        for case in CASES
    }
    assert kinds == {("fhir", "Task"), ("fhir", "Observation"), ("webhook", None)}


# --- properties of every golden -------------------------------------------------------------------


@pytest.mark.parametrize("case_id", IDS)
def test_golden_is_a_valid_r4_transaction(case_id: str) -> None:
    """The golden validates and round-trips as an R4 transaction of PUTs, fullUrls unique."""
    bundle = _golden(BY_ID[case_id])
    assert fhir.validate(bundle, "Bundle") == []
    assert fhir.round_trip(bundle) == bundle
    assert bundle["type"] == "transaction"
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(full_urls) == len(set(full_urls))
    for entry in bundle["entry"]:
        res = entry["resource"]
        assert entry["request"] == {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}


@pytest.mark.parametrize("case_id", IDS)
def test_golden_carries_the_status_items_and_addresses(case_id: str) -> None:
    """Task status, Observation codes, basedOn the HIS number, Communication to the referrer."""
    case = BY_ID[case_id]
    bundle = _golden(case)
    [task] = _entries(bundle, "Task")
    assert task["status"] == case.status
    observations = _entries(bundle, "Observation")
    assert tuple(o["code"]["coding"][0]["code"] for o in observations) == case.codes
    based_on = [{"type": "ServiceRequest", "identifier": HIS}]
    for resource in (*observations, task):
        assert resource["basedOn"] == based_on
    for obs in observations:
        assert obs["status"] == "final"
        assert obs["subject"]["identifier"]["value"] == BSN
    outputs = [o["valueReference"]["reference"] for o in task.get("output", [])]
    assert outputs == [f"urn:uuid:{o['id']}" for o in observations]
    [comm] = _entries(bundle, "Communication")
    assert comm["basedOn"] == based_on
    assert [r["identifier"] for r in comm["recipient"]] == [REFERRER]
    assert comm["payload"][0]["contentString"].startswith(
        f"Welzijn op Recept: status {case.status}"
    )


@pytest.mark.parametrize("case_id", IDS)
def test_golden_carries_no_patient_value_but_the_bsn(case_id: str) -> None:
    """No name, address, contact, birth date or referral text travels to the GP record."""
    text = (BY_ID[case_id].folder / "expected.gp-bundle.json").read_text(encoding="utf-8")
    assert [v for v in PATIENT_VALUES if v != BSN and v in text] == []


def test_same_activity_gives_the_same_observation_over_either_channel() -> None:
    """The activity reported as FHIR Observation or as webhook JSON is one and the same resource."""
    [from_fhir] = _entries(_golden(BY_ID["fhir/observation-activity-started"]), "Observation")
    [from_hook] = _entries(_golden(BY_ID["webhook/activity-started"]), "Observation")
    assert from_fhir == from_hook
    assert from_fhir["valueCodeableConcept"]["coding"][0]["code"] == "bewegen-sporten"
    assert from_fhir["component"][0]["valueCodeableConcept"]["coding"][0]["code"] == "participant"
