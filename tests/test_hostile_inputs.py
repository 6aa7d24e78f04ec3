"""Hostile bodies on every body route, in one table (in-process, a real SQLite store): each is
refused with the right status and an OperationOutcome (RFC 6749 error on /oauth/token) naming
the location and the limit, never a value from the body and never a 500."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cases import REPO, case_input
from wor_bridge import bootstrap
from wor_bridge.config import load_app
from wor_bridge.connectors import webhook
from wor_bridge.demo.credentials import demo_configuration
from wor_bridge.service.app import create_app

SECRET = "Geheimwaarde"  # stands for a patient value in every hostile body
STRING_LIMIT = 8192  # smaller than the default so that a long string fits every route
JSON = "application/fhir+json"
HIS = {"Authorization": "Bearer example-his-key", "Content-Type": JSON}
WELFARE = {"Authorization": "Bearer example-welfare-key", "Content-Type": JSON}
ZORGDOMEIN = {
    "Authorization": "Bearer example-zorgdomein-key",
    "Content-Type": "application/fhir+json; fhirVersion=3.0",
}
HOOK_SECRET = b"example-webhook-secret"
HIS_STU3 = {**HIS, "Content-Type": "application/fhir+json; fhirVersion=3.0"}
PLAIN_JSON = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class Route:
    """A body route: how to call it, what its body is and its byte limit."""

    name: str
    method: str
    path: str
    headers: dict[str, str]
    rtype: str  # the FHIR type of its body; "json" for the webhook, "form" for the token
    limit: int
    setting: str  # what the 413 names (a prefix of the setting)


IF_MATCH = {"If-Match": 'W/"1"'}
ROUTES = [
    Route("intake", "POST", "/fhir/r4/ServiceRequest", HIS, "ServiceRequest", 1 << 20, "max_body"),
    Route("intake-bundle", "POST", "/fhir/r4", HIS, "Bundle", 1 << 20, "max_body_bytes"),
    Route("welfare-bundle", "POST", "/fhir/r4", WELFARE, "Bundle", 262_144, "feedback_bundle"),
    Route(
        "task-put", "PUT", "/fhir/r4/Task/{voorbeeld}", WELFARE | IF_MATCH, "Task", 65_536, "task"
    ),
    Route(
        "task-patch",
        "PATCH",
        "/fhir/r4/Task/{voorbeeld}",
        WELFARE | IF_MATCH,
        "Task",
        65_536,
        "task",
    ),
    Route("observation", "POST", "/fhir/r4/Observation", WELFARE, "Observation", 65_536, "obs"),
    Route("stu3-task", "PUT", "/fhir/stu3/Task/{zorgdomein}", ZORGDOMEIN, "Task", 65_536, "task"),
    Route(
        "stu3-intake",
        "POST",
        "/fhir/stu3/ReferralRequest",
        HIS_STU3,
        "ReferralRequest",
        1 << 20,
        "max_body",
    ),
    Route("stu3-intake-bundle", "POST", "/fhir/stu3", HIS_STU3, "Bundle", 1 << 20, "max_body"),
    Route("stu3-obs", "POST", "/fhir/stu3/Observation", ZORGDOMEIN, "Observation", 65_536, "obs"),
    Route("webhook", "POST", "/feedback/welzijn-json", PLAIN_JSON, "json", 65_536, "webhook_bytes"),
]
TOKEN = Route(
    "token",
    "POST",
    "/oauth/token",
    {"Content-Type": "application/x-www-form-urlencoded"},
    "form",
    16_384,
    "token_bytes",
)


def _resource(route: Route, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"resourceType": route.rtype} if route.rtype != "json" else {}
    return {**base, **extra}


def _list_name(route: Route) -> str:
    return "entry" if route.rtype == "Bundle" else "identifier"


def _item(route: Route, value: str) -> dict[str, Any]:
    return {"fullUrl": value} if route.rtype == "Bundle" else {"value": value}


def _where(route: Route, path: str) -> str:
    """The expected location: the FHIRPath, or (body) for the webhook's plain JSON."""
    return "(body)" if route.rtype == "json" else f"{route.rtype}.{path}"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _number(route: Route) -> tuple[bytes, str]:
    digits = b"9" * 5000
    if route.rtype == "Bundle":
        body = _dumps(_resource(route, total=0)).replace(b'"total":0', b'"total":' + digits)
        return body, _where(route, "total")
    body = _dumps(_resource(route, extension=[{"url": SECRET, "valueInteger": 0}]))
    body = body.replace(b'"valueInteger":0', b'"valueInteger":' + digits)
    return body, _where(route, "extension[0].valueInteger")


def _flood(route: Route) -> tuple[bytes, str]:
    return _dumps(_resource(route, **{_list_name(route): [{}] * 20_000})), "(body)"


def _long_array(route: Route) -> tuple[bytes, str]:
    items = [_item(route, SECRET)] * 600
    return _dumps(_resource(route, **{_list_name(route): items})), _where(route, _list_name(route))


def _long_string(route: Route) -> tuple[bytes, str]:
    items = [_item(route, SECRET * (STRING_LIMIT // len(SECRET) + 1))]
    field = "fullUrl" if route.rtype == "Bundle" else "value"
    where = _where(route, f"{_list_name(route)}[0].{field}")
    return _dumps(_resource(route, **{_list_name(route): items})), where


def _deep(route: Route) -> tuple[bytes, str]:
    nested: Any = [SECRET]
    for _ in range(40):
        nested = [nested]
    return _dumps(_resource(route, extension=nested)), _where(route, "")[:-1]


def _oversized(route: Route) -> tuple[bytes, str]:
    return b"{" + b" " * route.limit + b"}", "(body)"


def _malformed(route: Route) -> tuple[bytes, str]:
    return b'{"resourceType": "' + SECRET.encode(), "(body)"


Case = Callable[[Route], tuple[bytes, str]]
World = tuple[Any, dict[str, str], Path]  # the app, Task ids by destination, the store
CASES: list[tuple[str, Case, int, str]] = [
    ("bytes-over-limit", _oversized, 413, "too-costly"),
    ("number-5000-digits", _number, 400, "too-costly"),
    ("empty-object-flood", _flood, 400, "too-costly"),
    ("array-over-limit", _long_array, 400, "too-costly"),
    ("string-over-limit", _long_string, 400, "too-costly"),
    ("nesting-over-limit", _deep, 400, "too-costly"),
    ("malformed-json", _malformed, 400, "structure"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The example configuration (string limit lowered) and two stored referrals: one for the
    example welfare organisation, one for the ZorgDomein-style platform (routed by Buren)."""
    tmp = tmp_path_factory.mktemp("hostile")
    text = demo_configuration()
    text = text.replace('mappings_dir = "../mappings"', f'mappings_dir = "{REPO / "mappings"}"')
    text = text.replace('path = "wor-bridge.sqlite"', f'path = "{tmp / "s.sqlite"}"')
    text = text.replace("\nmax_string_chars = 65536", f"\nmax_string_chars = {STRING_LIMIT}")
    text = text.replace("\nrate_per_s = 10.0", "\nrate_per_s = 1000.0")
    text = text.replace("\nburst = 20", "\nburst = 1000")
    path = tmp / "c.toml"
    path.write_text(text, encoding="utf-8")
    app = create_app(bootstrap.build(load_app(path)), start_dispatcher=False)
    tasks = {}
    for name, district in (("voorbeeld", b"Utrecht"), ("zorgdomein", b"Buren")):
        referral = case_input("accepted-contained").replace(
            b'"district": "Utrecht"', b'"district": "' + district + b'"'
        )
        referral = referral.replace(b"VW-2026-0001", b"VW-2026-" + name.encode())
        answer = _call(app, "POST", "/fhir/r4/ServiceRequest", HIS, referral)
        assert answer.status_code == 201
        tasks[name] = answer.headers["location"].split("/_history/")[0].rsplit("/", 1)[-1]
    return app, tasks, tmp / "s.sqlite"


def _call(app: Any, method: str, path: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, content=body, headers=headers)

    return asyncio.run(go())


def _send(world: World, route: Route, body: bytes) -> httpx.Response:
    app, tasks, _ = world
    headers = dict(route.headers)
    if route.rtype == "json":
        headers.update(webhook.sign(HOOK_SECRET, int(time.time()), body))
    return _call(app, route.method, route.path.format(**tasks), headers, body)


# A welfare client's body that is no Bundle of Tasks and Observations is a referral push, which
# it may not make (no referral:write): 403 before anything about the body (welfare_intake).
NOT_FEEDBACK = {("welfare-bundle", "malformed-json")}


@pytest.mark.parametrize(("case", "make", "status", "code"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
def test_hostile_body_is_refused_cleanly(
    world: World, route: Route, case: str, make: Case, status: int, code: str
) -> None:
    """Each hostile body gets its status and an OperationOutcome at a location, no value."""
    body, where = make(route)
    if (route.name, case) in NOT_FEEDBACK:  # not a feedback Bundle: a push it may not make
        status, code, where = 403, "forbidden", "(request)"
    answer = _send(world, route, body)
    assert answer.status_code == status, (route.name, case)
    outcome = answer.json()
    assert outcome["resourceType"] == "OperationOutcome"
    issue = outcome["issue"][0]
    assert issue["code"] == code
    located = (issue.get("expression") or issue.get("location"))[0]
    assert located.startswith(where), (route.name, case, located)
    if code == "too-costly":  # the limit is named: the byte limit's setting, or limits.*
        assert route.setting in issue["diagnostics"] or "limits.max_" in issue["diagnostics"]
    assert SECRET not in answer.text
    assert len(answer.content) < 4096


def test_token_endpoint_refuses_an_oversized_form_with_413(world: World) -> None:
    """/oauth/token answers a body over limits.token_bytes with 413 (RFC 6749 error, no echo)."""
    body = b"grant_type=client_credentials&client_id=" + SECRET.encode() * 2000
    answer = _send(world, TOKEN, body)
    assert answer.status_code == 413
    assert answer.json()["error"] == "invalid_request"
    assert "limits.token_bytes" in answer.json()["error_description"]
    assert SECRET not in answer.text


def test_intake_xml_floods_and_long_values_are_refused_at_a_location(
    world: World,
) -> None:
    """FHIR XML intake: an element flood is refused at (body), a long value at its element."""
    xml = case_input("accepted-xml-contained")
    authored = b'<authoredOn value="2026-11-02T10:15:00+01:00"/>'
    xml_headers = {**HIS, "Content-Type": "application/fhir+xml"}
    route = Route("xml", "POST", "/fhir/r4/ServiceRequest", xml_headers, "ServiceRequest", 0, "")
    flood = xml.replace(authored, authored + b"<note/>" * 30_000)
    text = b'<note><text value="' + SECRET.encode() * 1000 + b'"/></note>'
    long = xml.replace(authored, authored + text)
    for body, where in ((flood, "(body)"), (long, "ServiceRequest.note[0].text")):
        answer = _send(world, route, body)
        assert answer.status_code == 400
        issue = answer.json()["issue"][0]
        assert (issue["code"], (issue.get("expression") or issue.get("location"))[0]) == (
            "too-costly",
            where,
        )
        assert SECRET not in answer.text


def test_five_thousand_digit_number_leaves_an_intake_audit_row(
    world: World,
) -> None:
    """A pushed referral with a 5,000-digit number is 400 and audited as a refused intake."""
    _, _, store = world
    before = _refused_intakes(store)
    data = case_input("accepted-contained").replace(
        b'"status"', b'"x": ' + b"9" * 5000 + b', "status"', 1
    )
    answer = _send(world, ROUTES[0], data)
    assert answer.status_code == 400
    assert answer.json()["issue"][0]["code"] == "too-costly"
    assert _refused_intakes(store) == before + 1


def _refused_intakes(store: Path) -> int:
    with contextlib.closing(sqlite3.connect(store)) as conn:
        query = "SELECT count(*) FROM audit WHERE event = 'referral_intake' AND outcome = 'refused'"
        return int(conn.execute(query).fetchone()[0])


def test_task_search_form_over_its_limit_is_413(world: World) -> None:
    """POST /fhir/r4/Task/_search refuses a form over limits.search_bytes with 413, no echo."""
    form = {**HIS, "Content-Type": "application/x-www-form-urlencoded"}
    route = Route("search", "POST", "/fhir/r4/Task/_search", form, "form", 16_384, "search")
    answer = _send(world, route, b"identifier=" + SECRET.encode() * 2000)
    assert answer.status_code == 413
    issue = answer.json()["issue"][0]
    assert (issue["code"], issue["location"]) == ("too-costly", ["(body)"])
    assert "limits.search_bytes" in issue["diagnostics"]
    assert SECRET not in answer.text
