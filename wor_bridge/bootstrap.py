"""The composition root: the one place that builds concrete adapters and wires them."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from wor_bridge.adapters.clock import SystemClock
from wor_bridge.adapters.http import RequestsTransport
from wor_bridge.adapters.sqlite_directory import SqliteDirectoryReplica
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.config import AppConfig, load_app
from wor_bridge.core.outbox import RetryPolicy
from wor_bridge.errors import ConfigError
from wor_bridge.ports import Clock, DirectoryReplica, MonitoringReader, OutboxStore, Transport

MAX_RESOURCES = 8
"""Resources in one referral Bundle: the most PUTs one ``put`` delivery makes (feedback goes to
the GP record as one transaction)."""


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


def build(config: AppConfig) -> Components:
    """Wire the SQLite store, the requests transport and the system clock."""
    missing = [d.id for d in config.core.destinations if not d.endpoint and not d.directory]
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
    store_path = Path(config.store.path)
    if store_path.parent and not store_path.parent.exists():
        store_path.parent.mkdir(parents=True, exist_ok=True)
    delivery = config.delivery
    store = SqliteOutboxStore(store_path)
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
        directory=SqliteDirectoryReplica(store_path) if config.directory else None,
        monitoring=store,
    )


def load(path: Path | None = None) -> Components:
    """Load the configuration and build the components."""
    return build(load_app(path))
