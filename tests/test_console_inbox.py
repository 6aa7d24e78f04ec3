"""The ``inbox`` destination type and the coach's pages over real HTTP (uvicorn on loopback, the
dispatcher run by hand): nothing goes on the wire, every click goes through the transition
table to the GP record, refusals change nothing, the list shows no patient data, the CSV export
is audited per referral."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.cases import PATIENT_VALUES
from tests.console_world import HIS, INBOX, PASSWORD, add_account, console_config, referral, served
from wor_bridge import bootstrap
from wor_bridge.connectors import inbox as inbox_connector
from wor_bridge.connectors import outbound
from wor_bridge.core import feedback as fb
from wor_bridge.core import inbox
from wor_bridge.demo.fhir_server import SimulatedFhirServer
from wor_bridge.records import AuditQuery
from wor_bridge.service.app import create_app

CODES = {
    fb.ACTIVITY_CATEGORY: frozenset({"natuur"}),
    fb.ACTIVITY_ROLE: frozenset({"participant"}),
    fb.CLOSURE_REASON: frozenset({"declined"}),
}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The console served with the dispatcher run by hand; a coach signed in; one referral."""
    welfare = SimulatedFhirServer("/fhir").start()
    gp = SimulatedFhirServer("/gp").start()
    config = console_config(tmp_path, welfare.base_url, gp.base_url)
    add_account(config, "coach.a", "coach", INBOX)
    components = bootstrap.load(config)
    app = create_app(components, start_dispatcher=False)
    try:
        with served(app) as base:
            pushed = requests.post(
                f"{base}/fhir/r4/ServiceRequest",
                data=referral("INBOX-1"),
                headers={**HIS, "Content-Type": "application/fhir+json"},
                timeout=10,
            )
            assert pushed.status_code == 201
            task = pushed.headers["location"].split("/_history/")[0].rsplit("/", 1)[-1]
            browser = requests.Session()
            form = browser.get(f"{base}/console/login", timeout=10)
            browser.post(
                f"{base}/console/login",
                data={"csrf": _token(form.text), "username": "coach.a", "password": PASSWORD},
                timeout=10,
            )

            def deliver() -> None:
                while app.state.dispatcher.run_once():
                    pass

            yield {
                "base": base,
                "task": task,
                "browser": browser,
                "store": components.store,
                "audit": components.audit,
                "welfare": welfare,
                "gp": gp,
                "deliver": deliver,
            }
    finally:
        welfare.stop()
        gp.stop()


def _token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def act(world: dict[str, Any], action: str, **fields: str) -> requests.Response:
    """Post one inbox action with the session's CSRF token (the answer, redirects followed)."""
    url = f"{world['base']}/console/inbox/{world['task']}"
    page = world["browser"].get(url, timeout=10)
    return world["browser"].post(
        f"{url}/{action}", data={"csrf": _token(page.text), **fields}, timeout=10
    )


def gp_items(gp: SimulatedFhirServer) -> list[str]:
    """The feedback-item codes of the Observations in the GP record."""
    return [c["code"] for o in gp.resources("Observation") for c in o["code"]["coding"]]


def test_the_inbox_type_renders_no_request_for_any_kind() -> None:
    """Nothing goes on the wire for any message kind the inbox takes."""
    kinds = outbound.TYPES["inbox"].kinds
    assert kinds == {"referral", "referral-update", "task-update"}
    assert outbound.TYPES["inbox"].render is inbox_connector.render
    assert not outbound.TYPES["inbox"].on_the_wire


def test_an_inbox_referral_is_delivered_without_a_request(world: dict[str, Any]) -> None:
    """The referral is delivered by being stored: no request leaves; the GP's Task says
    delivered; a GP withdrawal is delivered the same way and the coach sees it cancelled."""
    world["deliver"]()
    entries = world["store"].list_entries(None, 10)
    assert [(e.destination, e.state) for e in entries] == [(INBOX, "delivered")]
    assert world["welfare"].requests() == []
    task = requests.get(f"{world['base']}/fhir/r4/Task/{world['task']}", headers=HIS, timeout=10)
    assert task.json()["businessStatus"]["coding"][0]["code"] == "delivered"
    etag = task.headers["etag"]
    body = {**task.json(), "status": "cancelled", "statusReason": {"text": "teruggetrokken"}}
    put = requests.put(
        f"{world['base']}/fhir/r4/Task/{world['task']}",
        data=json.dumps(body),
        headers={**HIS, "Content-Type": "application/fhir+json", "If-Match": etag},
        timeout=10,
    )
    assert put.status_code == 200
    world["deliver"]()
    assert {e.state for e in world["store"].list_entries(None, 10)} == {"delivered"}
    assert world["welfare"].requests() == []
    page = world["browser"].get(f"{world['base']}/console/inbox/{world['task']}", timeout=10)
    assert "Geannuleerd" in page.text


def test_milestones_reach_the_gp_record_through_the_transition_table(
    world: dict[str, Any],
) -> None:
    """Intake, conversations, on hold and follow-up each become the GP record's Observations
    and Task states; an illegal step is refused (409) and changes nothing."""
    assert act(world, "close", reason_code="declined").status_code == 409  # requested
    assert world["store"].get_task(world["task"]).status == "requested"
    assert act(world, "intake").status_code == 200
    assert act(world, "conversations", count="3").status_code == 200
    assert act(world, "on-hold", reason_code="not-reachable").status_code == 200
    assert world["store"].get_task(world["task"]).status == "on-hold"
    assert act(world, "activity", category="natuur", role="participant").status_code == 200
    assert act(world, "close", reason_code="completed-activity").status_code == 200
    assert act(world, "follow-up", months="3").status_code == 200
    world["deliver"]()
    task = world["store"].get_task(world["task"])
    assert (task.status, task.business_status) == ("completed", "follow-up")
    items = gp_items(world["gp"])
    for code in ("intake-done", "conversation-count", "activity-started", "closed", "follow-up"):
        assert code in items
    refused = world["audit"].find_audit(AuditQuery(object_id=world["task"], event="task_update"))
    assert any(r.event.outcome == "refused" for r in refused)
    assert all(r.event.user == "console:coach.a" for r in refused)


def test_form_values_the_page_did_not_offer_are_refused(world: dict[str, Any]) -> None:
    """Unknown codes, a future date and a bad count are 422 with a Dutch message; no change."""
    for action, fields in (
        ("activity", {"category": "skydiving", "role": "participant"}),
        ("first-contact", {"date": "2999-01-01"}),
        ("first-contact", {"date": "gisteren"}),
        ("conversations", {"count": "-1"}),
        ("reject", {}),
    ):
        answer = act(world, action, **fields)
        assert answer.status_code == 422, action
        assert 'id="probleem"' in answer.text
    assert world["store"].get_task(world["task"]).version == 1


def test_the_list_shows_no_patient_data_and_opening_is_audited(world: dict[str, Any]) -> None:
    """The inbox list carries dates and states only; opening the referral is an audited read."""
    listed = world["browser"].get(f"{world['base']}/console/inbox", timeout=10)
    assert world["task"] in listed.text
    assert not [v for v in PATIENT_VALUES if v in listed.text]
    opened = world["browser"].get(f"{world['base']}/console/inbox/{world['task']}", timeout=10)
    assert any(v in opened.text for v in PATIENT_VALUES)  # the card: the coach must call them
    reads = world["audit"].find_audit(AuditQuery(object_id=world["task"], event="referral_read"))
    assert [(r.event.user, r.event.responsible) for r in reads] == [("console:coach.a", INBOX)]
    assert reads[0].event.patient_id


def test_the_csv_export_has_every_referral_and_audits_each(world: dict[str, Any]) -> None:
    """One row per referral with the contact columns; one audit record per exported referral."""
    answer = world["browser"].get(f"{world['base']}/console/inbox/export.csv", timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(answer.content.decode("utf-8-sig"))))
    assert rows[0][:3] == ["taak", "verwijsnummer", "datum verwijzing"]
    assert [r[0] for r in rows[1:]] == [world["task"]]
    assert rows[1][1] == "INBOX-1"
    exports = world["audit"].find_audit(AuditQuery(event="inbox_export"))
    assert [r.event.object_id for r in exports] == [world["task"]]


def test_a_spreadsheet_formula_in_a_cell_is_neutralised() -> None:
    """A value that starts like a formula is exported as text."""
    from wor_bridge.usecases.inbox import _csv_safe  # noqa: PLC0415

    assert _csv_safe("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert _csv_safe("Jan") == "Jan"


@settings(max_examples=200, deadline=None)
@given(
    action=st.sampled_from([*inbox.ACTIONS, "unknown"]),
    form=st.dictionaries(
        st.sampled_from(["date", "count", "category", "role", "reason_code", "reason_text", "x"]),
        st.text(max_size=20),
    ),
    status=st.sampled_from(["requested", "accepted", "in-progress", "on-hold", "completed"]),
)
def test_any_form_gives_feedback_or_a_problem(
    action: str, form: dict[str, str], status: str
) -> None:
    """Whatever a form holds, an action is feedback with offered codes only, or a message."""
    import datetime as dt  # noqa: PLC0415

    now = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
    result = inbox.feedback_for(action, form, task_id="t", status=status, now=now, codes=CODES)
    if isinstance(result, str):
        assert result
        return
    for item in result.items:
        assert item.category in (None, "natuur")
        assert item.role in (None, "participant")
        if item.kind == "first-contact":
            assert str(item.value) <= now.date().isoformat()


def test_an_inbox_destination_with_an_endpoint_is_refused(tmp_path: Path) -> None:
    """An inbox is at the bridge: an endpoint (or poll) in its configuration stops the start."""
    from tests.service_harness import write_config  # noqa: PLC0415
    from wor_bridge.errors import ConfigError  # noqa: PLC0415

    config = write_config(tmp_path, "http://127.0.0.1:9/fhir", destination={"type": "inbox"})
    with pytest.raises(ConfigError, match="an inbox is at the bridge"):
        bootstrap.load(config)
