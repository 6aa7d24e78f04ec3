"""The gates a referral passes before anything is forwarded; all problems are reported at once.

Z68 + WoR marker, validity (BSN 11-test, a current name, a current contact route, identified
referrer and practice, one-line help question, referral date), the route (``core/routing.py``) and
the consent to disclose to that destination (``core/consent.py``). Pure: values in, a ``Referral``
or the issues out. Diagnostics say what was expected, never the patient's value.

Current means current at ``authoredOn`` (``core/period.py``): a name, phone, e-mail or address
with ``use`` old or a ``period`` that ended before (or starts after) the referral date does not
count towards the patient gate.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Final

from wor_bridge.core import consent as consents
from wor_bridge.core import identifiers as ids
from wor_bridge.core import routing
from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.graph import Graph, Located
from wor_bridge.core.identifiers import codings, identifiers_in
from wor_bridge.core.period import Span, current, span
from wor_bridge.core.settings import (
    WOR_PROGRAMME_SYSTEM,
    Coding,
    Destination,
    GateSettings,
    Settings,
)
from wor_bridge.errors import Issue

__all__ = ["Referral", "check", "codings", "identifiers_in"]

ORDER_INTENTS: Final = frozenset(
    {"order", "original-order", "reflex-order", "filler-order", "instance-order"}
)
TASK_CODE: Final = "http://hl7.org/fhir/CodeSystem/task-code"
ADDED_CODES: Final = {
    (WOR_PROGRAMME_SYSTEM, "wor"),
    (ids.SNOMED, "3457005"),
    (TASK_CODE, "fulfill"),
}
"""Codes the bridge itself writes into what it discloses (programme, notification Task code)."""


@dataclass(frozen=True, slots=True)
class Referral:
    """A referral that passed every gate: the resolved resources and the facts the gates found."""

    graph: Graph
    service_request: Located
    patient: Located
    role: Located
    practitioner: Located | None
    practice: Located
    consent: Located
    referral_identifier: tuple[str, str]
    z68: Coding
    reason: str
    authored_on: str
    at: Span
    """``authoredOn`` as instants: what current data and the consent are judged against."""
    destination: Destination

    @property
    def authored_date(self) -> dt.date:
        """The referral date (the date part of ``authoredOn``)."""
        return dt.date.fromisoformat(self.authored_on[:10])


class _Checker:
    """Collects issues while checking one referral."""

    def __init__(self, graph: Graph, settings: GateSettings) -> None:
        self.graph = graph
        self.settings = settings
        self.issues: list[Issue] = []
        self.sr = graph.service_request

    def fail(self, code: Any, expression: str, diagnostics: str) -> None:
        self.issues.append(Issue(code, expression, diagnostics))

    def referenced(self, ref: Any, path: str, expected: str, what: str) -> Located | None:
        """Resolve ``ref`` to a resource of type ``expected`` in the input, or record why not."""
        if ref is None:
            self.fail("required", path, f"must reference the {what} ({expected})")
            return None
        found = self.graph.resolve(ref, path)
        if found is None:
            self.fail(
                "invalid",
                path,
                f"must reference the {what} ({expected}) contained in the ServiceRequest or "
                "present in the same Bundle (the reference does not resolve)",
            )
            return None
        if found.type != expected:
            self.fail("invalid", path, f"must reference a {expected} (got {found.type})")
            return None
        return found


def check(graph: Graph, settings: Settings) -> Referral | list[Issue]:
    """Run every gate, route, decide the consent; return the Referral, or every issue found."""
    c = _Checker(graph, settings.gates)
    sr = c.sr.resource
    loc = c.sr.location
    referral_id = _check_request(c, sr, loc)
    at = span(sr.get("authoredOn"))
    z68 = _check_codes(c, sr, loc)
    reason = _check_reason(c, sr, loc)
    patient = c.referenced(sr.get("subject"), f"{loc}.subject", "Patient", "patient")
    if patient is not None:
        _check_patient(c, patient, at)
    role, practitioner, practice = _check_referrer(c, sr, loc)
    destination = None
    if patient is not None and role is not None and practice is not None and at is not None:
        found = routing.route(patient, practice, at, settings, f"{role.location}.organization")
        if isinstance(found, Issue):
            c.issues.append(found)
        else:
            destination = found
    parties = tuple(p for p in (role, practitioner, practice) if p is not None)
    consent = _check_consent(
        c, patient=patient, parties=parties, destination=destination, at=at, settings=settings
    )
    if (
        c.issues
        or patient is None
        or role is None
        or practice is None
        or consent is None
        or referral_id is None
        or z68 is None
        or reason is None
        or at is None
        or destination is None
    ):
        return c.issues  # every None above recorded its issue
    return Referral(
        graph=graph,
        service_request=c.sr,
        patient=patient,
        role=role,
        practitioner=practitioner,
        practice=practice,
        consent=consent,
        referral_identifier=referral_id,
        z68=z68,
        reason=reason,
        authored_on=str(sr["authoredOn"]),
        at=at,
        destination=destination,
    )


def _check_request(c: _Checker, sr: JsonDict, loc: str) -> tuple[str, str] | None:
    if sr.get("status") != "active":
        c.fail("business-rule", f"{loc}.status", "must be active (a referral to be carried out)")
    if sr.get("intent") not in ORDER_INTENTS:
        c.fail("business-rule", f"{loc}.intent", "must be order (not a proposal or plan)")
    authored = sr.get("authoredOn")
    if not isinstance(authored, str) or len(authored) < 10:
        c.fail("required", f"{loc}.authoredOn", "must be the referral date (at least YYYY-MM-DD)")
    elif not _readable_moment(authored):
        c.fail(
            "invalid",
            f"{loc}.authoredOn",
            "must be a date-time this bridge can compute with (no leap second)",
        )
    for i, ident in enumerate(sr.get("identifier") or []):
        system, value = ident.get("system"), ident.get("value")
        if isinstance(system, str) and isinstance(value, str) and system and value.strip():
            return ids.normalize_system(system), value.strip()
        c.fail("required", f"{loc}.identifier[{i}]", "must have a system and a value")
        return None
    c.fail(
        "required",
        f"{loc}.identifier",
        "must carry the referral's identifier in the GP system (system and value)",
    )
    return None


def _readable_moment(text: str) -> bool:
    try:
        dt.datetime.fromisoformat(text) if len(text) > 10 else dt.date.fromisoformat(text)
    except ValueError:
        return False
    return True


def _check_codes(c: _Checker, sr: JsonDict, loc: str) -> Coding | None:
    code_codings = codings(sr.get("code"))
    reason_codings = codings(sr.get("reasonCode"))
    z68 = next(
        (
            Coding(system=s, code=k)
            for s, k in code_codings + reason_codings
            if s in ids.ICPC_SYSTEMS and (k == "Z68" or k.startswith("Z68."))
        ),
        None,
    )
    if z68 is None:
        c.fail(
            "business-rule",
            f"{loc}.code",
            "must carry ICPC code Z68 (ICPC-1-NL or ICPC-2) in code or reasonCode",
        )
    markers = {(m.system, m.code) for m in c.settings.wor_markers}
    marked = markers.intersection(code_codings + codings(sr.get("category")))
    if not marked:
        c.fail(
            "business-rule",
            f"{loc}.category",
            "must mark the referral as Welzijn op Recept with one of the configured codes "
            "in code or category (Z68 alone is any other referral)",
        )
    return z68


def _check_reason(c: _Checker, sr: JsonDict, loc: str) -> str | None:
    for path in c.settings.reason_paths:
        for where, text in _strings_at(sr, path, loc):
            if not text.strip():
                continue
            lines = text.strip().splitlines()
            limit = c.settings.max_reason_chars
            if len(lines) > 1 or len(text.strip()) > limit:
                c.fail(
                    "business-rule",
                    where,
                    f"must be the help question in one line of at most {limit} characters "
                    f"(got {len(lines)} lines, {len(text.strip())} characters)",
                )
                return None
            return text.strip()
    c.fail(
        "required",
        f"{loc}.{c.settings.reason_paths[0]}",
        "must give the reason / help question in one line",
    )
    return None


def _strings_at(resource: JsonDict, path: str, loc: str) -> list[tuple[str, str]]:
    """String values at a dotted ``path``, each with its indexed FHIRPath."""
    values: list[tuple[str, Any]] = [(loc, resource)]
    for part in path.split("."):
        nxt: list[tuple[str, Any]] = []
        for where, v in values:
            item = v.get(part) if isinstance(v, dict) else None
            if isinstance(item, list):
                nxt.extend((f"{where}.{part}[{i}]", x) for i, x in enumerate(item))
            elif item is not None:
                nxt.append((f"{where}.{part}", item))
        values = nxt
    return [(where, v) for where, v in values if isinstance(v, str)]


def _check_patient(c: _Checker, patient: Located, at: Span | None) -> None:
    res, loc = patient.resource, patient.location
    for i, ident in enumerate(res.get("identifier") or []):
        system = ident.get("system")
        if isinstance(system, str) and ids.normalize_system(system) == ids.BSN:
            value = ident.get("value")
            value = value if isinstance(value, str) else ""
            if not ids.is_valid_bsn(value):
                c.fail(
                    "invalid",
                    f"{loc}.identifier[{i}].value",
                    f"must be a BSN that passes the 11-test ({ids.describe_bsn_problem(value)})",
                )

    def now(key: str) -> list[Any]:
        items = res.get(key) or []
        return current(items, at) if at is not None else list(items)

    if not any(n.get("family") or n.get("given") or n.get("text") for n in now("name")):
        c.fail(
            "required",
            f"{loc}.name",
            "must give the patient's current name (family, given or text; a name with use old "
            "or a period that does not cover authoredOn does not count)",
        )
    phones = [
        t for t in now("telecom") if t.get("system") in ("phone", "email", "sms") and t.get("value")
    ]
    postal = [a for a in now("address") if a.get("line") and (a.get("postalCode") or a.get("city"))]
    if not phones and not postal:
        c.fail(
            "required",
            f"{loc}.telecom",
            "must give at least one current contact route: a phone number, an e-mail address, "
            "or an address with a street line and a postal code or city (use old, or a period "
            "that does not cover authoredOn, does not count)",
        )


def _check_referrer(
    c: _Checker, sr: JsonDict, loc: str
) -> tuple[Located | None, Located | None, Located | None]:
    role = c.referenced(
        sr.get("requester"), f"{loc}.requester", "PractitionerRole", "referrer's role"
    )
    if role is None:
        return None, None, None
    practitioner = None
    if role.resource.get("practitioner") is not None:
        practitioner = c.referenced(
            role.resource["practitioner"],
            f"{role.location}.practitioner",
            "Practitioner",
            "referring practitioner",
        )
    person_ids = identifiers_in(role.resource, ids.REFERRER_IDENTIFYING_SYSTEMS)
    if practitioner is not None:
        person_ids += identifiers_in(practitioner.resource, ids.REFERRER_IDENTIFYING_SYSTEMS)
    if not person_ids:
        where = practitioner.location if practitioner else role.location
        c.fail("required", f"{where}.identifier", "must identify the referrer by AGB or UZI number")
    practice = c.referenced(
        role.resource.get("organization"),
        f"{role.location}.organization",
        "Organization",
        "practice",
    )
    if practice is not None and not identifiers_in(
        practice.resource, ids.PRACTICE_IDENTIFYING_SYSTEMS
    ):
        c.fail(
            "required",
            f"{practice.location}.identifier",
            "must identify the practice by AGB or URA number",
        )
    return role, practitioner, practice


def _check_consent(
    c: _Checker,
    *,
    patient: Located | None,
    parties: tuple[Located, ...],
    destination: Destination | None,
    at: Span | None,
    settings: Settings,
) -> Located | None:
    """Every Consent the referral cites must permit the disclosure (``core/consent.py``)."""
    sr, loc = c.sr.resource, c.sr.location
    found = [
        located
        for i, ref in enumerate(sr.get("supportingInfo") or [])
        if (located := c.graph.resolve(ref, f"{loc}.supportingInfo[{i}]")) is not None
        and located.type == "Consent"
    ]
    if not found:
        c.fail(
            "business-rule",
            f"{loc}.supportingInfo",
            "must reference the patient's active Consent to the referral (none found)",
        )
        return None
    if at is None:
        return found[0]  # the request gate reported authoredOn; consent is judged against it
    disclosure = consents.Disclosure(
        graph=c.graph,
        patient=patient,
        parties=parties,
        destination=destination,
        at=at,
        codes=_disclosed_codes(sr, parties, destination, settings),
    )
    permitting = frozenset(settings.gates.permitting_policies)
    for consent in found:
        c.issues.extend(consents.check(consent, disclosure, permitting))
    return found[0]


def _disclosed_codes(
    sr: JsonDict, parties: tuple[Located, ...], destination: Destination | None, settings: Settings
) -> frozenset[tuple[str, str]]:
    """Every code in what is disclosed (and its translations for the destination)."""
    found = set(ADDED_CODES)
    for key in ("code", "category", "reasonCode", "locationCode"):
        found.update(codings(sr.get(key)))
    for party in parties:
        for key in ("code", "specialty"):
            found.update(codings(party.resource.get(key)))
    if destination is not None and destination.mapping is not None:
        for tr in settings.mapping_for(destination).code_translations:
            pair = {(tr.source.system, tr.source.code), (tr.target.system, tr.target.code)}
            if pair & found:
                found |= pair
    return frozenset(found)
