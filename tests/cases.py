"""Fixture cases and the synthetic patient values no output may leak."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "fixtures" / "referral"

# Values of the synthetic fixture patients that must never appear in logs, errors or outcomes.
PATIENT_VALUES = (
    "999990007",
    "999990019",
    "999990020",
    "Jansen",
    "Pieter",
    "Berg",
    "Zoë",
    "Voorbeeldstraat",
    "Ĳsselkade",
    "06-00000001",
    "1952-03-14",
    "3511 AA",
    "client@example.org",
    "Voelt zich eenzaam",
    "Oudestraat",
    "4001 AB",
    "Hendrika",
    "Wit-van den Akker",
    "+31600000042",
    "riek.voorbeeld@example.org",
    "1948-05-17",
    "Weinig sociale contacten",
)


def case_input(name: str) -> bytes:
    """The input bytes of a fixture case."""
    folder = FIXTURES / name
    return next(folder.glob("input.*")).read_bytes()


def case_names(prefix: str) -> list[str]:
    """Fixture case names starting with ``prefix``."""
    return sorted(p.name for p in FIXTURES.iterdir() if p.name.startswith(prefix))
