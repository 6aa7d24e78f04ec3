"""``wor-bridge demo``: the whole sidecar path on loopback, with nothing to configure.

It starts two simulated welfare FHIR endpoints (real HTTP servers on 127.0.0.1 that keep what they
receive), the real service on a free port with a temporary SQLite store, pushes the fixture
referrals as a GP system would (JSON and XML, contained and Bundle, one duplicate, two that are
refused), makes the first delivery attempt fail with a 503 to show the retry, waits until every
accepted referral is delivered and prints a summary. Exit 0 when everything accepted was delivered.
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import uvicorn

from wor_bridge import bootstrap, logs
from wor_bridge.config import load_app
from wor_bridge.demo import dates
from wor_bridge.demo import monitoring as demo_monitoring
from wor_bridge.demo import notified_pull as demo_pull
from wor_bridge.demo import welfare as demo_welfare
from wor_bridge.demo.credentials import HIS_KEY, demo_configuration, write_demo_configuration
from wor_bridge.demo.fhir_server import SimulatedFhirServer
from wor_bridge.service.app import create_app
from wor_bridge.shipped import shipped

PUSHES: tuple[tuple[str, str, str], ...] = (
    ("accepted-contained", "ServiceRequest", "JSON, resources contained"),
    ("accepted-xml-bundle", "Bundle", "XML transaction Bundle"),
    ("accepted-dutch-name-prefixes", "ServiceRequest", "Dutch name parts, diacritics"),
    ("accepted-poh-booked-appointment", "ServiceRequest", "POH refers, appointment booked"),
    ("accepted-clinical-data-not-forwarded", "Bundle", "Bundle with diagnoses, medication"),
    ("accepted-route-by-practice-bsn-ageband", "ServiceRequest", "routed by practice AGB"),
    ("accepted-contained", "ServiceRequest", "the first referral pushed again"),
    ("refused-no-consent", "ServiceRequest", "no consent"),
    ("refused-bsn-fails-11-test", "ServiceRequest", "BSN fails the 11-test"),
)


@dataclass
class Push:
    """One push and what came of it."""

    fixture: str
    label: str
    status: int
    task_id: str = ""
    reasons: tuple[str, ...] = ()
    note: str = ""
    delivered: str = ""
    attempts: int = 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_config(
    folder: Path, endpoints: dict[str, str], port: int, keys: str | None = None
) -> Path:
    text = demo_configuration()
    if keys is not None:  # the store encrypted at rest, with these key entries
        (folder / "store.keys").write_text(keys, encoding="utf-8")
        (folder / "store.keys").chmod(0o600)
        text = text.replace('encryption = "off"', 'encryption = "aes-gcm"\nkey_file = "store.keys"')
    text = text.replace("http://127.0.0.1:8090/fhir", endpoints["welzijn-voorbeeld"])
    text = text.replace("http://127.0.0.1:8091/fhir", endpoints["welzijn-rivierenland"])
    text = text.replace("http://127.0.0.1:8092/fhir", endpoints["gp-record"])
    text = text.replace("http://127.0.0.1:8093/fhir", endpoints["welzijn-viplive"])
    text = text.replace("http://127.0.0.1:8094/fhir", endpoints["welzijn-zorgdomein"])
    text = text.replace(
        'base_url = "http://127.0.0.1:8080"', f'base_url = "http://127.0.0.1:{port}"'
    )
    text = text.replace("deadline_check_interval_s = 60.0", "deadline_check_interval_s = 3600.0")
    text = text.replace("port = 8080", f"port = {port}")
    text = text.replace('path = "wor-bridge.sqlite"', f'path = "{folder / "demo.sqlite"}"')
    text = text.replace("base_s = 2.0", "base_s = 0.2")
    text = text.replace("dispatcher_interval_s = 1.0", "dispatcher_interval_s = 0.2")
    return write_demo_configuration(folder, text)


def _push(base: str, name: str, endpoint: str, label: str) -> Push:
    path = next(shipped("referrals", name).glob("input.*"))
    media = "application/fhir+xml" if path.suffix == ".xml" else "application/fhir+json"
    url = f"{base}/fhir/r4/ServiceRequest" if endpoint == "ServiceRequest" else f"{base}/fhir/r4"
    response = requests.post(
        url,
        data=dates.current(path.read_bytes(), dates.referral_day()),
        headers={
            "Authorization": f"Bearer {HIS_KEY}",
            "Content-Type": media,
            "Prefer": "return=OperationOutcome",  # the bridge's note rather than no body
        },
        timeout=(3.05, 30),
    )
    push = Push(name, label, response.status_code)
    outcome: dict[str, Any] = response.json()
    if response.status_code in (200, 201):
        push.task_id = response.headers["Location"].split("/_history/")[0].rsplit("/", 1)[-1]
        push.note = _note(outcome)
    else:
        push.reasons = tuple(
            f"{(i.get('expression') or i.get('location') or ['?'])[0]}: {i['diagnostics']}"
            for i in outcome["issue"]
        )
    return push


def _wait_delivered(base: str, pushes: list[Push], deadline_s: float) -> None:
    headers = {"Authorization": f"Bearer {HIS_KEY}"}
    end = time.monotonic() + deadline_s
    waiting = [p for p in pushes if p.task_id]
    while waiting and time.monotonic() < end:
        for push in waiting:
            task = requests.get(f"{base}/fhir/r4/Task/{push.task_id}", headers=headers, timeout=5)
            push.delivered = task.json()["businessStatus"]["coding"][0]["code"]
        waiting = [p for p in waiting if p.delivered == "queued"]
        if waiting:
            time.sleep(0.2)


def _note(answer: dict[str, Any]) -> str:
    """The bridge's note on an accepted push: its OperationOutcome, or (for a transaction
    Bundle) the outcome of the ServiceRequest's entry in the transaction-response."""
    if answer.get("resourceType") == "Bundle":
        located = [e["response"] for e in answer["entry"] if e["response"].get("location")]
        answer = located[0]["outcome"] if located else {"issue": [{"diagnostics": ""}]}
    return str(answer["issue"][0]["diagnostics"])


def _report(pushes: list[Push], attempts: dict[str, int], receivers: dict[str, Any]) -> bool:
    print("\nwor-bridge demo: referrals pushed by the simulated GP system\n")
    print(f"{'#':>2}  {'fixture':40} {'HTTP':>4}  {'Task':8}  {'delivery':10} {'tries':>5}")
    for n, push in enumerate(pushes, 1):
        short = push.task_id[:8] if push.task_id else "-"
        state = push.delivered or ("refused" if push.status not in (200, 201) else "")
        tries = attempts.get(push.task_id, 0) if push.task_id else 0
        print(f"{n:>2}  {push.fixture:40} {push.status:>4}  {short:8}  {state:10} {tries:>5}")
        print(f"    {push.label}" + (f"; {push.note}" if "already" in push.note else ""))
        for reason in push.reasons:
            print(f"    refused: {reason}")
    accepted = [p for p in pushes if p.status in (200, 201)]
    unique = {p.task_id for p in accepted}
    delivered = {p.task_id for p in accepted if p.delivered == "delivered"}
    print(
        f"\naccepted {len(accepted)} pushes ({len(unique)} distinct referrals), "
        f"refused {len(pushes) - len(accepted)}, delivered {len(delivered)} of {len(unique)}"
    )
    for name, server in receivers.items():
        if name in ("gp-record", "welzijn-zorgdomein"):
            continue
        print(
            f"receiver {name}: {len(server.resources('ServiceRequest'))} ServiceRequest(s), "
            f"{len(server.resources('Task'))} Task(s), "
            f"{len(server.resources('Condition'))} Condition(s), "
            f"{len(server.requests())} request(s) received"
        )
    return delivered == unique


def run(deadline_s: float = 30.0, *, folder: Path | None = None, keys: str | None = None) -> int:
    """Run the demo; 0 when every accepted referral was delivered.

    The store is ``demo.sqlite`` in a temporary folder, or in ``folder`` (kept); with ``keys``
    (``ID:BASE64`` entries) it is encrypted at rest (``[store] encryption = "aes-gcm"``).
    """
    receivers = {
        "welzijn-voorbeeld": SimulatedFhirServer().start(),
        "welzijn-rivierenland": SimulatedFhirServer().start(),
        "gp-record": SimulatedFhirServer().start(),
        "welzijn-zorgdomein": SimulatedFhirServer().start(),
    }
    pull_receiver = demo_pull.NotifiedPullReceiver()
    receivers["welzijn-voorbeeld"].fail_next(503, times=1, retry_after="0")
    with tempfile.TemporaryDirectory(prefix="wor-bridge-demo-") as tmp:
        port = _free_port()
        endpoints = {k: v.base_url for k, v in receivers.items()}
        path = _write_config(
            folder or Path(tmp),
            {**endpoints, "welzijn-viplive": pull_receiver.base_url},
            port,
            keys,
        )
        path.write_text(pull_receiver.configure(path.read_text("utf-8"), Path(tmp)), "utf-8")
        components = bootstrap.build(load_app(path))
        app = create_app(components)
        ok = way_back = dutch = reported = False
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                **logs.uvicorn_logging(),
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            while not server.started:
                time.sleep(0.05)
            base = f"http://127.0.0.1:{port}"
            pull_receiver.start(base)
            print(
                f"service on {base}; welfare endpoints: "
                + json.dumps({k: v.base_url for k, v in receivers.items()})
            )
            pushes = [_push(base, name, ep, label) for name, ep, label in PUSHES]
            _wait_delivered(base, pushes, deadline_s)
            attempts = {e.task_id: e.attempts for e in components.store.list_entries(None, 1000)}
            ok = _report(pushes, attempts, receivers)
            tasks = {p.fixture: p.task_id for p in pushes if p.task_id}
            way_back = demo_welfare.run(base, components, receivers["gp-record"], tasks)
            dutch = demo_pull.run(base, components, pull_receiver, receivers["welzijn-zorgdomein"])
            reported = demo_monitoring.run(base)  # the report of what the demo just did
        finally:
            server.should_exit = True
            thread.join(10)
            pull_receiver.stop()
            for receiver in receivers.values():
                receiver.stop()
    print("\nall accepted referrals delivered" if ok else "\nNOT all referrals were delivered")
    print("the way back went as designed" if way_back else "the way back did NOT go as designed")
    print("notified pull and STU3 went as designed" if dutch else "the STU3 flows did NOT go right")
    print(
        "the monitoring report was served" if reported else "the monitoring report was NOT served"
    )
    return 0 if ok and way_back and dutch and reported else 1
