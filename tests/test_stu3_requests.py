"""What the STU3 destination types put on the wire: one effect per request, codes only, and
references that resolve where they are sent."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.cases import REPO
from tests.service_harness import patient_value_hits
from wor_bridge.connectors import outbound, zorgdomein
from wor_bridge.core import fhir, gp_record
from wor_bridge.core.delivery import HttpRequest
from wor_bridge.core.settings import Destination, Settings
from wor_bridge.core.task import Reason, TaskState

Json = dict[str, Any]
CASES = ("accepted-contained", "accepted-route-by-practice-bsn-ageband")
CREATED_AT = "2026-11-02T10:20:00+00:00"
GP_TEXT = "Wil toch niet, zegt mevrouw Jansen"  # free text the GP typed: must stay home


def _bundle(case: str) -> Json:
    path = REPO / "fixtures" / "referral" / case / "expected.bundle.json"
    loaded: Json = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def _destination(settings: Settings, dtype: str, **changes: Any) -> Destination:
    found = next(d for d in settings.destinations if d.type == dtype)
    return found.model_copy(update=changes)


def _render(settings: Settings, destination: Destination, message: Json) -> list[HttpRequest]:
    payload = fhir.canonical_json(message)
    return outbound.render(payload, destination, "key", settings, created_at=CREATED_AT)


def _cancellation(case: str, code: str | None = "gp-withdrew") -> Json:
    state = TaskState("cancelled", None, Reason(code, GP_TEXT))
    return gp_record.welfare_task_update(_bundle(case), state, "2026-11-04T10:00:00+01:00")


def _references(node: Any) -> list[Json]:
    """Every Reference-shaped object (with ``reference`` or ``identifier``) under ``node``."""
    found: list[Json] = []
    if isinstance(node, dict):
        if "reference" in node or ("identifier" in node and isinstance(node["identifier"], dict)):
            found.append(node)
        for value in node.values():
            found += _references(value)
    elif isinstance(node, list):
        for value in node:
            found += _references(value)
    return found


@pytest.mark.parametrize("case", CASES)
def test_zorgdomein_document_is_a_conditional_create_on_its_identifier(
    settings: Settings, case: str
) -> None:
    """The document is POST [base]/Bundle with If-None-Exist on Bundle.identifier."""
    destination = _destination(settings, "zorgdomein-stu3")
    [request] = _render(settings, destination, _bundle(case))
    document = json.loads(request.body)
    ident = document["identifier"]
    assert (request.method, request.url) == ("POST", f"{destination.endpoint}/Bundle")
    headers = dict(request.headers)
    assert headers["If-None-Exist"] == f"identifier={ident['system']}|{ident['value']}"
    assert _render(settings, destination, _bundle(case)) == [request]
    assert fhir.validate_stu3(document, "Bundle") == []


def test_zorgdomein_document_put_to_its_id(settings: Settings) -> None:
    """``create = "put"``: ``PUT [base]/Bundle/<document id>``, the id derived from the Task."""
    destination = _destination(settings, "zorgdomein-stu3", create="put")
    [request] = _render(settings, destination, _bundle("accepted-contained"))
    document = json.loads(request.body)
    assert request.method == "PUT"
    assert request.url == f"{destination.endpoint}/Bundle/{document['id']}"
    assert "If-None-Exist" not in dict(request.headers)


def test_plain_create_sends_no_condition(settings: Settings) -> None:
    """``create = "plain"``: a bare POST (at least once; the configuration says so)."""
    for dtype in ("zorgdomein-stu3", "notified-pull-stu3"):
        destination = _destination(settings, dtype, create="plain")
        [request] = _render(settings, destination, _bundle("accepted-contained"))
        assert request.method == "POST"
        assert "If-None-Exist" not in dict(request.headers)
        assert destination.at_least_once


def test_notified_pull_put_mode_creates_and_updates_at_the_task_id(settings: Settings) -> None:
    """``create = "put"``: the notification Task is PUT at ``Task/<uuid>``, and so is its update."""
    destination = _destination(settings, "notified-pull-stu3", create="put")
    [create] = _render(settings, destination, _bundle("accepted-contained"))
    [update] = _render(settings, destination, _cancellation("accepted-contained"))
    task_uuid = create.url.rsplit("/", 1)[-1]
    assert (create.method, update.method) == ("PUT", "PUT")
    assert update.url == create.url == f"{destination.endpoint}/Task/{task_uuid}"
    assert json.loads(update.body)["id"] == task_uuid
    assert json.loads(update.body)["status"] == "cancelled"


@pytest.mark.parametrize("dtype", ["zorgdomein-stu3", "notified-pull-stu3", "fhir-r4"])
def test_cancellation_carries_reason_codes_only(settings: Settings, dtype: str) -> None:
    """A withdrawal carries its closure-reason code only (text alone: gp-withdrew)."""
    destination = _destination(settings, dtype)
    for code, sent in (("declined", "declined"), (None, "gp-withdrew")):
        [request] = _render(settings, destination, _cancellation("accepted-contained", code))
        text = request.body.decode("utf-8")
        free_text_sent = GP_TEXT in text
        assert not free_text_sent
        assert patient_value_hits(text) == []  # indices only, never the values
        assert f'"code":"{sent}"' in text


@pytest.mark.parametrize("case", CASES)
def test_zorgdomein_cancellation_references_resolve_in_the_document(
    settings: Settings, case: str
) -> None:
    """The ZorgDomein Task update refers by identifiers the sent document carries."""
    destination = _destination(settings, "zorgdomein-stu3")
    [request] = _render(settings, destination, _cancellation(case))
    task = json.loads(request.body)
    assert request.method == "PUT"
    assert request.url.endswith(
        "/Task?identifier=urn:ietf:rfc:3986|" + task["identifier"][0]["value"]
    )
    assert fhir.validate_stu3(task, "Task") == []
    assert "id" not in task
    document = zorgdomein.document_bundle(
        _bundle(case),
        bundle_id=zorgdomein.document_id("0" * 8 + "-0000-0000-0000-" + "0" * 12),
        now=CREATED_AT,
    )
    carried = [
        (i["system"], i["value"])
        for entry in document["entry"]
        for i in (entry["resource"].get("identifier") or [])
        if isinstance(i, dict)
    ]
    references = _references(task)
    assert {"focus", "for", "owner"} <= set(task)
    assert references
    for reference in references:
        assert "reference" not in reference
        resolves = (reference["identifier"]["system"], reference["identifier"]["value"]) in carried
        assert resolves  # (no values in the failure: the document's identifiers include a BSN)
