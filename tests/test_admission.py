"""Bodies in work per client and in total (service/admission.py) and the body deadline
(service/bodies.py), in-process: 429/503 with Retry-After, 408 and a closed connection."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cases import REPO, case_input
from wor_bridge import bootstrap
from wor_bridge.config import load_app
from wor_bridge.demo.credentials import demo_configuration
from wor_bridge.service.admission import Busy, Slots, client_key
from wor_bridge.service.app import create_app
from wor_bridge.service.bodies import BodyDeadline
from wor_bridge.usecases import intake

HIS = {"Authorization": "Bearer example-his-key", "Content-Type": "application/fhir+json"}
WELFARE = {"Authorization": "Bearer example-welfare-key", "Content-Type": "application/fhir+json"}


def _app(tmp_path: Path, total: int, per_client: int) -> Any:
    text = demo_configuration()
    text = text.replace('mappings_dir = "../mappings"', f'mappings_dir = "{REPO / "mappings"}"')
    text = text.replace('path = "wor-bridge.sqlite"', f'path = "{tmp_path / "s.sqlite"}"')
    text = text.replace("\nmax_validations = 8", f"\nmax_validations = {total}")
    text = text.replace(
        "\nmax_validations_per_client = 4", f"\nmax_validations_per_client = {per_client}"
    )
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return create_app(bootstrap.build(load_app(path)), start_dispatcher=False)


class _Gate:
    """Holds every intake in its worker thread until opened."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        real = intake.accept_referral

        def held(*args: Any, **kwargs: Any) -> Any:
            self.entered.set()
            self.opened.wait(20)
            return real(*args, **kwargs)

        monkeypatch.setattr(intake, "accept_referral", held)


async def _while_one_intake_is_held(
    app: Any, gate: _Gate, others: list[tuple[str, str, dict[str, str], bytes]]
) -> tuple[httpx.Response, list[httpx.Response]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        first = asyncio.create_task(
            client.post(
                "/fhir/r4/ServiceRequest", content=case_input("accepted-contained"), headers=HIS
            )
        )
        await asyncio.to_thread(gate.entered.wait, 20)
        answers = [
            await client.request(method, url, headers=headers, content=body)
            for method, url, headers, body in others
        ]
        gate.opened.set()
        return await first, answers


def test_a_client_over_its_share_gets_429_and_others_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one body in work for a client, its next body is 429 + Retry-After; others proceed."""
    app = _app(tmp_path, total=4, per_client=1)
    gate = _Gate(monkeypatch)
    second = case_input("accepted-contained").replace(b"VW-2026-0001", b"VW-2026-0002")
    observation = b'{"resourceType": "Observation"}'
    first, (mine, other) = asyncio.run(
        _while_one_intake_is_held(
            app,
            gate,
            [
                ("POST", "/fhir/r4/ServiceRequest", HIS, second),
                ("POST", "/fhir/r4/Observation", WELFARE, observation),
            ],
        )
    )
    assert first.status_code == 201
    assert mine.status_code == 429
    assert int(mine.headers["Retry-After"]) >= 1
    issue = mine.json()["issue"][0]
    assert (issue["code"], issue["location"]) == ("throttled", ["(request)"])
    assert "max_validations_per_client" in issue["diagnostics"]
    assert other.status_code not in (429, 503)
    assert ("referral_intake", "refused", "HTTP 429") in _audit(tmp_path)


def test_all_slots_taken_gives_503_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With every slot in work, another client's body is 503 + Retry-After, not queued."""
    app = _app(tmp_path, total=1, per_client=1)
    gate = _Gate(monkeypatch)
    first, (other,) = asyncio.run(
        _while_one_intake_is_held(
            app, gate, [("POST", "/fhir/r4/Observation", WELFARE, b'{"resourceType": "x"}')]
        )
    )
    assert first.status_code == 201
    assert other.status_code == 503
    assert int(other.headers["Retry-After"]) >= 1
    issue = other.json()["issue"][0]
    assert issue["code"] == "transient"
    assert "service.max_validations" in issue["diagnostics"]


def _audit(tmp_path: Path) -> list[tuple[str, str, str]]:
    with contextlib.closing(sqlite3.connect(tmp_path / "s.sqlite")) as conn:
        return conn.execute("SELECT event, outcome, detail FROM audit").fetchall()


def test_slots_are_given_back_after_every_answer(tmp_path: Path) -> None:
    """Bodies answered one after another never run out of slots (refusals included)."""
    app = _app(tmp_path, total=1, per_client=1)

    async def go() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            statuses = []
            for body in (b"{", b"9" * 5000, case_input("accepted-contained")) * 3:
                answer = await client.post("/fhir/r4/ServiceRequest", content=body, headers=HIS)
                statuses.append(answer.status_code)
            return statuses

    assert set(asyncio.run(go())) <= {400, 201, 200}


def test_slots_count_per_client_and_in_total() -> None:
    """Slots: the client's own share is checked first (429), then the total (503)."""
    slots = Slots(total=2, per_client=1)
    slots.enter("a")
    with pytest.raises(Busy) as mine:
        slots.enter("a")
    slots.enter("b")
    with pytest.raises(Busy) as total:
        slots.enter("c")
    assert (mine.value.status, total.value.status) == (429, 503)
    slots.leave("a")
    slots.enter("c")
    slots.leave("b")
    slots.leave("c")
    assert slots.in_use == 0


def test_client_key_is_the_credential_hash_or_the_peer() -> None:
    """A request counts against its credential (hashed, never in clear) or its peer address."""
    keyed = client_key({"headers": [(b"authorization", b"Bearer secret")], "client": ("h", 1)})
    assert keyed.startswith("key:")
    assert "secret" not in keyed
    assert client_key({"headers": [], "client": ("10.0.0.9", 5)}) == "peer:10.0.0.9"


def test_a_late_body_is_408_with_connection_close() -> None:
    """A body that does not arrive before the deadline is answered 408 and the connection closes."""

    async def route(scope: Any, receive: Any, send: Any) -> None:
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def trickle() -> dict[str, Any]:
        await asyncio.sleep(0.02)
        return {"type": "http.request", "body": b"x", "more_body": True}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": []}
    asyncio.run(BodyDeadline(route, timeout_s=0.2)(scope, trickle, send))
    assert sent[0]["status"] == 408
    assert (b"connection", b"close") in sent[0]["headers"]
    assert b"body_timeout_s" in sent[1]["body"]


def test_openapi_lists_the_cost_answers_of_every_body_route(tmp_path: Path) -> None:
    """Every operation that reads a body documents 408, 413, 429 and 503."""
    document = _app(tmp_path, total=8, per_client=4).openapi()
    operations = [
        operation
        for item in document["paths"].values()
        for method, operation in item.items()
        if method in ("post", "put", "patch")
    ]
    assert len(operations) >= 9
    for operation in operations:
        assert {"408", "413", "429", "503"} <= set(operation["responses"]), operation["summary"]
