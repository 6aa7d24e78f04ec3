"""Mutual TLS: a real uvicorn server with ``ClientCertH11Protocol``, and the TLS helpers.

Every server runs in a background thread on a free loopback port with a throwaway PKI
(``tests.pki``); the application answers with the client certificate fingerprint it sees.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tests.pki import Leaf, issue, make_ca
from wor_bridge.config import ServiceSettings, ServiceTls
from wor_bridge.errors import ConfigError
from wor_bridge.service.tls import (
    ClientCertH11Protocol,
    cert_sha256,
    client_cert_sha256,
    run_kwargs,
    uvicorn_ssl_kwargs,
)

TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Pki:
    """The files of the test PKI and the client certificates."""

    dir: Path
    ca_file: Path
    client: Leaf
    stranger: Leaf

    def tls(self, *, require_client_cert: bool = True) -> ServiceTls:
        """``[service.tls]`` with paths relative to ``dir``."""
        return ServiceTls(
            cert_file="server.pem",
            key_file="server.key",
            client_ca_file="test-ca.pem",
            require_client_cert=require_client_cert,
        )

    def cert(self, leaf: Leaf) -> tuple[str, str]:
        """``requests``' ``cert=`` for ``leaf`` (written by the fixture)."""
        return str(self.dir / f"{leaf.name}.pem"), str(self.dir / f"{leaf.name}.key")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with a server and a client certificate, and a client certificate of another CA."""
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca("test")
    other = make_ca("other")
    issue(ca, "server", server=True).write(directory)
    client = issue(ca, "client", server=False)
    stranger = issue(other, "stranger", server=False)
    client.write(directory)
    stranger.write(directory)
    return Pki(directory, ca.write(directory), client, stranger)


def _app(seen: list[str | None], ports: list[int] | None = None) -> Starlette:
    async def whoami(request: Request) -> JSONResponse:
        fingerprint = client_cert_sha256(request.scope)
        seen.append(fingerprint)
        if ports is not None and request.client is not None:
            ports.append(request.client.port)
        return JSONResponse({"sha256": fingerprint})

    return Starlette(routes=[Route("/whoami", whoami)])


@contextmanager
def serving(
    ssl_kwargs: dict[str, Any], seen: list[str | None], ports: list[int] | None = None
) -> Iterator[str]:
    """Run uvicorn with ``ssl_kwargs`` in a thread; yield the ``/whoami`` URL.

    The application appends each fingerprint it sees to ``seen`` (and client ports to ``ports``).
    """
    config = uvicorn.Config(
        _app(seen, ports),
        host="127.0.0.1",
        port=0,
        http=ClientCertH11Protocol,
        lifespan="off",
        access_log=False,
        log_level="critical",
        **ssl_kwargs,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-tls", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + TIMEOUT_S
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped during start-up"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        scheme = "https" if ssl_kwargs else "http"
        yield f"{scheme}://127.0.0.1:{port}/whoami"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT_S)
    assert not thread.is_alive()


def _fetch(session: requests.Session, url: str, pki: Pki, cert: tuple[str, str] | None) -> Any:
    """GET ``url`` and return the JSON body; the Response does not outlive the call.

    verify= goes on each request (REQUESTS_CA_BUNDLE in the environment overrides
    ``Session.verify``). With urllib3 >= 2.8 ``Session.close()`` only drops its pools, which close
    their sockets when garbage-collected: a Response kept alive would keep the connection open,
    and uvicorn's TLS shutdown would then wait 30 s for a close_notify.
    """
    with session.get(url, verify=str(pki.ca_file), cert=cert, timeout=TIMEOUT_S) as response:
        response.raise_for_status()
        return response.json()


def _get(url: str, pki: Pki, cert: tuple[str, str] | None) -> Any:
    """GET ``url`` on a new connection."""
    with requests.Session() as session:
        return _fetch(session, url, pki, cert)


def test_client_cert_of_configured_ca_reaches_app_as_fingerprint(pki: Pki) -> None:
    """A client certificate issued by the configured CA shows up in the scope as its SHA-256."""
    seen: list[str | None] = []
    with serving(uvicorn_ssl_kwargs(pki.tls(), pki.dir), seen) as url:
        body = _get(url, pki, pki.cert(pki.client))
    assert body == {"sha256": pki.client.sha256}
    assert seen == [pki.client.sha256]


def test_keep_alive_requests_all_carry_the_fingerprint(pki: Pki) -> None:
    """Two requests on one keep-alive connection both see the client certificate fingerprint."""
    seen: list[str | None] = []
    ports: list[int] = []
    kwargs = uvicorn_ssl_kwargs(pki.tls(), pki.dir)
    with serving(kwargs, seen, ports) as url, requests.Session() as session:
        first = _fetch(session, url, pki, pki.cert(pki.client))
        second = _fetch(session, url, pki, pki.cert(pki.client))
    assert first == second == {"sha256": pki.client.sha256}
    assert seen == [pki.client.sha256, pki.client.sha256]
    assert len(ports) == 2
    assert ports[0] == ports[1]  # one connection


def test_client_cert_of_another_ca_is_refused(pki: Pki) -> None:
    """A client certificate from a CA other than client_ca_file is refused; the app never runs."""
    seen: list[str | None] = []
    kwargs = uvicorn_ssl_kwargs(pki.tls(), pki.dir)
    # requests.exceptions.SSLError is a ConnectionError; which one depends on when the alert lands.
    with serving(kwargs, seen) as url, pytest.raises(requests.exceptions.ConnectionError):
        _get(url, pki, pki.cert(pki.stranger))
    assert seen == []


def test_missing_client_cert_is_refused_when_required(pki: Pki) -> None:
    """Without a client certificate the handshake is refused when require_client_cert is on."""
    seen: list[str | None] = []
    kwargs = uvicorn_ssl_kwargs(pki.tls(), pki.dir)
    with serving(kwargs, seen) as url, pytest.raises(requests.exceptions.ConnectionError):
        _get(url, pki, None)
    assert seen == []


def test_optional_client_cert_absent_gives_none(pki: Pki) -> None:
    """With require_client_cert off, a client without a certificate gets in; the app sees None."""
    seen: list[str | None] = []
    kwargs = uvicorn_ssl_kwargs(pki.tls(require_client_cert=False), pki.dir)
    with serving(kwargs, seen) as url:
        assert _get(url, pki, None) == {"sha256": None}
        assert _get(url, pki, pki.cert(pki.client)) == {"sha256": pki.client.sha256}
    assert seen == [None, pki.client.sha256]


def test_plain_http_connection_gives_none(pki: Pki) -> None:
    """Without TLS the protocol still runs the app, which sees None for the fingerprint."""
    seen: list[str | None] = []
    with serving({}, seen) as url:
        assert _get(url, pki, None) == {"sha256": None}
    assert seen == [None]


@pytest.mark.parametrize("setting", ["cert_file", "key_file", "client_ca_file"])
def test_missing_file_is_a_config_error_naming_the_setting(pki: Pki, setting: str) -> None:
    """A [service.tls] file that does not exist is a ConfigError naming the setting."""
    tls = pki.tls().model_copy(update={setting: "missing.pem"})
    with pytest.raises(ConfigError, match=rf"service\.tls\.{setting}"):
        uvicorn_ssl_kwargs(tls, pki.dir)


def test_ssl_kwargs_resolve_relative_paths_and_keep_absolute_ones(pki: Pki) -> None:
    """Relative paths are resolved against the base folder; absolute ones are kept."""
    tls = pki.tls().model_copy(update={"client_ca_file": str(pki.ca_file)})
    kwargs = uvicorn_ssl_kwargs(tls, pki.dir)
    assert kwargs["ssl_certfile"] == str(pki.dir / "server.pem")
    assert kwargs["ssl_keyfile"] == str(pki.dir / "server.key")
    assert kwargs["ssl_ca_certs"] == str(pki.ca_file)


def test_run_kwargs_add_protocol_only_with_tls(pki: Pki) -> None:
    """run_kwargs is empty without TLS and adds ClientCertH11Protocol with it."""
    assert run_kwargs(ServiceSettings(), pki.dir) == {}
    no_ca = ServiceTls(cert_file="server.pem", key_file="server.key", require_client_cert=False)
    kwargs = run_kwargs(ServiceSettings(tls=no_ca), pki.dir)
    assert kwargs["http"] is ClientCertH11Protocol
    assert "ssl_ca_certs" not in kwargs
    assert "ssl_cert_reqs" not in kwargs


def test_client_certificates_required_without_a_ca_is_refused() -> None:
    """require_client_cert without client_ca_file is a configuration error, not silent HTTPS."""
    with pytest.raises(ValueError, match="client_ca_file"):
        ServiceTls(cert_file="server.pem", key_file="server.key")


def test_cert_sha256_of_pem_and_der_agree(pki: Pki) -> None:
    """cert_sha256 gives the same fingerprint for the PEM and DER forms: Leaf.sha256."""
    assert cert_sha256(pki.client.pem) == cert_sha256(pki.client.der) == pki.client.sha256
    assert cert_sha256((pki.dir / "client.pem").read_bytes()) == pki.client.sha256
