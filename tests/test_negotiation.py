"""HTTP content negotiation as FHIR REST defines it (issue 10 §4), against the app in-process:
fhirVersion (415), Content-Encoding gzip/deflate (decoded under the limit, or 415), FHIR XML
answers on every /fhir/r4 route when the client asks for them."""

from __future__ import annotations

import asyncio
import gzip
import json
import time
import zlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from lxml import etree
from starlette.routing import Route

from tests.cases import PATIENT_VALUES, REPO
from wor_bridge import bootstrap
from wor_bridge.config import load_app
from wor_bridge.connectors import webhook
from wor_bridge.demo.credentials import demo_configuration
from wor_bridge.service.app import create_app

HTTP_CASES = REPO / "fixtures" / "http"
BODY = (HTTP_CASES / "gzip-body" / "input.json").read_bytes()
FHIR_NS = "{http://hl7.org/fhir}"
HIS = {"Authorization": "Bearer example-his-key", "Content-Type": "application/fhir+json"}
WELFARE = {"Authorization": "Bearer example-welfare-key"}
BUSINESS = "https://wor-bridge.nl/fhir/CodeSystem/task-business-status"


@pytest.fixture
def app(tmp_path: Path) -> Any:
    """The app with the example configuration on a temporary store, no dispatcher."""
    text = demo_configuration()
    text = text.replace('mappings_dir = "../mappings"', f'mappings_dir = "{REPO / "mappings"}"')
    text = text.replace('path = "wor-bridge.sqlite"', f'path = "{tmp_path / "s.sqlite"}"')
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return create_app(bootstrap.build(load_app(path)), start_dispatcher=False)


def _call(app: Any, method: str, url: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, url, **kw)

    return asyncio.run(go())


def _request_headers(case: str) -> dict[str, str]:
    """The headers of a handed `request.txt` (request line and body placeholder skipped)."""
    lines = (HTTP_CASES / case / "request.txt").read_text(encoding="utf-8").splitlines()[1:]
    pairs = [line.split(":", 1) for line in lines if ":" in line and not line.startswith("<")]
    return {k.strip(): v.strip() for k, v in pairs if k.strip().lower() != "host"}


def _push(app: Any, **kw: Any) -> httpx.Response:
    kw.setdefault("content", BODY)
    kw.setdefault("headers", HIS)
    return _call(app, "POST", "/fhir/r4/ServiceRequest", **kw)


def _issue(response: httpx.Response) -> dict[str, Any]:
    issue: dict[str, Any] = response.json()["issue"][0]
    return issue


def _no_patient_values(response: httpx.Response) -> None:
    text = response.content.decode("utf-8", "replace")
    leaks = [n for n, value in enumerate(PATIENT_VALUES) if value in text]
    assert not leaks, f"patient values #{leaks} in the answer"  # indexes only


# --- fhirVersion ------------------------------------------------------------------------------


def test_handed_stu3_content_type_is_refused_415(app: Any) -> None:
    """The handed fhirVersion=3.0 request is 415 at (content-type) naming R4; nothing is stored."""
    response = _push(app, headers=_request_headers("fhirversion-stu3"))
    assert response.status_code == 415
    issue = _issue(response)
    assert issue["location"] == ["(content-type)"]
    assert "reads FHIR R4 only" in issue["diagnostics"]
    assert "3.0 (STU3)" in issue["diagnostics"]
    assert _push(app).status_code == 201, "nothing was stored by the refused push"


@pytest.mark.parametrize("parameter", ["", "; fhirVersion=4.0", "; fhirVersion=4.0.1"])
def test_r4_or_no_fhir_version_is_accepted(app: Any, parameter: str) -> None:
    """No fhirVersion, 4.0 or 4.0.1 on the Content-Type: read as R4 and accepted (201)."""
    response = _push(app, headers=HIS | {"Content-Type": f"application/fhir+json{parameter}"})
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("POST", "/fhir/r4"),
        ("PUT", "/fhir/r4/Task/x"),
        ("PATCH", "/fhir/r4/Task/x"),
        ("POST", "/fhir/r4/Observation"),
    ],
)
def test_every_r4_body_route_refuses_another_fhir_version(app: Any, method: str, url: str) -> None:
    """Every /fhir/r4 route that reads a body answers 415 to fhirVersion 5.0, before anything."""
    headers = WELFARE | {"Content-Type": "application/fhir+json; fhirVersion=5.0"}
    response = _call(app, method, url, content=b"{}", headers=headers)
    assert response.status_code == 415
    assert _issue(response)["location"] == ["(content-type)"]


def test_stu3_routes_read_stu3_and_refuse_r4(app: Any) -> None:
    """`/fhir/stu3` reads fhirVersion 3.0 (or none) and answers 415 to 4.0, naming STU3."""
    url = "/fhir/stu3/Task/x"
    r4 = {"Content-Type": "application/fhir+json; fhirVersion=4.0"}
    refused = _call(app, "PUT", url, content=b"{}", headers=WELFARE | r4)
    assert refused.status_code == 415
    assert "reads FHIR STU3 only" in _issue(refused)["diagnostics"]
    stu3 = {"Content-Type": "application/fhir+json; fhirVersion=3.0"}
    assert _call(app, "PUT", url, content=b"{}", headers=WELFARE | stu3).status_code != 415


def test_accepting_only_another_version_is_406(app: Any) -> None:
    """A client that accepts only FHIR 3.0 answers on /fhir/r4 gets 406 at (accept)."""
    response = _push(app, headers=HIS | {"Accept": "application/fhir+json; fhirVersion=3.0"})
    assert response.status_code == 406
    assert _issue(response)["location"] == ["(accept)"]


# --- Content-Encoding ---------------------------------------------------------------------------


def test_handed_gzip_body_is_decoded_and_accepted(app: Any) -> None:
    """The handed gzip request is inflated and accepted 201 as the same referral as plain JSON."""
    headers = _request_headers("gzip-body")
    response = _push(app, content=gzip.compress(BODY), headers=headers)
    assert response.status_code == 201
    plain = _push(app)
    assert plain.status_code == 200
    assert plain.headers["location"] == response.headers["location"]


@pytest.mark.parametrize(
    "encoded", [zlib.compress(BODY), zlib.compress(BODY)[2:-4]], ids=["zlib", "raw"]
)
def test_deflate_body_is_decoded_and_accepted(app: Any, encoded: bytes) -> None:
    """`Content-Encoding: deflate` (zlib-wrapped, or raw as some clients send it) is accepted."""
    response = _push(app, content=encoded, headers=HIS | {"Content-Encoding": "deflate"})
    assert response.status_code == 201


def test_compression_bomb_is_refused_413_on_the_decoded_size(app: Any) -> None:
    """A small gzip body that inflates past max_body_bytes is refused 413 (too-costly)."""
    bomb = gzip.compress(b" " * 64_000_000)
    assert len(bomb) < 1 << 20
    response = _push(app, content=bomb, headers=HIS | {"Content-Encoding": "gzip"})
    assert response.status_code == 413
    assert _issue(response)["code"] == "too-costly"


@pytest.mark.parametrize(
    "content",
    [gzip.compress(BODY)[:-30], b"\x1f\x8b\x08\x00garbage", BODY],
    ids=["cut", "junk", "plain"],
)
def test_gzip_that_does_not_decode_is_400_not_a_charset_error(app: Any, content: bytes) -> None:
    """A truncated or corrupt gzip body is 400 `structure` on the stream, never a charset error."""
    response = _push(app, content=content, headers=HIS | {"Content-Encoding": "gzip"})
    assert response.status_code == 400
    assert "gzip stream" in _issue(response)["diagnostics"]
    assert "UTF-8" not in _issue(response)["diagnostics"]


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, gzip", "Jansen"])
def test_other_content_encodings_are_415(app: Any, coding: str) -> None:
    """Any other Content-Encoding is 415 at (content-encoding); an unknown name is not echoed."""
    response = _push(app, headers=HIS | {"Content-Encoding": coding})
    assert response.status_code == 415
    assert _issue(response)["location"] == ["(content-encoding)"]
    _no_patient_values(response)


# --- FHIR XML answers ------------------------------------------------------------------------


def _xml_root(response: httpx.Response) -> Any:
    assert response.headers["content-type"].startswith("application/fhir+xml")
    root = etree.fromstring(response.content)
    assert root.tag.startswith(FHIR_NS)
    return root


def _task_id(app: Any) -> str:
    response = _push(app)
    assert response.status_code == 201
    return str(response.headers["Location"]).split("/_history/")[0].rsplit("/", 1)[-1]


def _xml_requests(task_id: str) -> list[tuple[str, str, dict[str, Any], int, str]]:
    """(method, url, request kwargs, status, root element) for every /fhir/r4 route."""
    accepted = {"resourceType": "Task", "id": task_id, "status": "accepted", "intent": "order"}
    patch = [
        {
            "op": "replace",
            "path": "/businessStatus",
            "value": {"coding": [{"system": BUSINESS, "code": "waiting-list"}]},
        }
    ]
    return [
        (
            "POST",
            "/fhir/r4/ServiceRequest",
            {"content": BODY, "headers": HIS | {"Prefer": "return=OperationOutcome"}},
            200,
            "OperationOutcome",
        ),
        ("POST", "/fhir/r4", {"content": b"{}", "headers": HIS}, 400, "OperationOutcome"),
        ("GET", "/fhir/r4/metadata", {"headers": {}}, 200, "CapabilityStatement"),
        ("GET", f"/fhir/r4/Task?_id={task_id}", {"headers": WELFARE}, 200, "Bundle"),
        ("POST", "/fhir/r4/Task/_search", {"data": {"_id": task_id}, "headers": WELFARE}, 200,
         "Bundle"),
        ("GET", f"/fhir/r4/Task/{task_id}", {"headers": WELFARE}, 200, "Task"),
        ("GET", f"/fhir/r4/Task/{task_id}/_history/1", {"headers": WELFARE}, 200, "Task"),
        ("GET", "/fhir/r4/ServiceRequest/unknown", {"headers": WELFARE}, 404, "OperationOutcome"),
        ("GET", "/fhir/r4/ServiceRequest/unknown/_history/1", {"headers": WELFARE}, 404,
         "OperationOutcome"),
        ("GET", "/fhir/r4/Observation/unknown", {"headers": WELFARE}, 404, "OperationOutcome"),
        ("GET", "/fhir/r4/Observation/unknown/_history/1", {"headers": WELFARE}, 404,
         "OperationOutcome"),
        (
            "PUT",
            f"/fhir/r4/Task/{task_id}",
            {"json": accepted, "headers": WELFARE | {"If-Match": 'W/"1"'}},
            200,
            "Task",
        ),
        (
            "PATCH",
            f"/fhir/r4/Task/{task_id}",
            {
                "json": patch,
                "headers": WELFARE
                | {"If-Match": 'W/"2"', "Content-Type": "application/json-patch+json"},
            },
            200,
            "Task",
        ),
        (
            "POST",
            "/fhir/r4/Observation",
            {"json": {"resourceType": "Patient"}, "headers": WELFARE},
            400,
            "OperationOutcome",
        ),
    ]  # fmt: skip


@pytest.mark.parametrize("how", ["accept", "_format"])
def test_every_r4_route_answers_in_fhir_xml_when_asked(app: Any, how: str) -> None:
    """With Accept or _format asking XML, every /fhir/r4 route and method answers in FHIR XML."""
    task_id = _task_id(app)
    requests = _xml_requests(task_id)
    routes = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route) and route.path.startswith("/fhir/r4")
        for method in route.methods or ()
    }
    covered = {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method, url, *_ in requests
        if method in (route.methods or ()) and route.path_regex.match(url.split("?")[0])
    }
    assert routes == covered, "a /fhir/r4 route without an XML answer test"
    for method, url, kw, status, root in requests:
        headers = dict(kw.pop("headers"))
        params = {"_format": "xml"} if how == "_format" else {}
        if how == "accept":
            headers["Accept"] = "application/fhir+xml"
        response = _call(app, method, url, headers=headers, params=params, **kw)
        assert response.status_code == status, (method, url)
        assert _xml_root(response).tag == FHIR_NS + root, (method, url)


def test_xml_refusal_carries_the_same_issues_as_json(app: Any) -> None:
    """A refusal in FHIR XML holds the same codes, locations and diagnostics as in JSON."""
    body = json.dumps({"resourceType": "Patient"}).encode()
    as_json = _push(app, content=body).json()["issue"]
    root = _xml_root(_push(app, content=body, headers=HIS | {"Accept": "application/fhir+xml"}))
    issues = root.findall(f"{FHIR_NS}issue")
    assert [i.find(f"{FHIR_NS}code").get("value") for i in issues] == [i["code"] for i in as_json]
    assert [i.find(f"{FHIR_NS}diagnostics").get("value") for i in issues] == [
        i["diagnostics"] for i in as_json
    ]


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Accept": "application/fhir+xml"}, 401),
        (HIS | {"Accept": "application/fhir+xml", "Content-Encoding": "br"}, 415),
        (HIS | {"Content-Type": "application/fhir+json; fhirVersion=3.0"}, 415),
    ],
)
def test_refusals_before_the_route_are_xml_too(
    app: Any, headers: dict[str, str], status: int
) -> None:
    """401, and the 415s of the negotiation layer itself, answer in the format asked for."""
    params = {} if "Accept" in headers else {"_format": "application/fhir+xml"}
    response = _push(app, headers=headers, params=params)
    assert response.status_code == status
    _xml_root(response)


def test_json_stays_the_default(app: Any) -> None:
    """Without Accept or _format (or with */*), answers are FHIR JSON as before."""
    for extra in ({}, {"Accept": "*/*"}):
        response = _push(app, headers=HIS | extra | {"Prefer": "return=representation"})
        assert response.headers["content-type"] == "application/fhir+json"


def test_stu3_refusals_answer_in_stu3_xml(app: Any) -> None:
    """On /fhir/stu3 an XML answer is STU3 FHIR XML (fhirVersion=3.0 on its Content-Type)."""
    response = _call(app, "GET", "/fhir/stu3/Task/x", headers={"Accept": "application/fhir+xml"})
    assert response.status_code == 401
    assert "fhirVersion=3.0" in response.headers["content-type"]
    assert _xml_root(response).tag == FHIR_NS + "OperationOutcome"


def test_signed_webhook_body_may_be_gzip_and_is_verified_decoded(app: Any) -> None:
    """A gzip webhook body is decoded first: its HMAC is checked over the decoded JSON."""
    body = b'{"verwijzing_id": "x", "tijdstip": "2026-11-04T10:00:00+01:00"}'
    good = webhook.sign(b"example-webhook-secret", int(time.time()), body)
    headers = good | {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    url = "/feedback/welzijn-json"
    assert _call(app, "POST", url, content=gzip.compress(body), headers=headers).status_code != 401
    wrong = gzip.compress(body.replace(b"x", b"y"))
    assert _call(app, "POST", url, content=wrong, headers=headers).status_code == 401
