"""Configuration and mapping files are checked at start-up; a broken one stops the program."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import wor_bridge
from tests.cases import REPO


def _copy_config(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "mappings", tmp_path / "mappings")
    (tmp_path / "config").mkdir()
    target = tmp_path / "config" / "wor-bridge.toml"
    shutil.copy(REPO / "config" / "wor-bridge.toml", target)
    return target


def _edit_json(path: Path, change: Callable[[Any], None]) -> None:
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def test_shipped_configuration_loads_with_catch_all() -> None:
    """The example config loads, has a catch-all and validates every mapping and CodeSystem."""
    settings = wor_bridge.load_settings()
    assert settings.routing.catch_all == "welzijn-voorbeeld"
    assert {"wor-r4-default", "wor-r4-ageband-bsn"} <= set(settings.mappings)
    assert "https://wor-bridge.nl/fhir/CodeSystem/task-business-status" in settings.codes


def _rule(index: int, **change: str) -> Callable[[Any], None]:
    def apply(data: Any) -> None:
        data["patient"][index].update(change)

    return apply


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_rule(0, transform="nope"), "unknown transform"),
        (_rule(0, target="maritalStatus"), "writes name, not maritalStatus"),
        (_rule(4, target="favouriteColour"), "not an element of FHIR R4 Patient"),
        (_rule(4, source="shoeSize"), "not an element of FHIR R4 Patient"),
        (_rule(1, target="name", transform="copy"), "duplicate target"),
        (lambda d: d.update(version="one"), "version"),
        (lambda d: d.update(surprise=True), "surprise"),
    ],
)
def test_broken_mapping_file_stops_loading(
    tmp_path: Path, change: Callable[[Any], None], message: str
) -> None:
    """Unknown transform, wrong/unknown/duplicate target, bad version or key: ConfigError."""
    config = _copy_config(tmp_path)
    _edit_json(tmp_path / "mappings" / "destinations" / "wor-r4-default.json", change)
    with pytest.raises(wor_bridge.ConfigError, match=message):
        wor_bridge.load_settings(config)


def test_invalid_codesystem_stops_loading(tmp_path: Path) -> None:
    """A local CodeSystem that is not valid FHIR R4 stops the program, naming the file."""
    config = _copy_config(tmp_path)
    _edit_json(
        tmp_path / "mappings" / "codesystems" / "closure-reason.json",
        lambda d: d.update(concept={"code": "x"}),
    )
    with pytest.raises(wor_bridge.ConfigError, match=r"closure-reason\.json"):
        wor_bridge.load_settings(config)


def test_routing_to_unknown_destination_stops_loading(tmp_path: Path) -> None:
    """A routing rule naming a destination that does not exist is a configuration error."""
    config = _copy_config(tmp_path)
    text = config.read_text(encoding="utf-8").replace(
        'catch_all = "welzijn-voorbeeld"', 'catch_all = "nergens"'
    )
    config.write_text(text, encoding="utf-8")
    with pytest.raises(wor_bridge.ConfigError, match="unknown destinations"):
        wor_bridge.load_settings(config)


def test_translation_to_a_code_outside_the_local_codesystem_stops_loading(tmp_path: Path) -> None:
    """A code translation whose target code is not in the local CodeSystem is refused."""
    config = _copy_config(tmp_path)

    def change(d: Any) -> None:
        d["code_translations"][0]["target"]["code"] = "verveling"

    _edit_json(tmp_path / "mappings" / "destinations" / "wor-r4-default.json", change)
    with pytest.raises(wor_bridge.ConfigError, match="verveling"):
        wor_bridge.load_settings(config)


def test_unreadable_toml_is_a_configuration_error(tmp_path: Path) -> None:
    """Invalid TOML or a missing file raise ConfigError, not a parser exception."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[output\nsource_system = 1", encoding="utf-8")
    with pytest.raises(wor_bridge.ConfigError, match="TOML"):
        wor_bridge.load_settings(bad)
    with pytest.raises(wor_bridge.ConfigError, match="cannot read"):
        wor_bridge.load_settings(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("value", "loads"),
    [
        ('["https://example.nl/policy/wor"]', True),
        ('["not a uri"]', False),
        ('[" urn:x:y"]', False),
    ],
)
def test_permitting_policies_must_be_absolute_uris(tmp_path: Path, value: str, loads: bool) -> None:
    """gates.permitting_policies takes absolute URIs; anything else stops loading."""
    target = _copy_config(tmp_path)
    text = target.read_text(encoding="utf-8")
    target.write_text(text.replace("permitting_policies = []", f"permitting_policies = {value}"))
    if loads:
        settings = wor_bridge.load_settings(target)
        assert settings.gates.permitting_policies == ("https://example.nl/policy/wor",)
    else:
        with pytest.raises(wor_bridge.ConfigError, match="permitting_policies"):
            wor_bridge.load_settings(target)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'mapping = "wor-r4-ageband-bsn"',
            'mapping = "wor-r4-ageband-bsn"\ncreate = "put"',
            "fhir-r4 destination takes no create",
        ),
        ('gp_record = "gp-record"', 'gp_record = "welzijn-zorgdomein"', "must be a fhir-r4"),
        ('create = "conditional"', 'create = "twice"', "create"),
    ],
)
def test_delivery_guarantee_settings_are_checked(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    """create on fhir-r4, an unknown create, or a GP record not fhir-r4 stop the program."""
    config = _copy_config(tmp_path)
    text = config.read_text(encoding="utf-8")
    assert old in text
    config.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(wor_bridge.ConfigError, match=message):
        wor_bridge.load_settings(config)


def test_plain_create_is_stated_and_logged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """create = plain loads and is logged at start-up as an at-least-once destination."""
    config = _copy_config(tmp_path)
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace('create = "conditional"', 'create = "plain"'),
        encoding="utf-8",
    )
    settings = wor_bridge.load_settings(config)
    assert settings.destination("welzijn-zorgdomein").at_least_once
    assert "destination_at_least_once" in capsys.readouterr().out
