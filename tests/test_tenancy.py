"""Tenancy fails closed: unbound clients stop the start-up, access is denied by default, and a
Task the caller may not see is answered exactly like one that does not exist, on every route."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.inprocess import (
    ADMIN,
    HIS,
    OTHER_HIS,
    OTHER_WELFARE,
    READER,
    WELFARE,
    ZORGDOMEIN,
    World,
    client_toml,
    hook_payload,
    make_world,
    observation,
    signed,
    stu3_observation,
    task_body,
    unknown_task,
    write_config,
)
from wor_bridge.config import load_app
from wor_bridge.errors import ConfigError
from wor_bridge.usecases.caller import Caller, may_access


@pytest.fixture
def world(tmp_path: Path) -> World:
    """The app with the patient's two referrals (voorbeeld: FHIR R4; viplive: notified pull)."""
    return make_world(tmp_path)


# --- start-up ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "binding"),
    [
        (["task:read"], {}),
        (["referral:write", "task:read", "task:update"], {}),
        (["feedback:write"], {}),
        (["metrics:read", "task:read"], {}),
        (["task:read"], {"source_system": "his-x", "destination": "welzijn-voorbeeld"}),
        (["admin"], {"source_system": "his-x", "destination": "welzijn-voorbeeld"}),
    ],
)
def test_unbound_or_doubly_bound_client_is_a_configuration_error(
    tmp_path: Path, scopes: list[str], binding: dict[str, str]
) -> None:
    """A non-admin client bound to neither side (or both) stops the start-up: a ConfigError."""
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in binding.items())
    extra = f'\n[[clients]]\nid = "loose"\nscopes = {json.dumps(scopes)}\n{lines}'
    with pytest.raises(ConfigError, match="client loose"):
        load_app(write_config(tmp_path, extra))


@pytest.mark.parametrize(
    ("scopes", "bind", "value"),
    [
        (["admin"], None, None),
        (["metrics:read"], None, None),
        (["task:read"], "source_system", "his-x"),
        (["feedback:write"], "destination", "welzijn-voorbeeld"),
    ],
)
def test_admin_and_bound_clients_load(
    tmp_path: Path, scopes: list[str], bind: str | None, value: str | None
) -> None:
    """An admin, a metrics scraper, a GP-side and a welfare-side client are valid configurations."""
    extra = (
        client_toml("fine", "k", scopes, bind, value)
        if bind and value
        else f'\n[[clients]]\nid = "fine"\nscopes = {json.dumps(scopes)}\n'
    )
    assert "fine" in {c.id for c in load_app(write_config(tmp_path, extra)).clients}


@pytest.mark.parametrize(
    ("caller", "destination", "allowed"),
    [
        (Caller("a", admin=True), None, True),
        (Caller("w", destination="welzijn-a"), None, True),
        (Caller("w", destination="welzijn-b"), None, False),
        (Caller("poll"), "welzijn-a", True),
        (Caller("poll"), "welzijn-b", False),
        (Caller("g", source_system="his-a"), None, True),
        (Caller("g", source_system="his-b"), None, False),
        (Caller("nobody"), None, False),
        (Caller("g", source_system="his-a", destination="welzijn-b"), None, False),
    ],
)
def test_access_is_denied_by_default(
    caller: Caller, destination: str | None, allowed: bool
) -> None:
    """Only admin, the Task's own destination or its own source system may touch it."""
    assert may_access(caller, destination, "welzijn-a", "his-a") is allowed


# --- hidden answers exactly like unknown --------------------------------------------------------


def _same(answers: Callable[[str], httpx.Response], hidden: str) -> httpx.Response:
    """The answer for a hidden Task equals the one for an unknown Task: status, body, headers
    that could tell them apart."""
    seen = answers(hidden)
    unknown = answers(unknown_task())
    assert seen.status_code == unknown.status_code == 404
    same_body = seen.content == unknown.content  # compared, never printed
    assert same_body
    for header in ("etag", "content-location", "location", "content-type"):
        assert seen.headers.get(header) == unknown.headers.get(header)
    return seen


def _r4_read(world: World, key: str) -> Callable[[str], httpx.Response]:
    return lambda t: world.call("GET", f"/fhir/r4/Task/{t}", key)


def _r4_put(world: World, key: str, if_match: bool = True) -> Callable[[str], httpx.Response]:
    headers = {"If-Match": 'W/"1"'} if if_match else {}
    return lambda t: world.call(
        "PUT", f"/fhir/r4/Task/{t}", key, json=task_body(t, "accepted"), headers=headers
    )


def _r4_patch(world: World, key: str) -> Callable[[str], httpx.Response]:
    ops = [{"op": "test", "path": "/status", "value": "requested"}]
    headers = {"If-Match": 'W/"1"', "Content-Type": "application/json-patch+json"}
    return lambda t: world.call("PATCH", f"/fhir/r4/Task/{t}", key, json=ops, headers=headers)


def _observation(world: World, key: str) -> Callable[[str], httpx.Response]:
    return lambda t: world.call("POST", "/fhir/r4/Observation", key, json=observation(t))


def _welfare_bundle(world: World, key: str) -> Callable[[str], httpx.Response]:
    def post(task_id: str) -> httpx.Response:
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [{"resource": task_body(task_id, "accepted")}],
        }
        return world.call("POST", "/fhir/r4", key, json=bundle)

    return post


def _webhook(world: World, _key: str) -> Callable[[str], httpx.Response]:
    def post(task_id: str) -> httpx.Response:
        body, headers = signed(hook_payload(task_id, status="aangenomen"))
        return world.call("POST", "/feedback/welzijn-json", content=body, headers=headers)

    return post


def _stu3_put(world: World, key: str) -> Callable[[str], httpx.Response]:
    return lambda t: world.call("PUT", f"/fhir/stu3/Task/{t}", key, json=task_body(t, "accepted"))


def _r4_version(world: World, key: str) -> Callable[[str], httpx.Response]:
    return lambda t: world.call("GET", f"/fhir/r4/Task/{t}/_history/1", key)


def _r4_request(world: World, key: str) -> Callable[[str], httpx.Response]:
    known = {world.voorbeeld, world.viplive}
    return lambda t: world.call(
        "GET", f"/fhir/r4/ServiceRequest/{world.request_id(t) if t in known else t}", key
    )


def _stu3_read(world: World, key: str) -> Callable[[str], httpx.Response]:
    return lambda t: world.call("GET", f"/fhir/stu3/Task/{t}", key)


ROUTES: list[tuple[str, Callable[[World, str], Callable[[str], httpx.Response]], str, str]] = [
    ("R4 read, welfare", _r4_read, OTHER_WELFARE, "voorbeeld"),
    ("R4 read, GP", _r4_read, OTHER_HIS, "voorbeeld"),
    ("R4 read, welfare of a pull destination", _r4_read, WELFARE, "viplive"),
    ("R4 version read, welfare", _r4_version, OTHER_WELFARE, "voorbeeld"),
    ("R4 ServiceRequest read, GP", _r4_request, OTHER_HIS, "voorbeeld"),
    ("R4 PUT, welfare", _r4_put, OTHER_WELFARE, "voorbeeld"),
    ("R4 PUT, GP", _r4_put, OTHER_HIS, "voorbeeld"),
    ("R4 PUT without If-Match", lambda w, k: _r4_put(w, k, if_match=False), OTHER_WELFARE,
     "voorbeeld"),
    ("R4 PATCH test op", _r4_patch, OTHER_WELFARE, "voorbeeld"),
    ("R4 Observation", _observation, OTHER_WELFARE, "voorbeeld"),
    ("R4 welfare Bundle", _welfare_bundle, OTHER_WELFARE, "voorbeeld"),
    ("webhook", _webhook, "", "viplive"),
    ("STU3 PUT, API key", _stu3_put, ZORGDOMEIN, "voorbeeld"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "route", "key", "which"), ROUTES, ids=[r[0] for r in ROUTES])
def test_hidden_task_answers_like_an_unknown_one(
    world: World, name: str, route: Any, key: str, which: str
) -> None:
    """Another tenant's Task gets the unknown Task's 404, byte for byte, and nothing changes."""
    hidden = getattr(world, which)
    before = world.call("GET", f"/fhir/r4/Task/{hidden}", ADMIN).json()
    _same(route(world, key), hidden)
    after = world.call("GET", f"/fhir/r4/Task/{hidden}", ADMIN).json()
    unchanged = after == before  # compared, never printed
    assert unchanged, name


def test_pull_token_for_another_task_answers_like_an_unknown_one(world: World) -> None:
    """A pull token reads, writes and reports on another referral's Task as on no Task at all."""
    token = world.token(world.viplive)
    _same(_stu3_read(world, token), world.voorbeeld)
    _same(_stu3_put(world, token), world.voorbeeld)
    post = lambda r: world.call(  # noqa: E731 - a one-line request builder
        "POST", "/fhir/stu3/Observation", token, json=stu3_observation(r)
    )
    seen, unknown = post(world.request_id(world.voorbeeld)), post(unknown_task())
    same_body = seen.content == unknown.content  # compared, never printed
    assert same_body
    assert seen.status_code == unknown.status_code == 404


def test_gp_client_sees_and_changes_only_its_own_systems_referrals(world: World) -> None:
    """The HIS reads its referral; another GP system's client gets 404 and cannot cancel it."""
    assert world.call("GET", f"/fhir/r4/Task/{world.voorbeeld}", HIS).status_code == 200
    cancel = task_body(world.voorbeeld, "cancelled", "withdrawn")
    refused = world.call(
        "PUT",
        f"/fhir/r4/Task/{world.voorbeeld}",
        OTHER_HIS,
        json=cancel,
        headers={"If-Match": 'W/"1"'},
    )
    assert refused.status_code == 404
    status = world.call("GET", f"/fhir/r4/Task/{world.voorbeeld}", ADMIN).json()["status"]
    assert status == "requested"


def test_read_only_client_reads_its_systems_tasks_but_cannot_cancel(world: World) -> None:
    """A client with only task:read reads its own system's Task and gets 403 on a cancel."""
    assert world.call("GET", f"/fhir/r4/Task/{world.voorbeeld}", READER).status_code == 200
    cancel = task_body(world.voorbeeld, "cancelled", "withdrawn")
    refused = world.call(
        "PUT",
        f"/fhir/r4/Task/{world.voorbeeld}",
        READER,
        json=cancel,
        headers={"If-Match": 'W/"1"'},
    )
    assert refused.status_code == 403
