"""The composition root: the one place that builds concrete adapters and wires them."""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import psycopg
import structlog
from psycopg_pool import PoolTimeout

from wor_bridge.adapters import migrations
from wor_bridge.adapters.clock import SystemClock
from wor_bridge.adapters.http import RequestsTransport
from wor_bridge.adapters.postgres_schema import PostgresBackend
from wor_bridge.adapters.postgres_store import PostgresDirectoryReplica, PostgresOutboxStore
from wor_bridge.adapters.sealing import PLAIN, AesGcmSealer, Sealer, SealingError, parse_keys
from wor_bridge.adapters.sqlite_directory import SqliteDirectoryReplica
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.config import AppConfig, load_app
from wor_bridge.core.outbox import RetryPolicy
from wor_bridge.errors import ConfigError, OperationError
from wor_bridge.ports import (
    AccountStore,
    AuditReader,
    Clock,
    DirectoryReplica,
    MonitoringReader,
    OutboxStore,
    Transport,
)

log = structlog.get_logger("wor_bridge.store")

MAX_RESOURCES = 8
"""Resources in one referral Bundle: the most PUTs one ``put`` delivery makes (feedback goes to
the GP record as one transaction)."""


class NoStoreError(OperationError):
    """An operator command was pointed at a store that does not exist (it never creates one)."""


@dataclass(frozen=True, slots=True)
class Components:
    """Everything the service, the dispatcher and the CLI need."""

    config: AppConfig
    store: OutboxStore
    transport: Transport
    clock: Clock
    policy: RetryPolicy
    worker_id: str
    directory: DirectoryReplica | None = None
    """The care-services directory replica (with ``[directory]``; in the store's file)."""
    monitoring: MonitoringReader | None = None
    """The monitoring tables (in the store's file): what reports are computed from."""
    accounts: AccountStore | None = None
    """Console accounts and sessions (in the store's file; ``wor_bridge.console``)."""
    audit: AuditReader | None = None
    """The audit trail searched by the console (in the store's file)."""


def build(config: AppConfig, *, read_clear: bool = False, create: bool = True) -> Components:
    """Wire the store (SQLite or PostgreSQL), the requests transport and the system clock
    (``read_clear``: the store's sealer reads values in clear too, for ``store rotate-key``).

    With ``create`` false (the operator commands) a missing SQLite store raises ``NoStoreError``
    instead of being created: an empty new store would answer "nothing pending" for the wrong
    file.
    """
    missing = [
        d.id
        for d in config.core.destinations
        if not d.endpoint and not d.directory and d.type != "inbox"
    ]
    if missing:
        raise ConfigError(f"{config.path}: destinations without an endpoint: {missing}")
    for dest in config.core.destinations:
        requests = MAX_RESOURCES if dest.delivery == "put" else 1
        if dest.auth.type == "oauth2":
            requests = 2 * requests + 2  # a token fetch, and one refresh + retry after a 401
        worst_s = requests * (dest.connect_timeout_s + dest.read_timeout_s)
        if config.delivery.lease_s <= worst_s:
            raise ConfigError(
                f"{config.path}: delivery.lease_s must exceed the longest delivery to "
                f"{dest.id} ({worst_s:.0f} s), or a second worker could send it again"
            )
    clock = SystemClock()
    delivery = config.delivery
    store, directory = _store(config, sealer_for(config, read_clear=read_clear), create=create)
    return Components(
        config=config,
        store=store,
        transport=RequestsTransport(clock),
        clock=clock,
        policy=RetryPolicy(
            base_s=delivery.base_s,
            cap_s=delivery.cap_s,
            max_attempts=delivery.max_attempts,
            max_age_s=delivery.max_age_s,
        ),
        worker_id=f"{socket.gethostname()}:{os.getpid()}",
        directory=directory,
        monitoring=store,
        accounts=store,
        audit=store,
    )


def _store(
    config: AppConfig, sealer: Sealer, *, create: bool = True
) -> tuple[SqliteOutboxStore, DirectoryReplica | None]:
    """The store ``[store]`` names (PostgreSQL: its schema brought up to date), and the directory
    replica in it when ``[directory]`` is set. Raises ``ConfigError`` for an unreadable
    ``dsn_file`` or an unreachable database (the error's type only: a DSN may hold a password);
    ``NoStoreError`` for a missing SQLite file, or a PostgreSQL database without the store's
    schema, when ``create`` is false."""
    settings = config.store
    if settings.backend == "postgresql":
        if settings.dsn is not None:
            dsn = settings.dsn.get_secret_value()
        else:
            dsn_file = config.path.parent / str(settings.dsn_file)
            try:
                dsn = dsn_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                why = type(exc).__name__
                raise ConfigError(f"{config.path}: store.dsn_file: cannot read ({why})") from None
        try:
            pg = _postgres_store(dsn, settings.pool_size, sealer, create=create)
        except (psycopg.Error, PoolTimeout) as exc:
            why = type(exc).__name__
            raise ConfigError(f"{config.path}: store: PostgreSQL unusable ({why})") from None
        return pg, PostgresDirectoryReplica(pg) if config.directory else None
    store_path = Path(settings.path)
    if not create and not store_path.is_file():
        raise NoStoreError(f"no store at {store_path} (store.path of {config.path})")
    if store_path.parent and not store_path.parent.exists():
        store_path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteOutboxStore(store_path, sealer=sealer), (
        SqliteDirectoryReplica(store_path) if config.directory else None
    )


def _postgres_store(
    dsn: str, pool_size: int, sealer: Sealer, *, create: bool
) -> PostgresOutboxStore:
    """The PostgreSQL store, its schema brought up to date; with ``create`` false a database
    without the store's schema (no ``schema_version``: a wrong ``dbname``, or ``serve`` never
    ran) raises ``NoStoreError`` and is left as it was, as a missing SQLite file does."""
    pg = PostgresOutboxStore(dsn, pool_size=pool_size, sealer=sealer, migrate=create)
    if create:
        return pg
    try:
        found = PostgresBackend(pg.db).read_version() > 0
        if found:
            migrations.upgrade_postgres(pg.db)
            pg.check_keys()
    except BaseException:
        pg.close()
        raise
    if not found:
        pg.close()
        raise NoStoreError(
            "no store in the PostgreSQL database of store.dsn (no schema_version table; only"
            " serve creates one)"
        )
    return pg


def sealer_for(config: AppConfig, *, read_clear: bool = False) -> Sealer:
    """The store's sealer from ``[store]``: ``PLAIN`` for ``encryption = "off"``, AES-GCM with
    the keys of ``key_file`` (relative to the configuration file) or ``key_env``.

    Raises ``ConfigError`` when ``encryption`` is not stated, when ``aes-gcm`` has no key source
    or two, and when the keys are missing, unreadable or malformed (never showing a key). A key
    file that others may read (or the group write) is used, named in a warning with its mode.
    """
    store, where = config.store, f"{config.path}: store"
    if store.encryption is None:
        raise ConfigError(
            f'{where}: set encryption = "aes-gcm" (with key_file or key_env) to encrypt patient'
            ' data at rest, or encryption = "off" to store it in clear (demo, tests)'
        )
    if store.encryption == "off":
        return PLAIN
    if (store.key_file is None) == (store.key_env is None):
        raise ConfigError(f'{where}: encryption = "aes-gcm" needs key_file or key_env (one)')
    if store.key_file is not None:
        key_path = config.path.parent / store.key_file
        try:
            text = key_path.read_text(encoding="utf-8")
            mode = stat.S_IMODE(key_path.stat().st_mode)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: key_file {key_path}: {type(exc).__name__}") from None
        source = f"key_file {key_path}"
        if mode & 0o027:  # others may read it, or the group change it (README: chmod 600)
            log.warning("store_key_file_not_private", file=key_path.name, mode=f"{mode:04o}")
    else:
        text = os.environ.get(cast(str, store.key_env), "")
        source = f"environment variable {store.key_env}"
    try:
        return AesGcmSealer(parse_keys(text), read_clear=read_clear)
    except SealingError as exc:
        raise ConfigError(f"{where}: {source}: {exc}") from None


def load(path: Path | None = None, *, read_clear: bool = False, create: bool = True) -> Components:
    """Load the configuration and build the components (``read_clear``, ``create``: see
    ``build``)."""
    return build(load_app(path), read_clear=read_clear, create=create)
