"""The HTTP layer in-process (httpx over ASGI): guards that must hold before any state is read."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cases import REPO, case_input
from wor_bridge import bootstrap
from wor_bridge.config import load_app
from wor_bridge.connectors import webhook
from wor_bridge.demo.credentials import demo_configuration
from wor_bridge.service.app import _CatchAll, create_app

OTHER_KEY = "rivierenland-system-key"


@pytest.fixture
def app(tmp_path: Path) -> Any:
    """The app on a temporary store, with a second welfare client for another organisation."""
    text = demo_configuration()
    text = text.replace('mappings_dir = "../mappings"', f'mappings_dir = "{REPO / "mappings"}"')
    text = text.replace('path = "wor-bridge.sqlite"', f'path = "{tmp_path / "s.sqlite"}"')
    digest = hashlib.sha256(OTHER_KEY.encode()).hexdigest()
    text += (
        f'\n[[clients]]\nid = "rivierenland"\nkey_sha256 = "{digest}"\n'
        'scopes = ["task:read", "task:update", "feedback:write"]\n'
        'destination = "welzijn-rivierenland"\n'
    )
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return create_app(bootstrap.build(load_app(path)), start_dispatcher=False)


def _call(app: Any, method: str, url: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, url, **kw)

    return asyncio.run(go())


def _referral(app: Any) -> str:
    response = _call(
        app,
        "POST",
        "/fhir/r4/ServiceRequest",
        content=case_input("accepted-contained"),
        headers={
            "Authorization": "Bearer example-his-key",
            "Content-Type": "application/fhir+json",
        },
    )
    assert response.status_code == 201
    return response.headers["Location"].split("/_history/")[0].rsplit("/", 1)[-1]


def test_json_patch_cannot_probe_another_organisations_task(app: Any) -> None:
    """A JSON Patch `test` op on another organisation's Task is a 404 before it is evaluated."""
    task_id = _referral(app)
    headers = {
        "Authorization": f"Bearer {OTHER_KEY}",
        "If-Match": 'W/"1"',
        "Content-Type": "application/json-patch+json",
    }
    answers = {
        _call(
            app,
            "PATCH",
            f"/fhir/r4/Task/{task_id}",
            json=[{"op": "test", "path": "/status", "value": guess}],
            headers=headers,
        ).status_code
        for guess in ("requested", "accepted")
    }
    assert answers == {404}


def test_webhook_hostile_headers_get_401_not_500(app: Any) -> None:
    """A huge timestamp or a non-ASCII signature is a 401 OperationOutcome, not a crash."""
    body = b'{"verwijzing_id": "x", "tijdstip": "2026-11-04T10:00:00+01:00"}'
    good = webhook.sign(b"example-webhook-secret", int(time.time()), body)
    latin = [(k.encode(), v.encode()) for k, v in good.items() if k != "X-WoR-Signature"]
    for headers in (
        {**good, "X-WoR-Timestamp": "9" * 5000},
        [*latin, (b"X-WoR-Signature", "sha256=\u00e9\u00e9".encode("latin-1"))],
    ):
        response = _call(app, "POST", "/feedback/welzijn-json", content=body, headers=headers)
        assert response.status_code == 401
        assert response.json()["resourceType"] == "OperationOutcome"


def test_xml_decimal_with_a_huge_exponent_is_refused_quickly(app: Any) -> None:
    """A decimal like 1e1000000 in XML is answered quickly and cleanly, never expanded."""
    xml = (
        b'<Bundle xmlns="http://hl7.org/fhir"><type value="collection"/><entry><resource>'
        b'<Observation><status value="final"/><code><text value="x"/></code>'
        b'<valueQuantity><value value="1e1000000"/></valueQuantity></Observation>'
        b"</resource></entry></Bundle>"
    )
    started = time.perf_counter()
    response = _call(
        app,
        "POST",
        "/fhir/r4",
        content=xml,
        headers={"Authorization": "Bearer example-his-key", "Content-Type": "application/fhir+xml"},
    )
    assert response.status_code in (400, 422)  # not a referral either way
    assert response.json()["resourceType"] == "OperationOutcome"
    assert time.perf_counter() - started < 5


def test_unexpected_errors_become_a_500_outcome_without_reraising() -> None:
    """The catch-all answers 500 with an OperationOutcome and does not re-raise."""

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("a message that might quote input")

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    asyncio.run(_CatchAll(broken)(scope, receive, send))
    assert sent[0]["status"] == 500
    assert b"OperationOutcome" in sent[1]["body"]
    assert b"might quote input" not in sent[1]["body"]
