"""Use case: the organisational inbox of a welfare organisation in the browser console.

A coach works in the inbox of the organisation of the account, never a personal one, so a
referral does not stall when a coach leaves. What a coach may see is decided as for every welfare
client (``usecases.caller.may_access``): only the Tasks routed to that organisation; any other Task
is answered as unknown. Every opening of a referral and every export is an audited read (NEN 7513:
the user, the organisation on whose behalf, the patient); every action is a ``Feedback`` applied
by ``way_back.apply_feedback``: the transition table, consent and the GP-record message are the
same as for the FHIR, webhook and polling channels.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Final

from wor_bridge.core import inbox
from wor_bridge.core.account import Account
from wor_bridge.core.settings import Settings
from wor_bridge.core.task import Refusal
from wor_bridge.ports import Clock, OutboxStore
from wor_bridge.records import AuditEvent, TaskRecord, TaskSearch
from wor_bridge.usecases import way_back
from wor_bridge.usecases.caller import Caller

MAX_LISTED: Final = 500
CSV_COLUMNS: Final = (
    "taak",
    "verwijsnummer",
    "datum verwijzing",
    "status",
    "mijlpaal",
    "naam",
    "geboortedatum",
    "telefoon",
    "e-mail",
    "adres",
    "hulpvraag",
    "verwezen door",
    "praktijk",
)


def caller_of(account: Account) -> Caller:
    """The coach as the use cases see a welfare-side caller of its organisation."""
    return Caller(
        client_id=f"console:{account.username}",
        on_behalf_of=account.organisation or "",
        destination=account.organisation,
    )


def _audit(
    store: OutboxStore,
    clock: Clock,
    account: Account,
    task: TaskRecord,
    *,
    event: str,
    outcome: str,
) -> None:
    store.audit(
        AuditEvent(
            event=event,
            action="R",
            outcome=outcome,
            user=f"console:{account.username}",
            responsible=account.organisation or "",
            source_system=task.source_system,
            patient_id=task.patient_id,
            object_type="Task",
            object_id=task.task_id,
            detail="inbox",
        ),
        clock.now(),
    )


def listed(store: OutboxStore, account: Account) -> list[TaskRecord]:
    """The organisation's Tasks, newest first (the list shows no patient data)."""
    if account.role != "coach" or not account.organisation:
        return []
    page = store.search_tasks(
        TaskSearch(destination=account.organisation, newest_first=True, count=MAX_LISTED)
    )
    return list(page.tasks)


def task_of(store: OutboxStore, account: Account, task_id: str) -> TaskRecord | None:
    """The Task when it is the organisation's, else None (unknown and not-yours alike)."""
    task = store.get_task(task_id)
    if task is None or account.role != "coach":
        return None
    if way_back.access(task, caller_of(account), account.organisation) is not None:
        return None
    return task


def open_referral(
    store: OutboxStore, clock: Clock, account: Account, task_id: str
) -> tuple[TaskRecord, inbox.Card] | None:
    """The Task and its referral card (an audited read), or None as for an unknown Task; a try
    at another organisation's referral is audited too (refused), naming its patient."""
    task = task_of(store, account, task_id)
    if task is None:
        other = store.get_task(task_id)
        if other is not None:
            _audit(store, clock, account, other, event="referral_read", outcome="not-found")
        return None
    _audit(store, clock, account, task, event="referral_read", outcome="success")
    return task, inbox.card(json.loads(task.bundle))


def act(
    store: OutboxStore,
    settings: Settings,
    clock: Clock,
    account: Account,
    task_id: str,
    *,
    action: str,
    form: dict[str, str],
) -> way_back.Applied | Refusal | str:
    """Apply one inbox action: the ``way_back`` result, or a Dutch problem with the form."""
    task = task_of(store, account, task_id)
    if task is None:
        return way_back.NOT_FOUND
    feedback = inbox.feedback_for(
        action, form, task_id=task_id, status=task.status, now=clock.now(), codes=settings.codes
    )
    if isinstance(feedback, str):
        return feedback
    return way_back.apply_feedback(
        store,
        settings,
        clock,
        feedback,
        side="welfare",
        caller=caller_of(account),
        destination=account.organisation,
    )


def export_csv(store: OutboxStore, clock: Clock, account: Account) -> str:
    """Every referral of the organisation as CSV (``CSV_COLUMNS``), one audited read each."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for task in listed(store, account):
        card = inbox.card(json.loads(task.bundle))
        values = dict(card.rows)
        writer.writerow(
            [
                task.task_id,
                card.his_reference,
                card.authored_on,
                task.status,
                task.business_status or "",
                *(
                    _csv_safe(values.get(label, ""))
                    for label in (
                        "Naam",
                        "Geboortedatum",
                        "Telefoon",
                        "E-mail",
                        "Adres",
                        "Hulpvraag",
                        "Verwezen door",
                        "Praktijk",
                    )
                ),
            ]
        )
        _audit(store, clock, account, task, event="inbox_export", outcome="success")
    return out.getvalue()


def _csv_safe(value: str) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
