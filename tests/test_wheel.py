"""The wheel works away from the repository (issue 13): built, installed into a fresh virtualenv
from ``requirements/base.lock`` with hashes plus the wheel alone, then ``demo``, ``map``,
``validate`` and ``init`` run from a temporary directory (``scripts/wheel_check.py``; CI runs it
as part of the README's test command)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_installs_and_runs_from_any_directory(tmp_path: Path) -> None:
    """The installed wheel finds its configuration, mappings and demo referrals as package data."""
    spec = importlib.util.spec_from_file_location(
        "wheel_check", REPO / "scripts" / "wheel_check.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.check(tmp_path)
