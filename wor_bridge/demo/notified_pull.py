"""The demo's Dutch part: notified pull (VIPLive-style) and a ZorgDomein-style document.

``NotifiedPullReceiver`` is a Twiin TA Notified Pull v1.0.1 welfare platform on loopback
(``ta_receiver.TaReceivingSystem``): the bridge gets a token at its token endpoint with PS256
client and authorization assertions, then creates a Notification (Twiin-01). The receiver then
does what a TA receiver does: asks the bridge's ``/oauth/token`` for a token with a private-key
JWT and the Notification's authorization base, reads the workflow Task named by ``basedOn``
(Twiin-03), pulls every ``read-available-resource``, accepts the Task (STU3 ``PUT``), reports
the first contact (STU3 Observation) and completes the Task. Afterwards it is refused: the
referral is closed.

A second referral is withdrawn by the GP before the receiver acts on its Notification: the bridge
cancels it by conditional update (Twiin-02), and the receiver's token request is refused. A third
goes to a ZorgDomein-style endpoint as an STU3 document Bundle with the destination's bearer token.
"""

from __future__ import annotations

import queue
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wor_bridge.bootstrap import Components
from wor_bridge.demo import dates, rest
from wor_bridge.demo.credentials import HIS_KEY, ZORGDOMEIN_TOKEN
from wor_bridge.demo.fhir_server import SimulatedFhirServer
from wor_bridge.demo.ta_receiver import TaReceivingSystem
from wor_bridge.service.tokens import JWT_BEARER
from wor_bridge.shipped import shipped

PULL_CLIENT = "viplive-receiver"
BRIDGE_CLIENT = "wor-bridge"
"""The bridge's client id at the receiver's token endpoint."""
STU3_JSON = "application/fhir+json; fhirVersion=3.0"
FEEDBACK_ITEM = "https://wor-bridge.nl/fhir/CodeSystem/feedback-item"
CLOSURE = "https://wor-bridge.nl/fhir/CodeSystem/closure-reason"
TIMEOUT = (3.05, 30)


@dataclass
class PullStory:
    """What the receiver did for one notification: (step, HTTP status) in order."""

    task_id: str
    steps: list[tuple[str, int]] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


class NotifiedPullReceiver:
    """A TA Notified Pull welfare platform: its token and Task endpoints (``TaReceivingSystem``,
    which verifies the bridge's Twiin token request), and a worker that acts on Notifications."""

    def __init__(self) -> None:
        self.bridge_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        """The bridge's signing key pair for this demo (the private half goes to its config)."""
        self.key = ec.generate_private_key(ec.SECP256R1())
        """This receiver's own key: its private-key JWT at the bridge's /oauth/token."""
        self.system = TaReceivingSystem(
            sender_public_key=_public_pem(self.bridge_key),
            sender_client_id=BRIDGE_CLIENT,
            on_write=self._on_write,
        )
        self.bridge = ""
        self.auto = True
        self.stories: dict[str, PullStory] = {}
        self.notes: dict[str, dict[str, Any]] = {}
        """The latest Notification per bridge Task (its ``groupIdentifier``)."""
        self._work: queue.Queue[str | None] = queue.Queue()
        self._worker = threading.Thread(target=self._run, daemon=True, name="pull-receiver")

    @property
    def base_url(self) -> str:
        """Where the bridge sends Notifications (the destination endpoint)."""
        return self.system.base_url

    def configure(self, text: str, folder: Path) -> str:
        """The demo configuration with ``welzijn-viplive`` in TA mode: the Twiin token request
        to this receiver, an authorization base key, and this receiver's public key."""
        key_file = folder / "bridge-signing.key"
        key_file.write_bytes(
            self.bridge_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        (folder / "receiver-public.pem").write_bytes(_public_pem(self.key))
        twiin = (
            'pull_mode = "ta-np"\n'
            f'auth = {{ type = "twiin", token_url = "{self.system.token_url}", '
            f'client_id = "{BRIDGE_CLIENT}", private_key_file = "{key_file}", '
            'key_id = "demo-ps256" }\n'
        )
        changes = {
            'type = "notified-pull-stu3"\n': f'type = "notified-pull-stu3"\n{twiin}',
            '# token_key_file = "secrets/pull-token-key"': f'token_key = "{secrets.token_hex(24)}"',
            '# jwt_public_key_file = "receiver-public.pem"': (
                f'jwt_public_key_file = "{folder / "receiver-public.pem"}"'
            ),
        }
        for old, new in changes.items():
            if text.count(old) != 1:
                raise ValueError("the example configuration changed; the demo cannot adapt it")
            text = text.replace(old, new)
        return text

    def start(self, bridge: str) -> NotifiedPullReceiver:
        """Serve on loopback and act on Notifications against ``bridge``."""
        self.bridge = bridge
        self.system.start()
        self._worker.start()
        return self

    def stop(self) -> None:
        """Stop the worker and the server."""
        self._work.put(None)
        self._worker.join(10)
        self.system.stop()

    def _on_write(self, rtype: str, resource: dict[str, Any]) -> None:
        group = str((resource.get("groupIdentifier") or {}).get("value", ""))
        if rtype != "Task" or resource.get("status") != "requested" or not group:
            return
        task_id = group.removeprefix("urn:uuid:")
        self.notes[task_id] = resource
        self.stories.setdefault(task_id, PullStory(task_id))
        if self.auto:
            self._work.put(task_id)

    def _run(self) -> None:
        while (task_id := self._work.get()) is not None:
            self.handle(task_id)

    def token(self, task_id: str) -> requests.Response:
        """The token request at the bridge: a private-key JWT and the Notification's
        authorization base played back (TA §3.3)."""
        now = int(time.time())
        claims = {"iss": PULL_CLIENT, "sub": PULL_CLIENT, "iat": now, "exp": now + 60}
        claims |= {"aud": f"{self.bridge}/oauth/token", "jti": str(uuid.uuid4())}
        base = next(
            i["valueString"]
            for i in self.notes[task_id]["input"]
            if i["type"]["coding"][0]["code"] == "authorization-base"
        )
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": jwt.encode(claims, self.key, algorithm="ES256"),
            "authorization_base": base,
        }
        return requests.post(f"{self.bridge}/oauth/token", data=form, timeout=TIMEOUT)

    def handle(self, task_id: str) -> PullStory:
        """Token, workflow Task, pulls, accept, first contact, complete; then access has ended."""
        story = self.stories.setdefault(task_id, PullStory(task_id))
        try:
            self._story(story)
        finally:
            story.done.set()
        return story

    def _story(self, story: PullStory) -> None:
        answer = self.token(story.task_id)
        story.steps.append(("token with the authorization base", answer.status_code))
        if answer.status_code != 200:
            return
        headers = {"Authorization": f"Bearer {answer.json()['access_token']}"}
        note = self.notes[story.task_id]
        stu3 = f"{self.bridge}/fhir/stu3"
        task_url = f"{stu3}/{note['basedOn'][0]['reference']}"
        workflow = requests.get(task_url, headers=headers, timeout=TIMEOUT)
        story.steps.append(("GET workflow Task (Twiin-03)", workflow.status_code))
        for item in note.get("input") or []:
            if "valueReference" in item:
                ref = item["valueReference"]["reference"]
                read = requests.get(f"{stu3}/{ref}", headers=headers, timeout=TIMEOUT)
                story.steps.append((f"pull {ref.split('/')[0]}", read.status_code))
        task = workflow.json()
        request_ref = task["focus"]["reference"]
        put = {**headers, "Content-Type": STU3_JSON}
        accepted = requests.put(
            task_url, json={**task, "status": "accepted"}, headers=put, timeout=TIMEOUT
        )
        story.steps.append(("PUT Task accepted", accepted.status_code))
        first_contact = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": FEEDBACK_ITEM, "code": "first-contact"}]},
            "basedOn": [{"reference": request_ref}],
            "effectiveDateTime": dates.moment(dates.referral_day(), 12),
        }
        posted = requests.post(
            f"{stu3}/Observation", json=first_contact, headers=put, timeout=TIMEOUT
        )
        story.steps.append(("POST Observation first contact", posted.status_code))
        completed = {
            **task,
            "status": "completed",
            "statusReason": {"coding": [{"system": CLOSURE, "code": "completed-conversations"}]},
        }
        done = requests.put(task_url, json=completed, headers=put, timeout=TIMEOUT)
        story.steps.append(("PUT Task completed", done.status_code))
        again = requests.get(task_url, headers=headers, timeout=TIMEOUT)
        story.steps.append(("pull after completion (refused)", again.status_code))


def _public_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _wait(check: Callable[[], bool], deadline_s: float) -> bool:
    end = time.monotonic() + deadline_s
    while not check():
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def push(bridge: str, district: str, number: int) -> str:
    """Push the contained example referral for a patient in ``district`` (a new HIS id)."""
    fixture = shipped("referrals", "accepted-contained", "input.json").read_bytes()
    body = dates.current(fixture, dates.referral_day())
    body = body.replace(b'"Utrecht"', f'"{district}"'.encode())
    body = body.replace(b"VW-2026-0001", f"VW-2026-{number:04d}".encode())
    response = requests.post(
        f"{bridge}/fhir/r4/ServiceRequest",
        data=body,
        headers={"Authorization": f"Bearer {HIS_KEY}", "Content-Type": "application/fhir+json"},
        timeout=TIMEOUT,
    )
    response.raise_for_status()
    return str(response.headers["Location"]).split("/_history/")[0].rsplit("/", 1)[-1]


def withdraw(bridge: str, task_id: str) -> int:
    """The GP withdraws the referral: ``PUT`` the R4 Task cancelled (If-Match, retried on 412)."""
    url = f"{bridge}/fhir/r4/Task/{task_id}"
    body = {
        "resourceType": "Task",
        "id": task_id,
        "status": "cancelled",
        "intent": "order",
        "statusReason": {"coding": [{"system": CLOSURE, "code": "gp-withdrew"}]},
    }
    return rest.update_task(url, body, {"Authorization": f"Bearer {HIS_KEY}"})


def _cancelled_at(receiver: NotifiedPullReceiver, task_id: str) -> bool:
    """The Notification about the Task was cancelled at the receiver (Twiin-02)."""
    wanted = receiver.notes[task_id]["identifier"]
    return any(
        t["identifier"] == wanted and t["status"] == "cancelled"
        for t in receiver.system.server.resources("Task")
    )


def run(
    bridge: str,
    components: Components,
    receiver: NotifiedPullReceiver,
    zorgdomein: SimulatedFhirServer,
) -> bool:
    """Run the Dutch flows against the bridge at ``bridge`` and print them; True if right."""
    pulled_id = push(bridge, "Culemborg", 9001)
    pulled_done = _wait(lambda: pulled_id in receiver.stories, 30)
    pulled = receiver.stories.get(pulled_id, PullStory(pulled_id))
    pulled_done = pulled_done and pulled.done.wait(30)
    receiver.auto = False  # the next notification waits: the GP withdraws it first
    withdrawn = push(bridge, "Culemborg", 9002)
    notified = _wait(lambda: withdrawn in receiver.stories, 30)
    cancel_status = withdraw(bridge, withdrawn)
    cancelled = notified and _wait(lambda: _cancelled_at(receiver, withdrawn), 30)
    late = receiver.token(withdrawn)
    document_id = push(bridge, "Buren", 9003)
    delivered = _wait(lambda: bool(zorgdomein.resources("Bundle")), 30)
    print("\nwor-bridge demo: TA Notified Pull (STU3) and a ZorgDomein-style document")
    print(f"\nreferral {pulled_id[:8]} -> notified-pull receiver at {receiver.base_url}")
    for step, status in pulled.steps:
        print(f"    {step:44} HTTP {status}")
    task = components.store.get_task(pulled_id)
    print(f"    bridge Task now {task.status if task else '?'}")
    print(f"\nreferral {withdrawn[:8]}: notified, then withdrawn by the GP (HTTP {cancel_status})")
    print(f"    cancellation (Twiin-02) reached the receiver: {cancelled}")
    print(f"    receiver's token request afterwards: HTTP {late.status_code}")
    documents = [b for b in zorgdomein.resources("Bundle") if b.get("type") == "document"]
    first = {d["entry"][0]["resource"]["resourceType"] for d in documents}
    bearer = {a for a in zorgdomein.authorizations() if a} == {f"Bearer {ZORGDOMEIN_TOKEN}"}
    print(f"\nreferral {document_id[:8]} -> ZorgDomein-style endpoint {zorgdomein.base_url}")
    print(f"    {len(documents)} STU3 document Bundle(s), first entry {sorted(first)}")
    print(f"    bearer token sent: {bearer}; delivered: {delivered}")
    statuses = [status for _, status in pulled.steps]
    story_ok = (
        bool(statuses)
        and all(status in (200, 201) for status in statuses[:-1])
        and statuses[-1] == 403
    )
    return (
        pulled_done
        and story_ok
        and task is not None
        and task.status == "completed"
        and cancelled
        and late.status_code == 400
        and len(documents) == 1
        and first == {"Composition"}
        and bearer
    )
