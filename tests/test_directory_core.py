"""The pure directory code: organisation keys, version order, sync timing, the mCSD pages and
the GF Query Client's endpoint choice."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from pydantic import ValidationError

from tests.directory_cases import TA_NOTIFICATION, endpoint, organization, service
from wor_bridge.connectors import mcsd
from wor_bridge.core import endpoint_choice
from wor_bridge.core import identifiers as ids
from wor_bridge.core.directory import (
    DEFAULT_ENDPOINT_TYPES,
    DirectoryRecord,
    DirectorySettings,
    index_keys,
    instant_us,
    local_reference,
    newer,
    organization_key,
    sync_delay_s,
)

NOW = dt.datetime(2025, 3, 20, 12, 0, tzinfo=dt.UTC)
BASE = "https://directory.example/fhir"


def record(stamp_us: int, version: str = "1", body: bytes | None = b"{}") -> DirectoryRecord:
    """A record of ``Endpoint/e1`` at a given version."""
    return DirectoryRecord("Endpoint", "e1", stamp_us, version, body)


@pytest.mark.parametrize(
    "system", [ids.KVK, "http://www.kvk.nl/", "http://www.vzvz.nl/fhir/NamingSystem/kvk"]
)
def test_the_three_kvk_systems_give_one_key(system: str) -> None:
    """A KvK number under any of the three systems in use is the same organisation key."""
    assert organization_key(system, " 90000001 ") == "kvk|90000001"


def test_ura_in_uri_and_oid_form_give_one_key() -> None:
    """The URA in URI and in OID form is one key; other systems give none."""
    assert organization_key(ids.URA, "11111111") == "ura|11111111"
    assert organization_key("urn:oid:2.16.528.1.1007.3.3", "11111111") == "ura|11111111"
    assert organization_key(ids.AGB, "01000001") is None
    assert organization_key(ids.URA, "  ") is None


def test_index_keys_name_identifiers_parent_and_provider() -> None:
    """Organizations are found by URA/KvK and partOf; services by providedBy."""
    org = organization("dept", kvk="90000001", ura="11111111", part_of="top")
    assert index_keys(org) == ("ura|11111111", "kvk|90000001", "partOf|Organization/top")
    assert index_keys(service("s1", "dept", ["e1"])) == ("providedBy|Organization/dept",)
    assert index_keys(endpoint("e1", "https://x/fhir")) == ()


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ({"reference": "Organization/o1"}, "Organization/o1"),
        ({"reference": "https://lrza.example/fhir/Organization/o1"}, "Organization/o1"),
        ({"reference": "Organization/o1/_history/3"}, "Organization/o1"),
        ({"reference": "Endpoint/o1"}, None),
        ({"identifier": {"system": ids.URA, "value": "1"}}, None),
        ("Organization/o1", None),
    ],
)
def test_local_reference_forms(reference: object, expected: str | None) -> None:
    """Relative, absolute and versioned literal references resolve; others do not."""
    assert local_reference(reference, "Organization") == expected


def test_newer_orders_by_last_updated_then_version() -> None:
    """A later lastUpdated wins; at the same instant a higher numeric versionId wins."""
    assert newer(record(2), record(1))
    assert not newer(record(1), record(2))
    assert newer(record(5, "3"), record(5, "2"))


def test_the_same_version_is_not_newer() -> None:
    """Applying a version twice has one effect: it is not newer than itself."""
    assert not newer(record(5, "2"), record(5, "2"))
    assert not newer(record(5, "2", None), record(5, "2"))


def test_instant_needs_a_zone() -> None:
    """Only a FHIR instant (with a zone) orders versions."""
    assert instant_us("2025-03-01T09:00:00.000001+00:00") == instant_us(
        "2025-03-01T09:00:00.000001Z"
    )
    assert instant_us("2025-03-01T09:00:00") is None
    assert instant_us("2025-03-01") is None
    assert instant_us(None) is None


def test_sync_delay_after_a_good_round_is_interval_plus_jitter() -> None:
    """S3/S4: the interval plus a random share of the jitter, never less than the interval."""
    settings = DirectorySettings(base_url=BASE, interval_s=900, jitter_s=120)
    assert sync_delay_s(settings, 0.0, since_last_s=0) == 900
    assert sync_delay_s(settings, 0.5, since_last_s=0) == 960


def test_sync_delay_after_a_restart_counts_from_the_last_sync() -> None:
    """A restart does not sync sooner than the interval after the last good round."""
    settings = DirectorySettings(base_url=BASE, interval_s=900, jitter_s=0)
    assert sync_delay_s(settings, 0.3, since_last_s=600) == 300
    assert sync_delay_s(settings, 0.3, since_last_s=5000) == 0
    assert sync_delay_s(settings, 0.0) == 0


def test_sync_delay_after_failures_backs_off_and_honours_retry_after() -> None:
    """S8/S9: exponential backoff capped at the interval, never before Retry-After."""
    settings = DirectorySettings(base_url=BASE, interval_s=900, retry_base_s=30)
    delays = [sync_delay_s(settings, 0.999999, failures=n) for n in (1, 2, 3, 10)]
    assert [round(d) for d in delays] == [30, 60, 120, 900]
    assert sync_delay_s(settings, 0.0, failures=1, retry_after_s=600) == 600


def test_directory_settings_need_the_routing_types_in_load_order() -> None:
    """resource_types must hold the three routing types; they are sorted in L4 order."""
    settings = DirectorySettings(
        base_url=BASE, resource_types=("Endpoint", "Location", "HealthcareService", "Organization")
    )
    assert settings.resource_types == ("Organization", "Location", "HealthcareService", "Endpoint")
    with pytest.raises(ValidationError):
        DirectorySettings(base_url=BASE, resource_types=("Organization", "Endpoint"))


def test_history_request_encodes_since() -> None:
    """The server time goes into _since percent-encoded (a '+' would read as a space)."""
    request = mcsd.history_request(BASE, "Endpoint", "2025-03-01T09:00:00.5+01:00", 100)
    assert request.url == (
        f"{BASE}/Endpoint/_history?_since=2025-03-01T09:00:00.5%2B01:00&_count=100"
    )
    assert mcsd.load_request(BASE + "/", "Organization", 7).url == f"{BASE}/Organization?_count=7"


def test_next_links_are_followed_on_the_directory_only() -> None:
    """A next link to another host or outside the base is refused (credentials stay home)."""
    assert mcsd.next_request(BASE, f"{BASE}/Endpoint?_offset=50") is not None
    assert mcsd.next_request(BASE, "https://elsewhere.example/fhir/Endpoint") is None
    assert mcsd.next_request(BASE, "https://directory.example/other/Endpoint") is None


def _entry(resource: dict[str, object], version: int, stamp: str) -> dict[str, object]:
    meta = {"versionId": str(version), "lastUpdated": stamp}
    return {"resource": {**resource, "meta": meta}, "request": {"method": "PUT"}}


def test_history_page_is_applied_oldest_first() -> None:
    """S6: a history page lists the newest version first; records come oldest first."""
    ep = endpoint("e1", "https://a.example/fhir")
    bundle = {
        "resourceType": "Bundle",
        "type": "history",
        "meta": {"lastUpdated": "2025-03-01T10:00:00Z"},
        "entry": [
            _entry(ep, 2, "2025-03-01T09:30:00Z"),
            _entry(ep, 1, "2025-03-01T09:00:00Z"),
        ],
    }
    page = mcsd.parse_page(bundle, "Endpoint", history=True)
    assert [r.version_id for r in page.records] == ["1", "2"]
    assert page.server_time == "2025-03-01T10:00:00Z"
    assert page.broken == ()


def test_a_delete_entry_becomes_a_tombstone_with_its_version() -> None:
    """A history DELETE has no resource: its id and version come from request and response."""
    entry = {
        "request": {"method": "DELETE", "url": "Endpoint/e1"},
        "response": {"status": "204", "etag": 'W/"3"', "lastModified": "2025-03-01T11:00:00Z"},
    }
    bundle = {"resourceType": "Bundle", "type": "history", "entry": [entry]}
    (tombstone,) = mcsd.parse_page(bundle, "Endpoint", history=True).records
    assert (tombstone.id, tombstone.version_id, tombstone.deleted) == ("e1", "3", True)


def test_broken_entries_are_reported_by_location_only() -> None:
    """Unusable entries are skipped with their location; the good ones still come through."""
    good = _entry(endpoint("e1", "https://a.example/fhir"), 1, "2025-03-01T09:00:00Z")
    no_meta = {"resource": endpoint("e2", "https://b.example/fhir")}
    invalid = _entry({**endpoint("e3", "x"), "status": 7}, 1, "2025-03-01T09:00:00Z")
    other_type = _entry(organization("o1"), 1, "2025-03-01T09:00:00Z")
    bad_delete = {"request": {"method": "DELETE", "url": "Endpoint/e4"}, "response": {}}
    bundle = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [good, no_meta, invalid, other_type, bad_delete, "junk"],
    }
    page = mcsd.parse_page(bundle, "Endpoint", history=True)
    assert [r.id for r in page.records] == ["e1"]
    assert page.broken == tuple(f"Bundle.entry[{i}]" for i in range(1, 6))
    assert "https" not in json.dumps(page.broken)


def test_searchset_ignores_included_resources_and_outcomes() -> None:
    """Entries with search mode include or outcome are not part of the result."""
    good = _entry(endpoint("e1", "https://a.example/fhir"), 1, "2025-03-01T09:00:00Z")
    included = {
        **_entry(organization("o1"), 1, "2025-03-01T09:00:00Z"),
        "search": {"mode": "include"},
    }
    outcome = {"resource": {"resourceType": "OperationOutcome"}, "search": {"mode": "outcome"}}
    bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [good, included, outcome]}
    page = mcsd.parse_page(bundle, "Endpoint", history=False)
    assert ([r.id for r in page.records], page.broken) == (["e1"], ())


def test_server_time_falls_back_to_the_date_header() -> None:
    """L5: Bundle.meta.lastUpdated, else the HTTP Date header, else nothing."""
    bundle = {"resourceType": "Bundle", "type": "searchset"}
    page = mcsd.parse_page(
        bundle, "Endpoint", history=False, date_header="Sat, 01 Mar 2025 09:00:00 GMT"
    )
    assert page.server_time == "2025-03-01T09:00:00+00:00"
    assert mcsd.parse_page(bundle, "Endpoint", history=False).server_time is None


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ([], "Bundle"),
        ({"resourceType": "Patient"}, "Bundle"),
        ({"resourceType": "Bundle", "type": "searchset"}, "Bundle.type"),
        ({"resourceType": "Bundle", "type": "history", "entry": "x"}, "Bundle.entry"),
    ],
)
def test_an_unusable_page_is_refused_with_its_location(body: object, location: str) -> None:
    """A page that is not a history Bundle raises McsdFormatError naming where."""
    with pytest.raises(mcsd.McsdFormatError) as caught:
        mcsd.parse_page(body, "Endpoint", history=True)
    assert caught.value.location == location


@pytest.mark.parametrize(
    ("period", "valid"),
    [
        (None, True),
        ({"start": "2025-03-15"}, True),
        ({"start": "2025-03-21"}, False),
        ({"end": "2025-03-20"}, True),
        ({"end": "2025-03-19"}, False),
        ({"start": "2025-03", "end": "2025"}, True),
        ({"end": "2025-03-20T11:59:59+00:00"}, False),
        ({"end": "2025-03-20T12:00:00Z"}, True),
        ({"start": "2025-03-20T13:00:00+01:00"}, True),
        ({"start": "2025-03-20T12:00:00"}, False),
        ({"start": "soon"}, False),
        ({"end": "2024-02-29"}, False),
    ],
)
def test_period_includes_the_moment(period: dict[str, str] | None, valid: bool) -> None:
    """Rule 1: bounds at their precision, end inclusive, dates in UTC; junk never matches."""
    assert endpoint_choice.in_period(period, NOW) is valid


def test_fhir_versions_come_from_json_media_types() -> None:
    """Rule 2: the fhirVersion parameter of JSON payload media types, major.minor."""
    ep = {
        "payloadMimeType": [
            "application/fhir+json; fhirVersion=4.0.1",
            'application/fhir+json;fhirversion="3.0"',
            "application/fhir+xml; fhirVersion=5.0",
            "application/fhir+json",
        ]
    }
    assert endpoint_choice.fhir_versions(ep) == {"4.0", "3.0"}


def test_choice_follows_the_period_at_a_cut_over() -> None:
    """At most one of an old/new pair is valid; the choice follows period, not registration."""
    old = endpoint("old", "https://old.example/fhir", period={"end": "2025-03-14"})
    new = endpoint("new", "https://new.example/fhir", period={"start": "2025-03-15"})
    rules, types = DEFAULT_ENDPOINT_TYPES, ["fhir-r4"]
    before = endpoint_choice.choose(
        [new, old], rules, types, dt.datetime(2025, 3, 14, 23, tzinfo=dt.UTC)
    )
    after = endpoint_choice.choose(
        [new, old], rules, types, dt.datetime(2025, 3, 15, tzinfo=dt.UTC)
    )
    assert before == endpoint_choice.Chosen("old", "https://old.example/fhir", "fhir-r4")
    assert after == endpoint_choice.Chosen("new", "https://new.example/fhir", "fhir-r4")


def test_withdrawn_endpoints_are_not_chosen() -> None:
    """off, suspended and entered-in-error Endpoints are left out."""
    eps = [
        endpoint(s, f"https://{s}.example/fhir", status=s)
        for s in ("off", "suspended", "entered-in-error")
    ]
    found = endpoint_choice.choose(eps, DEFAULT_ENDPOINT_TYPES, ["fhir-r4"], NOW)
    assert isinstance(found, endpoint_choice.NoEndpoint)


def test_two_valid_addresses_are_ambiguous_and_one_address_twice_is_not() -> None:
    """Rule 4: no tie-breaker is guessed; the same address registered twice is one endpoint."""
    a, b = endpoint("a", "https://a.example/fhir"), endpoint("b", "https://b.example/fhir")
    twice = endpoint("a2", "https://a.example/fhir")
    ambiguous = endpoint_choice.choose([a, b], DEFAULT_ENDPOINT_TYPES, ["fhir-r4"], NOW)
    assert isinstance(ambiguous, endpoint_choice.NoEndpoint)
    assert "ambiguous" in ambiguous.reason
    found = endpoint_choice.choose([a, twice], DEFAULT_ENDPOINT_TYPES, ["fhir-r4"], NOW)
    assert found == endpoint_choice.Chosen("a", "https://a.example/fhir", "fhir-r4")


def test_the_fhir_version_and_payload_type_decide_the_destination_type() -> None:
    """An STU3 TA-notification Endpoint is a notified-pull receiver, only where accepted."""
    stu3 = endpoint("n", "https://np.example/fhir", fhir_version="3.0", payload=TA_NOTIFICATION)
    r4_only = endpoint_choice.choose([stu3], DEFAULT_ENDPOINT_TYPES, ["fhir-r4"], NOW)
    assert isinstance(r4_only, endpoint_choice.NoEndpoint)
    pull = endpoint_choice.choose([stu3], DEFAULT_ENDPOINT_TYPES, ["notified-pull-stu3"], NOW)
    assert pull == endpoint_choice.Chosen("n", "https://np.example/fhir", "notified-pull-stu3")
    wrong_version = endpoint("w", "https://w.example/fhir", fhir_version="3.0")
    found = endpoint_choice.choose([wrong_version], DEFAULT_ENDPOINT_TYPES, ["fhir-r4"], NOW)
    assert isinstance(found, endpoint_choice.NoEndpoint)


def test_services_must_be_active_and_offer_the_type() -> None:
    """Rule 3: only active HealthcareServices of the configured type count; endpoints once."""
    from tests.directory_cases import SERVICE_TYPE  # noqa: PLC0415

    offered = service("s1", "o1", ["e1", "e2"])
    assert endpoint_choice.offers(offered, SERVICE_TYPE)
    assert not endpoint_choice.offers({**offered, "active": False}, SERVICE_TYPE)
    assert not endpoint_choice.offers({**offered, "type": []}, SERVICE_TYPE)
    assert endpoint_choice.endpoint_ids([offered, service("s2", "o1", ["e2", "e3"])]) == [
        "e1",
        "e2",
        "e3",
    ]
