"""Load and check the configuration (TOML) and the mapping files; fail at start-up, not at 3 a.m.

Layout (every path in the TOML is relative to the TOML file; ``config_sources`` applies the
environment, secret files and that rule)::

    config/wor-bridge.toml          settings, destinations, routing (the shipped example)
    mappings/destinations/*.json    one declarative mapping per destination kind
    mappings/codesystems/*.json     the project's local FHIR R4 CodeSystems

Without ``mappings_dir`` the shipped mappings are used (``wor_bridge.shipped``).

Every problem raises ``ConfigError`` naming the file and the location inside it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from wor_bridge import config_sources
from wor_bridge.config_files import describe, load_codesystem, load_mapping
from wor_bridge.core.account import ConsoleSettings
from wor_bridge.core.directory import DirectorySettings, check_destinations
from wor_bridge.core.retention import RetentionSettings
from wor_bridge.core.settings import DEFAULT_PATIENT_RULES, MappingFile, Settings
from wor_bridge.delivery_settings import DeliverySettings
from wor_bridge.errors import ConfigError
from wor_bridge.shipped import shipped
from wor_bridge.store_settings import StoreSettings
from wor_bridge.tenancy import tenancy_problem

_DEFAULT_TARGETS: Final = frozenset(r.target for r in DEFAULT_PATIENT_RULES)

log = structlog.get_logger("wor_bridge.config")


Scope = Literal[
    "referral:write",
    "task:read",
    "task:update",
    "feedback:write",
    "referral:pull",
    "report:read",
    "metrics:read",
    "admin",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServiceTls(_Model):
    """HTTPS for the service, optionally with client certificates (mutual TLS).

    Paths are relative to the TOML file. With ``client_ca_file`` set, a client certificate issued
    by that CA is asked for (required when ``require_client_cert``); its SHA-256 fingerprint maps it
    to the client whose ``cert_sha256`` it matches.
    """

    cert_file: str
    key_file: str
    client_ca_file: str | None = None
    require_client_cert: bool = True

    @model_validator(mode="after")
    def _ca_for_clients(self) -> ServiceTls:
        if self.require_client_cert and self.client_ca_file is None:
            raise ValueError(
                "service.tls: require_client_cert needs client_ca_file "
                "(or set require_client_cert = false for HTTPS without client certificates)"
            )
        return self


class ServiceSettings(_Model):
    """The HTTP service (``wor-bridge serve``)."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    tls: ServiceTls | None = None
    rate_per_s: float = Field(default=10.0, gt=0)
    burst: int = Field(default=20, ge=1)
    dispatcher: bool = True
    dispatcher_interval_s: float = Field(default=1.0, gt=0)
    dispatcher_batch: int = Field(default=20, ge=1, le=1000)
    max_validations: int = Field(default=8, ge=1, le=256)
    """Request bodies worked on (parsed, validated, applied) at once, in all (then 503)."""
    max_validations_per_client: int = Field(default=4, ge=1, le=256)
    """The same, per presented credential (or peer address without one; then 429)."""
    max_connections: int = Field(default=100, ge=1, le=100_000)
    """Open connections (and requests in progress) before new requests are answered 503."""
    header_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """A connection's request line and headers must arrive within this time."""
    body_timeout_s: float = Field(default=20.0, gt=0, le=600)
    """A request body must arrive within this time from its headers (else 408, connection
    closed); a body nobody reads (an early answer) must end within it too."""
    keep_alive_s: float = Field(default=5.0, gt=0, le=300)
    """An idle keep-alive connection is closed after this time."""
    max_header_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)
    """Request line and headers together (larger: 400 and the connection closed)."""
    min_free_disk_mb: int = Field(default=64, ge=0)
    """Not ready (intake 503) below this free space where the store writes (0: not checked)."""
    readiness_probe_s: float = Field(default=5.0, gt=0, le=300)
    """At most one write probe of the store per this many seconds (``/readyz``, intake)."""
    console: ConsoleSettings = ConsoleSettings()  # [service.console]: the browser console


class ClientSettings(_Model):
    """A caller of the service: its key (stored as SHA-256 hex, never in clear) and scopes.

    A notified-pull receiver (scope ``referral:pull``) authenticates at ``/oauth/token`` with its
    key as client secret, or with a private-key JWT checked against ``jwt_public_key_file`` (PEM,
    relative to the TOML file). ``cert_sha256`` binds the client to its TLS client certificate.
    """

    id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    key_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    jwt_public_key_file: str | None = None
    cert_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    scopes: tuple[Scope, ...]
    source_system: str | None = None
    on_behalf_of: str = ""
    destination: str | None = None
    """Set for a welfare-side client: the destination (organisation) it acts for."""
    practice: str | None = Field(default=None, pattern=r"^(agb|ura):[0-9]{1,20}$")
    """A practice's monitoring client (``report:read`` only): its own figures (``agb:<AGB>``)."""
    municipality: str | None = Field(default=None, min_length=1, max_length=80)
    """A municipality's monitoring client (``report:read`` only): its own figures."""


class WebhookSettings(_Model):
    """A welfare system without FHIR that posts signed JSON to ``/feedback/{id}``."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    secret: SecretStr
    destination: str
    mapping: str
    replay_window_s: float = Field(default=300.0, gt=0)


class Config(BaseSettings):
    """The whole TOML file, with ``config_sources`` applied (environment, secret files, paths)."""

    model_config = SettingsConfigDict(
        env_prefix="WOR_BRIDGE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    mappings_dir: str | None = None
    max_body_bytes: int = 1_048_576
    output: dict[str, Any] = Field(default_factory=dict)
    gates: dict[str, Any] = Field(default_factory=dict)
    feedback: dict[str, Any] = Field(default_factory=dict)
    pull: dict[str, Any] = Field(default_factory=dict)
    limits: dict[str, Any] = Field(default_factory=dict)
    destinations: list[dict[str, Any]] = Field(default_factory=list)
    routing: dict[str, Any] = Field(default_factory=dict)
    service: ServiceSettings = ServiceSettings()
    store: StoreSettings = StoreSettings()
    delivery: DeliverySettings = DeliverySettings()
    retention: RetentionSettings = RetentionSettings()
    clients: tuple[ClientSettings, ...] = ()
    webhooks: tuple[WebhookSettings, ...] = ()
    directory: dict[str, Any] = Field(default_factory=dict)
    monitoring: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the values given: ``config_sources`` has already applied the environment."""
        return (init_settings,)


@dataclass(frozen=True, slots=True)
class AppConfig:
    """The core settings plus the service, store, delivery and client settings."""

    core: Settings
    service: ServiceSettings
    store: StoreSettings
    delivery: DeliverySettings
    clients: tuple[ClientSettings, ...]
    path: Path
    webhooks: tuple[WebhookSettings, ...] = ()
    mappings_dir: Path = Path()
    directory: DirectorySettings | None = None
    """``[directory]``: the care-services directory replicated for routing (None: not used)."""
    retention: RetentionSettings = RetentionSettings()  # noqa: RUF009 - frozen: safe to share


def load_app(path: Path | None = None) -> AppConfig:
    """Load the TOML configuration with environment overrides, mappings and CodeSystems."""
    path = (path or default_config()).resolve()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    raw = config_sources.prepare(raw, path, frozenset(Config.model_fields))
    try:
        cfg = Config(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe(exc)}") from None
    mappings_dir = Path(cfg.mappings_dir) if cfg.mappings_dir else shipped("mappings").resolve()
    if not mappings_dir.is_dir():
        raise ConfigError(f"{path}: mappings_dir {mappings_dir} is not a directory")
    mappings: dict[str, MappingFile] = {}
    for file in sorted((mappings_dir / "destinations").glob("*.json")):
        mapping = load_mapping(file)
        if mapping.id in mappings:
            raise ConfigError(f"{file}: mapping id {mapping.id!r} defined twice")
        mappings[mapping.id] = mapping
    codes: dict[str, frozenset[str]] = {}
    for file in sorted((mappings_dir / "codesystems").glob("*.json")):
        url, found = load_codesystem(file)
        codes[url] = found
    core_raw = {
        "output": cfg.output,
        "gates": cfg.gates,
        "feedback": cfg.feedback,
        "pull": cfg.pull,
        "destinations": cfg.destinations,
        "routing": cfg.routing,
        "max_body_bytes": cfg.max_body_bytes,
        "monitoring": cfg.monitoring,
        "limits": cfg.limits,
    }
    try:
        settings = Settings.model_validate({**core_raw, "mappings": mappings, "codes": codes})
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe(exc)}") from None
    ids = [c.id for c in cfg.clients]
    if len(ids) != len(set(ids)):
        raise ConfigError(f"{path}: clients: every id must be unique")
    config_sources.check_unique_keys([(c.id, c.key_sha256) for c in cfg.clients], path)
    _check_clients_and_webhooks(cfg, settings, mappings_dir, path)
    directory = _directory(cfg, settings, path)
    _log_configuration_facts(mappings, settings)
    store = cfg.store.model_copy(update={"path": str(path.parent / cfg.store.path)})
    return AppConfig(
        settings,
        cfg.service,
        store,
        cfg.delivery,
        cfg.clients,
        path,
        cfg.webhooks,
        mappings_dir,
        directory,
        cfg.retention,
    )


def _directory(cfg: Config, settings: Settings, path: Path) -> DirectorySettings | None:
    """``[directory]`` checked, and the destinations that use it checked against it."""
    try:
        directory = DirectorySettings.model_validate(cfg.directory) if cfg.directory else None
        check_destinations(directory, settings.destinations)
    except ValidationError as exc:
        raise ConfigError(f"{path}: directory: {describe(exc)}") from None
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return directory


def _check_clients_and_webhooks(
    cfg: Config, settings: Settings, mappings_dir: Path, path: Path
) -> None:
    known = {d.id for d in settings.destinations}
    for client in cfg.clients:
        if client.destination is not None and client.destination not in known:
            raise ConfigError(f"{path}: client {client.id}: unknown destination")
        problem = tenancy_problem(client)
        if problem is not None:
            raise ConfigError(f"{path}: client {client.id}: {problem}")
    for hook in cfg.webhooks:
        if hook.destination not in known:
            raise ConfigError(f"{path}: webhook {hook.id}: unknown destination")
        if not (mappings_dir / "feedback" / f"{hook.mapping}.json").is_file():
            raise ConfigError(
                f"{path}: webhook {hook.id}: no mapping file feedback/{hook.mapping}.json"
            )


def _log_configuration_facts(mappings: dict[str, MappingFile], settings: Settings) -> None:
    for destination in settings.destinations:
        if destination.at_least_once:  # said in the configuration; the README names the risk
            log.warning(
                "destination_at_least_once", destination=destination.id, type=destination.type
            )
    for mapping in mappings.values():
        for rule in mapping.patient:
            if rule.target not in _DEFAULT_TARGETS:
                log.info(
                    "mapping_extra_field_enabled",
                    mapping=mapping.ref,
                    target=rule.target,
                    transform=rule.transform,
                )


def default_config() -> Path:
    """The shipped example configuration (what ``map``, ``validate`` and the library use
    without ``--config``; ``serve`` needs one)."""
    return shipped("config", "wor-bridge.toml")


def load(path: Path | None = None) -> Settings:
    """Load the core settings of the TOML configuration at ``path`` (default: the example)."""
    return load_app(path).core
