"""The lock files fit pyproject.toml; the staleness check catches what makes them stale."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _check_lock() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_lock", ROOT / "scripts" / "check_lock.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_lock"] = module
    spec.loader.exec_module(module)
    return module


def test_the_committed_locks_fit_pyproject() -> None:
    """Every dependency pyproject.toml declares is pinned with hashes in range in both locks."""
    assert _check_lock().main() == 0


def test_a_missing_pin_an_out_of_range_pin_and_a_pin_without_hash_are_stale(
    tmp_path: Path,
) -> None:
    """The check names a dependency absent from the lock, one outside its range, and no hash."""
    lock = tmp_path / "x.lock"
    lock.write_text(
        "pydantic==1.10.0 \\\n    --hash=sha256:" + "a" * 64 + "\n"
        "lxml==5.3.0\n"
        "    # via wor-bridge\n",
        encoding="utf-8",
    )
    found = _check_lock().problems(lock, ["pydantic>=2.7,<3", "lxml>=5.2", "requests>=2.31"])
    assert found == [
        "x.lock: lxml has no --hash",
        "x.lock: pydantic==1.10.0 is outside <3,>=2.7",
        "x.lock: requests is not pinned",
    ]


def test_a_fitting_lock_has_no_problems(tmp_path: Path) -> None:
    """A lock with every requirement pinned in range and hashed is not stale."""
    lock = tmp_path / "ok.lock"
    lock.write_text(
        "lxml==5.3.0 \\\n    --hash=sha256:" + "b" * 64 + "\n    # via wor-bridge\n",
        encoding="utf-8",
    )
    assert _check_lock().problems(lock, ["lxml>=5.2"]) == []


def test_the_readme_commands_and_ci_install_from_the_locks() -> None:
    """Both README commands and .ci/run install pinned, hash-checked dependencies first."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    demo = "--require-hashes -r requirements/base.lock && .venv/bin/pip install -q --no-deps -e ."
    tests = "--require-hashes -r requirements/test.lock && .venv/bin/pip install -q --no-deps -e ."
    assert demo in readme
    assert tests in readme
    assert "--require-hashes -r requirements/test.lock" in ci
    assert "scripts/check_lock.py" in ci
