"""``[store]``: where the store lives and how its patient columns are encrypted at rest."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class StoreSettings(BaseModel):
    """The SQLite store (a path relative to the working directory, or absolute) and its
    encryption at rest (``adapters/sealing.py``; README, Encryption at rest).

    ``encryption`` must be stated: ``"aes-gcm"`` with its keys from ``key_file`` (relative to
    the configuration file) or the environment variable ``key_env``, or ``"off"``. Unset, the
    service and the operator commands refuse to start (``ConfigError``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = "wor-bridge.sqlite"
    encryption: Literal["aes-gcm", "off"] | None = None
    key_file: str | None = Field(default=None, min_length=1)
    """A file of ``ID:BASE64`` keys, the active one first (README, Encryption at rest)."""
    key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    """The name of an environment variable holding the same ``ID:BASE64`` entries."""
