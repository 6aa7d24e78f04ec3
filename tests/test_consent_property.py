"""Property: every Consent that denies disclosure, by any route, is refused and nothing is stored.

Routes: a status other than active; an opt-out base; a root deny; a nested deny whose every
condition covers this disclosure (also as an exception inside an exception); a nested deny that
cannot be decided; a permit not in force at authoredOn (instants in any zone, partial dates as
Amsterdam days) or limited to others; a Consent given after authoredOn; another patient; a policy
this bridge does not know. Each is decorated with provisions that do not apply. The converse
property: the fixture Consent with the same decorations is accepted.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import wor_bridge
from tests.cases import PATIENT_VALUES, case_input
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.core.settings import Settings
from wor_bridge.usecases import intake
from wor_bridge.usecases.caller import Caller

Json = dict[str, Any]
Mutation = Callable[[Json], None]

BASE: Json = json.loads(case_input("accepted-contained"))
AT = "ServiceRequest.contained[4]"
AUTHORED = dt.datetime(2026, 11, 2, 9, 15, tzinfo=dt.UTC)  # the fixture's 10:15+01:00
V3_CODE = ["http://terminology.hl7.org/CodeSystem/v3-ActCode", "urn:oid:2.16.840.1.113883.5.4"]
V3_REASON = [
    "http://terminology.hl7.org/CodeSystem/v3-ActReason",
    "http://hl7.org/fhir/v3/ActReason",
    "urn:oid:2.16.840.1.113883.5.8",
]
ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
KVK = "http://fhir.nl/fhir/NamingSystem/kvk"
AGB = "http://fhir.nl/fhir/NamingSystem/agb-z"
LOCAL = "https://wor-bridge.nl/fhir/CodeSystem/"
ROLE = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleClass", "code": "x"}]}
EXAMPLES = hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _consent(sr: Json) -> Json:
    found: Json = sr["contained"][4]
    return found


def _coding(systems: list[str], codes: list[str]) -> st.SearchStrategy[Json]:
    return st.builds(
        lambda s, c: {"system": s, "code": c}, st.sampled_from(systems), st.sampled_from(codes)
    )


def _concept(systems: list[str], codes: list[str]) -> st.SearchStrategy[list[Json]]:
    return _coding(systems, codes).map(lambda c: [{"coding": [c]}])


# --- moments ------------------------------------------------------------------------------------

zones = st.integers(-48, 56).map(lambda q: dt.timezone(dt.timedelta(minutes=15 * q)))


def _instant(moment: dt.datetime, zone: dt.tzinfo, zulu: bool) -> str:
    text = moment.astimezone(zone).isoformat(timespec="seconds")
    return text.replace("+00:00", "Z") if zulu else text


def _instants(lo: int, hi: int) -> st.SearchStrategy[str]:
    """Instants ``AUTHORED + seconds`` with seconds in [lo, hi], in any zone."""
    moments = st.integers(lo, hi).map(lambda s: AUTHORED + dt.timedelta(seconds=s))
    return st.builds(_instant, moments, zones, st.booleans())


def _partials(first: dt.date, last: dt.date) -> st.SearchStrategy[str]:
    """Partial dates lying wholly in [first, last]: a day, or its month or year when inside."""
    day = st.dates(first, last)

    def month_inside(d: dt.date) -> bool:
        after = dt.date(d.year + (d.month == 12), d.month % 12 + 1, 1)
        return d.replace(day=1) >= first and after - dt.timedelta(days=1) <= last

    def year_inside(d: dt.date) -> bool:
        return dt.date(d.year, 1, 1) >= first and dt.date(d.year, 12, 31) <= last

    return st.one_of(
        day.map(dt.date.isoformat),
        day.filter(month_inside).map(lambda d: d.isoformat()[:7]),
        day.filter(year_inside).map(lambda d: d.isoformat()[:4]),
    )


LONG = 10**9
FAR_PAST, FAR_FUTURE = dt.date(1900, 1, 1), dt.date(2099, 12, 31)
ends_before = st.one_of(_instants(-LONG, -1), _partials(FAR_PAST, dt.date(2026, 11, 1)))
starts_after = st.one_of(_instants(1, LONG), _partials(dt.date(2026, 11, 3), FAR_FUTURE))
ends_in_force = st.one_of(_instants(0, LONG), _partials(dt.date(2026, 11, 2), FAR_FUTURE))
starts_in_force = st.one_of(_instants(-LONG, 0), _partials(FAR_PAST, dt.date(2026, 11, 2)))
in_force = st.fixed_dictionaries({}, optional={"start": starts_in_force, "end": ends_in_force})
not_in_force = st.one_of(
    ends_before.map(lambda e: {"end": e}), starts_after.map(lambda s: {"start": s})
)

# --- conditions that cover this disclosure --------------------------------------------------------


def _org(sr: Json, value: str) -> Json:
    for known in sr["contained"]:  # one Organization per identifier: a logical reference by that
        if known.get("identifier") == [{"system": KVK, "value": value}]:  # identifier must match
            return {"reference": f"#{known['id']}"}  # exactly one resource (else: ambiguous, 400)
    org_id = f"o{len(sr['contained'])}"
    sr["contained"].append(
        {
            "resourceType": "Organization",
            "id": org_id,
            "identifier": [{"system": KVK, "value": value}],
        }
    )
    return {"reference": f"#{org_id}"}


ActorMaker = Callable[[Json], Json]
covering_actors: st.SearchStrategy[ActorMaker] = st.sampled_from(
    [
        lambda sr: {"reference": "#org"},
        lambda sr: {"reference": "#role"},
        lambda sr: {"reference": "#prac"},
        lambda sr: {"identifier": {"system": KVK, "value": "90000001"}},
        lambda sr: {"identifier": {"system": AGB, "value": "01099990"}},
        lambda sr: _org(sr, "90000001"),
    ]
)
other_actors: st.SearchStrategy[ActorMaker] = st.sampled_from(
    [lambda sr: {"identifier": {"system": KVK, "value": "1"}}, lambda sr: _org(sr, "2")]
)
covering: dict[str, st.SearchStrategy[Any]] = {
    "action": _concept([ACTION], ["disclose", "collect", "use", "access"]),
    "purpose": _coding(V3_REASON, ["TREAT", "COC"]).map(lambda c: [c]),
    "class": st.one_of(
        _coding(["http://hl7.org/fhir/resource-types"], ["Patient", "ServiceRequest", "Task"]),
        _coding(["urn:ietf:bcp:13"], ["application/fhir+json", "application/fhir+xml"]),
    ).map(lambda c: [c]),
    "code": st.one_of(
        _concept(
            ["http://hl7.org/fhir/sid/icpc-1-nl", "urn:oid:2.16.840.1.113883.2.4.4.31.1"], ["Z68"]
        ),
        _concept([LOCAL + "wor-programme"], ["wor"]),
        _concept([LOCAL + "referral-reason"], ["eenzaamheid"]),
        _concept([LOCAL + "referrer-type"], ["huisarts"]),
    ),
    "period": in_force,
    "dataPeriod": in_force,
}
undecidable: dict[str, st.SearchStrategy[Any]] = {
    "action": _concept(["urn:example:acts"], ["share"]),
    "purpose": _coding(["urn:example:why"], ["x"]).map(lambda c: [c]),
    "class": _coding(["urn:example:kinds"], ["x"]).map(lambda c: [c]),
    "securityLabel": _coding(V3_CODE, ["PSY", "N"]).map(lambda c: [c]),
    "data": st.just([{"meaning": "instance", "reference": {"reference": "#pat"}}]),
    "period": st.just({"start": "2016-12-31T23:59:60Z"}),  # a leap second: unreadable
}


@st.composite
def covering_provision(draw: st.DrawFn, kind: str) -> Callable[[Json], Json]:
    """A nested provision of ``kind`` whose every condition covers this disclosure."""
    chosen = draw(st.lists(st.sampled_from([*covering, "actor"]), unique=True, max_size=4))
    fields = {k: draw(covering[k]) for k in chosen if k != "actor"}
    actor = draw(covering_actors) if "actor" in chosen else None

    def make(sr: Json) -> Json:
        made = {"type": kind, **copy.deepcopy(fields)}
        if actor is not None:
            made["actor"] = [{"role": ROLE, "reference": actor(sr)}]
        return made

    return make


def _add(sr: Json, provision: Json, under: Json | None = None) -> None:
    parent = under if under is not None else _consent(sr)["provision"]
    parent.setdefault("provision", []).append(provision)


def _opt_out(sr: Json, code: str = "OPTOUT", system: str = V3_CODE[0]) -> None:
    _consent(sr)["policyRule"] = {"coding": [{"system": system, "code": code}]}
    _consent(sr)["provision"].pop("type", None)


# --- routes to a denial -----------------------------------------------------------------------


@st.composite
def denials(draw: st.DrawFn) -> Mutation:
    """A change of the fixture Consent that denies disclosure, by one of the routes."""
    route = draw(st.sampled_from(list(ROUTES)))
    return draw(ROUTES[route])


def _status(value: str) -> Mutation:
    return lambda sr: _consent(sr).update(status=value)


def _base_deny(code: str, system: str) -> Mutation:
    return lambda sr: _opt_out(sr, code, system)


def _root_deny(policy: str | None) -> Mutation:
    def mutate(sr: Json) -> None:
        _consent(sr)["provision"]["type"] = "deny"
        if policy is None:
            _consent(sr).pop("policyRule")
        else:
            _consent(sr)["policyRule"] = {"coding": [{"system": V3_CODE[0], "code": policy}]}

    return mutate


@st.composite
def _nested_deny(draw: st.DrawFn) -> Mutation:
    deny = draw(covering_provision("deny"))
    inside_exception = draw(st.booleans())
    exception = draw(covering_provision("permit")) if inside_exception else None

    def mutate(sr: Json) -> None:
        if exception is None:
            _add(sr, deny(sr))
            return
        _opt_out(sr)
        made = exception(sr)
        _add(sr, made)
        _add(sr, deny(sr), under=made)

    return mutate


@st.composite
def _undecidable_deny(draw: st.DrawFn) -> Mutation:
    deny = draw(covering_provision("deny"))
    key = draw(st.sampled_from(sorted(undecidable)))
    value = draw(undecidable[key])
    untyped = draw(st.booleans())

    def mutate(sr: Json) -> None:
        made = deny(sr)
        made[key] = copy.deepcopy(value)
        if untyped and key != "period":
            del made["type"]
        _add(sr, made)

    return mutate


def _root_period(period: Json) -> Mutation:
    return lambda sr: _consent(sr)["provision"].update(period=period)


def _root_limited(field: str, value: Any) -> Mutation:
    def mutate(sr: Json) -> None:
        made = [{"role": ROLE, "reference": value(sr)}] if field == "actor" else value
        _consent(sr)["provision"][field] = made

    return mutate


def _other_patient(kind: str) -> Mutation:
    def mutate(sr: Json) -> None:
        if kind == "literal":
            other = dict(sr["contained"][0], id="other")  # another person: another BSN, so a
            bsn = {"system": "urn:oid:2.16.840.1.113883.2.4.6.3", "value": "999990019"}
            other["identifier"] = [bsn]  # logical reference to the referred one stays unambiguous
            sr["contained"].append(other)
            _consent(sr)["patient"] = {"reference": "#other"}
        elif kind == "bsn":
            bsn = {"system": "urn:oid:2.16.840.1.113883.2.4.6.3", "value": "999990019"}
            _consent(sr)["patient"] = {"identifier": bsn}
        else:
            _consent(sr)["patient"] = {"identifier": {"system": AGB, "value": "999990007"}}

    return mutate


def _unknown_policy(coding: Json) -> Mutation:
    return lambda sr: _consent(sr).update(policyRule={"coding": [coding]})


ROUTES: dict[str, st.SearchStrategy[Mutation]] = {
    "status": st.sampled_from(
        ["draft", "proposed", "rejected", "inactive", "entered-in-error"]
    ).map(_status),
    "base deny": st.one_of(
        st.builds(_base_deny, st.sampled_from(["OPTOUT", "OPTOUTE"]), st.sampled_from(V3_CODE)),
        st.just(_base_deny("http://hl7.org/fhir/ConsentPolicy/opt-out", "urn:ietf:rfc:3986")),
    ),
    "root deny": st.sampled_from(["OPTIN", "OPTINR", "OPTOUT", None]).map(_root_deny),
    "nested deny": _nested_deny(),
    "undecidable deny": _undecidable_deny(),
    "permit not in force": not_in_force.map(_root_period),
    "permit for others": st.one_of(
        other_actors.map(lambda a: _root_limited("actor", a)),
        _concept([ACTION], ["correct"]).map(lambda v: _root_limited("action", v)),
        _coding(V3_REASON, ["HRESCH", "HMARKT"]).map(lambda c: _root_limited("purpose", [c])),
    ),
    "given later": starts_after.map(lambda t: lambda sr: _consent(sr).update(dateTime=t)),
    "other patient": st.sampled_from(["literal", "bsn", "system"]).map(_other_patient),
    "unknown policy": st.one_of(
        _coding(V3_CODE, ["NOCONSENT", "EMRGONLY", "IMPLIED"]),
        st.just({"system": "urn:ietf:rfc:3986", "code": "https://example.org/undeclared"}),
    ).map(_unknown_policy),
}


SPOILERS: dict[str, Any] = {
    "actor": [{"role": ROLE, "reference": {"identifier": {"system": KVK, "value": "1"}}}],
    "action": [{"coding": [{"system": ACTION, "code": "correct"}]}],
    "purpose": [{"system": V3_REASON[0], "code": "HRESCH"}],
    "code": [{"coding": [{"system": LOCAL + "consent-permission", "code": "pg-scores"}]}],
}


@st.composite
def decorations(draw: st.DrawFn) -> Mutation:
    """Nested provisions that do not apply to this disclosure (they must change nothing)."""
    made: list[Callable[[Json], Json]] = []
    for _ in range(draw(st.integers(0, 3))):
        base = draw(covering_provision(draw(st.sampled_from(["deny", "permit"]))))
        spoiler = draw(st.sampled_from(["period", *SPOILERS]))
        value = draw(not_in_force) if spoiler == "period" else SPOILERS[spoiler]

        def make(sr: Json, base: Any = base, spoiler: str = spoiler, value: Any = value) -> Json:
            provision: Json = base(sr)
            provision[spoiler] = copy.deepcopy(value)
            return provision

        made.append(make)

    def mutate(sr: Json) -> None:
        for provision in made:
            _add(sr, provision(sr))

    return mutate


def _changed(*mutations: Mutation) -> bytes:
    sr = copy.deepcopy(BASE)
    for mutate in mutations:
        mutate(sr)
    return json.dumps(sr).encode()


@given(denial=denials(), decoration=decorations())
@EXAMPLES
def test_every_denying_consent_is_refused_and_nothing_is_stored(
    denial: Mutation, decoration: Mutation, settings: Settings
) -> None:
    """A Consent that denies by any route is refused at the Consent and never reaches the outbox."""
    data = _changed(decoration, denial)
    with pytest.raises(wor_bridge.RefusedError) as caught:
        wor_bridge.translate(data, None, settings)
    at_consent = [i for i in caught.value.issues if i.expression.startswith(AT)]
    assert at_consent, [i.expression for i in caught.value.issues]
    assert all(i.code == "business-rule" for i in at_consent)
    text = " ".join(i.diagnostics for i in caught.value.issues)
    assert not [n for n, value in enumerate(PATIENT_VALUES) if value in text]
    store = MemoryOutboxStore()
    clock = FixedClock(AUTHORED)
    with pytest.raises(wor_bridge.RefusedError):
        intake.accept_referral(
            store, settings, clock, data=data, content_type=None, caller=Caller("his-example")
        )
    assert store.list_entries(None, -1) == []
    assert [r["outcome"] for r in store.audit_records()] == ["refused"]


@given(decoration=decorations())
@EXAMPLES
def test_provisions_that_do_not_apply_change_nothing(
    decoration: Mutation, settings: Settings
) -> None:
    """The fixture's permitting Consent with non-applying provisions added is still accepted."""
    result = wor_bridge.translate(_changed(decoration), None, settings)
    assert result.destination.id == "welzijn-voorbeeld"
