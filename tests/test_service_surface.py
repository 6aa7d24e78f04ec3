"""What the service says and shows: security headers on every answer, no redirects, no CDN docs,
an OpenAPI description with the real security, bodies and answers, and UTF-8 bodies only."""

from __future__ import annotations

import codecs
from typing import Any

import httpx
import pytest

from tests.cases import case_input
from tests.inprocess import (
    ADMIN,
    FHIR_JSON,
    HIS,
    WELFARE,
    World,
    hook_payload,
    make_world,
    observation,
    signed,
    task_body,
)
from tests.service_harness import patient_value_hits
from wor_bridge.service import openapi


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """One app with the patient's referrals, shared by the read-only checks of this module."""
    return make_world(tmp_path_factory.mktemp("surface"))


def _answers(world: World) -> dict[str, httpx.Response]:
    task = world.voorbeeld
    return {
        "healthz": world.call("GET", "/healthz"),
        "readyz": world.call("GET", "/readyz"),
        "openapi": world.call("GET", "/openapi.json"),
        "metrics": world.call("GET", "/metrics", ADMIN),
        "task": world.call("GET", f"/fhir/r4/Task/{task}", HIS),
        "task, no key": world.call("GET", f"/fhir/r4/Task/{task}"),
        "task, unknown": world.call("GET", "/fhir/r4/Task/nope", HIS),
        "intake refused": world.call(
            "POST",
            "/fhir/r4/ServiceRequest",
            HIS,
            content=b"{}",
            headers={"Content-Type": FHIR_JSON},
        ),
        "token refused": world.call("POST", "/oauth/token", data={"grant_type": "password"}),
        "no such path": world.call("GET", "/nowhere"),
        "wrong method": world.call("DELETE", "/healthz"),
    }


def test_every_answer_says_nosniff_and_no_store(world: World) -> None:
    """Every answer, resource or refusal, carries nosniff and Cache-Control: no-store."""
    for name, answer in _answers(world).items():
        assert answer.headers.get("x-content-type-options") == "nosniff", name
        assert "no-store" in answer.headers.get("cache-control", ""), name
        assert "server" not in answer.headers, name


@pytest.mark.parametrize("path", ["/healthz/", "/fhir/r4/Task/x/", "/fhir/r4/ServiceRequest/"])
def test_no_redirect_is_built_from_the_host_header(world: World, path: str) -> None:
    """A trailing slash is a 404 OperationOutcome, never a redirect to the Host named."""
    answer = world.call("GET", path, HIS, headers={"Host": "evil.example"})
    assert answer.status_code in (404, 405)
    assert "location" not in answer.headers
    assert "evil.example" not in answer.text


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/docs/oauth2-redirect"])
def test_cdn_documentation_pages_are_off(world: World, path: str) -> None:
    """Swagger UI and ReDoc (scripts and fonts from third-party CDNs) are not served."""
    assert world.call("GET", path).status_code == 404


def test_openapi_describes_security_bodies_and_real_answers(world: World) -> None:
    """OpenAPI has security schemes, auth, FHIR bodies and real answers; no unused 422 schema."""
    doc = world.call("GET", "/openapi.json").json()
    text = str(doc)
    assert "HTTPValidationError" not in text
    assert "ValidationError" not in doc["components"]["schemas"]
    assert {"apiKey", "pullToken", "clientCredentials", "webhookSignature", "mutualTLS"} <= set(
        doc["components"]["securitySchemes"]
    )
    documented = {(p, m) for p, ops in doc["paths"].items() for m in ops}
    assert documented == set(openapi.OPERATIONS)
    intake = doc["paths"]["/fhir/r4/ServiceRequest"]["post"]
    assert {FHIR_JSON, "application/fhir+xml"} <= set(intake["requestBody"]["content"])
    assert intake["security"] == [{"apiKey": []}, {"apiKeyHeader": []}]
    patch = doc["paths"]["/fhir/r4/Task/{task_id}"]["patch"]
    assert set(patch["requestBody"]["content"]) == {"application/json-patch+json"}
    put = doc["paths"]["/fhir/r4/Task/{task_id}"]["put"]
    assert {"200", "400", "401", "403", "404", "409", "412", "415", "422", "428", "429"} <= set(
        put["responses"]
    )
    refusal = put["responses"]["412"]["content"][FHIR_JSON]["schema"]
    assert refusal == {"$ref": "#/components/schemas/OperationOutcome"}
    assert set(doc["paths"]["/fhir/r4"]["post"]["responses"]) >= {"413", "415"}
    token = doc["paths"]["/oauth/token"]["post"]
    assert "application/x-www-form-urlencoded" in token["requestBody"]["content"]
    assert doc["paths"]["/healthz"]["get"]["security"] == []


def _non_utf8_cases(world: World) -> list[tuple[str, str, str, bytes, dict[str, str]]]:
    contained = case_input("accepted-contained")
    utf16 = codecs.BOM_UTF16_LE + contained.decode().encode("utf-16-le")
    latin = contained.replace(b"Utrecht", "Zo\u00eb".encode("latin-1"))
    xml = b'<?xml version="1.0" encoding="ISO-8859-1"?>' + case_input("accepted-xml-contained")
    task = str(task_body(world.voorbeeld, "accepted")).replace("'", '"').encode()
    hook = signed(hook_payload(world.voorbeeld, reden="caf\u00e9"))[0].replace(
        b"caf\\u00e9", "caf\u00e9".encode("latin-1")
    )
    put = f"/fhir/r4/Task/{world.voorbeeld}"
    stu3 = f"/fhir/stu3/Task/{world.viplive}"
    token = world.token(world.viplive)
    return [
        ("intake UTF-16", "/fhir/r4/ServiceRequest", HIS, utf16, {"Content-Type": FHIR_JSON}),
        ("intake latin-1", "/fhir/r4/ServiceRequest", HIS, latin, {"Content-Type": FHIR_JSON}),
        ("intake charset", "/fhir/r4/ServiceRequest", HIS, contained,
         {"Content-Type": f"{FHIR_JSON}; charset=iso-8859-1"}),
        ("intake XML declaration", "/fhir/r4", HIS, xml,
         {"Content-Type": "application/fhir+xml"}),
        ("Task PUT UTF-16", put, WELFARE, codecs.BOM_UTF16_BE + task.decode().encode("utf-16-be"),
         {"Content-Type": FHIR_JSON, "If-Match": 'W/"1"'}),
        ("Observation charset", "/fhir/r4/Observation", WELFARE,
         str(observation(world.voorbeeld)).replace("'", '"').encode(),
         {"Content-Type": "application/fhir+json; charset=utf-16"}),
        ("STU3 PUT latin-1", stu3, token, task.replace(b"accepted", b"accept\xe9d"),
         {"Content-Type": FHIR_JSON}),
        ("webhook latin-1", "/feedback/welzijn-json", "", hook, {**signed(hook)[1]}),
    ]  # fmt: skip


def test_non_utf8_bodies_are_refused_on_every_body_route(world: World) -> None:
    """UTF-16, Latin-1 bytes, another charset or XML encoding: 400/415, never read as text."""
    for name, path, key, body, headers in _non_utf8_cases(world):
        method = "PUT" if "/Task/" in path else "POST"
        answer = world.call(method, path, key or None, content=body, headers=headers)
        assert answer.status_code in (400, 415), name
        outcome: dict[str, Any] = answer.json()
        assert outcome["resourceType"] == "OperationOutcome", name
    status = world.call("GET", f"/fhir/r4/Task/{world.voorbeeld}", ADMIN).json()["status"]
    assert status == "requested"


def test_openapi_answer_has_no_patient_data_or_cdn(world: World) -> None:
    """The OpenAPI description names no CDN and no fixture patient value."""
    text = world.call("GET", "/openapi.json").text
    assert "cdn" not in text.lower()
    assert patient_value_hits(text) == []
