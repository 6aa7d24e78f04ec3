"""Build the wheel, install it into a fresh virtualenv as an operator would, and run it from a
directory that is not the repository: ``demo``, ``map``, ``validate`` and ``init``.

The virtualenv gets the pinned dependencies with hashes (``requirements/base.lock``) and then the
wheel alone (``--no-deps``); every command runs with a temporary working directory, so the
example configuration, the mappings and the demo's referrals must come from the package data
(``wor_bridge/shipped``). Exit 0 when everything worked; otherwise the failing step and its
exit code (no output of the program is printed: it may hold fixture patient data).

Usage (CI runs it; ``tests/test_wheel.py`` too)::

    python scripts/wheel_check.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
INPUT = REPO / "fixtures" / "referral" / "accepted-contained" / "input.json"
SHIPPED = (
    "wor_bridge/shipped/config/wor-bridge.toml",
    "wor_bridge/shipped/config/starter.toml",
    "wor_bridge/shipped/mappings/destinations/wor-r4-default.json",
    "wor_bridge/shipped/mappings/codesystems/wor-programme.json",
    "wor_bridge/shipped/mappings/feedback/welzijn-json.json",
    "wor_bridge/shipped/referrals/accepted-contained/input.json",
)
TIMEOUT_S = 300


class WheelCheckError(Exception):
    """A step of the check failed; the message names it."""


def _run(step: str, argv: list[str], cwd: Path, stdin: bytes = b"") -> bytes:
    proc = subprocess.run(  # noqa: S603 - argv is built here from fixed parts and temp paths
        argv, cwd=cwd, input=stdin, capture_output=True, timeout=TIMEOUT_S, check=False
    )
    if proc.returncode != 0 or b"Traceback" in proc.stderr:
        raise WheelCheckError(f"{step}: exit {proc.returncode}")
    return proc.stdout


def build_wheel(work: Path) -> Path:
    """``pip wheel --no-deps`` of the repository into ``work/dist``; the wheel's path."""
    dist = work / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    _run("build the wheel", [*pip, "wheel", "--no-deps", "-w", str(dist), str(REPO)], work)
    (wheel,) = dist.glob("wor_bridge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = [name for name in SHIPPED if name not in names]
    if missing:
        raise WheelCheckError(f"the wheel lacks {missing}")
    if any("expected" in name for name in names):
        raise WheelCheckError("the wheel ships expected outputs of the fixtures")
    return wheel


def install(wheel: Path, work: Path) -> Path:
    """A fresh virtualenv with ``base.lock`` (hashes) and the wheel; its ``wor-bridge``."""
    venv = work / "venv"
    _run("create the virtualenv", [sys.executable, "-m", "venv", str(venv)], work)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "--quiet"]
    lock = str(REPO / "requirements" / "base.lock")
    _run("install base.lock", [*pip, "install", "--require-hashes", "-r", lock], work)
    _run("install the wheel", [*pip, "install", "--no-deps", str(wheel)], work)
    return venv / "bin" / "wor-bridge"


def exercise(program: Path, work: Path) -> None:
    """Run the installed program from ``work/elsewhere``: demo, map, validate, init."""
    cwd = work / "elsewhere"
    cwd.mkdir()
    data = INPUT.read_bytes()
    _run("wor-bridge demo", [str(program), "demo"], cwd)
    bundle = json.loads(_run("wor-bridge map", [str(program), "map", "-"], cwd, data))
    if bundle.get("type") != "transaction":
        raise WheelCheckError("wor-bridge map: not a transaction Bundle")
    _run("wor-bridge validate", [str(program), "validate", "-"], cwd, data)
    _run("wor-bridge init", [str(program), "init", "conf"], cwd)
    config = str(cwd / "conf" / "wor-bridge.toml")
    _run(
        "map with the init configuration", [str(program), "map", "-", "--config", config], cwd, data
    )


def check(work: Path) -> None:
    """The whole check in ``work`` (an empty folder); raises ``WheelCheckError``."""
    exercise(install(build_wheel(work), work), work)


def main() -> int:
    """Run the check in a temporary folder; 0 when it passed."""
    with tempfile.TemporaryDirectory(prefix="wor-bridge-wheel-") as tmp:
        try:
            check(Path(tmp))
        except WheelCheckError as err:
            print(f"wheel check failed: {err}", file=sys.stderr)
            return 1
    print("wheel check: built, installed from base.lock with hashes, demo/map/validate/init ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
