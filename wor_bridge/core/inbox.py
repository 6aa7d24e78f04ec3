"""The organisational inbox (issue 17): what a coach sees of a referral, and what a coach's click
means as feedback. Pure.

``card`` reads the mapped referral Bundle (what an ``fhir-r4`` receiver would have got, so never
more than the destination's mapping lets travel). ``feedback_for`` turns one of the inbox
actions into the channel-independent ``Feedback`` every other channel produces, so it goes
through the same transition table (``core.task``) and the same way back to the GP record
(``usecases.way_back``). The codes are the local CodeSystems' (activity category and role,
closure reason); a value the form did not offer is refused, never guessed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from wor_bridge.core import feedback as fb

LIST_STATUS_NL: Final = {
    "requested": "Nieuw",
    "accepted": "Aangenomen",
    "rejected": "Afgewezen",
    "in-progress": "Bezig",
    "on-hold": "Gepauzeerd",
    "failed": "Niet bereikbaar",
    "completed": "Afgerond",
    "cancelled": "Geannuleerd",
    "entered-in-error": "Ten onrechte verstuurd",
}


@dataclass(frozen=True, slots=True)
class Card:
    """What a coach needs to make contact (labels are Dutch; values from the referral)."""

    rows: tuple[tuple[str, str], ...]
    his_reference: str
    authored_on: str


def _name(resource: Mapping[str, Any]) -> str:
    names = resource.get("name") or []
    if not names:
        return ""
    first = names[0]
    if isinstance(first, str):  # Organization.name
        return first
    text = first.get("text")
    if text:
        return str(text)
    return " ".join([*first.get("given", []), str(first.get("family", ""))]).strip()


def _telecom(resource: Mapping[str, Any], system: str) -> str:
    return ", ".join(
        str(t.get("value", "")) for t in resource.get("telecom") or [] if t.get("system") == system
    )


def _address(resource: Mapping[str, Any]) -> str:
    parts = []
    for address in resource.get("address") or []:
        lines = " ".join(address.get("line") or [])
        place = " ".join(p for p in (address.get("postalCode"), address.get("city")) if p)
        parts.append(", ".join(p for p in (lines, place) if p))
    return "; ".join(parts)


def card(bundle: Mapping[str, Any]) -> Card:
    """The referral as the inbox shows it: patient contact data, help question, referrer."""
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") or {}
        by_type.setdefault(str(resource.get("resourceType")), []).append(resource)
    patient = (by_type.get("Patient") or [{}])[0]
    request = (by_type.get("ServiceRequest") or [{}])[0]
    practitioner = (by_type.get("Practitioner") or [{}])[0]
    role = (by_type.get("PractitionerRole") or [{}])[0]
    question = "; ".join(
        str(c.get("text")) for c in request.get("reasonCode") or [] if c.get("text")
    )
    practice_ref = (role.get("organization") or {}).get("reference")
    practice = next(
        (
            o
            for o in by_type.get("Organization") or []
            if practice_ref and str(practice_ref).endswith(str(o.get("id")))
        ),
        {},
    )
    identifier = (request.get("identifier") or [{}])[0]
    rows = (
        ("Naam", _name(patient)),
        ("Geboortedatum", str(patient.get("birthDate", ""))),
        ("Telefoon", _telecom(patient, "phone")),
        ("E-mail", _telecom(patient, "email")),
        ("Adres", _address(patient)),
        ("Hulpvraag", question),
        ("Verwezen door", _name(practitioner)),
        ("Telefoon verwijzer", _telecom(role, "phone") or _telecom(practitioner, "phone")),
        ("Praktijk", _name(practice)),
        ("Datum verwijzing", str(request.get("authoredOn", ""))),
    )
    return Card(
        rows=tuple((label, value) for label, value in rows if value),
        his_reference=str(identifier.get("value", "")),
        authored_on=str(request.get("authoredOn", "")),
    )


def _date(value: str | None, today: dt.date) -> str:
    """``YYYY-MM-DD`` not after today, else a problem starting with '!'."""
    try:
        day = dt.date.fromisoformat(value or "")
    except ValueError:
        return "!datum moet een datum zijn (JJJJ-MM-DD)"
    if day > today:
        return "!datum mag niet in de toekomst liggen"
    return day.isoformat()


@dataclass(frozen=True, slots=True)
class _Context:
    """What every action needs besides the form."""

    task_id: str
    when: str
    today: dt.date
    working: str | None
    """``in-progress``, or None when the Task is in progress already"""
    codes: Mapping[str, frozenset[str]]

    def feedback(
        self,
        status: str | None,
        business: str | None = None,
        items: tuple[fb.FeedbackItem, ...] = (),
        reason_code: str | None = None,
        reason_text: str | None = None,
    ) -> fb.Feedback:
        return fb.Feedback(
            self.task_id, self.when, status, business, reason_code, reason_text, items
        )

    def code(self, form: Mapping[str, str], field: str, system: str) -> str | None:
        value = (form.get(field) or "").strip()
        return value if value in self.codes.get(system, frozenset()) else None


Action = Callable[[Mapping[str, str], _Context], "fb.Feedback | str"]


def _accept(_form: Mapping[str, str], c: _Context) -> fb.Feedback | str:
    return c.feedback("accepted")


def _with_reason(status: str) -> Action:
    def act(form: Mapping[str, str], c: _Context) -> fb.Feedback | str:
        reason = c.code(form, "reason_code", fb.CLOSURE_REASON)
        text = (form.get("reason_text") or "").strip() or None
        if reason is None and text is None:
            return "kies een reden of vul een toelichting in"
        return c.feedback(status, None, (), reason, text)

    return act


def _first_contact(form: Mapping[str, str], c: _Context) -> fb.Feedback | str:
    day = _date(form.get("date"), c.today)
    if day.startswith("!"):
        return day[1:]
    item = fb.FeedbackItem("first-contact", c.when, day)
    return c.feedback(c.working, "first-contact", (item,))


def _intake(_form: Mapping[str, str], c: _Context) -> fb.Feedback | str:
    return c.feedback(c.working, "intake-done", (fb.FeedbackItem("intake-done", c.when, True),))


def _conversations(form: Mapping[str, str], c: _Context) -> fb.Feedback | str:
    raw = (form.get("count") or "").strip()
    if not (raw.isascii() and raw.isdigit()) or not 0 <= int(raw) <= 1000:
        return "aantal gesprekken moet een geheel getal van 0 tot 1000 zijn"
    item = fb.FeedbackItem("conversation-count", c.when, int(raw))
    return c.feedback(c.working, "conversations", (item,))


def _activity(form: Mapping[str, str], c: _Context) -> fb.Feedback | str:
    category = c.code(form, "category", fb.ACTIVITY_CATEGORY)
    role = c.code(form, "role", fb.ACTIVITY_ROLE)
    if category is None or role is None:
        return "kies een categorie en een rol"
    item = fb.FeedbackItem("activity-started", c.when, None, category, role)
    return c.feedback(c.working, "activity-started", (item,))


def _close(form: Mapping[str, str], c: _Context) -> fb.Feedback | str:
    reason = c.code(form, "reason_code", fb.CLOSURE_REASON)
    if reason is None:
        return "kies een reden van afsluiten"
    return c.feedback("completed", "closed", (fb.FeedbackItem("closed", c.when, reason),), reason)


def _follow_up(form: Mapping[str, str], c: _Context) -> fb.Feedback | str:
    months = (form.get("months") or "").strip()
    if months not in ("3", "6"):
        return "nazorg is na 3 of 6 maanden"
    return c.feedback(None, "follow-up", (fb.FeedbackItem("follow-up", c.when, int(months)),))


_ACTIONS: Final[dict[str, Action]] = {
    "accept": _accept,
    "reject": _with_reason("rejected"),
    "first-contact": _first_contact,
    "intake": _intake,
    "conversations": _conversations,
    "activity": _activity,
    "on-hold": _with_reason("on-hold"),
    "close": _close,
    "follow-up": _follow_up,
}


def feedback_for(
    action: str,
    form: Mapping[str, str],
    *,
    task_id: str,
    status: str,
    now: dt.datetime,
    codes: Mapping[str, frozenset[str]],
) -> fb.Feedback | str:
    """The ``Feedback`` of one inbox action (``ACTIONS``), or a Dutch problem naming the field.

    ``status`` is the Task's current status: a milestone moves a Task that is ``requested``,
    ``accepted`` or ``on-hold`` to ``in-progress`` (the transition table decides the rest);
    ``now`` (aware UTC) dates the items, and a first-contact date may not be after it.
    """
    act = _ACTIONS.get(action)
    if act is None:
        return "onbekende actie"
    context = _Context(
        task_id=task_id,
        when=now.isoformat(timespec="seconds"),
        today=now.date(),
        working=None if status == "in-progress" else "in-progress",
        codes=codes,
    )
    return act(form, context)


ACTIONS: Final = tuple(_ACTIONS)
"""The inbox actions, in the order the referral page offers them."""
