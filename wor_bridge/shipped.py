"""The files the program ships with (package data): the example configuration, the starter
configuration of ``wor-bridge init``, the mapping files and local CodeSystems, the demo's referrals.

They live under ``wor_bridge/shipped/`` (in the repository: links to ``config/``, ``mappings/`` and
the demo's ``fixtures/referral/*`` cases; in a wheel: the files themselves), so an installed
package finds them from any working directory. ``shipped`` is the one lookup.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from wor_bridge.errors import ConfigError


def shipped(*parts: str) -> Path:
    """The path of the shipped file or folder ``parts`` (e.g. ``"config", "wor-bridge.toml"``).

    Raises ``ConfigError`` naming the path when the installation lacks it (a broken install).
    """
    path = Path(str(resources.files("wor_bridge").joinpath("shipped", *parts)))
    if not path.exists():
        raise ConfigError(f"shipped file {'/'.join(parts)} is missing from the installation")
    return path
