"""The service in-process (httpx over ASGI) with simulated receivers on loopback: ``Bridge``, and
the ``receivers`` / ``bridge`` fixtures (registered in ``conftest.py``)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cases import case_input
from tests.service_harness import write_config
from wor_bridge import bootstrap
from wor_bridge.demo.fhir_server import SimulatedFhirServer
from wor_bridge.service.app import create_app

HIS = {"Authorization": "Bearer example-his-key"}
WELFARE = {"Authorization": "Bearer example-welfare-key"}
FHIR_JSON = "application/fhir+json"


@dataclass
class Bridge:
    """The app (dispatcher run by hand), the welfare receiver and the GP record."""

    app: Any
    welfare: SimulatedFhirServer
    gp: SimulatedFhirServer

    def call(self, method: str, url: str, **kw: Any) -> httpx.Response:
        """One request to the app."""

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, url, **kw)

        return asyncio.run(go())

    def deliver(self) -> None:
        """Dispatcher rounds until nothing is due."""
        while self.app.state.dispatcher.run_once():
            pass

    def push(self, ref: str = "AS-GET-1") -> str:
        """Push the contained fixture under HIS number ``ref``; its Task id."""
        document = json.loads(case_input("accepted-contained"))
        document["identifier"][0]["value"] = ref
        answer = self.call(
            "POST",
            "/fhir/r4/ServiceRequest",
            content=json.dumps(document).encode(),
            headers={**HIS, "Content-Type": FHIR_JSON},
        )
        assert answer.status_code in (200, 201)
        location = answer.headers["location"]  # [base]/fhir/r4/Task/{id}/_history/{vid}
        return str(location.split("/_history/")[0].rsplit("/", 1)[-1])

    def get(self, task_id: str, headers: dict[str, str] = HIS) -> httpx.Response:
        """GET the Task."""
        answer = self.call("GET", f"/fhir/r4/Task/{task_id}", headers=headers)
        assert answer.status_code == 200
        return answer

    def put(
        self, task_id: str, body: dict[str, Any], etag: str, headers: dict[str, str] = HIS
    ) -> httpx.Response:
        """PUT the Task with If-Match."""
        return self.call(
            "PUT",
            f"/fhir/r4/Task/{task_id}",
            content=json.dumps(body).encode(),
            headers={**headers, "Content-Type": FHIR_JSON, "If-Match": etag},
        )


@pytest.fixture(scope="module")
def receivers() -> Iterator[tuple[SimulatedFhirServer, SimulatedFhirServer]]:
    """A welfare receiver and a GP record, started once for the module."""
    welfare = SimulatedFhirServer("/fhir").start()
    gp = SimulatedFhirServer("/gp").start()
    try:
        yield welfare, gp
    finally:
        welfare.stop()
        gp.stop()


@pytest.fixture
def bridge(tmp_path: Path, receivers: tuple[SimulatedFhirServer, SimulatedFhirServer]) -> Bridge:
    """Every destination at the (emptied) welfare receiver, the GP record at the other."""
    welfare, gp = receivers
    for server in receivers:
        server.reset()
    config = write_config(tmp_path, welfare.base_url, endpoints={"gp-record": gp.base_url})
    return Bridge(create_app(bootstrap.load(config), start_dispatcher=False), welfare, gp)
