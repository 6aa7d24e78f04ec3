"""Consent as FHIR R4 defines it, failing closed: a table of cases, a property, STU3 consistency.

Every case is the contained fixture referral (routed to ``welzijn-voorbeeld``, KvK 90000001) with
its Consent (``ServiceRequest.contained[4]``) changed; refusals are named by their location.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

import wor_bridge
from tests.cases import PATIENT_VALUES, case_input
from wor_bridge.core.settings import Coding, DestinationDirectory, IdentifierSetting, Settings
from wor_bridge.core.stu3 import convert as stu3

Json = dict[str, Any]
Mutation = Callable[[Json], None]

AT = "ServiceRequest.contained[4]"
NESTED = f"{AT}.provision.provision[1]"
V3 = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACTION = "http://terminology.hl7.org/CodeSystem/consentaction"
REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
KVK = "http://fhir.nl/fhir/NamingSystem/kvk"
URA = "http://fhir.nl/fhir/NamingSystem/ura"
BSN = "http://fhir.nl/fhir/NamingSystem/bsn"
URI = "urn:ietf:rfc:3986"
DECLARED = "https://example.org/policy/wor-toestemming"
OPT_IN = "http://hl7.org/fhir/ConsentPolicy/opt-in"
OPT_OUT = "http://hl7.org/fhir/ConsentPolicy/opt-out"
BASE: Json = json.loads(case_input("accepted-contained"))


@pytest.fixture(scope="module")
def declared(settings: Settings) -> Settings:
    """The shipped settings with one policy URI declared as permitting."""
    gates = settings.gates.model_copy(update={"permitting_policies": (DECLARED,)})
    return settings.model_copy(update={"gates": gates})


def _consent(sr: Json) -> Json:
    found: Json = sr["contained"][4]
    return found


def _rule(code: str, system: str = V3) -> Json:
    return {"coding": [{"system": system, "code": code}]}


def _concept(system: str, code: str) -> list[Json]:
    return [{"coding": [{"system": system, "code": code}]}]


def _welfare(sr: Json, system: str = KVK, value: str = "90000001") -> str:
    """Contain an Organization with this identifier; return its reference."""
    org_id = f"org-{len(sr['contained'])}"
    identifier = [{"system": system, "value": value}]
    sr["contained"].append({"resourceType": "Organization", "id": org_id, "identifier": identifier})
    return f"#{org_id}"


def _actor(reference: Json) -> list[Json]:
    role = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"}]}
    role["coding"][0]["code"] = "IRCP"
    return [{"role": role, "reference": reference}]


def consent(**fields: Any) -> Mutation:
    """Set (or with None delete) top-level Consent elements."""

    def mutate(sr: Json) -> None:
        for key, value in fields.items():
            if value is None:
                _consent(sr).pop(key, None)
            else:
                _consent(sr)[key] = value

    return mutate


def root(**fields: Any) -> Mutation:
    """Set (or with None delete) elements of the root provision."""

    def mutate(sr: Json) -> None:
        for key, value in fields.items():
            if value is None:
                _consent(sr)["provision"].pop(key, None)
            else:
                _consent(sr)["provision"][key] = value

    return mutate


def nested(kind: str | None = "deny", **fields: Any) -> Mutation:
    """Add a nested provision (``provision[1]``; ``[0]`` is the fixture's feedback permit)."""

    def mutate(sr: Json) -> None:
        made = {"type": kind, **fields} if kind else dict(fields)
        _consent(sr)["provision"]["provision"].append(made)

    return mutate


def nested_actor(make: Callable[[Json], Json], kind: str = "deny") -> Mutation:
    """A nested provision whose actor is made from the referral (e.g. a contained org)."""
    return lambda sr: nested(kind, actor=_actor(make(sr)))(sr)


def both(*mutations: Mutation) -> Mutation:
    """Apply mutations in order."""

    def mutate(sr: Json) -> None:
        for m in mutations:
            m(sr)

    return mutate


def request(**fields: Any) -> Mutation:
    """Set ServiceRequest elements (authoredOn)."""
    return lambda sr: sr.update(fields)


OPTOUT_BASE = both(consent(policyRule=_rule("OPTOUT")), root(type=None))
DESTINATION = nested_actor(lambda sr: {"reference": _welfare(sr)}, "permit")

ACCEPTED: list[tuple[str, Mutation]] = [
    ("fixture-optin-root-permit", lambda sr: None),
    ("optinr-root-permit", consent(policyRule=_rule("OPTINR"))),
    ("optout-overridden-by-root-permit", consent(policyRule=_rule("OPTOUT"))),
    ("optoute-exception-for-this-destination", both(OPTOUT_BASE, DESTINATION)),
    ("stu3-opt-in-uri", consent(policyRule=_rule(OPT_IN, URI))),
    ("declared-policy-uri", consent(policyRule=_rule(DECLARED, URI))),
    ("declared-consent-policy", consent(policyRule=None, policy=[{"uri": DECLARED}])),
    ("no-policy-root-type-permit", consent(policyRule=None)),
    (
        "old-act-code-system-alias",
        consent(policyRule=_rule("OPTIN", "urn:oid:2.16.840.1.113883.5.4")),
    ),
    (
        "deny-for-other-org-same-system",
        nested_actor(lambda sr: {"reference": _welfare(sr, KVK, "1")}),
    ),
    (
        "deny-for-other-org-by-identifier",
        nested_actor(lambda sr: {"identifier": {"system": KVK, "value": "2"}}),
    ),
    ("deny-for-the-patient-as-actor", nested_actor(lambda sr: {"reference": "#pat"})),
    ("deny-of-correction-only", nested(action=_concept(ACTION, "correct"))),
    ("deny-for-research-only", nested(purpose=[{"system": REASON, "code": "HRESCH"}])),
    (
        "deny-of-medication-data",
        nested(
            **{
                "class": [
                    {"system": "http://hl7.org/fhir/resource-types", "code": "MedicationRequest"}
                ]
            }
        ),
    ),
    ("deny-of-a-code-not-in-referral", nested(code=_concept("http://snomed.info/sct", "73211009"))),
    (
        "deny-of-feedback-only",
        nested(
            code=_concept("https://wor-bridge.nl/fhir/CodeSystem/consent-permission", "feedback")
        ),
    ),
    ("deny-that-ended-before", nested(period={"end": "2026-11-01"})),
    ("deny-that-starts-later", nested(period={"start": "2026-11-02T10:16:00+01:00"})),
    ("dated-the-same-day", consent(dateTime="2026-11-02")),
    ("dated-the-same-instant-in-utc", consent(dateTime="2026-11-02T09:15:00Z")),
    ("dated-by-month", consent(dateTime="2026-11")),
    ("period-ends-that-day-inclusive", root(period={"start": "2026", "end": "2026-11-02"})),
    ("period-ends-at-that-instant", root(period={"end": "2026-11-02T09:15:00Z"})),
    (
        "amsterdam-day-of-a-utc-instant",
        both(
            request(authoredOn="2026-11-01T23:30:00Z"),
            root(period={"end": "2026-11-02"}),
            consent(dateTime="2026-11-01"),
        ),
    ),
    ("logical-bsn", consent(patient={"identifier": {"system": BSN, "value": "999990007"}})),
    (
        "logical-bsn-oid-form",
        consent(
            patient={
                "identifier": {"system": "urn:oid:2.16.840.1.113883.2.4.6.3", "value": "999990007"}
            }
        ),
    ),
    ("literal-with-type", consent(patient={"reference": "#pat", "type": "Patient"})),
]

REFUSED: list[tuple[str, Mutation, str]] = [
    *[
        (f"status-{s}", consent(status=s), f"{AT}.status")
        for s in ("draft", "proposed", "rejected", "inactive", "entered-in-error")
    ],
    ("optout", OPTOUT_BASE, f"{AT}.policyRule"),
    (
        "optoute-without-exception",
        both(OPTOUT_BASE, consent(policyRule=_rule("OPTOUTE"))),
        f"{AT}.policyRule",
    ),
    (
        "stu3-opt-out-uri",
        both(OPTOUT_BASE, consent(policyRule=_rule(OPT_OUT, URI))),
        f"{AT}.policyRule",
    ),
    (
        "optout-exception-for-other-org",
        both(OPTOUT_BASE, nested_actor(lambda sr: {"reference": _welfare(sr, KVK, "1")}, "permit")),
        f"{AT}.policyRule",
    ),
    ("optin-root-deny", root(type="deny"), f"{AT}.provision.type"),
    ("root-type-not-permit-or-deny", root(type="maybe"), f"{AT}.provision.type"),
    ("nested-type-not-permit-or-deny", nested("maybe"), f"{NESTED}.type"),
    (
        "optin-and-optout-codings",
        consent(policyRule={"coding": [*_rule("OPTIN")["coding"], *_rule("OPTOUT")["coding"]]}),
        f"{AT}.policyRule",
    ),
    ("unknown-policy-code", consent(policyRule=_rule("NOCONSENT")), f"{AT}.policyRule"),
    (
        "undeclared-policy-uri",
        consent(policyRule=_rule("https://example.org/other", URI)),
        f"{AT}.policyRule",
    ),
    (
        "undeclared-consent-policy",
        consent(policyRule=None, policy=[{"uri": "https://example.org/x"}]),
        f"{AT}.policy",
    ),
    ("no-policy-no-type", both(consent(policyRule=None), root(type=None)), f"{AT}.policyRule"),
    ("optinr-deny-without-conditions", both(consent(policyRule=_rule("OPTINR")), nested()), NESTED),
    ("deny-disclose", nested(action=_concept(ACTION, "disclose")), NESTED),
    ("deny-access", nested(action=_concept(ACTION, "access")), NESTED),
    ("deny-for-this-destination", nested_actor(lambda sr: {"reference": _welfare(sr)}), NESTED),
    (
        "deny-for-this-destination-logical",
        nested_actor(lambda sr: {"identifier": {"system": KVK, "value": "90000001"}}),
        NESTED,
    ),
    ("deny-by-the-practice", nested_actor(lambda sr: {"reference": "#org"}), NESTED),
    ("deny-by-the-referrer", nested_actor(lambda sr: {"reference": "#role"}), NESTED),
    ("deny-for-treatment", nested(purpose=[{"system": REASON, "code": "TREAT"}]), NESTED),
    (
        "deny-patient-data",
        nested(**{"class": [{"system": "http://hl7.org/fhir/resource-types", "code": "Patient"}]}),
        NESTED,
    ),
    (
        "deny-fhir-json",
        nested(**{"class": [{"system": "urn:ietf:bcp:13", "code": "application/fhir+json"}]}),
        NESTED,
    ),
    (
        "deny-the-reason-code",
        nested(
            code=_concept("https://wor-bridge.nl/fhir/CodeSystem/referral-reason", "eenzaamheid")
        ),
        NESTED,
    ),
    (
        "deny-z68-oid-form",
        nested(code=_concept("urn:oid:2.16.840.1.113883.2.4.4.31.1", "Z68")),
        NESTED,
    ),
    (
        "deny-in-force",
        nested(period={"start": "2026-11-02", "end": "2026-11-02T10:15:00+01:00"}),
        NESTED,
    ),
    (
        "deny-every-condition-covering",
        nested(
            action=_concept(ACTION, "use"),
            purpose=[{"system": REASON, "code": "COC"}],
            period={"start": "2026-01"},
        ),
        NESTED,
    ),
    (
        "deny-inside-an-exception",
        both(
            OPTOUT_BASE,
            DESTINATION,
            lambda sr: _consent(sr)["provision"]["provision"][1].update(
                provision=[{"type": "deny"}]
            ),
        ),
        f"{NESTED}.provision[0]",
    ),
    (
        "deny-for-an-org-known-by-ura",
        nested_actor(lambda sr: {"reference": _welfare(sr, URA, "1")}),
        f"{NESTED}.actor[0].reference",
    ),
    (
        "deny-for-an-unresolvable-actor",
        nested_actor(lambda sr: {"reference": "Organization/elsewhere"}),
        f"{NESTED}.actor[0].reference",
    ),
    (
        "deny-of-an-unknown-action",
        nested(action=_concept("urn:example:acts", "share")),
        f"{NESTED}.action",
    ),
    (
        "deny-for-an-unknown-purpose",
        nested(purpose=[{"system": "urn:example:why", "code": "x"}]),
        f"{NESTED}.purpose",
    ),
    (
        "deny-by-security-label",
        nested(securityLabel=[{"system": V3, "code": "PSY"}]),
        f"{NESTED}.securityLabel",
    ),
    (
        "deny-of-specific-data",
        nested(data=[{"meaning": "instance", "reference": {"reference": "#pat"}}]),
        f"{NESTED}.data",
    ),
    ("nested-without-type", nested(None, action=_concept(ACTION, "disclose")), f"{NESTED}.type"),
    (
        "permit-for-another-org-only",
        root(actor=_actor({"identifier": {"system": KVK, "value": "1"}})),
        f"{AT}.provision.actor",
    ),
    (
        "permit-for-an-unknown-actor",
        root(actor=_actor({"display": "someone"})),
        f"{AT}.provision.actor[0].reference",
    ),
    ("permit-to-correct-only", root(action=_concept(ACTION, "correct")), f"{AT}.provision.action"),
    (
        "permit-ended-the-day-before",
        root(period={"end": "2026-11-01"}),
        f"{AT}.provision.period.end",
    ),
    (
        "permit-ended-an-hour-before",
        root(period={"end": "2026-11-02T09:00:00+01:00"}),
        f"{AT}.provision.period.end",
    ),
    (
        "permit-ended-last-month",
        root(period={"start": "2026-01", "end": "2026-10"}),
        f"{AT}.provision.period.end",
    ),
    (
        "permit-starts-the-day-after",
        root(period={"start": "2026-11-03"}),
        f"{AT}.provision.period.start",
    ),
    (
        "permit-ended-by-amsterdam-day",
        both(
            request(authoredOn="2026-11-01T23:30:00Z"),
            root(period={"end": "2026-11-01"}),
            consent(dateTime="2026-11-01"),
        ),
        f"{AT}.provision.period.end",
    ),
    ("dated-the-day-after", consent(dateTime="2026-11-03"), f"{AT}.dateTime"),
    ("dated-a-minute-after", consent(dateTime="2026-11-02T09:16:00Z"), f"{AT}.dateTime"),
    (
        "another-patient",
        lambda sr: (
            sr["contained"].append(dict(sr["contained"][0], id="other")),
            consent(patient={"reference": "#other"})(sr),
        ),
        f"{AT}.patient",
    ),
    ("patient-not-in-input", consent(patient={"reference": "Patient/elsewhere"}), f"{AT}.patient"),
    ("patient-a-group", consent(patient={"reference": "#pat", "type": "Group"}), f"{AT}.patient"),
    (
        "logical-bsn-differs",
        consent(patient={"identifier": {"system": BSN, "value": "999990019"}}),
        f"{AT}.patient.identifier.value",
    ),
    (
        "logical-not-a-bsn",
        consent(patient={"identifier": {"system": URA, "value": "999990007"}}),
        f"{AT}.patient.identifier.system",
    ),
    (
        "logical-but-no-bsn",
        both(
            lambda sr: sr["contained"][0].pop("identifier"),
            consent(patient={"identifier": {"system": BSN, "value": "999990007"}}),
        ),
        f"{AT}.patient",
    ),
    (
        "treatment-consent",
        consent(
            scope={
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                        "code": "treatment",
                    }
                ]
            },
            category=_concept("http://loinc.org", "59284-0"),
        ),
        f"{AT}.category",
    ),
    (
        "second-consent-opts-out",
        lambda sr: (
            sr["contained"].append(
                dict(copy.deepcopy(_consent(sr)), id="c2", policyRule=_rule("OPTOUT"), provision={})
            ),
            sr["supportingInfo"].append({"reference": "#c2"}),
        ),
        "ServiceRequest.contained[5].policyRule",
    ),
]


def _changed(mutate: Mutation) -> bytes:
    sr = copy.deepcopy(BASE)
    mutate(sr)
    return json.dumps(sr).encode()


@pytest.mark.parametrize("mutate", [m for _, m in ACCEPTED], ids=[n for n, _ in ACCEPTED])
def test_consent_that_permits_is_mapped(mutate: Mutation, declared: Settings) -> None:
    """A Consent that permits this disclosure at authoredOn maps to the destination's Bundle."""
    result = wor_bridge.translate(_changed(mutate), None, declared)
    assert result.destination.id == "welzijn-voorbeeld"


@pytest.mark.parametrize(
    ("mutate", "where"), [(m, w) for _, m, w in REFUSED], ids=[n for n, _, _ in REFUSED]
)
def test_consent_that_does_not_permit_is_refused_where_it_says_so(
    mutate: Mutation, where: str, declared: Settings
) -> None:
    """Each way a Consent fails to permit is a 422 business-rule issue at the deciding element."""
    with pytest.raises(wor_bridge.RefusedError) as caught:
        wor_bridge.translate(_changed(mutate), None, declared)
    found = [(i.code, i.expression) for i in caught.value.issues]
    assert ("business-rule", where) in found, found
    assert all(code == "business-rule" for code, _ in found)
    text = " ".join(i.diagnostics for i in caught.value.issues)
    assert not [n for n, value in enumerate(PATIENT_VALUES) if value in text]


def test_handed_optout_case_is_refused_at_its_policy_rule(settings: Settings) -> None:
    """The handed OPTOUT Consent (R4 consent-example-Out shape) is refused at its policyRule."""
    with pytest.raises(wor_bridge.RefusedError) as caught:
        wor_bridge.translate(case_input("refused-consent-optout-policyrule"), None, settings)
    assert [(i.code, i.expression) for i in caught.value.issues] == [
        ("business-rule", f"{AT}.policyRule")
    ]


def test_handed_logical_patient_reference_maps_like_the_literal_one(settings: Settings) -> None:
    """A Consent naming the patient by BSN yields the same Bundle as one referencing #pat."""
    logical = wor_bridge.translate(
        case_input("accepted-consent-logical-patient-ref"), None, settings
    )
    literal = wor_bridge.translate(case_input("accepted-contained"), None, settings)
    same = logical.bundle == literal.bundle
    assert same  # a bool: a failure never prints the Bundles (patient data)


def test_undeclared_policy_uri_is_refused_by_the_shipped_settings(settings: Settings) -> None:
    """Without gates.permitting_policies a policy URI permits nothing: refused at policyRule."""
    with pytest.raises(wor_bridge.RefusedError) as caught:
        wor_bridge.translate(_changed(consent(policyRule=_rule(DECLARED, URI))), None, settings)
    assert ("business-rule", f"{AT}.policyRule") in [
        (i.code, i.expression) for i in caught.value.issues
    ]


def test_consent_issues_are_reported_with_the_other_gates(settings: Settings) -> None:
    """An opt-out and a missing reason are refused together, as every gate reports at once."""
    sr = copy.deepcopy(BASE)
    OPTOUT_BASE(sr)
    del sr["reasonCode"][0]["text"]
    with pytest.raises(wor_bridge.RefusedError) as caught:
        wor_bridge.translate(json.dumps(sr).encode(), None, settings)
    where = {i.expression for i in caught.value.issues}
    assert {f"{AT}.policyRule", "ServiceRequest.reasonCode.text"} <= where


def _output(mutate: Mutation, settings: Settings) -> dict[str, Json]:
    bundle = wor_bridge.translate(_changed(mutate), None, settings).bundle
    welfare = bundle["entry"][-4]  # Patient, Practitioner, practice, role, welfare, Consent, ...
    found = {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"]}
    return {"Consent": found["Consent"], "welfare": welfare}


def _output_consent(mutate: Mutation, settings: Settings) -> Json:
    return _output(mutate, settings)["Consent"]


def test_forwarded_consent_drops_provisions_about_other_parties(settings: Settings) -> None:
    """A deny for another organisation is applied, not forwarded (it would read as deny-all)."""
    other = nested_actor(lambda sr: {"identifier": {"system": KVK, "value": "1"}})
    provision = _output_consent(other, settings)["provision"]
    assert [p["type"] for p in provision["provision"]] == ["permit"]  # the feedback permission


def test_forwarded_consent_names_this_destination_as_actor(settings: Settings) -> None:
    """An opt-out with an exception for this destination travels with the welfare org as actor."""
    out = _output(both(OPTOUT_BASE, DESTINATION), settings)
    exception = out["Consent"]["provision"]["provision"][1]
    assert out["welfare"]["resource"]["name"] == "Stichting Welzijn Voorbeeldstad"
    assert exception["type"] == "permit"
    assert exception["actor"][0]["reference"] == {"reference": out["welfare"]["fullUrl"]}


# --- STU3 ----------------------------------------------------------------------------------------


def _stu3_rule(resource: Json) -> Any:
    return stu3.to_stu3(resource).resource.get("policyRule")


def test_stu3_consent_says_opt_in_when_root_permit_overrides_opt_out(settings: Settings) -> None:
    """OPTOUT with a root permit (a decided permit) is opt-in in STU3, never opt-out."""
    out = _output_consent(consent(policyRule=_rule("OPTOUT")), settings)
    assert _stu3_rule(out) == OPT_IN
    assert "Consent.policyRule" in stu3.to_stu3(out).lost


def test_forwarded_consent_states_its_base_policy(settings: Settings) -> None:
    """A Consent decided by its root permit alone is forwarded with policyRule OPTIN (ppc-1)."""
    assert _output_consent(consent(policyRule=None), settings)["policyRule"] == _rule("OPTIN")


def test_stu3_consent_without_policy_rule_gets_the_root_type() -> None:
    """An R4 Consent with only a root provision type gets that type's STU3 policyRule."""
    for kind, uri in (("permit", OPT_IN), ("deny", OPT_OUT)):
        r4 = copy.deepcopy(_consent(BASE)) | {"provision": {"type": kind}}
        del r4["policyRule"], r4["id"]
        assert _stu3_rule(r4) == uri


def test_stu3_consent_carries_opt_in_with_restrictions_as_opt_in(settings: Settings) -> None:
    """OPTINR travels as opt-in; its restrictions are the except entries."""
    out = _output_consent(both(consent(policyRule=_rule("OPTINR")), root(type=None)), settings)
    converted = stu3.to_stu3(out)
    assert converted.resource["policyRule"] == OPT_IN
    assert "Consent.policyRule" not in converted.lost


def test_actor_named_by_the_directory_organisation_is_this_destination(settings: Settings) -> None:
    """A deny for the destination's directory organisation (URA) covers it like its KvK does."""
    directory = DestinationDirectory(
        service_type=Coding(system="urn:example:service", code="wor"),
        organization=IdentifierSetting(system=URA, value="90000123"),
    )
    destinations = tuple(
        d.model_copy(update={"directory": directory}) if d.id == "welzijn-voorbeeld" else d
        for d in settings.destinations
    )
    with_directory = settings.model_copy(update={"destinations": destinations})
    deny = nested_actor(lambda sr: {"reference": _welfare(sr, URA, "90000123")})
    with pytest.raises(wor_bridge.RefusedError) as caught:
        wor_bridge.translate(_changed(deny), None, with_directory)
    assert ("business-rule", NESTED) in [(i.code, i.expression) for i in caught.value.issues]
