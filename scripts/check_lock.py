"""Say whether the lock files still fit pyproject.toml (exit 0) or are stale (exit 1).

The locks (``requirements/base.lock``, ``requirements/test.lock``) pin every package with its
hashes; ``scripts/lock`` rewrites them. They are stale when a dependency that pyproject.toml
declares (the runtime list for both, plus the ``test`` extra for ``test.lock``) is missing from a
lock or pinned to a version outside its range, or when a pin carries no hash. Offline and
deterministic: it reads files only, so a new upstream release never makes CI fail.

Usage: ``python scripts/check_lock.py`` from the repository root.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s\\;]+)")


def read_lock(path: Path) -> tuple[dict[str, Version], list[str]]:
    """The pins of a pip-compile lock file, and the names of pins without a hash."""
    pins: dict[str, Version] = {}
    unhashed: list[str] = []
    current: str | None = None
    hashed = False
    for line in path.read_text(encoding="utf-8").splitlines():
        match = PIN.match(line)
        if match:
            if current is not None and not hashed:
                unhashed.append(current)
            current = canonicalize_name(match.group(1))
            pins[current] = Version(match.group(2))
            hashed = "--hash=" in line
        elif "--hash=sha256:" in line:
            hashed = True
    if current is not None and not hashed:
        unhashed.append(current)
    return pins, unhashed


def problems(lock: Path, requirements: list[str]) -> list[str]:
    """What makes ``lock`` stale against ``requirements`` (empty when it fits)."""
    if not lock.is_file():
        return [f"{lock.name}: missing"]
    pins, unhashed = read_lock(lock)
    found = [f"{lock.name}: {name} has no --hash" for name in unhashed]
    for text in requirements:
        req = Requirement(text)
        if req.marker is not None and not req.marker.evaluate():
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            found.append(f"{lock.name}: {req.name} is not pinned")
        elif not req.specifier.contains(pinned, prereleases=True):
            found.append(f"{lock.name}: {req.name}=={pinned} is outside {req.specifier}")
    return found


def main() -> int:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = list(project["dependencies"])
    test = runtime + list(project["optional-dependencies"]["test"])
    found = problems(ROOT / "requirements" / "base.lock", runtime)
    found += problems(ROOT / "requirements" / "test.lock", test)
    for line in found:
        print(f"stale lock: {line}", file=sys.stderr)
    if found:
        print("run scripts/lock to rewrite the lock files", file=sys.stderr)
        return 1
    print("lock files fit pyproject.toml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
