"""Task search and read-back in-process (issue 18): searchset Bundles by the bridge's identifier
and the HIS's referral number, focus, status, owner and _lastUpdated, paging links on the
configured base, strict and lenient handling, _summary and _elements, within the caller's
tenancy (hidden Tasks never appear) and audited; ServiceRequest, Observation and Task versions
read back. Bodies are compared, never printed (patient data)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inprocess import (
    ADMIN,
    HIS,
    OTHER_HIS,
    OTHER_WELFARE,
    WELFARE,
    World,
    make_world,
    observation,
    task_body,
)

BASE = "http://127.0.0.1:8080/fhir/r4"  # the example configuration's pull.base_url
HIS_SYSTEM = "urn:oid:2.16.528.1.1007.99.1234.1"
SUBSETTED = "SUBSETTED"
Json = dict[str, Any]


@pytest.fixture
def world(tmp_path: Path) -> World:
    """The app with the patient's two referrals (voorbeeld, viplive) of the GP system."""
    return make_world(tmp_path)


def search(world: World, key: str, query: str = "", **kw: Any) -> httpx.Response:
    """``GET /fhir/r4/Task?query``."""
    return world.call("GET", f"/fhir/r4/Task?{query}", key, **kw)


def found(answer: httpx.Response) -> list[str]:
    """The Task ids of a searchset answer (must be 200)."""
    assert answer.status_code == 200
    bundle: Json = answer.json()
    assert (bundle["resourceType"], bundle["type"]) == ("Bundle", "searchset")
    return [e["resource"]["id"] for e in bundle.get("entry", [])]


def test_task_found_by_bridge_identifier_and_his_number(world: World) -> None:
    """identifier: the bridge's urn:uuid, the HIS's system|value, a bare value, system|."""
    bridge = f"urn:ietf:rfc:3986|urn:uuid:{world.voorbeeld}"
    assert found(search(world, HIS, f"identifier={bridge}")) == [world.voorbeeld]
    assert found(search(world, HIS, f"identifier={HIS_SYSTEM}|VW-2026-0002")) == [world.viplive]
    assert found(search(world, HIS, "identifier=VW-2026-0001")) == [world.voorbeeld]
    assert len(found(search(world, HIS, f"identifier={HIS_SYSTEM}|"))) == 2
    assert found(search(world, HIS, "identifier=|VW-2026-0001")) == []
    assert found(search(world, HIS, "identifier=other|VW-2026-0001")) == []


def test_task_carries_his_number_and_last_updated(world: World) -> None:
    """The Task has the HIS referral number among its identifiers and meta.lastUpdated."""
    task = world.call("GET", f"/fhir/r4/Task/{world.voorbeeld}", HIS).json()
    assert {"system": HIS_SYSTEM, "value": "VW-2026-0001"} in task["identifier"]
    assert task["meta"]["lastUpdated"].endswith("Z")


def test_focus_status_owner_and_id(world: World) -> None:
    """focus (ServiceRequest/id, id, absolute), status (comma = OR), owner, _id."""
    task = world.call("GET", f"/fhir/r4/Task/{world.voorbeeld}", HIS).json()
    focus, owner = task["focus"]["reference"], task["owner"]["reference"]
    for value in (focus, focus.split("/")[1], f"{BASE}/{focus}"):
        assert found(search(world, HIS, f"focus={value}")) == [world.voorbeeld]
    assert found(search(world, HIS, f"focus:ServiceRequest={focus.split('/')[1]}")) == [
        world.voorbeeld
    ]
    assert found(search(world, HIS, f"focus=Patient/{focus.split('/')[1]}")) == []
    assert found(search(world, HIS, f"owner={owner}")) == [world.voorbeeld]
    assert len(found(search(world, HIS, "status=requested,completed"))) == 2
    assert found(search(world, HIS, "status=http://hl7.org/fhir/task-status|completed")) == []
    assert found(search(world, HIS, f"_id={world.viplive}&status=requested")) == [world.viplive]


def test_last_updated_prefixes(world: World) -> None:
    """_lastUpdated with eq, gt, ge, lt, le against the Task's meta.lastUpdated."""
    task = world.call("GET", f"/fhir/r4/Task/{world.voorbeeld}", HIS).json()
    stamp = dt.datetime.fromisoformat(task["meta"]["lastUpdated"].replace("Z", "+00:00"))
    day = stamp.date().isoformat()
    before = (stamp - dt.timedelta(days=1)).date().isoformat()
    ids = {world.voorbeeld, world.viplive}
    assert set(found(search(world, HIS, f"_lastUpdated={day}"))) == ids
    assert set(found(search(world, HIS, f"_lastUpdated=eq{day}"))) == ids
    assert set(found(search(world, HIS, f"_lastUpdated=gt{before}"))) == ids
    assert set(found(search(world, HIS, f"_lastUpdated=ge{day}&_lastUpdated=le{day}"))) == ids
    assert found(search(world, HIS, f"_lastUpdated=lt{day}")) == []
    assert found(search(world, HIS, f"_lastUpdated=gt{day}")) == []
    later = (stamp + dt.timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    assert found(search(world, HIS, "_lastUpdated=" + httpx.QueryParams({"x": later})["x"])) == []
    assert search(world, HIS, "_lastUpdated=ne2026").status_code == 400
    assert search(world, HIS, "_lastUpdated=gtyesterday").status_code == 400


def test_count_pages_with_absolute_links(world: World) -> None:
    """_count=1 over two Tasks: total 2, self and next; the next page has previous."""
    first = search(world, HIS, "_count=1", headers={"Host": "evil.example"}).json()
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert first["total"] == 2
    assert len(first["entry"]) == 1
    assert set(links) == {"self", "next"}
    assert links["next"].startswith(f"{BASE}/Task?")
    assert "evil.example" not in str(first)
    second = world.call("GET", links["next"].removeprefix(BASE[: -len("/fhir/r4")]), HIS).json()
    assert {link["relation"] for link in second["link"]} == {"self", "previous"}
    assert {first["entry"][0]["resource"]["id"], second["entry"][0]["resource"]["id"]} == {
        world.voorbeeld,
        world.viplive,
    }
    assert first["entry"][0]["fullUrl"].startswith(f"{BASE}/Task/")


def test_hidden_tasks_never_appear(world: World) -> None:
    """Each caller finds only what it may read; another's Task is not found even by its id."""
    assert found(search(world, WELFARE)) == [world.voorbeeld]
    assert found(search(world, WELFARE, f"_id={world.viplive}")) == []
    assert found(search(world, OTHER_WELFARE)) == []
    assert found(search(world, OTHER_HIS, "identifier=VW-2026-0001")) == []
    assert set(found(search(world, ADMIN))) == {world.voorbeeld, world.viplive}
    assert search(world, OTHER_HIS).json()["total"] == 0


def test_search_is_audited_per_task_returned(world: World) -> None:
    """One task_search record per Task returned (with its patient), one when none is."""
    mark = world.last_audit_id()
    found(search(world, HIS))
    rows = world.audit(mark)
    assert [r["event"] for r in rows] == ["task_search", "task_search"]
    assert {r["object_id"] for r in rows} == {world.voorbeeld, world.viplive}
    named = all(r["patient_id"] == world.patient_of(world.voorbeeld) for r in rows)
    assert named, "each record names the Task's patient"
    mark = world.last_audit_id()
    found(search(world, OTHER_WELFARE))
    [row] = world.audit(mark)
    assert (row["event"], row["user"], row["patient_id"]) == ("task_search", "rivierenland", "")
    mark = world.last_audit_id()
    assert search(world, "no-such-key").status_code == 401
    assert [r["outcome"] for r in world.audit(mark)] == ["refused"]


def test_unknown_parameters_strict_or_lenient(world: World) -> None:
    """Unknown parameters: 400 with handling=strict, else ignored and left out of self."""
    strict = search(world, HIS, "subject=x", headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert "subject" not in strict.text, "an unknown name is not repeated"
    lenient = search(world, HIS, "subject=x", headers={"Prefer": "handling=lenient"})
    assert len(found(lenient)) == 2
    assert "subject" not in lenient.json()["link"][0]["url"]
    assert len(found(search(world, HIS, "subject=x"))) == 2  # lenient is the default


def test_unsupported_modifiers_are_refused(world: World) -> None:
    """A modifier the server does not support is refused either way (FHIR: SHALL reject)."""
    for query in ("status:not=requested", "identifier:of-type=x", "owner:identifier=x"):
        answer = search(world, HIS, query)
        assert answer.status_code == 400, query
        assert answer.json()["issue"][0]["code"] == "not-supported"


def test_summary_count_true_and_elements(world: World) -> None:
    """_summary=count: total only; _summary=true and _elements: subsetted and tagged."""
    counted = search(world, HIS, "_summary=count").json()
    assert (counted["total"], "entry" in counted) == (2, False)
    summary = search(world, HIS, "_summary=true").json()["entry"][0]["resource"]
    assert SUBSETTED in str(summary["meta"]["tag"])
    assert "restriction" not in summary
    assert summary["status"] == "requested"
    elements = search(world, HIS, "_elements=identifier").json()["entry"][0]["resource"]
    assert set(elements) == {"resourceType", "id", "meta", "identifier", "status", "intent"}
    assert search(world, HIS, "_summary=text").status_code == 400


def test_post_search_equals_get(world: World) -> None:
    """POST Task/_search with a form body finds what GET finds."""
    body = {"identifier": f"{HIS_SYSTEM}|VW-2026-0002"}
    answer = world.call("POST", "/fhir/r4/Task/_search", HIS, data=body)
    assert found(answer) == [world.viplive]
    wrong = world.call(
        "POST", "/fhir/r4/Task/_search", HIS, content=b"{}", headers={"Content-Type": "a/b"}
    )
    assert wrong.status_code == 415


def test_service_request_is_read_back_within_tenancy(world: World) -> None:
    """GET ServiceRequest/{id} (and _history/1): the mapped request; a hidden one is 404."""
    request_id = world.request_id(world.voorbeeld)
    answer = world.call("GET", f"/fhir/r4/ServiceRequest/{request_id}", WELFARE)
    assert answer.status_code == 200
    request = answer.json()
    assert (request["resourceType"], request["id"]) == ("ServiceRequest", request_id)
    assert request["meta"]["versionId"] == "1"
    assert request["subject"]["reference"].startswith("Patient/")
    assert answer.headers["etag"] == 'W/"1"'
    again = world.call("GET", f"/fhir/r4/ServiceRequest/{request_id}/_history/1", HIS)
    same = again.json() == request  # compared, never printed
    assert same
    hidden = world.call("GET", f"/fhir/r4/ServiceRequest/{request_id}", OTHER_WELFARE)
    unknown = world.call("GET", "/fhir/r4/ServiceRequest/unknown", OTHER_WELFARE)
    assert (hidden.status_code, hidden.content) == (404, unknown.content)
    later = world.call("GET", f"/fhir/r4/ServiceRequest/{request_id}/_history/2", HIS)
    assert later.status_code == 404


def test_observation_is_posted_and_read_back(world: World) -> None:
    """POST Observation: 201, Location of the Observation held, read back; again 200."""
    posted = world.call("POST", "/fhir/r4/Observation", WELFARE, json=observation(world.voorbeeld))
    assert posted.status_code == 201
    location = posted.headers["location"]
    assert location.startswith(f"{BASE}/Observation/")
    assert location.endswith("/_history/1")
    held = posted.json()
    assert held["resourceType"] == "Observation"
    read = world.call("GET", location.removeprefix(BASE.removesuffix("/fhir/r4")), WELFARE)
    same = read.json() == held  # compared, never printed (it names the patient)
    assert same
    by_id = world.call("GET", f"/fhir/r4/Observation/{held['id']}", HIS).json() == held
    assert by_id
    hidden = world.call("GET", f"/fhir/r4/Observation/{held['id']}", OTHER_WELFARE)
    unknown = world.call("GET", "/fhir/r4/Observation/unknown", OTHER_WELFARE)
    assert (hidden.status_code, hidden.content) == (404, unknown.content)
    again = world.call("POST", "/fhir/r4/Observation", WELFARE, json=observation(world.voorbeeld))
    assert (again.status_code, again.headers["location"]) == (200, location)


def test_task_history_keeps_the_current_version(world: World) -> None:
    """_history/{vid}: the current version 200, an older one 410, a later one 404."""
    url = f"/fhir/r4/Task/{world.voorbeeld}"
    put = world.call(
        "PUT", url, WELFARE, json=task_body(world.voorbeeld, "accepted"), headers={"If-Match": "1"}
    )
    assert put.status_code == 200
    current = world.call("GET", f"{url}/_history/2", WELFARE)
    assert (current.status_code, current.json()["meta"]["versionId"]) == (200, "2")
    older = world.call("GET", f"{url}/_history/1", WELFARE)
    assert (older.status_code, older.json()["issue"][0]["code"]) == (410, "deleted")
    assert world.call("GET", f"{url}/_history/3", WELFARE).status_code == 404
    hidden = world.call("GET", f"{url}/_history/2", OTHER_WELFARE)
    assert hidden.status_code == 404
