"""Routing by the care-services directory at delivery time: the endpoint valid at that moment
(a cut-over by period), the destination type from the payload type and fhirVersion, the static
configuration as override and fallback, the source named in the audit record; ``[directory]``
in the configuration; the service running the sync and the dispatcher together."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.cases import REPO, case_input
from tests.directory_cases import (
    KVK_VOORBEELD,
    SERVICE_TYPE,
    TA_NOTIFICATION,
    endpoint,
    lookup,
    organization,
    service,
)
from wor_bridge import bootstrap
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.http import RequestsTransport
from wor_bridge.adapters.memory_directory import MemoryDirectoryReplica
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.config import StoreSettings, load_app
from wor_bridge.core import fhir, outbox
from wor_bridge.core.directory import DirectoryRecord, DirectorySettings, SyncState, index_keys
from wor_bridge.core.settings import IdentifierSetting, Settings
from wor_bridge.demo.credentials import write_demo_configuration
from wor_bridge.demo.fhir_server import SimulatedFhirServer, simulated_fhir_server
from wor_bridge.demo.mcsd_server import simulated_directory
from wor_bridge.errors import ConfigError
from wor_bridge.service.app import create_app
from wor_bridge.usecases import delivery, intake
from wor_bridge.usecases.caller import Caller

BEFORE = dt.datetime(2025, 3, 14, 12, 0, tzinfo=dt.UTC)
AFTER = dt.datetime(2025, 3, 15, 0, 0, tzinfo=dt.UTC)
POLICY = outbox.RetryPolicy(base_s=2.0, cap_s=900.0, max_attempts=12, max_age_s=3600.0)
VOORBEELD, VIPLIVE = "welzijn-voorbeeld", "welzijn-viplive"
DIRECTORY = DirectorySettings(base_url="https://directory.example/fhir")


@dataclasses.dataclass
class World:
    """Two welfare servers (the old and the new system), a static one, the replica, the store;
    ``seen`` counts the requests each server had before the test (they serve the module)."""

    old: SimulatedFhirServer
    new: SimulatedFhirServer
    static: SimulatedFhirServer
    replica: MemoryDirectoryReplica
    store: SqliteOutboxStore
    transport: RequestsTransport
    seen: dict[str, int]


def records(*resources: dict[str, Any]) -> list[DirectoryRecord]:
    """Replica records of directory resources (version 1, one microsecond apart)."""
    return [
        DirectoryRecord(r["resourceType"], r["id"], n, "1", fhir.canonical_json(r), index_keys(r))
        for n, r in enumerate(resources, start=1)
    ]


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[SimulatedFhirServer, ...]]:
    """Three loopback welfare FHIR servers for the module (old system, new system, static)."""
    with (
        simulated_fhir_server() as old,
        simulated_fhir_server() as new,
        simulated_fhir_server() as static,
    ):
        yield old, new, static


@pytest.fixture
def world(tmp_path: Path, servers: tuple[SimulatedFhirServer, ...]) -> Iterator[World]:
    """The welfare organisation (KvK) with a department offering the service through a cut-over
    pair of Endpoints on 2025-03-15; the replica is ready."""
    old, new, static = servers
    seen = {s.base_url: len(s.requests()) for s in servers}
    replica = MemoryDirectoryReplica()
    replica.apply(
        records(
            organization("o-voorbeeld", kvk=KVK_VOORBEELD, kvk_system="http://www.kvk.nl/"),
            organization("o-dept", part_of="o-voorbeeld"),
            service("s-wor", "o-dept", ["e-old", "e-new"]),
            endpoint("e-old", old.base_url, period={"end": "2025-03-14"}),
            endpoint("e-new", new.base_url, period={"start": "2025-03-15"}),
        )
    )
    replica.save_sync_state(SyncState("2025-03-01T00:00:00Z", True, None))
    store = SqliteOutboxStore(tmp_path / "store.sqlite")
    transport = RequestsTransport(FixedClock(BEFORE))
    yield World(old, new, static, replica, store, transport, seen)
    transport.close()
    store.close()


def configured(settings: Settings, world: World, **changes: Any) -> Settings:
    """Voorbeeld routed by the directory, with the static server as its endpoint (changes win)."""
    update = {"endpoint": world.static.base_url, "directory": lookup(), **changes}
    destinations = tuple(
        d.model_copy(update=update) if d.id == VOORBEELD else d for d in settings.destinations
    )
    return settings.model_copy(update={"destinations": destinations})


def send(world: World, settings: Settings, now: dt.datetime, **push: str) -> dict[str, Any]:
    """Accept the fixture referral, run one dispatcher round at ``now``; its delivery audit."""
    clock = FixedClock(now)
    data = case_input("accepted-contained")
    for old, new in push.items():
        data = data.replace(f'"{old}"'.encode(), f'"{new}"'.encode())
    intake.accept_referral(
        world.store, settings, clock, data=data, content_type=None, caller=Caller("test")
    )
    delivery.deliver_due(
        world.store,
        settings,
        world.transport,
        clock,
        POLICY,
        owner="worker",
        lease_s=60,
        limit=5,
        directory=delivery.Directory(world.replica, DIRECTORY),
    )
    (audit,) = [r for r in world.store.audit_records() if r["event"] == "referral_delivery"]
    return audit


def writes(world: World, server: SimulatedFhirServer) -> list[tuple[str, str]]:
    """The write requests a welfare server got in this test."""
    return server.requests()[world.seen[server.base_url] :]


@pytest.mark.parametrize(("now", "used"), [(BEFORE, "old"), (AFTER, "new")])
def test_delivery_goes_to_the_endpoint_valid_at_the_time(
    world: World, settings: Settings, now: dt.datetime, used: str
) -> None:
    """A cut-over by period: the Endpoint valid at delivery gets it; the audit names it."""
    audit = send(world, configured(settings, world), now)
    servers = {"old": world.old, "new": world.new}
    assert [len(writes(world, s)) for s in (servers[used], world.static)] == [1, 0]
    assert writes(world, servers[used]) == [("POST", "/fhir")]
    assert audit["detail"] == f"attempt 1; delivered; endpoint: directory Endpoint/e-{used}"


def test_the_replica_not_ready_falls_back_to_the_static_endpoint(
    world: World, settings: Settings
) -> None:
    """L9: before the initial load completed, the static configuration is used and named."""
    world.replica.save_sync_state(SyncState())
    audit = send(world, configured(settings, world), AFTER)
    assert [len(writes(world, s)) for s in (world.old, world.new, world.static)] == [0, 0, 1]
    assert audit["detail"] == (
        "attempt 1; delivered; endpoint: static (fallback: replica not ready "
        "(initial load not complete))"
    )


def test_an_organisation_unknown_to_the_directory_falls_back(
    world: World, settings: Settings
) -> None:
    """An organisation identifier the replica does not hold: the static endpoint, named."""
    other = lookup(
        organization=IdentifierSetting(system="http://fhir.nl/fhir/NamingSystem/ura", value="1")
    )
    audit = send(world, configured(settings, world, directory=other), AFTER)
    assert len(writes(world, world.static)) == 1
    assert audit["detail"].endswith(
        "endpoint: static (fallback: organisation not in the directory)"
    )


def test_a_withdrawn_endpoint_falls_back(world: World, settings: Settings) -> None:
    """An Endpoint set to entered-in-error (GF: no deletes, a status) is not used."""
    withdrawn = endpoint("e-new", world.new.base_url, status="entered-in-error")
    world.replica.apply([dataclasses.replace(records(withdrawn)[0], last_updated_us=99)])
    audit = send(world, configured(settings, world), AFTER)
    assert [len(writes(world, s)) for s in (world.new, world.static)] == [0, 1]
    assert "fallback: none of 2 endpoint(s) is active" in audit["detail"]


def test_a_static_override_wins_over_the_directory(world: World, settings: Settings) -> None:
    """``static = override``: the static endpoint is used and the directory is not asked."""
    audit = send(world, configured(settings, world, directory=lookup(static="override")), AFTER)
    assert [len(writes(world, s)) for s in (world.new, world.static)] == [0, 1]
    assert audit["detail"] == "attempt 1; delivered; endpoint: static (override)"


def test_without_any_endpoint_the_referral_waits(world: World, settings: Settings) -> None:
    """No static endpoint and no directory answer: retried later (then a dead letter)."""
    world.replica.save_sync_state(SyncState())
    audit = send(world, configured(settings, world, endpoint=None), AFTER)
    assert audit["outcome"] == "retry"
    assert audit["detail"] == (
        "attempt 1; no endpoint (directory: replica not ready (initial load not complete)); "
        "endpoint: none"
    )
    (entry,) = world.store.list_entries("pending", 5)
    assert entry.attempts == 1


def test_a_static_destination_is_audited_as_before(world: World, settings: Settings) -> None:
    """A destination without a directory block keeps its audit detail unchanged."""
    audit = send(world, configured(settings, world, directory=None), AFTER)
    assert audit["detail"] == "attempt 1; delivered"


def test_a_notified_pull_endpoint_from_the_directory_gets_the_notification(
    world: World, settings: Settings
) -> None:
    """fhirVersion=3.0 + TA-notification: notified pull, the Task POSTed to the address."""
    ura = IdentifierSetting(system="http://fhir.nl/fhir/NamingSystem/ura", value="22222222")
    destinations = tuple(
        d.model_copy(update={"endpoint": None, "directory": lookup(organization=ura)})
        if d.id == VIPLIVE
        else d
        for d in settings.destinations
    )
    routed = settings.model_copy(update={"destinations": destinations})
    with simulated_fhir_server() as receiver:
        resources = records(
            organization("o-linge", ura="22222222"),
            service("s-linge", "o-linge", ["e-np"]),
            endpoint("e-np", receiver.base_url, fhir_version="3.0", payload=TA_NOTIFICATION),
        )
        world.replica.apply([dataclasses.replace(r, last_updated_us=100) for r in resources])
        audit = send(world, routed, AFTER, Utrecht="Culemborg")
        assert receiver.requests() == [("POST", "/fhir/Task")]
        (task,) = receiver.resources("Task")
    assert fhir.validate_stu3(task, "Task") == []
    assert audit["detail"] == "attempt 1; delivered; endpoint: directory Endpoint/e-np"


def write_config(tmp_path: Path, directory: str, destination: str) -> Path:
    """A small TOML configuration with these ``[directory]`` and destination lines."""
    text = (
        f'mappings_dir = "{REPO / "mappings"}"\n'
        f'[store]\npath = "{tmp_path / "s.sqlite"}"\nencryption = "off"\n'
        f"{directory}\n"
        '[[destinations]]\nid = "welzijn-a"\nname = "A"\nmapping = "wor-r4-default"\n'
        'identifier = { system = "http://www.kvk.nl/", value = "90000001" }\n'
        f"{destination}\n"
        '[routing]\ncatch_all = "welzijn-a"\n'
    )
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    return path


LOOKUP = (
    'directory = { service_type = { system = "https://wor-bridge.nl/fhir/CodeSystem/'
    'wor-programme", code = "wor" } }'
)


def test_directory_configuration_loads(tmp_path: Path) -> None:
    """[directory] loads; its destination needs no endpoint; the replica is in the store."""
    section = (
        '[directory]\nbase_url = "https://lrza.example/fhir"\ninterval_s = 600\n'
        'auth = { type = "bearer", token = "directory-token" }\n'
        "[[directory.endpoint_types]]\n"
        'payload_type = { system = "http://minvws.github.io/generiekefuncties-docs/CodeSystem/'
        'nl-gf-data-categories-cs", code = "Request" }\nfhir_version = "4.0"\ntype = "fhir-r4"\n'
    )
    config = load_app(write_config(tmp_path, section, LOOKUP))
    assert config.directory is not None
    assert (config.directory.interval_s, len(config.directory.endpoint_types)) == (600.0, 1)
    assert config.core.destination("welzijn-a").directory == lookup()
    assert lookup().service_type == SERVICE_TYPE
    components = bootstrap.build(config)
    assert components.directory is not None
    assert components.directory.sync_state() == SyncState()
    assert "directory-token" not in repr(config.directory)


@pytest.mark.parametrize(
    ("section", "destination", "message"),
    [
        ("", LOOKUP, "needs a [directory] section"),
        (
            '[directory]\nbase_url = "https://lrza.example/fhir"',
            LOOKUP.replace(
                "} }",
                '}, organization = { system = "http://fhir.nl/fhir/'
                'NamingSystem/agb-z", value = "1" } }',
            ),
            "URA or KvK",
        ),
        (
            '[directory]\nbase_url = "https://lrza.example/fhir"',
            LOOKUP.replace("} }", '}, types = ["notified-pull-stu3"] }'),
            "needs type = notified-pull-stu3",
        ),
        (
            '[directory]\nbase_url = "https://lrza.example/fhir"',
            LOOKUP.replace("} }", '}, static = "override" }'),
            "static = override needs an endpoint",
        ),
        (
            '[directory]\nbase_url = "https://lrza.example/fhir"\nresource_types = ["Endpoint"]',
            LOOKUP,
            "resource_types",
        ),
    ],
)
def test_inconsistent_directory_configuration_is_refused(
    tmp_path: Path, section: str, destination: str, message: str
) -> None:
    """A directory destination that cannot work stops the program at start-up."""
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_app(write_config(tmp_path, section, destination))


def test_the_service_syncs_the_directory_and_delivers_where_it_says(
    tmp_path: Path, settings: Settings
) -> None:
    """The service syncs the directory and delivers where it says; the audit names it."""
    with simulated_directory() as directory, simulated_fhir_server() as welfare:
        directory.put(organization("o-voorbeeld", kvk=KVK_VOORBEELD))
        directory.put(service("s-wor", "o-voorbeeld", ["e-1"]))
        directory.put(endpoint("e-1", welfare.base_url))
        shipped = load_app(write_demo_configuration(tmp_path))
        destinations = tuple(
            d.model_copy(update={"endpoint": None, "directory": lookup()})
            if d.id == VOORBEELD
            else d
            for d in shipped.core.destinations
        )
        config = dataclasses.replace(
            shipped,
            core=shipped.core.model_copy(update={"destinations": destinations}),
            store=StoreSettings(path=str(tmp_path / "s.sqlite"), encryption="off"),
            directory=DirectorySettings(base_url=directory.base_url),
        )
        components = bootstrap.build(config)
        app = create_app(components, start_dispatcher=True)

        async def scenario() -> int:
            async with app.router.lifespan_context(app):
                assert components.directory is not None
                deadline = time.monotonic() + 10
                while not components.directory.sync_state().ready and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://test"
                ) as client:
                    response = await client.post(
                        "/fhir/r4/ServiceRequest",
                        content=case_input("accepted-contained"),
                        headers={
                            "Authorization": "Bearer example-his-key",
                            "Content-Type": "application/fhir+json",
                        },
                    )
                while not welfare.requests() and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                return response.status_code

        assert asyncio.run(scenario()) == 201
        assert welfare.requests() == [("POST", "/fhir")]
        store = components.store
        assert isinstance(store, SqliteOutboxStore)
        (audit,) = [r for r in store.audit_records() if r["event"] == "referral_delivery"]
        assert audit["detail"] == "attempt 1; delivered; endpoint: directory Endpoint/e-1"
        assert json.loads(json.dumps(audit))["outcome"] == "delivered"


def test_the_example_directory_section_loads_when_uncommented(tmp_path: Path) -> None:
    """The commented ``[directory]`` example of config/wor-bridge.toml is a valid section."""
    text = (REPO / "config" / "wor-bridge.toml").read_text(encoding="utf-8")
    block = text[text.index("# [directory]") :].splitlines()
    section = "\n".join(line.removeprefix("# ") for line in block if line.startswith("# "))
    text = text.replace('mappings_dir = "../mappings"', f'mappings_dir = "{REPO / "mappings"}"')
    path = tmp_path / "c.toml"
    path.write_text(f"{text}\n{section}\n", encoding="utf-8")
    (tmp_path / "secrets").mkdir()  # its token comes from a file next to the configuration
    (tmp_path / "secrets" / "directory-token").write_text("directory-token\n", encoding="utf-8")
    config = load_app(path)
    assert config.directory is not None
    assert config.directory.interval_s == 900.0
