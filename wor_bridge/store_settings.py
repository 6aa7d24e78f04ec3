"""``[store]``: where the store lives and how its patient columns are encrypted at rest."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator


class StoreSettings(BaseModel):
    """The store: one SQLite file (``path``: relative to the working directory, or absolute), or
    a PostgreSQL database shared by several processes (``dsn`` from ``WOR_BRIDGE_STORE__DSN``,
    or ``dsn_file``: a file holding the libpq connection string, relative to the configuration
    file; exactly one of them with ``postgresql``, neither with ``sqlite``); and its encryption
    at rest (``adapters/sealing.py``; README, Encryption at rest).

    ``encryption`` must be stated: ``"aes-gcm"`` with its keys from ``key_file`` (relative to
    the configuration file) or the environment variable ``key_env``, or ``"off"`` (without
    either: a key beside ``"off"`` is refused). Unset, the service and the operator commands
    refuse to start (``ConfigError``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    path: str = "wor-bridge.sqlite"
    dsn: SecretStr | None = None
    """A libpq connection string (it may hold a password: never printed)."""
    dsn_file: str | None = None
    pool_size: int = Field(default=10, ge=1, le=1000)
    """PostgreSQL connections this process keeps at most."""
    encryption: Literal["aes-gcm", "off"] | None = None
    key_file: str | None = Field(default=None, min_length=1)
    """A file of ``ID:BASE64`` keys, the active one first (README, Encryption at rest)."""
    key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
    """The name of an environment variable holding the same ``ID:BASE64`` entries."""

    @model_validator(mode="after")
    def _one_dsn(self) -> StoreSettings:
        given = (self.dsn is not None) + (self.dsn_file is not None)
        if self.backend == "postgresql" and given != 1:
            raise ValueError(
                "backend postgresql needs exactly one of dsn (WOR_BRIDGE_STORE__DSN) and dsn_file"
            )
        if self.backend == "sqlite" and given:
            raise ValueError("dsn and dsn_file are for backend postgresql")
        if self.encryption == "off" and (self.key_file is not None or self.key_env is not None):
            raise ValueError(
                'encryption = "off" with key_file or key_env: either encrypt (encryption ='
                ' "aes-gcm") or remove the key setting; a key beside "off" is never guessed at'
            )
        return self
