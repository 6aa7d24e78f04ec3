"""Feedback to the GP record: golden Bundles, consent, references, idempotence, no patient text."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.cases import FIXTURES, PATIENT_VALUES, REPO
from wor_bridge.core import feedback as fb
from wor_bridge.core import fhir, gp_record
from wor_bridge.core.task import Reason, TaskState, transition

Json = dict[str, Any]
GOLDEN = REPO / "fixtures" / "feedback"
CODESYSTEMS = REPO / "mappings" / "codesystems"
MAPPING = "wor-r4-default@1.0.0"
BSN_SYSTEM = "http://fhir.nl/fhir/NamingSystem/bsn"
BSN = "999990007"
AGB = "http://fhir.nl/fhir/NamingSystem/agb-z"
URI = "urn:ietf:rfc:3986"
LOCAL_CS = "https://wor-bridge.nl/fhir/CodeSystem/"
NOTE = "Doet elke dinsdag mee met de wandelgroep en geniet ervan"
PG_SCORES = (
    ("pg-lichaamsfuncties", 6),
    ("pg-mentaal-welbevinden", 5),
    ("pg-zingeving", 7),
    ("pg-kwaliteit-van-leven", 6),
    ("pg-meedoen", 4),
    ("pg-dagelijks-functioneren", 8),
)


@cache
def _stored(referral: str) -> Json:
    """The stored referral Bundle (the accepted golden) of a referral fixture."""
    data: Json = json.loads((FIXTURES / referral / "expected.bundle.json").read_bytes())
    return data


def _resource(referral: str, rtype: str) -> Json:
    return next(
        e["resource"] for e in _stored(referral)["entry"] if e["resource"]["resourceType"] == rtype
    )


def _task_id(referral: str) -> str:
    return str(_resource(referral, "Task")["id"])


def _context(referral: str, *, bsn: bool) -> fb.ReferralContext:
    """The context as the bridge builds it: audit patient id is the BSN or the bridge's own id."""
    patient = f"{BSN_SYSTEM}|{BSN}" if bsn else f"urn:uuid:{_resource(referral, 'Patient')['id']}"
    return fb.context_from_bundle(_task_id(referral), _stored(referral), patient)


def _his_identifier(referral: str) -> Json:
    """The HIS referral number (the ServiceRequest identifier that is not the bridge's own)."""
    request = _resource(referral, "ServiceRequest")
    return next(i for i in request["identifier"] if i["system"] != URI)


@dataclass(frozen=True)
class Case:
    """One golden: a referral fixture, the Task state before, and the Feedback that arrives."""

    name: str
    referral: str
    bsn: bool
    before: TaskState
    feedback: fb.Feedback
    about: str
    expect: str


def _feedback(referral: str, occurred_at: str, **kwargs: Any) -> fb.Feedback:
    return fb.Feedback(task_id=_task_id(referral), occurred_at=occurred_at, **kwargs)


CONTAINED = "accepted-contained"
POH = "accepted-poh-booked-appointment"
NO_BSN = "accepted-email-only-no-bsn"
COMPLETED_ITEMS = (
    fb.FeedbackItem("closed", "2027-02-10", "completed-activity"),
    fb.FeedbackItem("note", "2027-02-10", NOTE),
    fb.FeedbackItem("follow-up", "2027-02-10", 3),
)
PG_ITEMS = tuple(fb.FeedbackItem(kind, "2026-12-01", score) for kind, score in PG_SCORES)

CASES = (
    Case(
        "first-contact",
        CONTAINED,
        True,
        TaskState("accepted"),
        _feedback(
            CONTAINED,
            "2026-11-06T14:30:00+01:00",
            status="in-progress",
            business_status="first-contact",
            items=(fb.FeedbackItem("first-contact", "2026-11-06", "2026-11-06T14:00:00+01:00"),),
        ),
        "First contact with its date; consent covers feedback.",
        "Expect: one Observation first-contact; Task in-progress/first-contact with output.",
    ),
    Case(
        "intake-and-conversations",
        CONTAINED,
        True,
        TaskState("in-progress", "first-contact"),
        _feedback(
            CONTAINED,
            "2026-11-27T09:00:00+01:00",
            business_status="conversations",
            items=(
                fb.FeedbackItem("intake-done", "2026-11-13", True),
                fb.FeedbackItem("conversation-count", "2026-11-27", 3),
            ),
        ),
        "Milestone-only update (no status): intake done and three conversations.",
        "Expect: two Observations; the status stays in-progress, businessStatus conversations.",
    ),
    Case(
        "activity-started",
        CONTAINED,
        True,
        TaskState("in-progress", "conversations"),
        _feedback(
            CONTAINED,
            "2026-12-04T11:00:00+01:00",
            status="in-progress",
            business_status="activity-started",
            items=(
                fb.FeedbackItem(
                    "activity-started", "2026-12-03", None, "bewegen-sporten", "participant"
                ),
            ),
            coach=fb.Coach("Coach Team Noord", ("https://welzijn.example.org/coach", "C-017")),
        ),
        "Activity started: Bewegen & sporten as participant; the coach is named.",
        "Expect: one Observation (category + role component), the coach as second performer.",
    ),
    Case(
        "completed-with-activity",
        CONTAINED,
        True,
        TaskState("in-progress", "activity-started"),
        _feedback(
            CONTAINED,
            "2027-02-10T16:00:00+01:00",
            status="completed",
            business_status="closed",
            reason_code="completed-activity",
            items=COMPLETED_ITEMS,
        ),
        "Closed: completed with activity, a short note and follow-up in 3 months.",
        "Expect: three Observations; Task completed with statusReason; summary without the note.",
    ),
    Case(
        "failed-not-reachable",
        CONTAINED,
        True,
        TaskState("accepted", "waiting-list"),
        _feedback(
            CONTAINED,
            "2026-11-20T10:00:00+01:00",
            status="failed",
            reason_code="not-reachable",
            items=(fb.FeedbackItem("closed", "2026-11-20", "not-reachable"),),
        ),
        "Client not reachable: status failed with reason not-reachable.",
        "Expect: one Observation closed/not-reachable; Task failed with statusReason.",
    ),
    Case(
        "pg-scores-without-pg-consent",
        CONTAINED,
        True,
        TaskState("in-progress", "conversations"),
        _feedback(CONTAINED, "2026-12-01T15:00:00+01:00", items=PG_ITEMS),
        "Positieve Gezondheid scores (six) on a referral whose consent covers feedback, not PG.",
        "Expect: all six dropped (counted); only the Task and the Communication travel.",
    ),
    Case(
        "pg-scores",
        POH,
        True,
        TaskState("in-progress", "conversations"),
        _feedback(POH, "2026-12-01T15:00:00+01:00", items=PG_ITEMS),
        "Positieve Gezondheid scores, all six dimensions; consent covers feedback and pg-scores.",
        "Expect: six Observations (valueInteger); Task keeps in-progress/conversations.",
    ),
    Case(
        "no-feedback-consent-no-bsn",
        NO_BSN,
        False,
        TaskState("in-progress", "activity-started"),
        _feedback(
            NO_BSN,
            "2027-02-10T16:00:00+01:00",
            status="completed",
            business_status="closed",
            reason_code="completed-activity",
            items=COMPLETED_ITEMS,
        ),
        "Completed on a referral without BSN whose consent does not cover feedback.",
        "Expect: items dropped (3); only Task (no for) and Communication (no subject) travel.",
    ),
)
BY_NAME = {case.name: case for case in CASES}
NAMES = [case.name for case in CASES]


def _reason(feedback: fb.Feedback) -> Reason | None:
    if feedback.reason_code or feedback.reason_text:
        return Reason(feedback.reason_code, feedback.reason_text)
    return None


def _state(case: Case) -> TaskState:
    """The state after the welfare-side update of the case (it must be accepted)."""
    f = case.feedback
    state = transition(case.before, "welfare", f.status, f.business_status, _reason(f))
    assert isinstance(state, TaskState), state
    return state


def _gp(case: Case) -> gp_record.GpBundle:
    context = _context(case.referral, bsn=case.bsn)
    return gp_record.to_gp_bundle(context, case.feedback, _state(case), MAPPING)


def _entries(bundle: Json, rtype: str) -> list[Json]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def _one(bundle: Json, rtype: str) -> Json:
    found = _entries(bundle, rtype)
    assert len(found) == 1, f"expected one {rtype}, got {len(found)}"
    return found[0]


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every (path, value) in a JSON tree, containers included."""
    out = [(path, node)]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _walk(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _walk(value, f"{path}[{i}]")
    return out


def _empty_elements(bundle: Json) -> list[str]:
    """Paths of empty objects, arrays or strings (FHIR JSON forbids them, ele-1)."""
    return [p for p, v in _walk(bundle) if isinstance(v, dict | list | str) and not v]


def _compare(path: Path, produced: bytes, update: bool) -> None:
    if update or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(produced + b"\n")
        if not update:
            pytest.fail(f"{path.parent.name}: golden {path.name} was missing; written, review it")
    assert produced + b"\n" == path.read_bytes(), f"{path.parent.name}: differs from {path.name}"


# --- goldens ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_feedback_maps_to_golden_gp_bundle(name: str, update_goldens: bool) -> None:
    """Each Feedback case maps to exactly its reviewed GP-record Bundle."""
    produced = fhir.canonical_json(_gp(BY_NAME[name]).bundle, pretty=True)
    _compare(GOLDEN / name / "expected.gp-bundle.json", produced, update_goldens)


@pytest.mark.parametrize("name", NAMES)
def test_golden_input_and_description_are_current(name: str, update_goldens: bool) -> None:
    """feedback.json is the case's Feedback (dataclasses.asdict) and case.md its two lines."""
    case = BY_NAME[name]
    as_json = json.dumps(dataclasses.asdict(case.feedback), ensure_ascii=False, indent=2)
    _compare(GOLDEN / name / "feedback.json", as_json.encode(), update_goldens)
    before = f"{case.before.status}/{case.before.business_status or '-'}"
    about = f"{case.about} Referral {case.referral}; Task before: {before}.\n{case.expect}"
    _compare(GOLDEN / name / "case.md", about.encode(), update_goldens)
    assert len((GOLDEN / name / "case.md").read_text(encoding="utf-8").splitlines()) == 2


def test_golden_folder_holds_only_known_cases() -> None:
    """Every folder under fixtures/feedback is a case of this module (no stale goldens)."""
    assert sorted(p.name for p in GOLDEN.iterdir() if p.is_dir()) == sorted(NAMES)


# --- properties of every golden Bundle -----------------------------------------------------------


def _golden(name: str) -> Json:
    data: Json = json.loads((GOLDEN / name / "expected.gp-bundle.json").read_bytes())
    return data


@pytest.mark.parametrize("name", NAMES)
def test_gp_bundle_is_valid_r4_and_round_trips(name: str) -> None:
    """The Bundle validates as an R4 transaction and round-trips unchanged through the models."""
    bundle = _golden(name)
    assert fhir.validate(bundle, "Bundle") == []
    assert fhir.round_trip(bundle) == bundle
    assert bundle["type"] == "transaction"
    assert _empty_elements(bundle) == []
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(full_urls) == len(set(full_urls)), "fullUrl must be unique (bdl-7)"
    for entry in bundle["entry"]:
        res = entry["resource"]
        assert entry["request"] == {"method": "PUT", "url": f"{res['resourceType']}/{res['id']}"}


@pytest.mark.parametrize("name", NAMES)
def test_observations_are_final_local_and_based_on_the_referral(name: str) -> None:
    """Each Observation: final, local category and code, basedOn the HIS number, effective."""
    case = BY_NAME[name]
    bundle = _golden(name)
    items = _codes("feedback-item")
    based_on = {"type": "ServiceRequest", "identifier": _his_identifier(case.referral)}
    for obs in _entries(bundle, "Observation"):
        assert obs["status"] == "final"
        assert obs["category"][0]["coding"][0]["system"] == fb.FEEDBACK_CATEGORY
        assert obs["category"][0]["coding"][0]["code"] in _codes("feedback-category")
        [coding] = obs["code"]["coding"]
        assert coding["system"] == f"{LOCAL_CS}feedback-item"
        assert coding["code"] in items
        assert obs["basedOn"] == [based_on]
        assert obs["effectiveDateTime"]
        assert obs["subject"] == {
            "type": "Patient",
            "identifier": {"system": BSN_SYSTEM, "value": BSN},
        }
        assert obs["performer"][0]["identifier"]["value"] == "90000001"
        assert sum(k.startswith("value") for k in obs) == 1


@pytest.mark.parametrize("name", NAMES)
def test_communication_goes_to_the_referrer(name: str) -> None:
    """The Communication is addressed to the referrer by AGB 01000001 and part of the Task."""
    case = BY_NAME[name]
    bundle = _golden(name)
    comm = _one(bundle, "Communication")
    [recipient] = comm["recipient"]
    assert recipient["type"] in ("Practitioner", "PractitionerRole")
    assert recipient["identifier"] == {"system": AGB, "value": "01000001"}
    assert comm["partOf"] == [{"reference": f"urn:uuid:{_task_id(case.referral)}"}]
    assert comm["basedOn"] == [
        {"type": "ServiceRequest", "identifier": _his_identifier(case.referral)}
    ]


@pytest.mark.parametrize("name", NAMES)
def test_task_output_references_exactly_the_observations(name: str) -> None:
    """Task.output lists each Observation of the Bundle once, and nothing else."""
    case = BY_NAME[name]
    bundle = _golden(name)
    task = _one(bundle, "Task")
    assert task["id"] == _task_id(case.referral)
    assert task["status"] == _state(case).status
    outputs = [o["valueReference"]["reference"] for o in task.get("output", [])]
    observations = [f"urn:uuid:{o['id']}" for o in _entries(bundle, "Observation")]
    assert sorted(outputs) == sorted(observations)
    assert len(outputs) == len(set(outputs))


@pytest.mark.parametrize("name", NAMES)
def test_urn_references_resolve_to_entries(name: str) -> None:
    """Every urn:uuid reference points at a fullUrl of the Bundle; nothing dangles."""
    bundle = _golden(name)
    full_urls = {e["fullUrl"] for e in bundle["entry"]}
    refs = [v["reference"] for _, v in _walk(bundle) if isinstance(v, dict) and "reference" in v]
    assert refs, "a GP Bundle always references the Task from the Communication"
    for ref in refs:
        assert ref.startswith("urn:uuid:"), ref
        assert ref in full_urls, ref


@pytest.mark.parametrize("name", NAMES)
def test_gp_bundle_carries_no_patient_value_but_the_bsn(name: str) -> None:
    """No name, address, contact, birth date, referral text or bridge patient id travels."""
    case = BY_NAME[name]
    text = (GOLDEN / name / "expected.gp-bundle.json").read_text(encoding="utf-8")
    leaks = [n for n, value in enumerate(PATIENT_VALUES) if value != BSN and value in text]
    assert not leaks, f"patient values #{leaks} in the GP bundle"  # indexes only
    assert _resource(case.referral, "Patient")["id"] not in text
    if not case.bsn:
        assert BSN_SYSTEM not in text


def _codes(codesystem: str) -> dict[str, str]:
    data = json.loads((CODESYSTEMS / f"{codesystem}.json").read_bytes())
    return {c["code"]: c.get("display", "") for c in data["concept"]}


def test_local_codings_are_defined_in_the_shipped_codesystems() -> None:
    """Every local coding's code exists in its shipped CodeSystem and its display is that one."""
    wrong = []
    for name in NAMES:
        for path, node in _walk(_golden(name)):
            if not (isinstance(node, dict) and str(node.get("system", "")).startswith(LOCAL_CS)):
                continue
            file = node["system"].removeprefix(LOCAL_CS)
            if not (CODESYSTEMS / f"{file}.json").exists():
                continue
            codes = _codes(file)
            if node["code"] not in codes:
                wrong.append(f"{name}{path}: code {node['code']} not in {file}")
            elif "display" in node and node["display"] != codes[node["code"]]:
                wrong.append(
                    f"{name}{path}: display {node['display']!r} != {codes[node['code']]!r}"
                )
    assert wrong == []


# --- consent -----------------------------------------------------------------------------------


def test_context_reads_the_consent_of_each_fixture() -> None:
    """contained: feedback only; poh: feedback and PG; email-only: neither, and no BSN."""
    contained, poh = _context(CONTAINED, bsn=True), _context(POH, bsn=True)
    none = _context(NO_BSN, bsn=False)
    assert (contained.feedback_allowed, contained.pg_allowed) == (True, False)
    assert (poh.feedback_allowed, poh.pg_allowed) == (True, True)
    assert (none.feedback_allowed, none.pg_allowed) == (False, False)
    assert none.patient_identifier is None
    assert contained.patient_identifier == (BSN_SYSTEM, BSN)
    assert contained.referrer[0] == ("Practitioner", AGB, "01000001")


def test_pg_items_are_dropped_and_counted_without_pg_consent() -> None:
    """Without pg-scores consent the six PG items are dropped and counted; other items travel."""
    count = fb.FeedbackItem("conversation-count", "2026-12-01", 4)
    feedback = _feedback(CONTAINED, "2026-12-01T15:00:00+01:00", items=(*PG_ITEMS, count))
    gp = gp_record.to_gp_bundle(
        _context(CONTAINED, bsn=True), feedback, TaskState("in-progress"), MAPPING
    )
    assert gp.dropped == 6
    assert gp.kept == (count,)
    [obs] = _entries(gp.bundle, "Observation")
    assert obs["code"]["coding"][0]["code"] == "conversation-count"
    with_pg = gp_record.to_gp_bundle(
        _context(POH, bsn=True), feedback, TaskState("in-progress"), MAPPING
    )
    assert with_pg.dropped == 0
    assert len(_entries(with_pg.bundle, "Observation")) == 7


def test_all_items_are_dropped_without_feedback_consent() -> None:
    """Without feedback consent only the Task and the Communication travel; items are counted."""
    gp = _gp(BY_NAME["no-feedback-consent-no-bsn"])
    assert gp.dropped == len(COMPLETED_ITEMS)
    assert gp.kept == ()
    assert gp.observation_ids == ()
    assert [e["resource"]["resourceType"] for e in gp.bundle["entry"]] == ["Task", "Communication"]
    assert "output" not in _one(gp.bundle, "Task")
    assert _one(gp.bundle, "Task")["status"] == "completed"


# --- idempotence -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_same_feedback_twice_gives_the_same_bundle(name: str) -> None:
    """The same Feedback twice gives byte-identical Bundles and Observation ids from item_key."""
    case = BY_NAME[name]
    first, second = _gp(case), _gp(case)
    assert fhir.canonical_json(first.bundle) == fhir.canonical_json(second.bundle)
    task_id = _task_id(case.referral)
    assert first.observation_ids == tuple(fb.item_key(task_id, i) for i in first.kept)
    assert [o["id"] for o in _entries(first.bundle, "Observation")] == list(first.observation_ids)


def test_same_item_in_a_later_update_keeps_its_observation_id() -> None:
    """A repeated item keeps its Observation id in a later Feedback; a new count gets a new id."""
    case = BY_NAME["intake-and-conversations"]
    later = dataclasses.replace(case.feedback, occurred_at="2026-12-11T09:00:00+01:00")
    context = _context(CONTAINED, bsn=True)
    state = _state(case)
    assert (
        gp_record.to_gp_bundle(context, later, state, MAPPING).observation_ids
        == _gp(case).observation_ids
    )
    more = dataclasses.replace(
        later, items=(fb.FeedbackItem("conversation-count", "2026-11-27", 4),)
    )
    assert gp_record.to_gp_bundle(context, more, state, MAPPING).observation_ids[0] not in (
        _gp(case).observation_ids
    )


def test_duplicate_items_in_one_feedback_give_one_observation() -> None:
    """The same item twice in one Feedback yields one Observation, so fullUrls stay unique."""
    item = fb.FeedbackItem("intake-done", "2026-11-13", True)
    feedback = _feedback(CONTAINED, "2026-11-13T12:00:00+01:00", items=(item, item))
    gp = gp_record.to_gp_bundle(
        _context(CONTAINED, bsn=True), feedback, TaskState("in-progress"), MAPPING
    )
    full_urls = [e["fullUrl"] for e in gp.bundle["entry"]]
    assert len(full_urls) == len(set(full_urls)), full_urls


def test_reason_without_code_or_text_gives_no_empty_status_reason() -> None:
    """A state whose accepted Reason has neither code nor text emits no empty statusReason {}."""
    state = transition(TaskState("accepted"), "welfare", "in-progress", "first-contact", Reason())
    assert isinstance(state, TaskState)
    feedback = _feedback(CONTAINED, "2026-11-06T14:30:00+01:00", status="in-progress")
    gp = gp_record.to_gp_bundle(_context(CONTAINED, bsn=True), feedback, state, MAPPING)
    assert _empty_elements(gp.bundle) == []


# --- the message to the referrer ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_communication_text_is_the_summary_without_free_text(name: str) -> None:
    """The Communication text is the coded summary: no note, no reason text, no patient value."""
    case = BY_NAME[name]
    gp = _gp(case)
    [payload] = _one(gp.bundle, "Communication")["payload"]
    text = payload["contentString"]
    assert text == gp_record.summary(_state(case), gp.kept)
    assert text.startswith(f"Welzijn op Recept: status {_state(case).status}")
    assert NOTE not in text
    assert "wandelgroep" not in text
    leaks = [n for n, value in enumerate(PATIENT_VALUES) if value in text]
    assert not leaks, f"patient values #{leaks} in the summary"  # indexes only


def test_summary_never_repeats_note_or_reason_text() -> None:
    """summary() leaves out note values and statusReason text even when they are present."""
    state = TaskState("on-hold", "conversations", Reason("declined", "CANARY reden tekst"))
    items = (
        fb.FeedbackItem("note", "2026-12-01", "CANARY notitie"),
        fb.FeedbackItem("conversation-count", "2026-12-01", 5),
    )
    text = gp_record.summary(state, items)
    assert "CANARY" not in text
    assert "aantal gesprekken" in text


def test_completed_task_carries_closure_reason_and_follow_up() -> None:
    """Completed case: statusReason completed-activity, follow-up 3 mo, note as valueString."""
    bundle = _gp(BY_NAME["completed-with-activity"]).bundle
    task = _one(bundle, "Task")
    assert task["statusReason"]["coding"][0] == {
        "system": fb.CLOSURE_REASON,
        "code": "completed-activity",
    }
    by_code = {o["code"]["coding"][0]["code"]: o for o in _entries(bundle, "Observation")}
    assert by_code["follow-up"]["valueQuantity"]["value"] == 3
    assert by_code["follow-up"]["valueQuantity"]["system"] == "http://unitsofmeasure.org"
    assert by_code["closed"]["valueCodeableConcept"]["coding"][0]["code"] == "completed-activity"
    assert by_code["note"]["valueString"] == NOTE


def test_activity_observation_carries_category_role_and_coach() -> None:
    """The activity case: category bewegen-sporten, role participant, coach as second performer."""
    [obs] = _entries(_gp(BY_NAME["activity-started"]).bundle, "Observation")
    assert obs["valueCodeableConcept"]["coding"][0] == {
        "system": fb.ACTIVITY_CATEGORY,
        "code": "bewegen-sporten",
    }
    [component] = obs["component"]
    assert component["valueCodeableConcept"]["coding"][0]["code"] == "participant"
    assert obs["performer"][1]["identifier"]["value"] == "C-017"
