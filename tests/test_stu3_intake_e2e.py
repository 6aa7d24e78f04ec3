"""STU3 intake end to end: the real ``wor-bridge serve`` on a free loopback port takes STU3
referrals (JSON contained, XML Bundle) and delivers to a simulated welfare FHIR endpoint exactly
what their R4 equivalents give; an STU3 opt-out never leaves. No body is printed."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

import wor_bridge
from tests.service_harness import (
    FHIR_JSON,
    FHIR_XML,
    HIS_KEY,
    ServiceProcess,
    audit_rows,
    auth,
    business_status,
    receiver,
    running_service,
    service_requests,
    task_id_of,
    wait_until,
    write_config,
)
from tests.stu3_intake_cases import STU3_PATIENT_VALUES, stu3_case, stu3_input
from wor_bridge.demo.fhir_server import SimulatedFhirServer

TIMEOUT = 10
PER_REFERRAL = frozenset({"Patient", "Consent", "ServiceRequest", "Task"})
_numbers = itertools.count(1)


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatedFhirServer]:
    """The simulated welfare FHIR endpoint."""
    with receiver() as server:
        yield server


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, sim: SimulatedFhirServer) -> Path:
    """The example configuration, every destination at the simulated endpoint."""
    return write_config(
        tmp_path_factory.mktemp("stu3-e2e"),
        sim.base_url,
        service={"rate_per_s": 1000.0, "burst": 1000},
    )


@pytest.fixture(scope="module")
def service(config: Path) -> Iterator[ServiceProcess]:
    """The running service (killed at the end of the module)."""
    with running_service(config) as proc:
        yield proc


def _variant(data: bytes, referral_id: str) -> bytes:
    """The input as another referral: its GP-system identifier value (``VW-2026-nnnn``) varied."""
    found = re.findall(rb"VW-2026-\d{4}", data)
    assert len(found) == 1
    return data.replace(found[0], referral_id.encode())


def _post(service: ServiceProcess, path: str, body: bytes, ctype: str) -> requests.Response:
    return requests.post(
        service.base_url + path, data=body, headers=auth(HIS_KEY, ctype), timeout=TIMEOUT
    )


def _expected(case: str, referral_id: str) -> dict[str, Any]:
    """The Bundle the R4 equivalent of ``case`` gives for the example GP system."""
    r4 = _variant((stu3_case(case) / "equivalent.r4.json").read_bytes(), referral_id)
    settings = wor_bridge.load_settings()
    return wor_bridge.translate(r4, None, settings, source_system="his-example").bundle


def _received(sim: SimulatedFhirServer, resource: dict[str, Any]) -> bool:
    """The receiver holds ``resource`` (its id aside: a POST destination's receiver picks it)."""
    without_id = {k: v for k, v in resource.items() if k != "id"}
    return any(
        {k: v for k, v in held.items() if k != "id"} == without_id
        for held in sim.resources(resource["resourceType"])
    )


@pytest.mark.parametrize(
    ("case", "path", "ctype"),
    [
        ("accepted-contained", "/fhir/stu3/ReferralRequest", FHIR_JSON),
        ("accepted-xml-transaction-urn", "/fhir/stu3", FHIR_XML),
        ("accepted-route-by-practice-bsn-ageband", "/fhir/stu3/ReferralRequest", FHIR_JSON),
    ],
)
def test_stu3_referral_is_delivered_as_its_r4_equivalent(
    service: ServiceProcess, sim: SimulatedFhirServer, case: str, path: str, ctype: str
) -> None:
    """An STU3 push is stored, delivered and audited; the receiver holds the referral's resources
    exactly as the equivalent R4 referral gives them."""
    referral_id = f"STU3-E2E-{next(_numbers):04d}"
    answer = _post(service, path, _variant(stu3_input(case), referral_id), ctype)
    assert answer.status_code == 201
    assert answer.headers["Content-Type"] == "application/fhir+json; fhirVersion=3.0"
    task_id = task_id_of(answer)
    wait_until(lambda: service_requests(sim, referral_id), "the delivery of the STU3 referral")

    def delivered() -> bool:
        got = requests.get(
            f"{service.base_url}/fhir/r4/Task/{task_id}", headers=auth(HIS_KEY), timeout=TIMEOUT
        )
        return got.status_code == 200 and business_status(got.json()) == "delivered"

    wait_until(delivered, "the Task to say delivered")
    expected = _expected(case, referral_id)
    for entry in expected["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] not in PER_REFERRAL:
            continue  # shared by referrals: a conditional create keeps the first one sent
        held = _received(sim, resource)
        assert held, f"no {resource['resourceType']} as the R4 equivalent gives it"
    rows = [r for r in audit_rows(service.config, "referral_intake") if r["object_id"] == task_id]
    assert [r["outcome"] for r in rows] == ["accepted"]


def test_stu3_opt_out_is_refused_and_never_delivered(
    service: ServiceProcess, sim: SimulatedFhirServer
) -> None:
    """An STU3 opt-out: 422 at the STU3 policyRule; nothing reaches the receiver."""
    referral_id = f"STU3-E2E-{next(_numbers):04d}"
    body = _variant(stu3_input("refused-consent-optout"), referral_id)
    answer = _post(service, "/fhir/stu3/ReferralRequest", body, FHIR_JSON)
    assert answer.status_code == 422
    issues = answer.json()["issue"]
    assert [i["expression"] for i in issues] == [["ReferralRequest.contained[4].policyRule"]]
    accepted = _post(
        service,
        "/fhir/stu3",
        _variant(stu3_input("accepted-xml-transaction-urn"), f"{referral_id}-later"),
        FHIR_XML,
    )
    assert accepted.status_code == 201  # delivered after the refusal: the outbox has moved on
    wait_until(lambda: service_requests(sim, f"{referral_id}-later"), "a later delivery")
    assert service_requests(sim, referral_id) == []


def test_stu3_intake_logs_carry_no_patient_data(service: ServiceProcess) -> None:
    """The service's log lines after STU3 pushes hold ids and counts, no patient value."""
    _post(service, "/fhir/stu3", stu3_input("refused-several-issues-at-once"), FHIR_JSON)
    events = service.log_events()
    assert any(e.get("event") == "referral_refused" for e in events)
    text = json.dumps(events, ensure_ascii=False) + "\n".join(service.stdout_lines)
    leaks = [n for n, value in enumerate(STU3_PATIENT_VALUES) if value in text]
    assert not leaks, f"patient values #{leaks} in the service output"
