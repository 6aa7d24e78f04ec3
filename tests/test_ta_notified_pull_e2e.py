"""TA Notified Pull v1.0.1 end to end over mutual TLS on both sides: the real ``wor-bridge serve``
(HTTPS, client certificates required) as the sending system, and a TA receiving system
(``demo.ta_receiver``: token endpoint and Task endpoint, HTTPS requiring the bridge's client
certificate) as the receiver. The test plays the receiver's puller.

notify (Twiin-01, after a Twiin token request with PS256 assertions) -> token at the bridge with
the authorization base -> workflow Task (Twiin-03) -> pulls -> status -> re-notify on an
amendment -> cancel (Twiin-02) -> refused pull. No body or process output is printed.
"""

from __future__ import annotations

import contextlib
import json
import ssl
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.pki import Leaf, issue, make_ca
from tests.service_harness import (
    FHIR_JSON,
    HIS_KEY,
    ServiceProcess,
    auth,
    example_clients,
    free_port,
    patient_value_hits,
    referral_variant,
    running_service,
    to_toml,
    wait_until,
    write_config,
)
from wor_bridge.core import fhir
from wor_bridge.demo.ta_receiver import TaReceivingSystem
from wor_bridge.service.tokens import JWT_BEARER

RECEIVER_ID = "viplive-receiver"
STU3_JSON = "application/fhir+json; fhirVersion=3.0"
PARAMETER = "http://fhir.nl/fhir/NamingSystem/TaskParameter"
CLOSURE = "https://wor-bridge.nl/fhir/CodeSystem/closure-reason"
OLD_PHONE, NEW_PHONE = b"06-00000001", b"06-00000002"
TIMEOUT = 10
Json = dict[str, Any]


def _pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


@dataclass
class World:
    """The bridge, the receiving system, and what the test's puller needs."""

    service: ServiceProcess
    receiving: TaReceivingSystem
    dir: Path
    ca_file: Path
    leaves: dict[str, Leaf]
    puller_key: ec.EllipticCurvePrivateKey

    def cert(self, name: str) -> tuple[str, str]:
        """``requests``' ``cert=`` for a leaf."""
        return str(self.dir / f"{name}.pem"), str(self.dir / f"{name}.key")

    def call(self, method: str, path: str, cert: str = "receiver", **kw: Any) -> requests.Response:
        """One request to the bridge over mutual TLS (body read, connection released)."""
        url = path if path.startswith("https://") else self.service.base_url + path
        return requests.request(
            method, url, verify=str(self.ca_file), cert=self.cert(cert), timeout=TIMEOUT, **kw
        )

    def push(self, his_id: str, body: bytes | None = None) -> str:
        """The HIS pushes a Culemborg referral (routed to the TA receiver); the bridge Task id."""
        data = body or referral_variant("accepted-contained", his_id).replace(
            b'"Utrecht"', b'"Culemborg"'
        )
        reply = self.call(
            "POST",
            "/fhir/r4/ServiceRequest",
            cert="his",
            data=data,
            headers=auth(HIS_KEY, FHIR_JSON),
        )
        assert reply.status_code in (200, 201), reply.status_code
        return str(reply.headers["Location"]).split("/_history/")[0].rsplit("/", 1)[-1]

    def notifications(self, task_id: str, status: str = "requested") -> list[Json]:
        """The Notifications about the Task (by groupIdentifier) with ``status``."""
        group = f"urn:uuid:{task_id}"
        return [
            n
            for n in self.receiving.notifications()
            if (n.get("groupIdentifier") or {}).get("value") == group and n["status"] == status
        ]

    def signed(self, **claims: Any) -> str:
        """A fresh JWT of the receiver for the bridge's token endpoint (ES256, its key)."""
        now = int(time.time())
        body = {
            "iss": RECEIVER_ID,
            "sub": RECEIVER_ID,
            "aud": f"{self.service.base_url}/oauth/token",
            "iat": now,
            "exp": now + 60,
            "jti": str(uuid.uuid4()),
            **claims,
        }
        return jwt.encode(body, self.puller_key, algorithm="ES256")

    def token(self, authorization_base: str | None, **extra: str) -> requests.Response:
        """The receiver's token request at the bridge: private-key JWT (ES256) and the
        authorization base played back (TA §3.3)."""
        assertion = self.signed()
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion,
            **extra,
        }
        if authorization_base is not None:
            form["authorization_base"] = authorization_base
        return self.call("POST", "/oauth/token", data=form)

    def read(self, reference: str, token: str) -> requests.Response:
        """GET ``[bridge]/fhir/stu3/<reference>`` with the token (the receiver's certificate)."""
        headers = {"Authorization": f"Bearer {token}", "Accept": STU3_JSON}
        return self.call("GET", f"/fhir/stu3/{reference}", headers=headers)


def _inputs(task: Json, code: str) -> list[Json]:
    return [i for i in task.get("input") or [] if i["type"]["coding"][0]["code"] == code]


def _config(tmp: Path, world: dict[str, Any], port: int) -> Path:
    """The example configuration with ``welzijn-viplive`` as a TA receiver over mTLS."""
    receiving: TaReceivingSystem = world["receiving"]
    config = write_config(
        tmp,
        receiving.base_url,
        endpoints={"welzijn-viplive": receiving.base_url},
        service={
            "rate_per_s": 1000.0,
            "burst": 1000,
            "tls": {
                "cert_file": str(tmp / "server.pem"),
                "key_file": str(tmp / "server.key"),
                "client_ca_file": str(world["ca_file"]),
                "require_client_cert": True,
            },
        },
        pull={"base_url": f"https://127.0.0.1:{port}", "token_key": "t" * 40},
        clients=world["clients"],
    )
    raw = tomllib.loads(config.read_text(encoding="utf-8"))
    for dest in raw["destinations"]:
        if dest["id"] == "welzijn-viplive":
            dest.update(
                pull_mode="ta-np",
                identifier_form="uri",
                auth={
                    "type": "twiin",
                    "token_url": receiving.token_url,
                    "client_id": "wor-bridge",
                    "issuer": f"https://127.0.0.1:{port}",
                    "private_key_file": str(tmp / "bridge-signing.key"),
                    "key_id": "bridge-ps256",
                },
                tls={
                    "cert_file": str(tmp / "bridge.pem"),
                    "key_file": str(tmp / "bridge.key"),
                    "ca_file": str(world["ca_file"]),
                },
            )
    config.write_text(to_toml(raw), encoding="utf-8")
    return config


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A PKI, the TA receiving system (HTTPS, mTLS) and the bridge (HTTPS, mTLS) in TA mode."""
    tmp = tmp_path_factory.mktemp("ta-np")
    ca = make_ca("ta-np-test")
    leaves = {
        "server": issue(ca, "server", server=True),
        "receiving": issue(ca, "receiving", server=True),
        "bridge": issue(ca, "bridge", server=False),
        "receiver": issue(ca, "receiver", server=False),
        "his": issue(ca, "his", server=False),
    }
    for leaf in leaves.values():
        leaf.write(tmp)
    ca_file = ca.write(tmp)
    signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp / "bridge-signing.key").write_bytes(
        signing.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    puller_key = ec.generate_private_key(ec.SECP256R1())
    (tmp / "puller.pem").write_bytes(_pem(puller_key))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(ca_file))
    context.load_cert_chain(str(tmp / "receiving.pem"), str(tmp / "receiving.key"))
    context.verify_mode = ssl.CERT_REQUIRED
    receiving = TaReceivingSystem(
        sender_public_key=_pem(signing),
        sender_client_id="wor-bridge",
        tls=context,
        sender_cert_sha256=leaves["bridge"].sha256,
    ).start()
    his = next(c for c in example_clients() if c["id"] == "his-example")
    receiver = {
        "id": RECEIVER_ID,
        "jwt_public_key_file": str(tmp / "puller.pem"),
        "cert_sha256": leaves["receiver"].sha256,
        "scopes": ["referral:pull", "task:update", "feedback:write"],
        "destination": "welzijn-viplive",
    }
    clients = [{**his, "cert_sha256": leaves["his"].sha256}, receiver]
    port = free_port()
    parts = {"receiving": receiving, "ca_file": ca_file, "clients": clients}
    config = _config(tmp, parts, port)
    try:
        with running_service(
            config,
            port=port,
            scheme="https",
            verify=str(ca_file),
            cert=(str(tmp / "his.pem"), str(tmp / "his.key")),
        ) as service:
            yield World(service, receiving, tmp, ca_file, leaves, puller_key)
    finally:
        receiving.stop()


def test_notify_token_workflow_pull_status_renotify_cancel_refused(world: World) -> None:
    """The whole TA exchange over mTLS both ways, each step as TA Notified Pull describes it."""
    task_id = world.push("VW-TA-0001")
    # Twiin-01: one Notification, after a Twiin token request (PS256 assertions, verified there)
    (note,) = wait_until(lambda: world.notifications(task_id), "the Notification")
    assert fhir.validate_stu3(note, "Task") == []
    assert patient_value_hits(json.dumps(note)) == []
    assert (note["intent"], note["basedOn"]) == ("proposal", [{"reference": f"Task/{task_id}"}])
    assert world.receiving.grants, "the bridge asked the receiver for a token first"
    assert world.receiving.grants[0]["sub"] == "01099990"
    assert world.receiving.refusals == []
    (base,) = [i["valueString"] for i in _inputs(note, "authorization-base")]
    assert _inputs(note, "get-workflow-task")[0]["valueBoolean"] is True

    # the receiver's token: without the authorization base refused, with it issued
    refused = world.token(None, resource=f"urn:uuid:{task_id}")
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_request")
    forged = world.token(base[:-2] + ("AA" if base[-2:] != "AA" else "BB"))
    assert (forged.status_code, forged.json()["error"]) == (400, "invalid_grant")
    issued = world.token(base)
    assert issued.status_code == 200
    token = issued.json()["access_token"]

    # Twiin-03: the workflow Task named by basedOn, then every read-available-resource
    workflow = world.read(note["basedOn"][0]["reference"], token)
    assert workflow.status_code == 200
    assert workflow.json()["groupIdentifier"] == note["groupIdentifier"]
    assert "identifier" not in workflow.json()["for"]
    reads = [i["valueReference"]["reference"] for i in _inputs(note, "read-available-resource")]
    assert len(reads) == 7
    for reference in reads:
        pulled = world.read(reference, token)
        assert pulled.status_code == 200, reference.split("/")[0]
        assert fhir.validate_stu3(pulled.json(), reference.split("/")[0]) == []

    # query-available-resources: the offered search, as a searchset of the referral's Consents
    (query,) = [i["valueString"] for i in _inputs(note, "query-available-resources")]
    found = world.read(query, token)
    assert found.status_code == 200
    assert fhir.validate_stu3(found.json(), "Bundle") == []
    assert [e["resource"]["resourceType"] for e in found.json()["entry"]] == ["Consent"]
    unknown = world.read("Consent?status=active", token)
    assert unknown.status_code == 400
    assert unknown.json()["issue"][0]["code"] == "not-supported"

    # status: the receiver accepts the workflow Task (bilateral; the bridge's STU3 Task update)
    accepted = {**workflow.json(), "status": "accepted"}
    put = world.call(
        "PUT",
        f"/fhir/stu3/Task/{task_id}",
        data=json.dumps(accepted),
        headers={"Authorization": f"Bearer {token}", "Content-Type": STU3_JSON},
    )
    assert put.status_code == 200

    # re-notify: the GP system changes the referral; a new Notification in the same group
    changed = referral_variant("accepted-contained", "VW-TA-0001").replace(
        b'"Utrecht"', b'"Culemborg"'
    )
    assert changed.count(OLD_PHONE) == 1
    assert world.push("VW-TA-0001", changed.replace(OLD_PHONE, NEW_PHONE)) == task_id
    both = wait_until(
        lambda: (found := world.notifications(task_id)) and len(found) == 2 and found,
        "the second Notification",
    )
    second = next(n for n in both if n["identifier"] != note["identifier"])
    assert second["groupIdentifier"] == note["groupIdentifier"]
    (second_base,) = [i["valueString"] for i in _inputs(second, "authorization-base")]
    fresh = world.token(second_base).json()["access_token"]
    patient = next(r for r in reads if r.startswith("Patient/"))
    assert NEW_PHONE.decode() in world.read(patient, fresh).text

    # Twiin-02: the GP withdraws; every Notification is cancelled by conditional update
    current = world.call("GET", f"/fhir/r4/Task/{task_id}", cert="his", headers=auth(HIS_KEY))
    withdrawal = {
        "resourceType": "Task",
        "id": task_id,
        "status": "cancelled",
        "intent": "order",
        "statusReason": {"coding": [{"system": CLOSURE, "code": "gp-withdrew"}]},
    }
    headers = {**auth(HIS_KEY, FHIR_JSON), "If-Match": current.headers["ETag"]}
    ended = world.call(
        "PUT", f"/fhir/r4/Task/{task_id}", cert="his", json=withdrawal, headers=headers
    )
    assert ended.status_code == 200
    wait_until(lambda: not world.notifications(task_id), "both Notifications cancelled")
    cancelled = [
        n
        for n in world.receiving.server.resources("Task")
        if n["identifier"] in (note["identifier"], second["identifier"])
    ]
    assert sorted(n["status"] for n in cancelled) == ["cancelled", "cancelled"]
    assert all(n["intent"] == "proposal" for n in cancelled)

    # refused pull: the token from before and a new token request both end here
    after = world.read(patient, fresh)
    assert after.status_code == 403
    assert patient_value_hits(after.text) == []
    late = world.token(second_base)
    assert (late.status_code, late.json()["error"]) == (400, "invalid_grant")


def test_receiver_without_the_bridge_certificate_gets_no_token(world: World) -> None:
    """The receiving system's token endpoint requires mTLS: without a client certificate the
    TLS handshake fails, with another client's certificate the token is refused."""
    with pytest.raises(requests.exceptions.ConnectionError):  # SSLError, or a reset (TLS 1.3)
        requests.post(world.receiving.token_url, data={}, verify=str(world.ca_file), timeout=5)
    reply = requests.post(
        world.receiving.token_url,
        data={"grant_type": "client_credentials"},
        verify=str(world.ca_file),
        cert=world.cert("receiver"),
        timeout=5,
    )
    assert reply.status_code == 401
    with contextlib.suppress(ValueError):
        world.receiving.refusals.remove("not the sender's client certificate")


def test_service_logs_hold_no_patient_values(world: World) -> None:
    """After the TA rounds of this module (token requests, Notifications, pulls, searches,
    cancellations), the service's log lines hold no patient value (reported by index only)."""
    task_id = world.push("VW-TA-0002")
    (note,) = wait_until(lambda: world.notifications(task_id), "the Notification")
    (base,) = [i["valueString"] for i in _inputs(note, "authorization-base")]
    token = world.token(base).json()["access_token"]
    for item in _inputs(note, "read-available-resource"):
        assert world.read(item["valueReference"]["reference"], token).status_code == 200
    lines = list(world.service.stderr_lines) + list(world.service.stdout_lines)
    assert lines, "the service wrote no log lines at all"
    hits = sorted({n for line in lines for n in patient_value_hits(line)})
    assert hits == [], f"patient values (by index) in the service logs: {hits}"


def test_authorization_base_in_a_jwt_bearer_authorization_assertion(world: World) -> None:
    """The receiver may play the authorization base back as a claim of an RFC 7523 §2.1
    authorization assertion; unsigned, mismatched or missing claims are refused."""
    task_id = world.push("VW-TA-0003")
    (note,) = wait_until(lambda: world.notifications(task_id), "the Notification")
    (base,) = [i["valueString"] for i in _inputs(note, "authorization-base")]
    grant = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    issued = world.token(None, grant_type=grant, assertion=world.signed(authorization_base=base))
    assert issued.status_code == 200
    assert world.read(f"Task/{task_id}", issued.json()["access_token"]).status_code == 200
    other = world.signed(authorization_base=base[:-1] + ("A" if base[-1] != "A" else "B"))
    for assertion in (
        world.signed(),  # no claim
        other,  # another value
        jwt.encode({"authorization_base": base}, "x" * 32, algorithm="HS256"),  # not its key
    ):
        refused = world.token(None, grant_type=grant, assertion=assertion)
        assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    both = world.token(
        base[:-1] + "x", grant_type=grant, assertion=world.signed(authorization_base=base)
    )
    assert (both.status_code, both.json()["error"]) == (400, "invalid_grant")
