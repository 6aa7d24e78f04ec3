"""The demo's second half: a simulated welfare system reports back, the GP record receives it.

One referral is accepted over FHIR (``PUT Task`` with If-Match), then its coach's registration
system (no FHIR) posts signed JSON: first contact, intake, an activity started (*Bewegen &
sporten* as participant) and completion. Another is accepted and then *client not reachable*
(failed, with the reason; first without a reason, which is refused). The rest stay untouched: the
referrals are a day old (``demo.dates``), so the first-contact deadline check runs as it would a
week later and raises an alert for each. Refusals are shown too: a bad signature, another
organisation's Task, an out-of-order update. The GP record (a loopback FHIR server) receives the
Observations and the Communications addressed to the referrer; a timeline per referral is printed.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import requests

from wor_bridge.bootstrap import Components
from wor_bridge.connectors import webhook
from wor_bridge.demo import dates, rest
from wor_bridge.demo.credentials import WEBHOOK_SECRET, WELFARE_KEY
from wor_bridge.demo.fhir_server import SimulatedFhirServer
from wor_bridge.ports import Clock
from wor_bridge.usecases import deadline_alerts

BUSINESS = "https://wor-bridge.nl/fhir/CodeSystem/task-business-status"
CLOSURE = "https://wor-bridge.nl/fhir/CodeSystem/closure-reason"
TIMEOUT = (3.05, 30)


@dataclass
class Timeline:
    """What happened to one referral on the way back."""

    label: str
    events: list[tuple[str, str, int]] = field(default_factory=list)

    def add(self, channel: str, what: str, status: int) -> None:
        """Record one call and its HTTP status."""
        self.events.append((channel, what, status))


class WelfareSystem:
    """A welfare organisation's systems, as the bridge's clients see them."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {WELFARE_KEY}"}

    def put_task(self, task_id: str, status: str, business: str | None, reason: str | None) -> int:
        """Read the Task's version, then PUT the new status with If-Match (retried on 412)."""
        url = f"{self.base}/fhir/r4/Task/{task_id}"
        body: dict[str, Any] = {
            "resourceType": "Task",
            "id": task_id,
            "status": status,
            "intent": "order",
        }
        if business:
            body["businessStatus"] = {"coding": [{"system": BUSINESS, "code": business}]}
        if reason:
            body["statusReason"] = {"coding": [{"system": CLOSURE, "code": reason}]}
        return rest.update_task(url, body, self.headers)

    def hook(self, payload: dict[str, Any], *, secret: bytes = WEBHOOK_SECRET.encode()) -> int:
        """Post signed JSON the way a registration system without FHIR would."""
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            **webhook.sign(secret, int(time.time()), body),
        }
        url = f"{self.base}/feedback/welzijn-json"
        return requests.post(url, data=body, headers=headers, timeout=TIMEOUT).status_code


def _completed_story(welfare: WelfareSystem, task_id: str, line: Timeline) -> None:
    line.add(
        "fhir",
        "PUT Task accepted (waiting list)",
        welfare.put_task(task_id, "accepted", "waiting-list", None),
    )
    day = dates.referral_day()  # the referral's day: every report is in the past
    steps: list[tuple[str, dict[str, Any]]] = [
        (
            "first contact",
            {
                "tijdstip": dates.moment(day, 12),
                "status": "bezig",
                "mijlpaal": "eerste_contact",
                "eerste_contact_datum": day.isoformat(),
            },
        ),
        (
            "intake done, 2 conversations",
            {"tijdstip": dates.moment(day, 14), "mijlpaal": "intake", "aantal_gesprekken": 2},
        ),
        (
            "activity started: Bewegen & sporten, participant",
            {
                "tijdstip": dates.moment(day, 16, 30),
                "mijlpaal": "activiteit_gestart",
                "activiteit": {"categorie": "bewegen", "rol": "deelnemer"},
            },
        ),
        (
            "completed: with activity, 4 conversations, follow-up 3 months, note",
            {
                "tijdstip": dates.moment(day, 18),
                "status": "afgerond",
                "afsluitreden": "afgerond_activiteit",
                "aantal_gesprekken": 4,
                "nazorg_maanden": 3,
                "toelichting": "Wandelt wekelijks mee met de wandelgroep.",
            },
        ),
    ]
    for what, payload in steps:
        line.add("hook", what, welfare.hook({"verwijzing_id": task_id, **payload}))
    last = {"verwijzing_id": task_id, **steps[-1][1]}
    line.add("hook", "the same completion again (idempotent)", welfare.hook(last))
    line.add(
        "hook", "completion with a wrong signature (refused)", welfare.hook(last, secret=b"wrong")
    )
    line.add(
        "fhir",
        "PUT Task in-progress after completion (refused)",
        welfare.put_task(task_id, "in-progress", None, None),
    )


def _failed_story(welfare: WelfareSystem, task_id: str, line: Timeline) -> None:
    line.add("fhir", "PUT Task accepted", welfare.put_task(task_id, "accepted", None, None))
    line.add(
        "fhir",
        "PUT Task failed without a reason (refused)",
        welfare.put_task(task_id, "failed", None, None),
    )
    line.add(
        "fhir",
        "PUT Task failed: client not reachable",
        welfare.put_task(task_id, "failed", None, "not-reachable"),
    )


@dataclass(frozen=True)
class _Later:
    """A clock ``by`` ahead of ``clock``."""

    clock: Clock
    by: dt.timedelta

    def now(self) -> dt.datetime:
        return self.clock.now() + self.by


def _gp_record_summary(gp: SimulatedFhirServer, his_ids: dict[str, str]) -> dict[str, str]:
    by_referral: dict[str, Counter[str]] = {v: Counter() for v in his_ids.values()}
    for obs in gp.resources("Observation"):
        ref = obs["basedOn"][0]["identifier"]["value"]
        by_referral.setdefault(ref, Counter())[obs["code"]["coding"][0]["code"]] += 1
    for comm in gp.resources("Communication"):
        ref = comm["basedOn"][0]["identifier"]["value"]
        kind = "alert" if comm.get("priority") == "urgent" else "message"
        by_referral.setdefault(ref, Counter())[f"Communication:{kind}"] += 1
    return {
        ref: ", ".join(f"{k} x{n}" for k, n in sorted(c.items())) or "nothing"
        for ref, c in by_referral.items()
    }


def run(
    base: str,
    components: Components,
    gp: SimulatedFhirServer,
    tasks: dict[str, str],
) -> bool:
    """Drive the welfare side for ``tasks`` (label -> Task id); print timelines; True if right."""
    welfare = WelfareSystem(base)
    labels = list(tasks)
    lines = {label: Timeline(label) for label in labels}
    _completed_story(welfare, tasks[labels[0]], lines[labels[0]])
    _failed_story(welfare, tasks[labels[1]], lines[labels[1]])
    other = [label for label in labels if label.startswith("accepted-route-by-practice")]
    for label in other:
        lines[label].add(
            "fhir",
            "PUT Task of another organisation (refused)",
            welfare.put_task(tasks[label], "accepted", None, None),
        )
    # The referrals are a day old (demo.dates): the deadline check runs as it would a week later.
    later = _Later(components.clock, dt.timedelta(days=8))
    alerted = set(deadline_alerts.check_deadlines(components.store, components.config.core, later))
    for label, task_id in tasks.items():
        if task_id in alerted:
            lines[label].add("bridge", "first-contact deadline passed: alert to the referrer", 0)
    end = time.monotonic() + 30
    while components.store.stats(components.clock.now()).pending and time.monotonic() < end:
        time.sleep(0.2)
    his_ids = {}
    for label, task_id in tasks.items():
        task = components.store.get_task(task_id)
        bundle = json.loads(task.bundle) if task else {"entry": []}
        request = next(
            e["resource"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "ServiceRequest"
        )
        his_ids[label] = request["identifier"][0]["value"]
    received = _gp_record_summary(gp, his_ids)
    print("\nwor-bridge demo: the way back (welfare system -> bridge -> GP record)")
    for label in labels:
        task = components.store.get_task(tasks[label])
        state = f"{task.status}/{task.business_status or '-'}" if task else "?"
        print(f"\n{label} ({his_ids[label]}): Task {tasks[label][:8]} now {state}")
        for channel, what, status in lines[label].events:
            code = f"HTTP {status}" if status else ""
            print(f"    {channel:6} {what:62} {code}")
        print(f"    GP record received: {received.get(his_ids[label], 'nothing')}")
    first, second = (components.store.get_task(tasks[x]) for x in labels[:2])
    codes = [s for _, _, s in lines[labels[0]].events]
    return bool(
        first
        and first.status == "completed"
        and second
        and second.status == "failed"
        and codes.count(401) == 1
        and 409 in codes
        and all(t in alerted for label, t in tasks.items() if label not in labels[:2])
        and "closed x1" in received.get(his_ids[labels[0]], "")
    )
