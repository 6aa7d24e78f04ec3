"""Current versus historical data, and the nl-core mobile-phone marker.

An address, telecom or name with ``use`` old, or a ``period`` that ended before (or starts after)
``authoredOn`` (2026-11-02T10:15+01:00 in the fixture) is never routed by, never counted as a
contact route and never forwarded. Routing uses the current home address.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

import wor_bridge
from tests.cases import case_input
from wor_bridge.core.period import covers, is_current, span
from wor_bridge.core.settings import Settings
from wor_bridge.core.transform import TransformContext, contact_points

Json = dict[str, Any]
BASE: Json = json.loads(case_input("accepted-contained"))
PATIENT = "ServiceRequest.contained[0]"
FOUND = span("2026-11-02T10:15:00+01:00")
assert FOUND is not None
AT = FOUND
CODE_SPEC = "http://nictiz.nl/fhir/StructureDefinition/ext-CodeSpecification"
ADDRESS_USE = "http://terminology.hl7.org/CodeSystem/v3-AddressUse"


def _address(postcode: str, **fields: Any) -> Json:
    return {"line": ["Straat 1"], "postalCode": postcode, "city": "Stad", **fields}


def _patient(sr: Json) -> Json:
    found: Json = sr["contained"][0]
    return found


def _translate(settings: Settings, change: Callable[[Json], None]) -> Any:
    sr = copy.deepcopy(BASE)
    change(sr)
    return wor_bridge.translate(json.dumps(sr).encode(), None, settings)


def _output_patient(result: Any) -> Json:
    found: Json = next(
        e["resource"] for e in result.bundle["entry"] if e["resource"]["resourceType"] == "Patient"
    )
    return found


def _addresses(*addresses: Json) -> Callable[[Json], None]:
    return lambda sr: _patient(sr).update(address=list(addresses))


# 4001 is in the configured postcode range of welzijn-rivierenland; 3511 goes to the catch-all.
ROUTES: list[tuple[str, list[Json], str]] = [
    (
        "old-first-then-home",
        [_address("4001 AB", use="old"), _address("3511 AA", use="home")],
        "welzijn-voorbeeld",
    ),
    (
        "old-by-period-only",
        [
            _address("4001 AB", use="home", period={"end": "2019-06-30"}),
            _address("3511 AA", use="home"),
        ],
        "welzijn-voorbeeld",
    ),
    (
        "ended-that-morning",
        [
            _address("4001 AB", use="home", period={"end": "2026-11-02T08:00:00Z"}),
            _address("3511 AA"),
        ],
        "welzijn-voorbeeld",
    ),
    (
        "ending-that-day-is-current",
        [_address("4001 AB", use="home", period={"end": "2026-11-02"})],
        "welzijn-rivierenland",
    ),
    (
        "future-home-not-yet",
        [
            _address("4001 AB", use="home", period={"start": "2026-12-01"}),
            _address("3511 AA", use="home"),
        ],
        "welzijn-voorbeeld",
    ),
    (
        "home-before-no-use",
        [_address("3511 AA"), _address("4001 AB", use="home")],
        "welzijn-rivierenland",
    ),
    (
        "no-use-when-no-home",
        [_address("4001 AB"), _address("3511 AA", use="work")],
        "welzijn-rivierenland",
    ),
    ("work-never-routes", [_address("4001 AB", use="work")], "welzijn-voorbeeld"),
    ("billing-never-routes", [_address("4001 AB", use="billing")], "welzijn-voorbeeld"),
    (
        "temp-never-routes",
        [_address("4001 AB", use="temp", period={"start": "2026-11-01"})],
        "welzijn-voorbeeld",
    ),
    (
        "old-municipality-ignored",
        [_address("9999 ZZ", use="old", district="Tiel"), _address("3511 AA", use="home")],
        "welzijn-voorbeeld",
    ),
    (
        "current-municipality-routes",
        [_address("9999 ZZ", use="home", district="Tiel")],
        "welzijn-rivierenland",
    ),
    (
        "two-homes-one-destination",
        [_address("4001 AB", use="home"), _address("4050 AB", use="home")],
        "welzijn-rivierenland",
    ),
]


@pytest.mark.parametrize(
    ("addresses", "destination"), [(a, d) for _, a, d in ROUTES], ids=[n for n, _, _ in ROUTES]
)
def test_routing_uses_the_current_home_address(
    addresses: list[Json], destination: str, settings: Settings
) -> None:
    """Only a current address with use home (else without use) routes; old ones never do."""
    assert _translate(settings, _addresses(*addresses)).destination.id == destination


def test_two_current_homes_routing_apart_are_refused(settings: Settings) -> None:
    """Two current home addresses that lead to different organisations are not guessed between."""
    change = _addresses(_address("4001 AB", use="home"), _address("3511 AA", use="home"))
    with pytest.raises(wor_bridge.RefusedError) as caught:
        _translate(settings, change)
    assert [(i.code, i.expression) for i in caught.value.issues] == [
        ("business-rule", f"{PATIENT}.address")
    ]


def test_handed_case_routes_by_the_current_address_and_drops_the_old(settings: Settings) -> None:
    """The 1990-2019 address (4001) neither routes nor travels; 3511 goes to the catch-all."""
    result = wor_bridge.translate(case_input("accepted-address-old-current-home"), None, settings)
    assert result.destination.id == "welzijn-voorbeeld"
    only_current = [a["postalCode"] for a in _output_patient(result)["address"]] == ["3511 AA"]
    assert only_current  # a bool: a failure never prints the patient's postcodes


def test_historical_names_telecoms_and_addresses_are_not_forwarded(settings: Settings) -> None:
    """Old and ended names, numbers and addresses are dropped; the current ones stay."""

    def change(sr: Json) -> None:
        patient = _patient(sr)
        patient["name"].append({"use": "old", "family": "Meisjesnaam"})
        patient["name"].append({"family": "Vroeger", "period": {"end": "2001"}})
        patient["telecom"] += [
            {"system": "phone", "value": "010-0000009", "use": "old"},
            {"system": "email", "value": "oud@example.org", "period": {"end": "2026-10-31"}},
            {"system": "phone", "value": "020-0000008", "period": {"start": "2027"}},
        ]
        patient["address"].append(_address("4001 AB", use="old"))

    out = json.dumps(_output_patient(_translate(settings, change)))
    historical = ("Meisjesnaam", "Vroeger", "010-0000009", "oud@example.org", "020-0000008")
    assert not [n for n, value in enumerate((*historical, "4001 AB")) if value in out]
    kept = '"Jansen"' in out and "06-00000001" in out and "3511 AA" in out
    assert kept  # a bool: a failure never prints the Patient


def test_referrer_telecom_that_ended_is_not_forwarded(settings: Settings) -> None:
    """The referrer's former direct number does not travel as if current."""

    def change(sr: Json) -> None:
        sr["contained"][2]["telecom"].append(
            {"system": "phone", "value": "030-0000077", "use": "work", "period": {"end": "2020"}}
        )

    forwarded = "030-0000077" in json.dumps(_translate(settings, change).bundle)
    assert not forwarded


@pytest.mark.parametrize(
    ("element", "why"),
    [
        ("name", "only an old name"),
        ("telecom", "only an old phone and an ended address"),
    ],
)
def test_patient_gate_needs_current_name_and_contact_route(
    element: str, why: str, settings: Settings
) -> None:
    """A patient whose name or every contact route is historical is refused at that element."""

    def change(sr: Json) -> None:
        patient = _patient(sr)
        if element == "name":
            patient["name"] = [{"use": "old", "family": "Jansen"}]
        else:
            patient["telecom"] = [{"system": "phone", "value": "06-00000001", "use": "old"}]
            patient["address"] = [_address("3511 AA", use="home", period={"end": "2026-11-01"})]

    with pytest.raises(wor_bridge.RefusedError) as caught:
        _translate(settings, change)
    assert ("required", f"{PATIENT}.{element}") in [
        (i.code, i.expression) for i in caught.value.issues
    ], why


@pytest.mark.parametrize(
    ("period", "current"),
    [
        ({"end": "2026-11-02"}, True),  # the whole Amsterdam day
        ({"end": "2026-11-01"}, False),
        ({"end": "2026-11-02T09:15:00Z"}, True),  # the same instant, bounds included
        ({"end": "2026-11-02T09:14:59Z"}, False),
        ({"end": "2026-11-02T10:14:59+01:00"}, False),
        ({"start": "2026-11-02T10:15:00+01:00"}, True),
        ({"start": "2026-11-02T10:15:01+01:00"}, False),
        ({"start": "2026-11"}, True),
        ({"start": "2027"}, False),
        ({"start": "2016-12-31T23:59:60Z"}, False),  # unreadable: never guessed current
    ],
)
def test_period_bounds_are_instants_and_partial_dates_whole_days(
    period: Json, current: bool
) -> None:
    """A period covers authoredOn by instants with zones; a date is the whole Amsterdam day."""
    assert is_current({"period": period}, AT) is current
    assert covers(period, AT) is (current if "60Z" not in str(period) else None)


def _phone(**fields: Any) -> Json:
    ctx = TransformContext(reference_date=AT.start.date(), age_bands=(18,), at=AT)
    points = contact_points([{"system": "phone", "value": "06-00000001", **fields}], ctx)
    assert points is not None
    return points[0]


def _code_spec(code: str, system: str = ADDRESS_USE) -> Json:
    coding = {"system": system, "code": code}
    return {"extension": [{"url": CODE_SPEC, "valueCodeableConcept": {"coding": [coding]}}]}


def test_nl_core_mobile_marker_becomes_use_mobile_and_is_kept() -> None:
    """ext-CodeSpecification MC on _system (no use) gives use mobile and keeps the extension."""
    phone = _phone(_system=_code_spec("MC"))
    assert phone["use"] == "mobile"
    assert phone["_system"] == _code_spec("MC")


def test_nl_core_mobile_marker_keeps_the_number_type_in_use() -> None:
    """A mobile with a NumberType in use (work) keeps it; the extension still says mobile."""
    phone = _phone(use="work", _system=_code_spec("MC"))
    assert phone["use"] == "work"
    assert phone["_system"] == _code_spec("MC")


def test_other_telecom_types_and_extensions_do_not_become_mobile() -> None:
    """A landline or pager type gets no use; extensions other than the code spec do not travel."""
    assert "use" not in _phone(_system=_code_spec("PG"))
    other = {"extension": [{"url": "http://example.org/x", "valueString": "x"}]}
    assert set(_phone(_system=other)) == {"system", "value"}


def test_handed_nl_core_bundle_keeps_the_mobile_marker(settings: Settings) -> None:
    """The nl-core example's phone reaches the welfare side as a mobile number."""
    result = wor_bridge.translate(case_input("accepted-nl-core-mobile-phone"), None, settings)
    phone = _output_patient(result)["telecom"][0]
    assert phone["use"] == "mobile"
    assert phone["_system"]["extension"][0]["url"] == CODE_SPEC
