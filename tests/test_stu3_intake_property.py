"""Property: an R4 referral and its STU3 conversion get the same decision from the service.

Generated R4 referrals vary around the passing fixtures (contained and Bundle): Z68, the WoR
marker, request status and intent, the help question, BSN, name, contact routes, the Consent
(status, base rule, period, present or not), the requester, the practice (routing). Each is
pushed as R4 to ``/fhir/r4`` of one service and, converted with ``convert.to_stu3``, as STU3 to
``/fhir/stu3`` of another (each with its own store): the HTTP status and the issue codes are the
same, and an accepted referral has the same Task id and byte-identical outbox payload.

The generator writes what STU3 can express: the marker in ``code`` (STU3 has no ``category``) and
the Consent's base rule as both ``policyRule`` and root ``provision.type`` (``to_stu3`` keeps
only the first; a root type alone, or one that contradicts the policy rule, is not STU3 content).
"""

from __future__ import annotations

import asyncio
import copy
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tests.inprocess import FHIR_JSON, HIS
from tests.inprocess import write_config as inprocess_config
from tests.stu3_intake_cases import stu3_case
from wor_bridge import bootstrap
from wor_bridge.config import load_app
from wor_bridge.core.stu3 import convert
from wor_bridge.service.app import create_app

Json = dict[str, Any]
V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ICPC2 = "http://hl7.org/fhir/sid/icpc-2"
BASES: dict[str, Json] = {
    name: json.loads((stu3_case(name) / "equivalent.r4.json").read_bytes())
    for name in ("accepted-contained", "accepted-bundle-transaction-urn")
}
REASONS = (
    "Voelt zich eenzaam sinds verhuizing, wil graag meer contact",
    "Zoekt een wandelgroep\nen een maatje",
    "x" * 250,
    " ",
)


@dataclass
class Service:
    """One in-process service with its own store."""

    app: Any
    store: Path

    def push(self, path: str, body: bytes, content_type: str) -> httpx.Response:
        """POST a referral with the GP system's key."""

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                headers = {"Authorization": f"Bearer {HIS}", "Content-Type": content_type}
                return await client.post(path, content=body, headers=headers)

        return asyncio.run(go())

    def payload(self, task_id: str) -> bytes:
        """The referral's mapped Bundle as the bridge holds it, the latest content (examples
        may reuse an identifier, which then amends the referral): compared, never printed."""
        with sqlite3.connect(self.store) as db:
            rows = db.execute("SELECT bundle FROM referral WHERE task_id = ?", (task_id,))
            [(payload,)] = rows.fetchall()
        return bytes(payload)


def _service(tmp: Path) -> Service:
    path = inprocess_config(tmp)
    text = path.read_text(encoding="utf-8").replace("rate_per_s = 10.0", "rate_per_s = 100000.0")
    path.write_text(text.replace("burst = 20", "burst = 100000"), encoding="utf-8")
    app = create_app(bootstrap.build(load_app(path)), start_dispatcher=False)
    return Service(app, tmp / "s.sqlite")


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> tuple[Service, Service]:
    """The service R4 referrals go to, and the one their STU3 conversions go to."""
    return _service(tmp_path_factory.mktemp("r4")), _service(tmp_path_factory.mktemp("stu3"))


def _resources(root: Json) -> list[Json]:
    if root["resourceType"] == "Bundle":
        return [e["resource"] for e in root["entry"]]
    return [root, *root["contained"]]


def _of(root: Json, rtype: str) -> Json:
    return next(r for r in _resources(root) if r["resourceType"] == rtype)


def _ref(root: Json, rtype: str) -> str:
    """How the ServiceRequest refers to the input's resource of ``rtype``."""
    if root["resourceType"] != "Bundle":
        return f"#{_of(root, rtype)['id']}"
    return str(next(e["fullUrl"] for e in root["entry"] if e["resource"]["resourceType"] == rtype))


names = st.text(alphabet="abcdefghijklmnopqrstuvwxyzëï -'", min_size=1, max_size=20)


def _rarely(draw: st.DrawFn, one_in: int) -> bool:
    """True about once in ``one_in`` draws (shrinking towards False: the passing fixture)."""
    return bool(draw(st.sampled_from([False] * (one_in - 1) + [True])))


@st.composite
def referrals(draw: st.DrawFn) -> Json:
    """An R4 referral around the passing fixtures (see the module docstring); about one in
    three passes every gate."""
    root = copy.deepcopy(draw(st.sampled_from(sorted(BASES.items())))[1])
    sr, patient, consent = _of(root, "ServiceRequest"), _of(root, "Patient"), _of(root, "Consent")
    sr["identifier"][0]["value"] = f"PROP-{draw(st.uuids())}"
    codings = sr["code"]["coding"]
    if _rarely(draw, 6):
        codings[:] = [c for c in codings if c["code"] != "Z68"]
        if draw(st.booleans()):
            sr["reasonCode"][0]["coding"].append({"system": ICPC2, "code": "Z68"})
    if _rarely(draw, 8):
        codings[:] = [c for c in codings if c["code"] != "wor"] or [{"code": "x", "system": "y"}]
    if _rarely(draw, 8):
        sr["status"] = draw(st.sampled_from(["draft", "completed", "on-hold", "revoked"]))
    if _rarely(draw, 4):
        sr["intent"] = draw(st.sampled_from(["original-order", "plan", "proposal"]))
    if _rarely(draw, 6):
        sr["reasonCode"][0]["text"] = draw(st.sampled_from(REASONS))
    bsn = draw(st.sampled_from(["999990007", "999990019", "999990008", None] + ["999990007"] * 4))
    if bsn is None:
        patient.pop("identifier")
    else:
        patient["identifier"][0]["value"] = bsn
    if _rarely(draw, 8):
        patient.pop("name")
    else:
        patient["name"][0]["given"] = [draw(names)]
    for element in ("telecom", "address"):
        if _rarely(draw, 3):
            patient.pop(element)
    if _rarely(draw, 8):
        consent["status"] = draw(st.sampled_from(["inactive", "draft", "rejected"]))
    policy, root_type = ("OPTOUT", "deny") if _rarely(draw, 8) else ("OPTIN", "permit")
    consent["policyRule"] = {"coding": [{"system": V3, "code": policy}]}
    consent["provision"]["type"] = root_type
    if _rarely(draw, 6):
        consent["provision"]["period"]["end"] = draw(st.sampled_from(["2026-06-30", "2027-12-31"]))
    if _rarely(draw, 8):
        sr.pop("supportingInfo")
    if _rarely(draw, 8):
        sr["requester"] = {"reference": _ref(root, "Practitioner")}
    practice = draw(st.sampled_from(["01099990", "01099990", "01099998"]))
    _of(root, "Organization")["identifier"][0]["value"] = practice
    return root


@dataclass(frozen=True)
class Sample:
    """A generated referral whose repr (printed by Hypothesis for a failing example) names its
    shape only: the synthetic patient values stay out of the test output."""

    r4: Json

    def __repr__(self) -> str:
        kind = self.r4["resourceType"]
        return f"Sample({kind} with {len(_resources(self.r4))} resources)"


def _issue_codes(answer: httpx.Response) -> list[str]:
    if answer.status_code in (200, 201):
        return []
    return sorted(i["code"] for i in answer.json()["issue"])


def _task_of(answer: httpx.Response) -> str:
    """The Task id in an accepted push's ``Location`` (``.../Task/{id}/_history/{vid}``)."""
    return str(answer.headers["location"]).split("/_history/")[0].rsplit("/", 1)[-1]


def _pushed(services: tuple[Service, Service], r4: Json) -> tuple[httpx.Response, ...]:
    r4_service, stu3_service = services
    bundle = r4["resourceType"] == "Bundle"
    stu3 = (convert.bundle_to_stu3(r4) if bundle else convert.to_stu3(r4)).resource
    as_r4 = r4_service.push(
        "/fhir/r4" if bundle else "/fhir/r4/ServiceRequest", json.dumps(r4).encode(), FHIR_JSON
    )
    as_stu3 = stu3_service.push(
        "/fhir/stu3" if bundle else "/fhir/stu3/ReferralRequest",
        json.dumps(stu3).encode(),
        "application/fhir+json; fhirVersion=3.0",
    )
    return as_r4, as_stu3


@hsettings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(referrals().map(Sample))
def test_r4_referral_and_its_stu3_conversion_get_the_same_decision(
    services: tuple[Service, Service], sample: Sample
) -> None:
    """Same status and issue codes for R4 and STU3; accepted: same Task, same outbox payload."""
    as_r4, as_stu3 = _pushed(services, sample.r4)
    accepted = as_r4.status_code in (200, 201)  # a transaction Bundle: 200 + its response
    assert (as_stu3.status_code in (200, 201)) == accepted
    if not accepted:
        assert as_stu3.status_code == as_r4.status_code
    assert _issue_codes(as_stu3) == _issue_codes(as_r4)
    if as_r4.status_code in (200, 201):
        task_id = _task_of(as_r4)
        assert _task_of(as_stu3) == task_id
        r4_service, stu3_service = services
        same = stu3_service.payload(task_id) == r4_service.payload(task_id)  # never printed
        assert same, "the STU3 push must queue the payload the R4 push queues"


@pytest.mark.parametrize("name", sorted(BASES))
def test_a_passing_referral_and_its_opt_out_get_the_same_decisions(
    services: tuple[Service, Service], name: str
) -> None:
    """The unchanged base passes as R4 and as STU3 (same payload); opted out, both refuse it."""
    r4 = copy.deepcopy(BASES[name])
    _of(r4, "ServiceRequest")["identifier"][0]["value"] = f"PROP-BASE-{name}"
    accepted = _pushed(services, r4)
    assert [a.status_code in (200, 201) for a in accepted] == [True, True]
    task_id = _task_of(accepted[0])
    same = services[0].payload(task_id) == services[1].payload(task_id)  # never printed
    assert same
    consent = _of(r4, "Consent")
    consent["policyRule"]["coding"][0]["code"], consent["provision"]["type"] = "OPTOUT", "deny"
    _of(r4, "ServiceRequest")["identifier"][0]["value"] = f"PROP-OPTOUT-{name}"
    refused = _pushed(services, r4)
    assert [a.status_code for a in refused] == [422, 422]
    assert _issue_codes(refused[0]) == _issue_codes(refused[1]) == ["business-rule"]
