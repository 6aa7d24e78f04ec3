"""Issue 18's evidence: two widely used FHIR client libraries, ``fhirpy`` and the SMART on FHIR
``fhirclient``, as a GP system and as a welfare system against the real ``wor-bridge serve`` on
a free loopback port: push a referral, find its Task by search, read it, update it with its
version, post a feedback Observation and read it back, withdraw. Each library is used as its
documentation shows, with no workaround: the only headers set by hand are the credentials and
``If-Match`` (the CapabilityStatement says Task updates are version-aware), each through the
library's own way of adding headers. No body or process output is printed (patient data).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fhirclient.models.bundle import Bundle
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.codeableconcept import CodeableConcept
from fhirclient.models.observation import Observation
from fhirclient.models.task import Task
from fhirclient.server import FHIRServer
from fhirpy import SyncFHIRClient

from tests.cases import case_input
from tests.service_harness import (
    HIS_KEY,
    ServiceProcess,
    receiver,
    running_service,
    wait_until,
    write_config,
)
from wor_bridge.demo.fhir_server import SimulatedFhirServer

WELFARE_KEY = "example-welfare-key"
HIS_SYSTEM = "urn:oid:2.16.528.1.1007.99.1234.1"
FEEDBACK_ITEM = "https://wor-bridge.nl/fhir/CodeSystem/feedback-item"
BUSINESS = "https://wor-bridge.nl/fhir/CodeSystem/task-business-status"
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedFhirServer]:
    """The welfare organisation's FHIR endpoint (referrals arrive there)."""
    with receiver() as server:
        yield server


@pytest.fixture(scope="module")
def gp_record() -> Iterator[SimulatedFhirServer]:
    """The GP record's FHIR endpoint (the feedback Observations arrive there)."""
    with receiver() as server:
        yield server


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory,
    sim: SimulatedFhirServer,
    gp_record: SimulatedFhirServer,
) -> Iterator[ServiceProcess]:
    """The real service with a GP record, so that it holds the feedback it forwards."""
    path: Path = tmp_path_factory.mktemp("clients")
    config = write_config(
        path,
        sim.base_url,
        endpoints={"gp-record": gp_record.base_url},
        service={"rate_per_s": 1000.0, "burst": 1000},
        feedback={"deadline_check_interval_s": 3600.0},
    )
    with running_service(config) as proc:
        yield proc


def _referral(case: str) -> tuple[dict[str, Any], str]:
    """A fixture referral with a HIS referral number of its own; (resource, number)."""
    number = f"CL-{next(_numbers):04d}"
    data = case_input(case)
    assert data.count(b"VW-2026-0001") == 1
    return json.loads(data.replace(b"VW-2026-0001", number.encode())), number


def _observation(request_reference: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "basedOn": [{"reference": request_reference}],
        "code": {"coding": [{"system": FEEDBACK_ITEM, "code": "conversation-count"}]},
        "effectiveDateTime": "2026-11-26T10:00:00+01:00",
        "valueInteger": 2,
    }


def _fhirpy(service: ServiceProcess, key: str, **headers: str) -> SyncFHIRClient:
    return SyncFHIRClient(
        f"{service.base_url}/fhir/r4", authorization=f"Bearer {key}", extra_headers=headers
    )


def _fhirclient(service: ServiceProcess, key: str) -> FHIRServer:
    server = FHIRServer(None, base_uri=f"{service.base_url}/fhir/r4")
    server.session.headers["Authorization"] = f"Bearer {key}"
    return server


def _delivered(sim: SimulatedFhirServer, number: str) -> bool:
    return any(
        i.get("value") == number
        for r in sim.resources("ServiceRequest")
        for i in r.get("identifier") or []
    )


def test_fhirpy_gp_system_and_fhirclient_welfare_system(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """fhirpy pushes, finds, reads and withdraws; fhirclient searches, updates, posts feedback."""
    gp = _fhirpy(service, HIS_KEY)
    resource, number = _referral("accepted-contained")
    pushed = gp.resource("ServiceRequest", **resource)
    pushed.save()  # 201: the answer carries no body, so fhirpy keeps the resource as it was
    assert pushed["identifier"][0]["value"] == number
    task = gp.resources("Task").search(identifier=f"{HIS_SYSTEM}|{number}").first()
    assert task is not None
    assert task["meta"]["versionId"] in ("1", "2")  # 2 once delivered: a change the GP reads
    assert "lastUpdated" in task["meta"]
    again = gp.reference("Task", task.id).to_resource()
    assert again["focus"]["reference"].startswith("ServiceRequest/")
    wait_until(lambda: _delivered(sim, number), "the delivery to the welfare organisation")

    welfare = _fhirclient(service, WELFARE_KEY)
    welfare.get_capability()  # fhirclient's first call: GET [base]/metadata
    assert isinstance(welfare.capabilityStatement, CapabilityStatement)
    search = Task.where({"identifier": f"{HIS_SYSTEM}|{number}"})
    [found] = list(search.perform_resources_iter(welfare))
    assert found.id == task.id
    mine = Task.read(task.id, welfare)
    mine.status = "accepted"
    welfare.session.headers["If-Match"] = f'W/"{mine.meta.versionId}"'
    answer = mine.update()
    del welfare.session.headers["If-Match"]
    assert answer is not None
    assert answer["status"] == "accepted"
    created = Observation(_observation(mine.focus.reference)).create(welfare)
    assert created is not None
    assert created["resourceType"] == "Observation"
    held = Observation.read(created["id"], welfare)
    assert held.code.coding[0].code == "conversation-count"

    current = gp.reference("Task", task.id).to_resource()
    assert current["status"] == "accepted"
    versioned = _fhirpy(service, HIS_KEY, **{"If-Match": f'W/"{current["meta"]["versionId"]}"'})
    withdrawn = versioned.resource(
        "Task", **{**current.serialize(), "status": "cancelled", "statusReason": {"text": "moved"}}
    )
    withdrawn.save()
    assert withdrawn["status"] == "cancelled"
    assert gp.resources("Task").search(status="cancelled", _id=task.id).count() == 1


def test_fhirclient_gp_system_and_fhirpy_welfare_system(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """fhirclient pushes a transaction and withdraws; fhirpy lists, updates, posts feedback."""
    gp = _fhirclient(service, HIS_KEY)
    gp.get_capability()
    resource, number = _referral("accepted-bundle-transaction-urn")
    response = Bundle(resource).create(gp)  # a transaction is POSTed to [base]/
    assert response is not None
    assert response["type"] == "transaction-response"
    [task] = list(Task.where({"identifier": f"{HIS_SYSTEM}|{number}"}).perform_resources_iter(gp))
    assert Task.read(task.id, gp).status == "requested"
    wait_until(lambda: _delivered(sim, number), "the delivery to the welfare organisation")

    welfare = _fhirpy(service, WELFARE_KEY)
    listed = welfare.resources("Task").search(status="requested").limit(2).fetch_all()
    assert task.id in [t.id for t in listed]
    mine = welfare.reference("Task", task.id).to_resource()
    version = mine["meta"]["versionId"]
    accepted = _fhirpy(service, WELFARE_KEY, **{"If-Match": f'W/"{version}"'}).resource(
        "Task", **{**mine.serialize(), "status": "accepted"}
    )
    accepted.save()
    assert accepted["meta"]["versionId"] == str(int(version) + 1)
    observation = welfare.resource("Observation", **_observation(mine["focus"]["reference"]))
    observation.save()  # 201 with the Observation the bridge holds: fhirpy takes its id
    assert observation.id
    assert welfare.reference("Observation", observation.id).to_resource()["status"] == "final"

    current = Task.read(task.id, gp)
    current.status = "cancelled"
    current.statusReason = CodeableConcept({"text": "moved"})
    gp.session.headers["If-Match"] = f'W/"{current.meta.versionId}"'
    current.update()
    del gp.session.headers["If-Match"]
    assert Task.read(task.id, gp).status == "cancelled"
