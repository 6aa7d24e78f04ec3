"""HTTPS and mutual TLS for ``wor-bridge serve``.

- ``uvicorn_ssl_kwargs`` turns ``[service.tls]`` into uvicorn's ``ssl_*`` arguments (paths resolved
  against the TOML file's folder; a missing file is a ``ConfigError`` naming the setting);
- ``ClientCertH11Protocol`` is uvicorn's h11 protocol that, once per connection (after the TLS
  handshake), records the SHA-256 fingerprint of the client certificate and puts it in every
  HTTP scope under ``CLIENT_CERT_SCOPE_KEY`` (``None`` without a client certificate or TLS);
- ``client_cert_sha256`` reads it back in a route; ``cert_sha256`` computes the same fingerprint
  from a certificate file, for the configuration (``[[clients]] cert_sha256``);
- ``run_kwargs`` is what ``uvicorn.run`` needs on top of host and port.

Only plain HTTP/1.1 requests carry the fingerprint: a WebSocket upgrade is handed by uvicorn to a
new protocol object running the unwrapped application (the service has no WebSocket routes).
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from uvicorn.protocols.http.h11_impl import H11Protocol

from wor_bridge.config import ServiceSettings, ServiceTls
from wor_bridge.errors import ConfigError

if TYPE_CHECKING:
    from uvicorn._types import (
        ASGI3Application,
        ASGIReceiveCallable,
        ASGISendCallable,
        Scope,
    )

CLIENT_CERT_SCOPE_KEY = "wor_bridge.client_cert_sha256"


def _existing(base: Path, value: str, setting: str) -> str:
    path = Path(value)
    if not path.is_absolute():
        path = base / path
    if not path.is_file():
        raise ConfigError(f"service.tls.{setting}: no such file {path}")
    return str(path)


def uvicorn_ssl_kwargs(tls: ServiceTls, base: Path) -> dict[str, Any]:
    """The ``ssl_*`` keyword arguments of ``uvicorn.run``/``uvicorn.Config`` for ``tls``.

    Relative paths are resolved against ``base`` (the folder of the TOML file). Without
    ``client_ca_file`` no client certificate is asked for.
    """
    kwargs: dict[str, Any] = {
        "ssl_certfile": _existing(base, tls.cert_file, "cert_file"),
        "ssl_keyfile": _existing(base, tls.key_file, "key_file"),
    }
    if tls.client_ca_file is not None:
        kwargs["ssl_ca_certs"] = _existing(base, tls.client_ca_file, "client_ca_file")
        kwargs["ssl_cert_reqs"] = (
            ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
        )
    return kwargs


def _peer_sha256(transport: asyncio.BaseTransport) -> str | None:
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    der = ssl_object.getpeercert(binary_form=True)
    return hashlib.sha256(der).hexdigest() if der else None


def _with_fingerprint(app: ASGI3Application, fingerprint: str | None) -> ASGI3Application:
    async def wrapped(scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
        if scope["type"] == "http":
            # A copy: the scope dict belongs to uvicorn's request cycle.
            extended: dict[str, Any] = {**scope, CLIENT_CERT_SCOPE_KEY: fingerprint}
            scope = cast("Scope", extended)
        await app(scope, receive, send)

    return wrapped


class ClientCertH11Protocol(H11Protocol):
    """uvicorn's h11 HTTP protocol that adds the client certificate fingerprint to HTTP scopes.

    asyncio calls ``connection_made`` once the TLS handshake is complete, so the peer certificate
    (already verified against ``ssl_ca_certs``) is known there; it cannot change on the connection,
    so every request on a keep-alive connection sees the same value.
    """

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        """Start the connection as uvicorn does, then bind the fingerprint to its requests."""
        super().connection_made(transport)
        self.app = _with_fingerprint(self.app, _peer_sha256(transport))


def client_cert_sha256(scope: Mapping[str, Any]) -> str | None:
    """The client certificate fingerprint put in ``scope`` by ``ClientCertH11Protocol``, if any."""
    value = scope.get(CLIENT_CERT_SCOPE_KEY)
    return value if isinstance(value, str) else None


def cert_sha256(pem_or_der: bytes) -> str:
    """Lower-case hex SHA-256 of a certificate's DER encoding, from a PEM or DER file's bytes.

    Raises ``ValueError`` when the bytes are not a certificate.
    """
    if pem_or_der.lstrip().startswith(b"-----BEGIN"):
        cert = x509.load_pem_x509_certificate(pem_or_der)
    else:
        cert = x509.load_der_x509_certificate(pem_or_der)
    return cert.fingerprint(hashes.SHA256()).hex()


def run_kwargs(service: ServiceSettings, base: Path) -> dict[str, Any]:
    """Extra ``uvicorn.run`` keyword arguments for ``service``: none without TLS."""
    if service.tls is None:
        return {}
    return {**uvicorn_ssl_kwargs(service.tls, base), "http": ClientCertH11Protocol}
