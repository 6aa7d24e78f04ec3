"""Inputs nobody on this project wrote: the shared FHIR R4 and SDOHCC example corpora.

The bridge must either map an input or refuse it cleanly (a valid OperationOutcome, every issue an
error with a code, diagnostics and a location, and no value from the input's Patient in the
diagnostics). Anything else (a crash, an invalid outcome, a leak) fails.

The corpora live beside the repository in ``../shared/corpora`` (CI clones the repo with
``../shared`` next to it). When that directory is missing these tests fail; they never skip.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

import wor_bridge
from wor_bridge.core.fhir import round_trip, to_xml

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
R4 = CORPORA / "fhir-r4-examples"
SDOHCC = CORPORA / "sdohcc-examples"
MISSING = f"../shared/corpora is required beside the repository (looked for {CORPORA})"
R4_SERVICE_REQUESTS = 20  # the corpus README: "ServiceRequest 20"
MIN_PRIVATE_CHARS = 4


def _files(*patterns: tuple[Path, str]) -> list[Any]:
    """Corpus files as pytest params (id = file name); one failing sentinel when corpora missing."""
    if not CORPORA.is_dir():
        return [pytest.param(None, id="corpora-missing")]
    found = [path for folder, pattern in patterns for path in sorted(folder.glob(pattern))]
    return [pytest.param(path, id=path.name) for path in found]


def _need(path: Path | None) -> Path:
    """The corpus file, or a test failure (never a skip) when the corpora are missing."""
    if path is None:
        pytest.fail(MISSING)
    return path


SERVICE_REQUESTS = _files((R4, "ServiceRequest-*.json"), (SDOHCC, "ServiceRequest-*.json"))
OTHER_RESOURCES = _files(
    (R4, "Bundle-*.json"),
    (R4, "Task-*.json"),
    (R4, "Patient-*.json"),
    (R4, "Consent-*.json"),
    (SDOHCC, "Task-*.json"),
    (SDOHCC, "Patient-*.json"),
    (SDOHCC, "Consent-*.json"),
)


@cache
def _settings() -> wor_bridge.Settings:
    return wor_bridge.load_settings()


def _patients(node: object) -> Iterator[dict[str, Any]]:
    """Every resource with resourceType Patient anywhere in ``node`` (root, contained, entries)."""
    if isinstance(node, dict):
        if node.get("resourceType") == "Patient":
            yield node
        for value in node.values():
            yield from _patients(value)
    elif isinstance(node, list):
        for value in node:
            yield from _patients(value)


def _strings(node: object) -> Iterator[str]:
    """Every string leaf under ``node``, except the structural ``resourceType`` name."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            if key != "resourceType":
                yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def _patient_values(resource: dict[str, Any]) -> set[str]:
    """String values of at least four characters from the input's Patient resources."""
    return {
        value
        for patient in _patients(resource)
        for value in _strings(patient)
        if len(value.strip()) >= MIN_PRIVATE_CHARS
    }


def _leaked(values: set[str], text: str) -> list[str]:
    """The values that occur in ``text`` as a whole token (so gender "other" != "another")."""
    return [
        value
        for value in values
        if re.search(rf"(?<![0-9A-Za-z]){re.escape(value.strip())}(?![0-9A-Za-z])", text)
    ]


def _outcome(data: bytes, content_type: str, resource: dict[str, Any]) -> str:
    """Translate; assert mapped output round-trips and a refusal is clean. Returns the result kind.

    Any exception other than RefusedError propagates and fails the calling test.
    """
    try:
        result = wor_bridge.translate(data, content_type, _settings())
    except wor_bridge.RefusedError as err:
        _assert_clean_refusal(err, resource)
        return "refused"
    assert result.bundle["resourceType"] == "Bundle"
    assert result.bundle["type"] == "transaction"
    assert round_trip(result.bundle)["resourceType"] == "Bundle"
    return "mapped"


def _assert_clean_refusal(err: wor_bridge.RefusedError, resource: dict[str, Any]) -> None:
    assert err.issues, "a refusal carries at least one issue"
    outcome = wor_bridge.operation_outcome(err.issues)
    assert round_trip(outcome) == outcome, "the OperationOutcome must be valid FHIR R4"
    for issue in outcome["issue"]:
        assert issue["severity"] == "error"
        assert issue["code"]
        assert issue["diagnostics"].strip()
        where = issue.get("expression") or issue.get("location")
        assert where, "every issue names an expression or a location"
        assert all(isinstance(w, str) and w for w in where)
    private = _patient_values(resource)
    for issue in err.issues:
        leaked = _leaked(private, issue.diagnostics)
        # Report where, never the values themselves (they are patient data).
        assert not leaked, f"{issue.expression}: diagnostics repeat {len(leaked)} Patient value(s)"


def test_corpora_directory_present() -> None:
    """The shared corpora directory exists beside the repository (missing corpora fail the run)."""
    assert CORPORA.is_dir(), MISSING
    assert R4.is_dir(), MISSING
    assert SDOHCC.is_dir(), MISSING


def test_corpus_has_the_twenty_r4_service_requests() -> None:
    """The R4 corpus holds the 20 ServiceRequest examples these tests rely on."""
    if not CORPORA.is_dir():
        pytest.fail(MISSING)
    assert len(list(R4.glob("ServiceRequest-*.json"))) == R4_SERVICE_REQUESTS


@pytest.mark.parametrize("path", SERVICE_REQUESTS)
def test_service_request_json_mapped_or_cleanly_refused(path: Path | None) -> None:
    """A corpus ServiceRequest (JSON) is mapped to a valid Bundle or cleanly refused, no crash."""
    path = _need(path)
    data = path.read_bytes()
    _outcome(data, "application/fhir+json", json.loads(data))


def test_every_corpus_service_request_is_refused() -> None:
    """Every corpus ServiceRequest is refused: none has Z68, the WoR marker and consent."""
    if not CORPORA.is_dir():
        pytest.fail(MISSING)
    paths = [p.values[0] for p in SERVICE_REQUESTS]
    kinds = []
    for path in paths:
        data = path.read_bytes()
        kinds.append(_outcome(data, "application/fhir+json", json.loads(data)))
    # US/official examples are not Dutch Welzijn op Recept referrals, so none may be forwarded.
    assert len(paths) > R4_SERVICE_REQUESTS
    assert kinds.count("refused") == len(paths)


@pytest.mark.parametrize("path", OTHER_RESOURCES)
def test_bundle_and_other_resources_mapped_or_cleanly_refused(path: Path | None) -> None:
    """A corpus Bundle, Task, Patient or Consent is mapped or refused cleanly, never crashes."""
    path = _need(path)
    data = path.read_bytes()
    _outcome(data, "application/fhir+json", json.loads(data))


@pytest.mark.parametrize("path", SERVICE_REQUESTS)
def test_service_request_xml_mapped_or_cleanly_refused(path: Path | None) -> None:
    """A corpus ServiceRequest sent as FHIR XML is mapped or cleanly refused, never crashes."""
    path = _need(path)
    resource = json.loads(path.read_bytes())
    try:
        xml = to_xml(resource)
    except Exception as exc:
        pytest.skip(f"to_xml cannot serialise {path.name} ({type(exc).__name__})")
    assert xml.lstrip().startswith(b"<")
    _outcome(xml, "application/fhir+xml", resource)


def test_patient_value_helper_finds_contained_and_entry_values() -> None:
    """The privacy helper collects Patient strings from contained resources and Bundle entries."""
    bundle = {
        "resourceType": "Bundle",
        "entry": [
            {"resource": {"resourceType": "Patient", "name": [{"family": "Entryname"}]}},
            {
                "resource": {
                    "resourceType": "ServiceRequest",
                    "note": [{"text": "Not patient data"}],
                    "contained": [{"resourceType": "Patient", "telecom": [{"value": "0612"}]}],
                }
            },
        ],
    }
    values = _patient_values(bundle)
    assert values == {"Entryname", "0612"}
    assert _leaked(values, "must not say Entryname") == ["Entryname"]
    assert _leaked({"other"}, "got another Bundle type") == []
