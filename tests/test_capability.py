"""The CapabilityStatement (issue 18): ``GET [base]/metadata`` on /fhir/r4 and /fhir/stu3 is valid
for the FHIR models (fhir.resources R4B and STU3, and fhirclient's strict R4 models), states
exactly the app's routes as interactions, the Task search parameters the search accepts, the
formats and the security; and a route without its row in the table stops the app."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from fhirclient.models.capabilitystatement import CapabilityStatement

from tests.inprocess import HIS, World, make_world
from wor_bridge.core import fhir, search
from wor_bridge.service import capability

Json = dict[str, Any]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    """The app with two referrals."""
    return make_world(tmp_path_factory.mktemp("capability"))


def metadata(world: World, version: str) -> Json:
    """The statement of one base, fetched without credentials."""
    answer = world.call("GET", f"/fhir/{version}/metadata")
    assert answer.status_code == 200
    body: Json = answer.json()
    return body


def _interactions(statement: Json) -> set[tuple[str, str]]:
    [rest] = statement["rest"]
    found = {("", i["code"]) for i in rest.get("interaction", [])}
    for resource in rest["resource"]:
        found |= {(resource["type"], i["code"]) for i in resource["interaction"]}
    return found


def _from_routes(app: FastAPI, base: str) -> set[tuple[str, str]]:
    """(type, interaction) the app's own routes under ``base`` serve, by the route table."""
    rows = {(r.method, r.path): r for r in capability.ROUTES}
    found: set[tuple[str, str]] = set()
    for method, path in capability.fhir_routes(app):
        if not path.startswith(base):
            continue
        row = rows[(method, path)]
        for code in row.interactions:
            if code == "capabilities":
                continue
            found |= {(t, code) for t in row.types} if row.types else {("", code)}
    return found


@pytest.mark.parametrize("version", ["r4", "stu3"])
def test_statement_is_valid_for_the_models(world: World, version: str) -> None:
    """The statement validates against the FHIR models of its version, without issues."""
    statement = metadata(world, version)
    models = "R4" if version == "r4" else "STU3"
    assert fhir.validate(statement, "CapabilityStatement", models) == []  # type: ignore[arg-type]
    assert statement["fhirVersion"] == ("4.0.1" if version == "r4" else "3.0.2")
    assert statement["implementation"]["url"] == f"http://127.0.0.1:8080/fhir/{version}"


def test_r4_statement_parses_with_fhirclient_strict_models(world: World) -> None:
    """fhirclient (strict) reads the R4 statement: its first call of any session works."""
    parsed = CapabilityStatement(metadata(world, "r4"))
    assert parsed.rest[0].security.cors is False
    assert parsed.rest[0].security.extension is None  # no SMART OAuth flow is offered


@pytest.mark.parametrize(("version", "base"), [("r4", "/fhir/r4"), ("stu3", "/fhir/stu3")])
def test_statement_states_exactly_the_app_routes(world: World, version: str, base: str) -> None:
    """Every interaction stated has a route, every route under the base is stated."""
    assert _interactions(metadata(world, version)) == _from_routes(world.app, base)


def test_task_search_parameters_are_the_ones_the_search_accepts(world: World) -> None:
    """The stated Task search parameters are core.search's; each one is accepted strictly."""
    [task] = [r for r in metadata(world, "r4")["rest"][0]["resource"] if r["type"] == "Task"]
    stated = {p["name"]: p["type"] for p in task["searchParam"]}
    assert stated == {n: p.type for n, p in search.TASK_PARAMS.items()}
    assert task["versioning"] == "versioned-update"
    values = {"_lastUpdated": "ge2020-01-01", "focus": "ServiceRequest/x", "owner": "x"}
    for name in stated:
        answer = world.call(
            "GET",
            f"/fhir/r4/Task?{name}={values.get(name, 'x')}",
            HIS,
            headers={"Prefer": "handling=strict"},
        )
        assert answer.status_code == 200, name


def test_statement_states_formats_and_security(world: World) -> None:
    """JSON and XML, JSON Patch; the API key (and, for STU3, the OAuth pull token)."""
    r4 = metadata(world, "r4")
    assert {"application/fhir+json", "application/fhir+xml"} <= set(r4["format"])
    assert r4["patchFormat"] == ["application/json-patch+json"]
    assert "API key" in r4["rest"][0]["security"]["description"]
    stu3 = metadata(world, "stu3")
    assert stu3["rest"][0]["security"]["service"][0]["coding"][0]["code"] == "OAuth"


def test_a_route_without_its_row_stops_the_app(world: World) -> None:
    """capability.check refuses an app whose FHIR routes differ from the table."""
    app = FastAPI()
    for route in world.app.routes:
        app.router.routes.append(route)

    @app.delete("/fhir/r4/Task/{task_id}")
    def delete() -> None:
        """Not in the table."""

    with pytest.raises(RuntimeError, match="route table"):
        capability.check(app)
    capability.check(world.app)


def test_metadata_is_served_without_credentials_and_audits_nothing(world: World) -> None:
    """The statement holds no patient data: no key needed, no audit record."""
    mark = world.last_audit_id()
    metadata(world, "r4")
    assert world.audit(mark) == []
