"""The STU3 intake fixture cases (``fixtures/stu3-intake``) and the values none may leak."""

from __future__ import annotations

from pathlib import Path
from typing import Final

from tests.cases import PATIENT_VALUES, REPO

STU3_FIXTURES: Final = REPO / "fixtures" / "stu3-intake"
R4_FIXTURES: Final = REPO / "fixtures" / "referral"
STU3_PATIENT_VALUES: Final = (*PATIENT_VALUES, "999990008", "Eenzaamheid", "TOESTEMMING-1")
"""The R4 fixtures' synthetic values plus those only the STU3 cases hold."""


def stu3_case(name: str) -> Path:
    """The folder of one STU3 intake case."""
    return STU3_FIXTURES / name


def stu3_input(name: str) -> bytes:
    """The STU3 input bytes of a case (``input.json`` or ``input.xml``)."""
    return next(stu3_case(name).glob("input.*")).read_bytes()


def stu3_case_names(prefix: str) -> list[str]:
    """STU3 intake case names starting with ``prefix``."""
    return sorted(p.name for p in STU3_FIXTURES.iterdir() if p.name.startswith(prefix))


def with_equivalent(names: list[str]) -> list[str]:
    """The cases that hold the R4 input whose content is equivalent (``equivalent.r4.json``)."""
    return [n for n in names if (stu3_case(n) / "equivalent.r4.json").exists()]
