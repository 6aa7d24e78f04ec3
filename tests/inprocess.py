"""The service in-process (httpx over ASGI, a real SQLite store, no dispatcher) with one client of
each kind, and one synthetic patient with two referrals: ``voorbeeld`` (routed to the FHIR R4
welfare organisation) and ``viplive`` (the notified-pull receiver). Shared by the tenancy,
audit-coverage and service-surface tests. Nothing here prints a body: they may hold patient data.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any, Final

import httpx

from tests.cases import REPO, case_input
from wor_bridge import bootstrap
from wor_bridge.config import load_app
from wor_bridge.connectors import webhook
from wor_bridge.demo.credentials import demo_configuration
from wor_bridge.service.app import create_app

Json = dict[str, Any]
FHIR_JSON: Final = "application/fhir+json"
FEEDBACK_ITEM: Final = "https://wor-bridge.nl/fhir/CodeSystem/feedback-item"
CLOSURE_REASON: Final = "https://wor-bridge.nl/fhir/CodeSystem/closure-reason"
WEBHOOK_SECRET: Final = b"example-webhook-secret"
PULL_SECRET: Final = "example-pull-secret"

# clear keys: the example's, and the extra clients below
HIS: Final = "example-his-key"
WELFARE: Final = "example-welfare-key"
ZORGDOMEIN: Final = "example-zorgdomein-key"
ADMIN: Final = "example-admin-key"
OTHER_WELFARE: Final = "test-rivierenland-key"
OTHER_HIS: Final = "test-other-his-key"
READER: Final = "test-reader-key"
EXTRA_CLIENTS: Final = (
    ("rivierenland", OTHER_WELFARE, ["task:read", "task:update", "feedback:write"], "destination",
     "welzijn-rivierenland"),
    ("his-other", OTHER_HIS, ["referral:write", "task:read", "task:update"], "source_system",
     "his-other"),
    ("reader", READER, ["task:read"], "source_system", "his-example"),
)  # fmt: skip


def client_toml(client_id: str, key: str, scopes: list[str], bind: str, value: str) -> str:
    """A ``[[clients]]`` table for ``key`` (stored as its SHA-256)."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return (
        f'\n[[clients]]\nid = "{client_id}"\nkey_sha256 = "{digest}"\n'
        f"scopes = {json.dumps(scopes)}\n{bind} = {json.dumps(value)}\n"
    )


def write_config(tmp_path: Path, extra: str = "") -> Path:
    """The example configuration on a store in ``tmp_path`` with the extra clients."""
    text = demo_configuration()
    text = text.replace('mappings_dir = "../mappings"', f'mappings_dir = "{REPO / "mappings"}"')
    text = text.replace('path = "wor-bridge.sqlite"', f'path = "{tmp_path / "s.sqlite"}"')
    text += "".join(client_toml(*c) for c in EXTRA_CLIENTS) + extra
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclasses.dataclass
class World:
    """The app, its store file and the two referrals of the patient (Task ids)."""

    app: Any
    store_path: Path
    voorbeeld: str = ""
    viplive: str = ""
    prepared: dict[str, str] = dataclasses.field(default_factory=dict)
    """what a test made before it started counting (tokens, ids)"""

    def call(self, method: str, url: str, key: str | None = None, **kw: Any) -> httpx.Response:
        """One request (with ``Authorization: Bearer key`` when a key is given)."""
        headers = dict(kw.pop("headers", {}))
        if key is not None:
            headers.setdefault("Authorization", f"Bearer {key}")

        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                return await client.request(method, url, headers=headers, **kw)

        return asyncio.run(go())

    def push(self, district: str = "Utrecht", number: int = 1, key: str = HIS) -> str:
        """Push the fixture patient's referral (routed by ``district``); its Task id."""
        body = case_input("accepted-contained").replace(b'"Utrecht"', f'"{district}"'.encode())
        body = body.replace(b"VW-2026-0001", f"VW-2026-{number:04d}".encode())
        answer = self.call(
            "POST",
            "/fhir/r4/ServiceRequest",
            key,
            content=body,
            headers={"Content-Type": FHIR_JSON},
        )
        assert answer.status_code in (200, 201), answer.status_code
        return answer.headers["Location"].split("/_history/")[0].rsplit("/", 1)[-1]

    def audit(self, after: int = 0) -> list[Json]:
        """Audit rows with an id above ``after``, oldest first."""
        with sqlite3.connect(self.store_path) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute("SELECT * FROM audit WHERE id > ? ORDER BY id", (after,))
            return [dict(r) for r in rows]

    def last_audit_id(self) -> int:
        """The id of the newest audit row (0 when none)."""
        rows = self.audit()
        return int(rows[-1]["id"]) if rows else 0

    def patient_of(self, task_id: str) -> str:
        """The audit patient identifier of a Task (compared, never printed)."""
        with sqlite3.connect(self.store_path) as db:
            row = db.execute("SELECT patient_id FROM referral WHERE task_id = ?", (task_id,))
            return str(row.fetchone()[0])

    def request_id(self, task_id: str) -> str:
        """The ServiceRequest id of a referral (its Task's focus)."""
        task = self.call("GET", f"/fhir/r4/Task/{task_id}", ADMIN).json()
        return str(task["focus"]["reference"].rsplit("/", 1)[-1])

    def token(self, task_id: str) -> str:
        """A pull token of the notified-pull receiver for ``task_id``."""
        answer = self.call(
            "POST",
            "/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "viplive-receiver",
                "client_secret": PULL_SECRET,
                "resource": f"urn:uuid:{task_id}",
            },
        )
        assert answer.status_code == 200, answer.status_code
        return str(answer.json()["access_token"])


def make_world(tmp_path: Path, extra: str = "") -> World:
    """A fresh app with the patient's two referrals pushed."""
    app = create_app(
        bootstrap.build(load_app(write_config(tmp_path, extra))), start_dispatcher=False
    )
    world = World(app, tmp_path / "s.sqlite")
    world.voorbeeld = world.push()
    world.viplive = world.push("Culemborg", 2)
    return world


def unknown_task() -> str:
    """A well-formed Task id the bridge has never made."""
    return str(uuid.uuid4())


def task_body(task_id: str, status: str, reason_text: str | None = None) -> Json:
    """A Task as the welfare side PUTs it (R4)."""
    task: Json = {"resourceType": "Task", "id": task_id, "status": status, "intent": "order"}
    if reason_text is not None:
        task["statusReason"] = {
            "coding": [{"system": CLOSURE_REASON, "code": "not-reachable"}],
            "text": reason_text,
        }
    return task


def observation(task_id: str, kind: str = "conversation-count", **value: Any) -> Json:
    """A feedback Observation about a Task (``focus``), R4."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": FEEDBACK_ITEM, "code": kind}]},
        "focus": [{"reference": f"Task/{task_id}"}],
        "effectiveDateTime": "2026-11-26T10:00:00+01:00",
        **(value or {"valueInteger": 1}),
    }


def stu3_observation(request_id: str) -> Json:
    """An STU3 feedback Observation ``basedOn`` a ReferralRequest."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": FEEDBACK_ITEM, "code": "first-contact"}]},
        "basedOn": [{"reference": f"ReferralRequest/{request_id}"}],
        "effectiveDateTime": "2026-11-26T10:00:00+01:00",
    }


def signed(payload: Json | bytes, secret: bytes = WEBHOOK_SECRET) -> tuple[bytes, dict[str, str]]:
    """A webhook body and its signature headers (signed now)."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = webhook.sign(secret, int(time.time()), body)
    return body, {"Content-Type": "application/json", **headers}


def hook_payload(task_id: str, **fields: Any) -> Json:
    """A welzijn-json message about one referral."""
    return {"verwijzing_id": task_id, "tijdstip": "2026-11-24T10:00:00+01:00", **fields}
