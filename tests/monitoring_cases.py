"""Shared by the monitoring tests: synthetic referrals with chosen reason codes, pushed through
the in-process service, and report clients. No patient data is printed anywhere."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from tests.cases import case_input
from tests.inprocess import FHIR_JSON, HIS, World, client_toml, write_config
from wor_bridge import bootstrap
from wor_bridge.config import load_app
from wor_bridge.service.app import create_app

REASON_SYSTEM: Final = "https://wor-bridge.nl/fhir/CodeSystem/referral-reason"
SEED: Final = (
    ("eenzaamheid", 52),
    ("psychische-klachten", 46),
    ("vastlopen", 37),
    ("chronische-psychische-aandoening", 28),
    ("chronische-ziekte", 26),
    ("ongezonde-leefstijl", 20),
)
"""The published example (DOMAIN.md section 6): reasons among n = 53."""
PRACTICE_KEY: Final = "test-practice-report-key"
MUNICIPALITY_KEY: Final = "test-municipality-report-key"
REPORT_CLIENTS: Final = client_toml(
    "praktijk-linde", PRACTICE_KEY, ["report:read"], "practice", "agb:01099990"
) + client_toml("gemeente-tiel", MUNICIPALITY_KEY, ["report:read"], "municipality", "Tiel")


def seed_reasons(n: int = 53) -> list[list[str]]:
    """Reason codes of referral ``i``: the first ``count`` referrals carry each reason."""
    return [[code for code, count in SEED if i < count] for i in range(n)]


def referral_body(number: int, reasons: list[str], district: str = "Utrecht") -> bytes:
    """The fixture referral with its own HIS number, these reason codes and this district."""
    data: dict[str, Any] = json.loads(case_input("accepted-contained"))
    data["identifier"][0]["value"] = f"MON-2026-{number:04d}"
    data["reasonCode"][0]["coding"] = [{"system": REASON_SYSTEM, "code": c} for c in reasons]
    for res in data["contained"]:
        if res["resourceType"] == "Patient":
            res["address"][0]["district"] = district
    return json.dumps(data).encode()


def empty_world(tmp_path: Path, extra: str = REPORT_CLIENTS) -> World:
    """The in-process service with no referral yet (report clients added)."""
    config = write_config(tmp_path, extra)
    text = config.read_text(encoding="utf-8").replace("burst = 20", "burst = 100000")
    config.write_text(text, encoding="utf-8")
    app = create_app(bootstrap.build(load_app(config)), start_dispatcher=False)
    return World(app, tmp_path / "s.sqlite")


def push(world: World, number: int, reasons: list[str], district: str = "Utrecht") -> str:
    """Push one referral as the GP system; its Task id."""
    answer = world.call(
        "POST",
        "/fhir/r4/ServiceRequest",
        HIS,
        content=referral_body(number, reasons, district),
        headers={"Content-Type": FHIR_JSON},
    )
    assert answer.status_code in (200, 201), answer.status_code
    return answer.headers["Location"].split("/_history/")[0].rsplit("/", 1)[-1]


def cells(report: dict[str, Any], figure: str, group: str = "totaal") -> dict[str, Any]:
    """The cells of one figure and group, by category (JSON report)."""
    found = next(f for f in report["figures"] if f["id"] == figure)
    return {c["category"]: c for c in found["cells"] if c["group"] == group}
