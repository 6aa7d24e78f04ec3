"""The operator's pages over real HTTP (uvicorn on loopback, the dispatcher run by hand): the
outbox lists carry no patient data, a retry and a replay need a confirmation and follow the
CLI's rules, health per destination, the audit search and its CSV (itself audited)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.cases import PATIENT_VALUES
from tests.console_world import HIS, PASSWORD, add_account, console_config, referral, served
from wor_bridge import bootstrap
from wor_bridge.demo.fhir_server import SimulatedFhirServer
from wor_bridge.records import AuditQuery
from wor_bridge.service.app import create_app


def _token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Two referrals to a FHIR destination whose receiver refuses (dead letters), one to the
    inbox; an operator signed in."""
    welfare = SimulatedFhirServer("/fhir").start()
    gp = SimulatedFhirServer("/gp").start()
    config = console_config(tmp_path, welfare.base_url, gp.base_url)
    add_account(config, "operator.a", "operator")
    components = bootstrap.load(config)
    app = create_app(components, start_dispatcher=False)

    def deliver() -> None:
        while app.state.dispatcher.run_once():
            pass

    try:
        with served(app) as base:
            tasks = []
            for ref, practice in (("OPS-1", None), ("OPS-2", "01099998"), ("OPS-3", "01099998")):
                body = referral(ref)
                if practice:  # the practice AGB that routes to welzijn-rivierenland (fhir-r4)
                    body = body.replace(b"01099990", practice.encode())
                pushed = requests.post(
                    f"{base}/fhir/r4/ServiceRequest",
                    data=body,
                    headers={**HIS, "Content-Type": "application/fhir+json"},
                    timeout=10,
                )
                assert pushed.status_code == 201
                tasks.append(pushed.headers["location"].split("/_history/")[0].rsplit("/", 1)[-1])
            welfare.fail_next(422, times=2)
            deliver()
            browser = requests.Session()
            form = browser.get(f"{base}/console/login", timeout=10)
            browser.post(
                f"{base}/console/login",
                data={"csrf": _token(form.text), "username": "operator.a", "password": PASSWORD},
                timeout=10,
            )
            yield {
                "base": base,
                "browser": browser,
                "store": components.store,
                "audit": components.audit,
                "deliver": deliver,
                "tasks": tasks,
            }
    finally:
        welfare.stop()
        gp.stop()


def test_the_outbox_lists_by_state_and_destination_without_patient_data(
    world: dict[str, Any],
) -> None:
    """Filters narrow the list; no page of the list carries a patient value."""
    base, browser = world["base"], world["browser"]
    dead = [e for e in world["store"].list_entries("dead", 10) if e.destination != "gp-record"]
    assert len(dead) == 2
    every = browser.get(f"{base}/console/outbox", timeout=10)
    only_dead = browser.get(f"{base}/console/outbox?state=dead", timeout=10)
    inbox_only = browser.get(f"{base}/console/outbox?destination=welzijn-voorbeeld", timeout=10)
    old_only = browser.get(f"{base}/console/outbox?min_age_h=24", timeout=10)
    for page in (every, only_dead, inbox_only, old_only):
        assert page.status_code == 200
        assert not [v for v in PATIENT_VALUES if v in page.text]
    assert only_dead.text.count('class="state-dead"') >= 2
    assert 'class="state-delivered"' not in only_dead.text
    assert "welzijn-rivierenland" not in inbox_only.text.split("<tbody>")[1]
    assert old_only.text.split("<tbody>")[1].split("</tbody>")[0].strip() == ""


def test_a_retry_needs_a_confirmation_and_the_clis_rules(world: dict[str, Any]) -> None:
    """The first POST only asks; the confirmed one requeues a dead entry; a delivered entry is
    refused as by the CLI, and nothing changes."""
    base, browser, store = world["base"], world["browser"], world["store"]
    dead = next(e for e in store.list_entries("dead", 10) if e.destination != "gp-record")
    page = browser.get(f"{base}/console/outbox/{dead.id}", timeout=10)
    asked = browser.post(
        f"{base}/console/outbox/{dead.id}/retry", data={"csrf": _token(page.text)}, timeout=10
    )
    assert "Ja, doorgaan" in asked.text
    assert store.get_entry(dead.id).state == "dead"
    browser.post(
        f"{base}/console/outbox/{dead.id}/retry",
        data={"csrf": _token(page.text), "confirm": "ja"},
        timeout=10,
    )
    world["deliver"]()
    assert store.get_entry(dead.id).state == "delivered"
    again = browser.post(
        f"{base}/console/outbox/{dead.id}/retry",
        data={"csrf": _token(page.text), "confirm": "ja"},
        timeout=10,
    )
    assert "Niet opnieuw verstuurd" in again.text
    retries = world["audit"].find_audit(AuditQuery(event="outbox_retry"))
    assert {r.event.user for r in retries} == {"console:operator.a"}


def test_a_replay_needs_a_confirmation(world: dict[str, Any]) -> None:
    """Replay asks first, then requeues the delivered referrals whose Task is still requested."""
    base, browser, store = world["base"], world["browser"], world["store"]
    page = browser.get(f"{base}/console/outbox", timeout=10)
    asked = browser.post(
        f"{base}/console/replay",
        data={"csrf": _token(page.text), "since": "2000-01-01"},
        timeout=10,
    )
    assert "Ja, doorgaan" in asked.text
    done = browser.post(
        f"{base}/console/replay",
        data={"csrf": _token(page.text), "since": "2000-01-01", "confirm": "ja"},
        timeout=10,
    )
    assert "Opnieuw in de wachtrij: 1." in done.text  # the inbox referral
    assert [e.state for e in store.list_entries("pending", 10)] == ["pending"]


def test_health_shows_each_destination(world: dict[str, Any]) -> None:
    """Every configured destination has a row; the inbox's last success is set."""
    page = world["browser"].get(f"{world['base']}/console/health", timeout=10)
    assert page.status_code == 200
    for name in ("welzijn-voorbeeld", "welzijn-rivierenland", "gp-record"):
        assert f"({name})" in page.text
    inbox_row = page.text.split("(welzijn-voorbeeld)")[1].split("</tr>")[0]
    assert "nooit" not in inbox_row


def test_the_audit_search_by_patient_and_its_csv_are_audited(world: dict[str, Any]) -> None:
    """A patient's access request lists the records of that patient; the CSV has the same;
    each search is itself an audit record naming the operator and the patient."""
    base, browser, store = world["base"], world["browser"], world["store"]
    patient = store.get_task(world["tasks"][0]).patient_id
    page = browser.get(f"{base}/console/audit", params={"patient": patient}, timeout=10)
    assert page.status_code == 200
    assert "referral_intake" in page.text
    export = browser.get(f"{base}/console/audit.csv", params={"patient": patient}, timeout=10)
    rows = list(csv.DictReader(io.StringIO(export.content.decode("utf-8-sig"))))
    assert rows
    assert {r["patient_id"] for r in rows} == {patient}
    searches = world["audit"].find_audit(AuditQuery(event="audit_search"))
    assert len(searches) == 2
    assert {(s.event.user, s.event.patient_id) for s in searches} == {
        ("console:operator.a", patient)
    }


def test_the_monitoring_report_opens_for_the_operator_and_is_audited(
    world: dict[str, Any],
) -> None:
    """The report page renders (HTML with its own CSP) and the read is audited by user."""
    page = world["browser"].get(f"{world['base']}/console/report?period=year", timeout=10)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    bad = world["browser"].get(f"{world['base']}/console/report?period=week", timeout=10)
    assert bad.status_code == 422
    reads = world["audit"].find_audit(AuditQuery(event="monitoring_report"))
    assert [r.event.user for r in reads] == ["console:operator.a"]
