"""TA Notified Pull v1.0.1 as the sender, pure parts: the Notification (Twiin-01), the
cancellation (Twiin-02), the workflow Task (Twiin-03), the authorization base (TA §3.3), the
Twiin token request (TA §3.2) and the settings that choose the mode per receiver."""

from __future__ import annotations

import datetime as dt
import json
import re
import urllib.parse
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tests.cases import PATIENT_VALUES, REPO
from wor_bridge.adapters import twiin_token
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.http import RequestsTransport
from wor_bridge.config import load_app
from wor_bridge.connectors import notified_pull, outbound, ta_notified_pull
from wor_bridge.connectors.outgoing import outgoing
from wor_bridge.core import fhir, ta_np
from wor_bridge.core.amendment import digest, update_bundle
from wor_bridge.core.destination_auth import DestinationAuth
from wor_bridge.core.settings import Destination, PullSettings, Routing, Settings
from wor_bridge.core.stu3.convert import to_stu3
from wor_bridge.demo.ta_receiver import TaReceivingSystem

Json = dict[str, Any]
GOLDENS = REPO / "fixtures" / "ta-notified-pull"
ALL_ACCEPTED = sorted(p.name for p in (REPO / "fixtures" / "referral").glob("accepted-*"))
BASE_URL = "https://bridge.example.org"
KEY = "k" * 32
CREATED = "2026-11-02T09:20:00+00:00"
BSN_CASE = "accepted-route-by-practice-bsn-ageband"
CASES = {"accepted-contained": "token-claim", BSN_CASE: "identifier"}


def _destination(patient: str = "token-claim", **extra: Any) -> Destination:
    return Destination.model_validate(
        {
            "id": "welzijn-ta",
            "name": "Welzijn (TA Notified Pull)",
            "identifier": {"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": "90000123"},
            "type": "notified-pull-stu3",
            "pull_mode": "ta-np",
            "endpoint": "https://receiver.example.org/fhir",
            "ta_np": {"patient": patient},
            **extra,
        }
    )


def _settings(destination: Destination) -> Settings:
    return Settings(
        destinations=(destination,),
        routing=Routing(),
        mappings={},
        pull=PullSettings(base_url=BASE_URL, token_key=KEY),
    )


def _payload(case: str) -> bytes:
    return (REPO / "fixtures" / "referral" / case / "expected.bundle.json").read_bytes()


def _render(payload: bytes, destination: Destination, earlier: list[bytes] | None = None) -> Any:
    return outbound.render(
        payload,
        destination,
        "key-1",
        _settings(destination),
        created_at=CREATED,
        earlier=lambda: list(earlier or []),
    )


def _notification(case: str, patient: str = "token-claim") -> Json:
    (request,) = _render(_payload(case), _destination(patient))
    body: Json = json.loads(request.body)
    return body


def _workflow(case: str) -> Json:
    """The workflow Task as the STU3 endpoint builds it from the referral's R4 Task."""
    bundle = json.loads(_payload(case))
    r4_task = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task"
    )
    entries = notified_pull.referral_entries(bundle)
    targets = notified_pull.reference_targets(entries, lambda e: e.key)
    task_id = outgoing(_payload(case), "k", CREATED).task_uuid
    served = notified_pull.retarget(to_stu3({**r4_task, "id": task_id}).resource, targets)
    return ta_notified_pull.workflow_task(served, task_id, bundle, _destination(), BASE_URL)


def _write_or_compare(path: Path, produced: Json, update: bool) -> None:
    text = fhir.canonical_json(produced, pretty=True) + b"\n"
    if update or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text)
        if not update:
            pytest.fail(f"{path.parent.name}: golden {path.name} was missing; written, review it")
    assert text == path.read_bytes(), f"{path.parent.name}: output differs from {path.name}"


def _inputs(task: Json, code: str) -> list[Json]:
    return [i for i in task["input"] if i["type"]["coding"][0]["code"] == code]


# --- goldens ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_notification_golden(case: str, update_goldens: bool) -> None:
    """The Twiin-01 Notification equals its reviewed golden (token claim, and BSN on the Task)."""
    produced = _notification(case, CASES[case])
    _write_or_compare(GOLDENS / case / "notification.task.json", produced, update_goldens)


@pytest.mark.parametrize("case", sorted(CASES))
def test_workflow_task_golden(case: str, update_goldens: bool) -> None:
    """The Twiin-03 workflow Task equals its reviewed golden."""
    _write_or_compare(GOLDENS / case / "workflow.task.json", _workflow(case), update_goldens)


def test_golden_folders_explain_themselves() -> None:
    """Each golden folder has a two-line case.md."""
    for case in CASES:
        lines = (GOLDENS / case / "case.md").read_text(encoding="utf-8").strip().splitlines()
        assert len(lines) == 2


# --- Twiin-01 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ALL_ACCEPTED)
def test_notification_cancellation_and_workflow_task_are_valid_stu3(case: str) -> None:
    """Notification, cancellation and workflow Task validate with fhir.resources.STU3."""
    note = _notification(case, "identifier")
    assert fhir.validate_stu3(note, "Task") == []
    assert fhir.validate_stu3(ta_notified_pull.cancellation(str(uuid.uuid4())), "Task") == []
    assert fhir.validate_stu3(_workflow(case), "Task") == []


def _patient_strings(case: str) -> set[str]:
    bundle = json.loads(_payload(case))
    patient = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    found: set[str] = set()

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and key not in {"system", "use", "url", "code", "id", "source"}:
            found.add(node)

    walk({k: v for k, v in patient.items() if k not in ("id", "meta", "resourceType")})
    return {v for v in found if not v.startswith("urn:uuid:")}


def _leaked(text: str, values: set[str]) -> list[str]:
    """The values found in ``text`` as whole words ("a" inside "Task" is no leak)."""
    return sorted(v for v in values if re.search(rf"(?<!\w){re.escape(v)}(?!\w)", text))


@pytest.mark.parametrize("case", ALL_ACCEPTED)
def test_notification_carries_no_patient_value_by_default(case: str) -> None:
    """With the patient as a token claim no Patient string (BSN, name, address) is on the Task."""
    text = fhir.canonical_json(_notification(case)).decode()
    assert _leaked(text, _patient_strings(case) | set(PATIENT_VALUES)) == []


def test_bsn_on_the_task_only_when_agreed_and_only_the_bsn() -> None:
    """``patient = identifier`` puts exactly the BSN in ``for.identifier`` and nothing else."""
    note = _notification(BSN_CASE, "identifier")
    assert note["for"] == {
        "identifier": {"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "999990020"}
    }
    others = _patient_strings(BSN_CASE) - {"999990020"}
    assert _leaked(fhir.canonical_json(note).decode(), others) == []
    assert "for" not in _notification(BSN_CASE, "none")


def test_notification_has_the_ta_elements_and_inputs() -> None:
    """Identifier, groupIdentifier, basedOn, status, intent, code and the four input kinds."""
    note = _notification("accepted-contained")
    task_id = outgoing(_payload("accepted-contained"), "k", CREATED).task_uuid
    assert note["groupIdentifier"] == {
        "system": "urn:ietf:rfc:3986",
        "value": f"urn:uuid:{task_id}",
    }
    assert note["identifier"][0]["value"] != note["groupIdentifier"]["value"]
    assert note["basedOn"] == [{"reference": f"Task/{task_id}"}]
    assert (note["status"], note["intent"]) == ("requested", "proposal")
    assert note["code"]["coding"] == [{"system": ta_np.TASK_CODE, "code": "pull-notification"}]
    (base,) = _inputs(note, "authorization-base")
    assert ta_np.task_of(KEY.encode(), base["valueString"]) == task_id
    assert _inputs(note, "get-workflow-task") == [
        {
            "type": {"coding": [{"system": ta_np.TASK_PARAMETER, "code": "get-workflow-task"}]},
            "valueBoolean": True,
        }
    ]
    reads = [i["valueReference"]["reference"] for i in _inputs(note, "read-available-resource")]
    served = notified_pull.pullable(json.loads(_payload("accepted-contained")))
    assert sorted(reads) == sorted(served)
    (query,) = [i["valueString"] for i in _inputs(note, "query-available-resources")]
    patient = next(r for r in reads if r.startswith("Patient/"))
    assert query == f"Consent?patient={patient}"
    assert note["owner"] == {
        "identifier": {"system": "http://fhir.nl/fhir/NamingSystem/ura", "value": "90000123"}
    }


def test_notification_request_is_a_conditional_create_with_its_grant() -> None:
    """POST [receiver]/Task, If-None-Exist on the Notification id; the grant names the practice."""
    (request,) = _render(_payload("accepted-contained"), _destination())
    note = json.loads(request.body)
    assert (request.method, request.url) == ("POST", "https://receiver.example.org/fhir/Task")
    assert ("If-None-Exist", f"identifier=urn:ietf:rfc:3986|{note['identifier'][0]['value']}") in (
        request.headers
    )
    assert dict(request.grant)["sub"] == "01099990"


def test_token_claim_mode_puts_the_bsn_in_the_grant_only() -> None:
    """``token-claim``: the BSN is a claim of the authorization assertion, not on the Task."""
    (request,) = _render(_payload(BSN_CASE), _destination("token-claim"))
    assert dict(request.grant)["patient"] == "999990020"
    assert b"999990020" not in request.body
    (request,) = _render(_payload(BSN_CASE), _destination("identifier"))
    assert "patient" not in dict(request.grant)


def test_amendment_is_a_new_notification_in_the_same_group() -> None:
    """A referral-update gives a new Notification identifier with the same groupIdentifier."""
    payload = _payload("accepted-contained")
    bundle = json.loads(payload)
    updated = fhir.canonical_json(update_bundle(bundle, digest(payload)))
    (first,) = _render(payload, _destination())
    (second,) = _render(updated, _destination())
    one, two = json.loads(first.body), json.loads(second.body)
    assert one["identifier"] != two["identifier"]
    assert one["groupIdentifier"] == two["groupIdentifier"]
    assert second.method == "POST"
    (again,) = _render(updated, _destination())
    assert again.body == second.body


@pytest.mark.parametrize("case", ALL_ACCEPTED)
def test_the_offered_query_finds_the_referrals_consents(case: str) -> None:
    """``query-available-resources`` run by ``search`` gives exactly the referral's Consents."""
    pullable = notified_pull.pullable(json.loads(_payload(case)))
    (query,) = [i["valueString"] for i in _inputs(_notification(case), "query-available-resources")]
    stu3_type, _, text = query.partition("?")
    found = ta_notified_pull.search(pullable, stu3_type, urllib.parse.parse_qsl(text))
    assert found == [k for k in pullable if k.startswith("Consent/")]
    assert found


def test_search_parameters() -> None:
    """``_id`` lists, the Patient reference (with or without type), AND, and refusals."""
    pullable = notified_pull.pullable(json.loads(_payload("accepted-contained")))
    consent = next(k for k in pullable if k.startswith("Consent/"))
    patient = next(k for k in pullable if k.startswith("Patient/"))
    orgs = [k.split("/")[1] for k in pullable if k.startswith("Organization/")]
    search = ta_notified_pull.search
    assert search(pullable, "Organization", [("_id", ",".join(orgs))]) == [
        f"Organization/{o}" for o in orgs
    ]
    assert search(pullable, "Organization", [("_id", "nope")]) == []
    assert search(pullable, "Consent", [("patient", patient.split("/")[1])]) == [consent]
    both = [("patient", patient), ("_id", consent.split("/")[1])]
    assert search(pullable, "Consent", both) == [consent]
    assert search(pullable, "Consent", [("patient", patient), ("_id", "x")]) == []
    assert search(pullable, "Consent", [("status", "active")]) is None
    assert search(pullable, "Patient", [("patient", patient)]) is None
    assert search(pullable, "Task", []) is None


# --- Twiin-02 -------------------------------------------------------------------------------------


def _withdrawal(payload: bytes) -> bytes:
    bundle = json.loads(payload)
    task = next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Task")
    ended = {**task, "status": "cancelled"}
    return fhir.canonical_json(
        {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": ended}]}
    )


def test_cancellation_is_a_conditional_update_of_every_notification() -> None:
    """Twiin-02: PUT Task?identifier=<each Notification> with identifier, cancelled, proposal."""
    payload = _payload("accepted-contained")
    updated = fhir.canonical_json(update_bundle(json.loads(payload), digest(payload)))
    sent = [json.loads(_render(p, _destination())[0].body) for p in (payload, updated)]
    requests = _render(_withdrawal(payload), _destination(), earlier=[payload, updated])
    assert len(requests) == 2
    for request, note in zip(requests, sent, strict=True):
        path, _, query = request.url.partition("?")
        assert (request.method, path) == ("PUT", "https://receiver.example.org/fhir/Task")
        wanted = f"urn:ietf:rfc:3986|{note['identifier'][0]['value']}"
        assert urllib.parse.parse_qs(query)["identifier"] == [wanted]
        assert json.loads(request.body) == {
            "resourceType": "Task",
            "identifier": note["identifier"],
            "status": "cancelled",
            "intent": "proposal",
        }
        assert dict(request.grant)["sub"] == "01099990"


def test_a_replayed_referral_is_cancelled_once() -> None:
    """The same referral message twice in the outbox (an operator replay) is one Notification."""
    payload = _payload("accepted-contained")
    requests = _render(_withdrawal(payload), _destination(), earlier=[payload, payload])
    assert len(requests) == 1


def test_cancellation_without_a_notification_is_refused() -> None:
    """A Task update with no Notification sent before it cannot be rendered (ValueError)."""
    with pytest.raises(ValueError, match="no Notification"):
        _render(_withdrawal(_payload("accepted-contained")), _destination(), earlier=[])


def test_single_task_mode_is_unchanged() -> None:
    """A notified-pull destination without pull_mode keeps the bridge's single-Task notification."""
    destination = _destination().model_copy(update={"pull_mode": "single-task"})
    (request,) = _render(_payload("accepted-contained"), destination)
    task = json.loads(request.body)
    assert task["intent"] == "order"
    assert "groupIdentifier" not in task
    assert request.grant == ()


# --- authorization base ---------------------------------------------------------------------------


@given(st.uuids(), st.binary(min_size=32, max_size=64))
def test_authorization_base_round_trips(task: uuid.UUID, key: bytes) -> None:
    """An authorization base gives its Task back under its key, and nothing under another key."""
    value = ta_np.authorization_base(key, str(task))
    assert ta_np.task_of(key, value) == str(task)
    assert ta_np.task_of(key + b"x", value) is None


@given(st.uuids(), st.integers(min_value=0, max_value=42))
def test_authorization_base_tampered_is_refused(task: uuid.UUID, position: int) -> None:
    """Changing any one character of an authorization base makes it worthless."""
    value = ta_np.authorization_base(KEY.encode(), str(task))
    index = position % len(value)
    changed = value[:index] + ("A" if value[index] != "A" else "B") + value[index + 1 :]
    assert ta_np.task_of(KEY.encode(), changed) in (None,)


@pytest.mark.parametrize("value", ["", "x" * 65, "é", "!!!!", "AAAA"])
def test_authorization_base_garbage_is_refused(value: str) -> None:
    """Empty, long, non-ASCII, non-base64 and short values are no authorization base."""
    assert ta_np.task_of(KEY.encode(), value) is None


# --- settings ---------------------------------------------------------------------------------


def test_ta_mode_needs_a_token_key() -> None:
    """pull_mode ta-np without [pull] token_key is refused at load, naming the key."""
    with pytest.raises(ValidationError, match="token_key"):
        Settings(destinations=(_destination(),), routing=Routing(), mappings={})


def test_patient_claim_cannot_overwrite_a_registered_claim() -> None:
    """``ta_np.patient_claim = "sub"`` (it would replace the care provider) is refused."""
    with pytest.raises(ValidationError, match="registered JWT claim"):
        _destination(ta_np={"patient_claim": "sub"})


def test_sender_system_names_the_requester_agent() -> None:
    """``ta_np.sender_system`` is ``requester.agent.identifier`` of the Notification."""
    system = {"system": "urn:ietf:rfc:3986", "value": "urn:oid:2.16.840.1.113883.2.4.3.164.2.1"}
    (request,) = _render(
        _payload("accepted-contained"), _destination(ta_np={"sender_system": system})
    )
    assert json.loads(request.body)["requester"]["agent"] == {"identifier": system}


def test_ta_mode_only_for_notified_pull_destinations() -> None:
    """pull_mode ta-np on a fhir-r4 destination is refused."""
    with pytest.raises(ValidationError, match="notified-pull-stu3"):
        _destination(type="fhir-r4")


def test_twiin_auth_takes_no_shared_secret() -> None:
    """auth.type twiin refuses a client_secret (TA §3.2) and needs its key file."""
    with pytest.raises(ValidationError, match="shared secret"):
        DestinationAuth(
            type="twiin",
            token_url="https://r/token",
            client_id="c",
            private_key_file="k.pem",
            client_secret="s",
        )
    with pytest.raises(ValidationError, match="private_key_file"):
        DestinationAuth(type="twiin", token_url="https://r/token", client_id="c")


# --- the Twiin token request ------------------------------------------------------------------


def test_token_request_signs_both_assertions_ps256(tmp_path: Path) -> None:
    """Client assertion (iss, sub, aud, jti; typ JWT, kid) and authorization assertion (grant)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp_path / "bridge.key").write_bytes(pem)
    auth = DestinationAuth(
        type="twiin",
        token_url="https://receiver.example.org/token",
        client_id="wor-bridge",
        issuer=BASE_URL,
        private_key_file=str(tmp_path / "bridge.key"),
        key_id="bridge-1",
        scope="notification",
    )
    request = twiin_token.token_request(auth, (("sub", "01099990"), ("patient", "999990020")), 1e9)
    form = dict(urllib.parse.parse_qsl(request.body.decode()))
    assert form["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    assert form["client_assertion_type"] == twiin_token.CLIENT_ASSERTION_TYPE
    assert form["scope"] == "notification"
    public = key.public_key()
    header = jwt.get_unverified_header(form["client_assertion"])
    assert header == {"alg": "PS256", "typ": "JWT", "kid": "bridge-1"}
    options = {"verify_exp": False, "verify_iat": False}
    client = jwt.decode(
        form["client_assertion"], public, ["PS256"], audience=auth.token_url, options=options
    )
    assert (client["iss"], client["sub"], client["exp"] - client["iat"]) == (
        BASE_URL,
        "wor-bridge",
        60,
    )
    grant = jwt.decode(
        form["assertion"], public, ["PS256"], audience=auth.token_url, options=options
    )
    assert (grant["sub"], grant["patient"]) == ("01099990", "999990020")
    assert grant["jti"] != client["jti"]
    other = auth.model_copy(update={"grant_type": "client_credentials"})
    form = dict(urllib.parse.parse_qsl(twiin_token.token_request(other, (), 1e9).body.decode()))
    assert form["grant_type"] == "client_credentials"
    assert "authorization_assertion" in form


def test_example_configuration_lines_for_ta_mode_load(tmp_path: Path) -> None:
    """The commented TA lines of config/wor-bridge.toml, uncommented, are a valid configuration."""
    text = (REPO / "config" / "wor-bridge.toml").read_text(encoding="utf-8")
    for key in ("pull_mode", 'auth = { type = "twiin"', "ta_np", "tls = { cert_file"):
        assert text.count(f"\n# {key}") == 1, key
        text = text.replace(f"\n# {key}", f"\n{key}")
    text = text.replace('# token_key_file = "secrets/pull-token-key"', f'token_key = "{KEY}"')
    text = text.replace('mappings_dir = "../mappings"', f'mappings_dir = "{REPO / "mappings"}"')
    # the files the lines name, next to the configuration (checked readable at start-up)
    for name in ("bridge-signing.key", "bridge-client.pem", "bridge-client.key"):
        (tmp_path / name).write_text("placeholder", encoding="utf-8")
    (tmp_path / "pkioverheid-private-g1.pem").write_text("placeholder", encoding="utf-8")
    path = tmp_path / "ta.toml"
    path.write_text(text, encoding="utf-8")
    destination = load_app(path).core.destination("welzijn-viplive")
    assert (destination.pull_mode, destination.auth.type) == ("ta-np", "twiin")
    assert destination.auth.algorithm == "PS256"
    assert destination.ta_np.patient == "token-claim"
    assert destination.tls is not None


def test_transport_asks_one_twiin_token_per_grant(tmp_path: Path) -> None:
    """RequestsTransport: a token per grant (reused while valid), verified by a receiving system."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "bridge.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    receiving = TaReceivingSystem(sender_public_key=public, sender_client_id="wor-bridge").start()
    try:
        auth = DestinationAuth(
            type="twiin",
            token_url=receiving.token_url,
            client_id="wor-bridge",
            private_key_file=str(tmp_path / "bridge.key"),
            key_id="k1",
        )
        destination = _destination().model_copy(
            update={"endpoint": receiving.base_url, "auth": auth}
        )
        transport = RequestsTransport(FixedClock(dt.datetime.now(dt.UTC)))  # the JWTs: real time
        payload = _payload("accepted-contained")
        (request,) = _render(payload, destination)
        other = replace(request, grant=(("sub", "01000002"),))
        statuses = [transport.send(r, destination).status for r in (request, request, other)]
        transport.close()
        assert statuses == [201, 200, 200]
        assert [g["sub"] for g in receiving.grants] == ["01099990", "01000002"]
        assert receiving.refusals == []
    finally:
        receiving.stop()
