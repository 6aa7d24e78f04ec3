"""Notified pull end to end: the real ``wor-bridge serve`` in a subprocess, serving HTTPS with
mutual TLS (``[service.tls]``, client certificates required, a throwaway PKI from ``tests.pki``).

Two ``SimulatedFhirServer`` on loopback stand in for the others: the welfare platform (the
notified-pull destination ``welzijn-viplive``: notification Tasks are POSTed there, cancellations
PUT) and the GP record (``feedback.gp_record``). The receiver client authenticates at
``/oauth/token`` with a private-key JWT (RFC 7523) and is bound to its client certificate
(``cert_sha256``); the HIS client pushes with its API key over its own client certificate.

One service serves every test but the expiry one, which runs a second service with a one-second
token lifetime. Each test uses its own referrals (the fixture's HIS id varies; the district is
Culemborg, routed to the notified-pull destination). No response body, request body or process
output is printed: they may hold patient data.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import itertools
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.pki import Leaf, issue, make_ca
from tests.service_harness import (
    FHIR_JSON,
    HIS_KEY,
    ServiceProcess,
    audit_rows,
    auth,
    example_clients,
    free_port,
    patient_value_hits,
    referral_variant,
    running_service,
    wait_until,
    write_config,
)
from wor_bridge.core import fhir
from wor_bridge.demo.fhir_server import SimulatedFhirServer, _Handler
from wor_bridge.service.tokens import JWT_BEARER

RECEIVER_ID = "viplive-receiver"
HIS_ID = "his-example"
STU3_JSON = "application/fhir+json; fhirVersion=3.0"
AGB_OID = "urn:oid:2.16.840.1.113883.2.4.6.1"
OWNER_AGB = "98000001"
CS = "https://wor-bridge.nl/fhir/CodeSystem/"
CLOSURE = CS + "closure-reason"
FEEDBACK_ITEM = CS + "feedback-item"
TIMEOUT = 10
_numbers = itertools.count(1)

Json = dict[str, Any]


# --- the PKI ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """One CA for the server and the clients; a client certificate of another CA."""

    dir: Path
    ca_file: Path
    server: Leaf
    his: Leaf
    receiver: Leaf
    stranger: Leaf
    """Issued by another CA: the service never lets it in."""
    unmapped: Leaf
    """Issued by the right CA but configured for no client."""

    def cert(self, leaf: Leaf) -> tuple[str, str]:
        """``requests``' ``cert=`` for ``leaf``."""
        return str(self.dir / f"{leaf.name}.pem"), str(self.dir / f"{leaf.name}.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """The test CA with the server certificate (127.0.0.1) and the client certificates."""
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca("bridge-test")
    other = make_ca("other")
    leaves = {
        "server": issue(ca, "server", server=True),
        "his": issue(ca, "his", server=False),
        "receiver": issue(ca, "receiver", server=False),
        "stranger": issue(other, "stranger", server=False),
        "unmapped": issue(ca, "unmapped", server=False),
    }
    for leaf in leaves.values():
        leaf.write(directory)
    return Pki(directory, ca.write(directory), **leaves)


@pytest.fixture(scope="module")
def receiver_key(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    """The receiver's EC P-256 signing key and its public half as a PEM file."""
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path_factory.mktemp("jwk") / "receiver-public.pem"
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, path


# --- the welfare platform and the GP record -----------------------------------------------------


@dataclass(frozen=True)
class RawWrite:
    """One write request the welfare platform received, with its body exactly as sent."""

    method: str
    path: str
    headers: dict[str, str] = field(repr=False)
    body: bytes = field(repr=False)


class Platform:
    """The notified-pull welfare platform: a SimulatedFhirServer that also keeps raw bodies."""

    def __init__(self) -> None:
        self.server = SimulatedFhirServer()
        self._lock = threading.Lock()
        self._writes: list[RawWrite] = []
        writes, lock = self._writes, self._lock

        class Recording(_Handler):
            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with lock:
                    writes.append(RawWrite(self.command, self.path, headers, raw))
                return json.loads(raw or b"null")

        self.server._server.RequestHandlerClass = Recording

    def writes(self) -> list[RawWrite]:
        """Every write request so far, in order of arrival."""
        with self._lock:
            return list(self._writes)

    def task(self, task_id: str) -> Json | None:
        """The stored Task with the bridge Task's identifier, if it arrived."""
        wanted = f"urn:uuid:{task_id}"
        for task in self.server.resources("Task"):
            if any(i.get("value") == wanted for i in task.get("identifier") or []):
                return task
        return None


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    """The welfare platform on loopback (plain HTTP: the bridge's outbound side)."""
    sim = Platform()
    sim.server.start()
    try:
        yield sim
    finally:
        sim.server.stop()


@pytest.fixture(scope="module")
def gp_record() -> Iterator[SimulatedFhirServer]:
    """The GP record that receives the feedback Observations and Communications."""
    server = SimulatedFhirServer().start()
    try:
        yield server
    finally:
        server.stop()


# --- the bridge -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A response read to the end (its connection released); the body is never in the repr."""

    status: int
    headers: requests.structures.CaseInsensitiveDict[str] = field(repr=False)
    body: bytes = field(repr=False)

    @property
    def text(self) -> str:
        """The body as text."""
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass
class Bridge:
    """The running service and what talks to it."""

    service: ServiceProcess
    config: Path
    pki: Pki
    key: ec.EllipticCurvePrivateKey
    platform: Platform

    @property
    def base_url(self) -> str:
        """The bridge's https base (also ``[pull] base_url``)."""
        return self.service.base_url

    def call(self, method: str, url: str, *, cert: Leaf | None, **kwargs: Any) -> Reply:
        """One request over mutual TLS with ``cert`` (a path is relative to the base URL)."""
        full = url if url.startswith("https://") else self.base_url + url
        with requests.request(
            method,
            full,
            verify=str(self.pki.ca_file),
            cert=self.pki.cert(cert) if cert else None,
            timeout=TIMEOUT,
            **kwargs,
        ) as response:
            return Reply(response.status_code, response.headers, response.content)

    # --- the GP side ---

    def push(self) -> tuple[str, str]:
        """Push a new Culemborg referral as the HIS; (bridge Task id, HIS referral id)."""
        his_id = f"VW-E2E-{next(_numbers):04d}"
        body = referral_variant("accepted-contained", his_id)
        assert body.count(b'"Utrecht"') == 2, "the fixture's district must be Utrecht"
        body = body.replace(b'"Utrecht"', b'"Culemborg"')
        reply = self.call(
            "POST",
            "/fhir/r4/ServiceRequest",
            cert=self.pki.his,
            data=body,
            headers=auth(HIS_KEY, FHIR_JSON),
        )
        assert reply.status == 201, reply.status
        location = reply.headers["Location"]
        assert "/fhir/r4/Task/" in location
        return location.split("/_history/")[0].rsplit("/", 1)[-1], his_id

    def r4_task(self, task_id: str) -> Reply:
        """The HIS reads the bridge's R4 Task."""
        return self.call(
            "GET", f"/fhir/r4/Task/{task_id}", cert=self.pki.his, headers=auth(HIS_KEY)
        )

    def withdraw(self, task_id: str) -> Reply:
        """The GP cancels the referral (If-Match from the Task's ETag)."""
        current = self.r4_task(task_id)
        assert current.status == 200
        body = {
            "resourceType": "Task",
            "id": task_id,
            "status": "cancelled",
            "intent": "order",
            "statusReason": {"coding": [{"system": CLOSURE, "code": "gp-withdrew"}]},
        }
        headers = {**auth(HIS_KEY, FHIR_JSON), "If-Match": current.headers["ETag"]}
        return self.call(
            "PUT", f"/fhir/r4/Task/{task_id}", cert=self.pki.his, json=body, headers=headers
        )

    # --- the receiver side ---

    def notification(self, task_id: str) -> Json:
        """The notification Task at the welfare platform (waits for the dispatcher)."""
        return wait_until(lambda: self.platform.task(task_id), "the notification Task")

    def assertion(self, **claims: Any) -> str:
        """A fresh RFC 7523 client assertion of the receiver, signed with its key."""
        now = int(time.time())
        body = {
            "iss": RECEIVER_ID,
            "sub": RECEIVER_ID,
            "aud": f"{self.base_url}/oauth/token",
            "iat": now,
            "exp": now + 60,
            "jti": str(uuid.uuid4()),
            **claims,
        }
        return jwt.encode(body, self.key, algorithm="ES256")

    def token_reply(self, task_id: str, cert: Leaf | None, assertion: str | None = None) -> Reply:
        """POST /oauth/token: client credentials with a private-key JWT, for one Task."""
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": assertion or self.assertion(),
            "resource": f"urn:uuid:{task_id}",
        }
        return self.call("POST", "/oauth/token", cert=cert, data=form)

    def token(self, task_id: str) -> str:
        """An access token for ``task_id``, asked for with the receiver's certificate."""
        reply = self.token_reply(task_id, self.pki.receiver)
        assert reply.status == 200
        token: str = reply.json()["access_token"]
        return token

    def pull(self, url: str, token: str, cert: Leaf | None = None) -> Reply:
        """GET a resource of the STU3 endpoint with the token (the receiver's cert by default)."""
        return self.call(
            "GET", url, cert=cert or self.pki.receiver, headers={"Authorization": f"Bearer {token}"}
        )

    def stu3_write(self, method: str, path: str, token: str, body: Json) -> Reply:
        """PUT/POST STU3 JSON with the token and the receiver's certificate."""
        headers = {"Authorization": f"Bearer {token}", "Content-Type": STU3_JSON}
        return self.call(
            method, path, cert=self.pki.receiver, data=json.dumps(body), headers=headers
        )

    def audit(self, event: str, since: int = 0) -> list[Json]:
        """Audit rows of ``event`` with an id above ``since``."""
        return [r for r in audit_rows(self.config, event) if r["id"] > since]

    def last_audit_id(self) -> int:
        """The highest audit row id so far."""
        return max((int(r["id"]) for r in audit_rows(self.config)), default=0)


def _clients(pki: Pki, public_key: Path) -> list[Json]:
    """The example clients with the HIS bound to its certificate and the receiver replaced by one
    that authenticates with a private-key JWT (no secret) over its own certificate."""
    receiver = {
        "id": RECEIVER_ID,
        "jwt_public_key_file": str(public_key),
        "cert_sha256": pki.receiver.sha256,
        "scopes": ["referral:pull", "task:update", "feedback:write"],
        "destination": "welzijn-viplive",
    }
    clients = [c for c in example_clients() if c["id"] not in (HIS_ID, RECEIVER_ID)]
    his = next(c for c in example_clients() if c["id"] == HIS_ID)
    return [{**his, "cert_sha256": pki.his.sha256}, receiver, *clients]


@contextlib.contextmanager
def _bridge(
    directory: Path,
    pki: Pki,
    receiver_key: tuple[ec.EllipticCurvePrivateKey, Path],
    platform: Platform,
    gp_record: SimulatedFhirServer | None,
    pull: Json | None = None,
) -> Iterator[Bridge]:
    """The service on a port chosen beforehand (``[pull] base_url`` names it), over mutual TLS."""
    key, public_key = receiver_key
    port = free_port()
    endpoints = {"welzijn-viplive": platform.server.base_url}
    if gp_record is not None:
        endpoints["gp-record"] = gp_record.base_url
    config = write_config(
        directory,
        platform.server.base_url,
        endpoints=endpoints,
        service={
            "rate_per_s": 1000.0,
            "burst": 1000,
            "tls": {
                "cert_file": str(pki.dir / "server.pem"),
                "key_file": str(pki.dir / "server.key"),
                "client_ca_file": str(pki.ca_file),
                "require_client_cert": True,
            },
        },
        pull={"base_url": f"https://127.0.0.1:{port}", **(pull or {})},
        clients=_clients(pki, public_key),
    )
    with running_service(
        config, port=port, scheme="https", verify=str(pki.ca_file), cert=pki.cert(pki.his)
    ) as service:
        yield Bridge(service, config, pki, key, platform)


@pytest.fixture(scope="module")
def bridge(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    receiver_key: tuple[ec.EllipticCurvePrivateKey, Path],
    platform: Platform,
    gp_record: SimulatedFhirServer,
) -> Iterator[Bridge]:
    """The bridge with the default token lifetime, shared by the tests of this module."""
    with _bridge(tmp_path_factory.mktemp("bridge"), pki, receiver_key, platform, gp_record) as b:
        yield b


# --- checks -----------------------------------------------------------------------------------


def assert_outcome(reply: Reply, status: int, code: str | None = None) -> Json:
    """``reply`` is a refusal with ``status``: an OperationOutcome (with ``code``) without a
    patient value; its body."""
    assert reply.status == status
    hits = patient_value_hits(reply.text)
    assert hits == [], "patient values in a refusal"
    body = reply.json()
    rtype = body.get("resourceType")
    assert rtype == "OperationOutcome"
    codes = [i.get("code") for i in body.get("issue") or []]
    if code is not None:
        assert code in codes
    return dict(body)


def assert_oauth_error(reply: Reply, status: int, error: str) -> None:
    """``reply`` is an RFC 6749 error response with ``error``, no patient value."""
    assert reply.status == status
    hits = patient_value_hits(reply.text)
    assert hits == [], "patient values in a refusal"
    body = reply.json()
    keys = sorted(body)
    assert keys == ["error", "error_description"]
    assert body["error"] == error
    assert reply.headers.get("Cache-Control") == "no-store"


def refused_rows(rows: list[Json], user: str) -> list[Json]:
    """The refused audit rows of ``user``."""
    return [r for r in rows if r["outcome"] == "refused" and r["user"] == user]


def x5t_s256(leaf: Leaf) -> str:
    """RFC 8705 ``x5t#S256`` of a certificate."""
    return base64.urlsafe_b64encode(hashlib.sha256(leaf.der).digest()).rstrip(b"=").decode()


def _is_update_of(write: RawWrite, task_id: str) -> bool:
    """``write`` is ``PUT [base]/Task?identifier=<the Task's urn:uuid>`` (query percent-decoded)."""
    path, _, query = write.path.partition("?")
    wanted = [f"urn:ietf:rfc:3986|urn:uuid:{task_id}"]
    return (
        write.method == "PUT"
        and path == "/fhir/Task"
        and urllib.parse.parse_qs(query).get("identifier") == wanted
    )


def resource_url(notification: Json, stu3_type: str) -> str:
    """The pull URL of the first ``input`` of ``stu3_type`` in a notification."""
    for item in notification.get("input") or []:
        url = str(item["valueReference"]["reference"])
        if url.rsplit("/", 2)[-2] == stu3_type:
            return url
    raise AssertionError(f"the notification lists no {stu3_type}")


# --- the tests ------------------------------------------------------------------------------------


def test_full_flow_over_mutual_tls(bridge: Bridge, gp_record: SimulatedFhirServer) -> None:
    """Push, notify without patient data, token by private-key JWT, pull, accept, report, close."""
    task_id, his_id = bridge.push()
    notification = bridge.notification(task_id)

    # the notification as it went over the wire: no patient value, owner by AGB in OID form
    posts = [
        w
        for w in bridge.platform.writes()
        if w.method == "POST" and f"urn:uuid:{task_id}".encode() in w.body
    ]
    assert len(posts) == 1
    assert posts[0].path == "/fhir/Task"
    assert posts[0].headers["if-none-exist"].endswith(f"urn:uuid:{task_id}")
    hits = patient_value_hits(posts[0].body.decode("utf-8"))
    assert hits == [], "patient values in the notification"
    sent = json.loads(posts[0].body)
    assert fhir.validate_stu3(sent, "Task") == []
    assert sent["status"] == "requested"
    assert sent["owner"]["identifier"] == {"system": AGB_OID, "value": OWNER_AGB}

    # a token for this Task: private-key JWT over mutual TLS, bound to the receiver's certificate
    granted = bridge.token_reply(task_id, bridge.pki.receiver)
    assert granted.status == 200
    assert granted.headers.get("Cache-Control") == "no-store"
    grant = granted.json()
    assert grant["token_type"] == "Bearer"
    assert grant["scope"] == f"task/{task_id}"
    token = grant["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["task"] == task_id
    assert claims["sub"] == RECEIVER_ID
    assert claims["cnf"] == {"x5t#S256": x5t_s256(bridge.pki.receiver)}

    # every input reference of the notification, pulled
    inputs = [str(i["valueReference"]["reference"]) for i in notification.get("input") or []]
    assert inputs
    pulled_types = []
    for url in inputs:
        assert url.startswith(f"{bridge.base_url}/fhir/stu3/")
        reply = bridge.pull(url, token)
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("application/fhir+json")
        assert "fhirVersion=3.0" in reply.headers["Content-Type"]
        resource = reply.json()
        stu3_type, rid = url.rsplit("/", 2)[-2:]
        assert (resource.get("resourceType"), resource.get("id")) == (stu3_type, rid)
        issues = fhir.validate_stu3(resource, stu3_type)
        assert issues == []
        pulled_types.append(stu3_type)
    assert "ReferralRequest" in pulled_types
    assert "Patient" in pulled_types
    referral_id = resource_url(notification, "ReferralRequest").rsplit("/", 1)[-1]

    # accepted, first contact, completed
    task_path = f"/fhir/stu3/Task/{task_id}"
    current = bridge.pull(task_path, token)
    assert current.status == 200
    task = current.json()
    accepted = bridge.stu3_write("PUT", task_path, token, {**task, "status": "accepted"})
    assert accepted.status == 200
    assert accepted.json()["status"] == "accepted"
    first_contact = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": FEEDBACK_ITEM, "code": "first-contact"}]},
        "basedOn": [{"reference": f"ReferralRequest/{referral_id}"}],
        "effectiveDateTime": "2026-11-04T10:00:00+01:00",
    }
    posted = bridge.stu3_write("POST", "/fhir/stu3/Observation", token, first_contact)
    assert posted.status == 201
    completed = {
        **task,
        "status": "completed",
        "statusReason": {"coding": [{"system": CLOSURE, "code": "completed-conversations"}]},
    }
    done = bridge.stu3_write("PUT", task_path, token, completed)
    assert done.status == 200
    assert done.json()["status"] == "completed"

    # the GP record gets the feedback; the bridge's Task is completed
    def feedback() -> Json | None:
        about = [
            r
            for rtype in ("Observation", "Communication")
            for r in gp_record.resources(rtype)
            if his_id in {(b.get("identifier") or {}).get("value") for b in r.get("basedOn") or []}
        ]
        codes = {
            c["code"]: r
            for r in about
            if r["resourceType"] == "Observation"
            for c in r["code"]["coding"]
            if c.get("system") == FEEDBACK_ITEM
        }
        communications = [r for r in about if r["resourceType"] == "Communication"]
        ready = {"first-contact", "closed"} <= set(codes) and communications
        return codes if ready else None

    observations = wait_until(feedback, "first contact and closure at the GP record")
    closure = observations["closed"]["valueCodeableConcept"]["coding"]
    assert {"system": CLOSURE, "code": "completed-conversations"} in closure
    r4 = bridge.r4_task(task_id)
    assert r4.status == 200
    assert r4.json()["status"] == "completed"

    # access has ended: a further pull with the same token is refused
    after = bridge.pull(resource_url(notification, "ReferralRequest"), token)
    assert_outcome(after, 403, "forbidden")


def test_token_cannot_read_another_referral(bridge: Bridge) -> None:
    """A token gets 404 (as for none; audited) for another referral's Task and resources."""
    first, _ = bridge.push()
    second, _ = bridge.push()
    bridge.notification(first)
    other = bridge.notification(second)
    token = bridge.token(first)
    since = bridge.last_audit_id()

    own = bridge.pull(f"/fhir/stu3/Task/{first}", token)
    assert own.status == 200
    targets = [
        f"/fhir/stu3/Task/{second}",
        resource_url(other, "ReferralRequest"),
        resource_url(other, "Patient"),
    ]
    for url in targets:
        assert_outcome(bridge.pull(url, token), 404, "not-found")

    rows = bridge.audit("referral_pull", since)
    refused = refused_rows(rows, RECEIVER_ID)
    assert len(refused) == len(targets)
    assert [r["object_id"] for r in refused] == [u.rsplit("/", 1)[-1] for u in targets]
    assert {r["responsible"] for r in refused} == {"welzijn-viplive"}
    served = [r for r in rows if r["outcome"] == "served"]
    assert [(r["user"], r["object_id"]) for r in served] == [(RECEIVER_ID, first)]


def test_cancelled_referral_ends_access(bridge: Bridge) -> None:
    """After the GP cancels, the earlier token is refused (403) and no new token is issued."""
    task_id, _ = bridge.push()
    notification = bridge.notification(task_id)
    token = bridge.token(task_id)
    referral = resource_url(notification, "ReferralRequest")
    assert bridge.pull(referral, token).status == 200

    cancelled = bridge.withdraw(task_id)
    assert cancelled.status == 200
    r4 = bridge.r4_task(task_id)
    assert r4.json()["status"] == "cancelled"
    since = bridge.last_audit_id()

    refusal = assert_outcome(bridge.pull(referral, token), 403, "forbidden")
    assert "cancelled" in refusal["issue"][0]["diagnostics"]
    assert_oauth_error(bridge.token_reply(task_id, bridge.pki.receiver), 400, "invalid_grant")

    pulls = refused_rows(bridge.audit("referral_pull", since), RECEIVER_ID)
    assert [(r["object_id"], r["detail"]) for r in pulls] == [
        (referral.rsplit("/", 1)[-1], "Task cancelled")
    ]
    tokens = refused_rows(bridge.audit("pull_token", since), RECEIVER_ID)
    assert [(r["object_id"], r["detail"]) for r in tokens] == [(task_id, "Task cancelled")]

    # the platform gets the cancellation: PUT Task?identifier=... with the reason, no references
    # (read from the wire: the simulator does not percent-decode the conditional query)
    def cancellation() -> RawWrite | None:
        return next((w for w in bridge.platform.writes() if _is_update_of(w, task_id)), None)

    put = wait_until(cancellation, "the cancellation PUT at the platform")
    hits = patient_value_hits(put.body.decode("utf-8"))
    assert hits == [], "patient values in the cancellation"
    ended = json.loads(put.body)
    assert fhir.validate_stu3(ended, "Task") == []
    assert ended["status"] == "cancelled"
    assert {"system": CLOSURE, "code": "gp-withdrew"} in ended["statusReason"]["coding"]
    assert ended["owner"]["identifier"] == {"system": AGB_OID, "value": OWNER_AGB}
    assert "input" not in ended
    assert "focus" not in ended


def test_client_certificate_of_another_ca_gets_no_answer(bridge: Bridge) -> None:
    """A certificate from another CA, or none, ends in the TLS handshake: no HTTP answer."""
    task_id, _ = bridge.push()
    since = bridge.last_audit_id()
    for leaf in (bridge.pki.stranger, None):
        with pytest.raises(requests.exceptions.ConnectionError):
            bridge.token_reply(task_id, leaf)
        with pytest.raises(requests.exceptions.ConnectionError):
            bridge.call("GET", "/healthz", cert=leaf)
    assert bridge.audit("pull_token", since) == []


def test_assertion_over_another_clients_certificate_gets_no_token(bridge: Bridge) -> None:
    """The receiver's valid assertion over another (right-CA) certificate: 401, audited."""
    task_id, _ = bridge.push()
    since = bridge.last_audit_id()
    for leaf in (bridge.pki.his, bridge.pki.unmapped):
        assert_oauth_error(bridge.token_reply(task_id, leaf), 401, "invalid_client")
    tokens = refused_rows(bridge.audit("pull_token", since), RECEIVER_ID)
    assert [r["detail"] for r in tokens] == ["client certificate", "client certificate"]
    assert bridge.token(task_id)  # the same client over its own certificate gets one


def test_token_used_over_another_certificate_is_refused(bridge: Bridge) -> None:
    """A certificate-bound token presented over another certificate: 401 OperationOutcome."""
    task_id, _ = bridge.push()
    token = bridge.token(task_id)
    task_path = f"/fhir/stu3/Task/{task_id}"
    assert bridge.pull(task_path, token).status == 200
    since = bridge.last_audit_id()
    for leaf in (bridge.pki.his, bridge.pki.unmapped):
        refused = assert_outcome(bridge.pull(task_path, token, cert=leaf), 401, "login")
        assert "certificate" in refused["issue"][0]["diagnostics"]
    pulls = [r for r in bridge.audit("referral_pull", since) if r["outcome"] == "refused"]
    assert len(pulls) == 2
    assert {r["detail"] for r in pulls} == {
        "the access token is bound to another client certificate"
    }
    # a write with the stolen token fails the same way
    headers = {"Authorization": f"Bearer {token}", "Content-Type": STU3_JSON}
    body = json.dumps({"resourceType": "Task", "id": task_id, "status": "accepted"})
    put = bridge.call("PUT", task_path, cert=bridge.pki.his, data=body, headers=headers)
    assert_outcome(put, 401, "login")
    r4 = bridge.r4_task(task_id)
    assert r4.json()["status"] == "requested"


@pytest.fixture(scope="module")
def short_lived(
    tmp_path_factory: pytest.TempPathFactory,
    pki: Pki,
    receiver_key: tuple[ec.EllipticCurvePrivateKey, Path],
    platform: Platform,
) -> Iterator[Bridge]:
    """A second bridge whose access tokens live one second (``[pull] token_ttl_s = 1``)."""
    directory = tmp_path_factory.mktemp("short-lived")
    with _bridge(directory, pki, receiver_key, platform, None, {"token_ttl_s": 1}) as b:
        yield b


def test_expired_token_is_refused(short_lived: Bridge) -> None:
    """A token past its exp is refused: 401 OperationOutcome coded expired, audited."""
    task_id, _ = short_lived.push()
    reply = short_lived.token_reply(task_id, short_lived.pki.receiver)
    assert reply.status == 200
    assert reply.json()["expires_in"] == 1
    token = reply.json()["access_token"]
    exp = float(jwt.decode(token, options={"verify_signature": False})["exp"])
    wait_s = exp - time.time() + 0.05
    assert wait_s <= 2.1  # exp = ceil(now) + ttl: never shorter than expires_in
    time.sleep(max(wait_s, 0))
    since = short_lived.last_audit_id()

    refused = assert_outcome(short_lived.pull(f"/fhir/stu3/Task/{task_id}", token), 401, "expired")
    assert "expired" in refused["issue"][0]["diagnostics"]
    rows = short_lived.audit("referral_pull", since)
    assert [(r["outcome"], r["detail"]) for r in rows] == [
        ("refused", "the access token has expired")
    ]


def test_every_stu3_refusal_is_a_clean_operation_outcome(bridge: Bridge) -> None:
    """Each /fhir/stu3 refusal (no/bad/foreign token, other Task, bad body) is a clean outcome."""
    task_id, _ = bridge.push()
    other_id, _ = bridge.push()
    other = bridge.notification(other_id)
    token = bridge.token(task_id)
    own_task = f"/fhir/stu3/Task/{task_id}"
    receiver = bridge.pki.receiver

    def get(path: str, headers: dict[str, str]) -> Reply:
        return bridge.call("GET", path, cert=receiver, headers=headers)

    assert_outcome(get(own_task, {}), 401, "login")
    assert_outcome(get(own_task, {"Authorization": "Bearer not.a.token"}), 401, "login")
    assert_outcome(get(own_task, auth(HIS_KEY)), 401, "login")
    unknown = bridge.pull("/fhir/stu3/Patient/unknown", token)
    assert_outcome(unknown, 404, "not-found")
    for foreign in (f"/fhir/stu3/Task/{other_id}", resource_url(other, "Patient")):
        hidden = bridge.pull(foreign, token)
        assert_outcome(hidden, 404, "not-found")
        assert hidden.json() == unknown.json()  # never confirms that it exists
    assert_outcome(bridge.pull("/fhir/stu3/Task/not-a-uuid", token), 404, "not-found")

    other_referral = resource_url(other, "ReferralRequest").rsplit("/", 1)[-1]
    task = {"resourceType": "Task", "id": other_id, "status": "accepted", "intent": "order"}
    assert_outcome(bridge.stu3_write("PUT", f"/fhir/stu3/Task/{other_id}", token, task), 404)
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": FEEDBACK_ITEM, "code": "first-contact"}]},
        "basedOn": [{"reference": f"ReferralRequest/{other_referral}"}],
        "effectiveDateTime": "2026-11-04T10:00:00+01:00",
    }
    assert_outcome(bridge.stu3_write("POST", "/fhir/stu3/Observation", token, observation), 404)
    not_a_task = {"resourceType": "Patient", "id": task_id}
    assert_outcome(bridge.stu3_write("PUT", own_task, token, not_a_task), 400)
    wrong_id = {"resourceType": "Task", "id": other_id, "status": "accepted", "intent": "order"}
    assert_outcome(bridge.stu3_write("PUT", own_task, token, wrong_id), 400)

    # none of it touched either Task
    for tid in (task_id, other_id):
        r4 = bridge.r4_task(tid)
        assert r4.json()["status"] == "requested"


def test_api_key_client_is_held_to_its_certificate(bridge: Bridge) -> None:
    """The HIS key presented over the receiver's certificate is refused (HIS has cert_sha256)."""
    task_id, _ = bridge.push()
    reply = bridge.call(
        "GET", f"/fhir/r4/Task/{task_id}", cert=bridge.pki.receiver, headers=auth(HIS_KEY)
    )
    assert reply.status in (401, 403)
    hits = patient_value_hits(reply.text)
    assert hits == []


def test_service_logs_hold_no_patient_values(bridge: Bridge) -> None:
    """After a notify-token-pull-update round (and whatever ran before), the service's log lines
    hold no patient value; failures name the value by index only."""
    task_id, _ = bridge.push()
    token = bridge.token(task_id)
    for item in bridge.notification(task_id)["input"]:
        assert bridge.pull(item["valueReference"]["reference"], token).status == 200
    task = bridge.pull(f"/fhir/stu3/Task/{task_id}", token).json()
    accepted = bridge.stu3_write(
        "PUT", f"/fhir/stu3/Task/{task_id}", token, task | {"status": "accepted"}
    )
    assert accepted.status == 200
    lines = list(bridge.service.stderr_lines) + list(bridge.service.stdout_lines)
    assert lines, "the service wrote no log lines at all"
    hits = sorted({n for line in lines for n in patient_value_hits(line)})
    assert hits == [], f"patient values (by index) in the service logs: {hits}"
