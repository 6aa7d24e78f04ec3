"""RequestsTransport against real HTTP(S) servers on loopback (pytest-httpserver)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.http import MAX_BODY_BYTES, RequestsTransport
from wor_bridge.core.delivery import HttpRequest
from wor_bridge.core.settings import ClientTls, Destination, DestinationAuth, IdentifierSetting
from wor_bridge.errors import TransportError

START = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
SECRET = "s3cr3t-client-secret"
BUNDLE = b'{"resourceType":"Bundle","type":"transaction"}'


@pytest.fixture
def clock() -> FixedClock:
    """A clock that moves only when a test says so."""
    return FixedClock(START)


@pytest.fixture
def transport(clock: FixedClock) -> Iterator[RequestsTransport]:
    """A transport on the fixed clock, closed afterwards."""
    transport = RequestsTransport(clock)
    yield transport
    transport.close()


def destination(endpoint: str, auth: DestinationAuth | None = None) -> Destination:
    """A welfare destination at ``endpoint`` with short timeouts."""
    return Destination(
        id="w",
        name="W",
        identifier=IdentifierSetting(system="http://fhir.nl/fhir/NamingSystem/kvk", value="1"),
        endpoint=endpoint,
        mapping="wor-r4-default",
        auth=auth or DestinationAuth(),
        connect_timeout_s=2.0,
        read_timeout_s=5.0,
    )


def oauth2(httpserver: HTTPServer, scope: str | None = "wor.write") -> Destination:
    """A destination on ``httpserver`` that uses OAuth2 client credentials from ``/token``."""
    auth = DestinationAuth(
        type="oauth2",
        token_url=httpserver.url_for("/token"),
        client_id="bridge",
        client_secret=SecretStr(SECRET),
        scope=scope,
    )
    return destination(httpserver.url_for("/fhir"), auth)


def post(url: str) -> HttpRequest:
    """A FHIR transaction POST to ``url``."""
    return HttpRequest("POST", url, BUNDLE, (("Content-Type", "application/fhir+json"),))


class TokenIssuer:
    """A token endpoint handing out ``token-1``, ``token-2``... and recording the forms it got."""

    def __init__(self, expires_in: int = 3600) -> None:
        self.expires_in = expires_in
        self.forms: list[dict[str, str]] = []
        self.basic: list[tuple[str | None, str | None]] = []

    def __call__(self, request: Request) -> Response:
        """Issue the next token."""
        self.forms.append(dict(request.form))
        creds = request.authorization
        self.basic.append((creds.username, creds.password) if creds else (None, None))
        body = {
            "access_token": f"token-{len(self.forms)}",
            "token_type": "Bearer",
            "expires_in": self.expires_in,
        }
        return Response(json.dumps(body), 200, content_type="application/json")


def bearer_seen(httpserver: HTTPServer, path: str = "/fhir") -> list[str | None]:
    """The Authorization headers the server received on ``path``, in order."""
    return [r.headers.get("Authorization") for r, _ in httpserver.log if r.path == path]


def test_post_delivers_method_path_body_and_headers(
    httpserver: HTTPServer, transport: RequestsTransport
) -> None:
    """A POST arrives as sent, and the status, lower-cased headers and body come back."""
    httpserver.expect_oneshot_request(
        "/fhir", method="POST", data=BUNDLE, headers={"Content-Type": "application/fhir+json"}
    ).respond_with_data('{"resourceType":"Bundle"}', status=200, headers={"X-Request-Id": "abc"})
    response = transport.send(
        post(httpserver.url_for("/fhir")), destination(httpserver.url_for("/fhir"))
    )
    httpserver.check()
    assert response.status == 200
    assert response.headers["x-request-id"] == "abc"
    assert all(name == name.lower() for name in response.headers)
    assert response.body == b'{"resourceType":"Bundle"}'
    assert bearer_seen(httpserver) == [None]


def test_body_read_is_capped(httpserver: HTTPServer, transport: RequestsTransport) -> None:
    """A response body larger than 1 MiB is cut at 1 MiB."""
    httpserver.expect_request("/fhir").respond_with_data(b"x" * (MAX_BODY_BYTES + 4096), 500)
    response = transport.send(
        post(httpserver.url_for("/fhir")), destination(httpserver.url_for("/fhir"))
    )
    assert response.status == 500
    assert len(response.body) == MAX_BODY_BYTES


def test_bearer_token_is_sent(httpserver: HTTPServer, transport: RequestsTransport) -> None:
    """A bearer destination gets ``Authorization: Bearer <token>``."""
    httpserver.expect_request("/fhir").respond_with_data("", 201)
    auth = DestinationAuth(type="bearer", token=SecretStr("t0ken"))
    response = transport.send(
        post(httpserver.url_for("/fhir")), destination(httpserver.url_for("/fhir"), auth)
    )
    assert response.status == 201
    assert bearer_seen(httpserver) == ["Bearer t0ken"]


def test_oauth2_token_fetched_once_and_reused(
    httpserver: HTTPServer, transport: RequestsTransport
) -> None:
    """Two requests share one client credentials token, fetched with HTTP Basic and the scope."""
    issuer = TokenIssuer()
    httpserver.expect_request("/token", method="POST").respond_with_handler(issuer)
    httpserver.expect_request("/fhir").respond_with_data("", 200)
    dest = oauth2(httpserver)
    for _ in range(2):
        assert transport.send(post(httpserver.url_for("/fhir")), dest).status == 200
    assert issuer.forms == [{"grant_type": "client_credentials", "scope": "wor.write"}]
    assert issuer.basic == [("bridge", SECRET)]
    assert bearer_seen(httpserver) == ["Bearer token-1", "Bearer token-1"]


def test_oauth2_token_refreshed_after_expiry(
    httpserver: HTTPServer, transport: RequestsTransport, clock: FixedClock
) -> None:
    """A token is reused until 30 s before ``expires_in``, then a new one is fetched."""
    issuer = TokenIssuer(expires_in=300)
    httpserver.expect_request("/token").respond_with_handler(issuer)
    httpserver.expect_request("/fhir").respond_with_data("", 200)
    dest = oauth2(httpserver, scope=None)
    transport.send(post(httpserver.url_for("/fhir")), dest)
    clock.advance(269)
    transport.send(post(httpserver.url_for("/fhir")), dest)
    clock.advance(1)
    transport.send(post(httpserver.url_for("/fhir")), dest)
    assert issuer.forms == [{"grant_type": "client_credentials"}] * 2
    assert bearer_seen(httpserver) == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]


def test_oauth2_401_refreshes_and_retries_once(
    httpserver: HTTPServer, transport: RequestsTransport
) -> None:
    """A 401 on a cached token drops it, fetches one new token and retries exactly once."""
    issuer = TokenIssuer()
    httpserver.expect_request("/token").respond_with_handler(issuer)
    httpserver.expect_oneshot_request("/fhir").respond_with_data("", 200)
    httpserver.expect_oneshot_request("/fhir").respond_with_data("", 401)
    httpserver.expect_request("/fhir").respond_with_data("", 201)
    dest = oauth2(httpserver)
    assert transport.send(post(httpserver.url_for("/fhir")), dest).status == 200
    assert transport.send(post(httpserver.url_for("/fhir")), dest).status == 201
    httpserver.check()
    assert len(issuer.forms) == 2
    assert bearer_seen(httpserver) == ["Bearer token-1", "Bearer token-1", "Bearer token-2"]


def test_oauth2_401_with_fresh_token_is_returned(
    httpserver: HTTPServer, transport: RequestsTransport
) -> None:
    """A 401 on a token fetched for this very request is returned, not retried."""
    issuer = TokenIssuer()
    httpserver.expect_request("/token").respond_with_handler(issuer)
    httpserver.expect_request("/fhir").respond_with_data("", 401)
    response = transport.send(post(httpserver.url_for("/fhir")), oauth2(httpserver))
    assert response.status == 401
    assert len(issuer.forms) == 1
    assert len(bearer_seen(httpserver)) == 1


def test_oauth2_token_endpoint_failure_is_auth_error_without_secret(
    httpserver: HTTPServer, transport: RequestsTransport
) -> None:
    """A 400 from the token endpoint raises kind ``auth``; the message holds no secret."""
    httpserver.expect_request("/token").respond_with_json({"error": "invalid_client"}, 400)
    with pytest.raises(TransportError) as caught:
        transport.send(post(httpserver.url_for("/fhir")), oauth2(httpserver))
    assert caught.value.kind == "auth"
    assert SECRET not in str(caught.value)
    assert bearer_seen(httpserver) == []


def test_oauth2_token_response_without_access_token_is_auth_error(
    httpserver: HTTPServer, transport: RequestsTransport
) -> None:
    """A 200 from the token endpoint without an ``access_token`` raises kind ``auth``."""
    httpserver.expect_request("/token").respond_with_json({"token_type": "Bearer"})
    with pytest.raises(TransportError) as caught:
        transport.send(post(httpserver.url_for("/fhir")), oauth2(httpserver))
    assert caught.value.kind == "auth"


def test_read_timeout_is_timeout_error(
    httpserver: HTTPServer, transport: RequestsTransport
) -> None:
    """A server slower than ``read_timeout_s`` raises kind ``timeout``."""
    release = threading.Event()

    def slow(_: Request) -> Response:
        release.wait(1.0)
        return Response("", 200)

    httpserver.expect_request("/fhir").respond_with_handler(slow)
    dest = destination(httpserver.url_for("/fhir")).model_copy(update={"read_timeout_s": 0.2})
    try:
        with pytest.raises(TransportError) as caught:
            transport.send(post(httpserver.url_for("/fhir") + "?token=secret"), dest)
    finally:
        release.set()  # free the single-threaded server, and let it finish before the next test
        deadline = time.monotonic() + 5
        while not httpserver.log and time.monotonic() < deadline:
            time.sleep(0.01)
    assert caught.value.kind == "timeout"
    assert "secret" not in str(caught.value)


def test_connection_refused_is_connection_error(transport: RequestsTransport) -> None:
    """Nothing listening on the port raises kind ``connection``."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/fhir?patient=secret"
    with pytest.raises(TransportError) as caught:
        transport.send(post(url), destination(url))
    assert caught.value.kind == "connection"
    assert "secret" not in str(caught.value)
    assert str(port) not in str(caught.value)


def test_redirect_is_returned_not_followed(
    httpserver: HTTPServer, transport: RequestsTransport
) -> None:
    """A 302 comes back as a 302; the Location is never requested."""
    httpserver.expect_request("/fhir").respond_with_data(
        "", 302, headers={"Location": httpserver.url_for("/elsewhere")}
    )
    httpserver.expect_request("/elsewhere").respond_with_data("", 200)
    response = transport.send(
        post(httpserver.url_for("/fhir")), destination(httpserver.url_for("/fhir"))
    )
    assert response.status == 302
    assert response.headers["location"].endswith("/elsewhere")
    assert "/elsewhere" not in [r.path for r, _ in httpserver.log]


@dataclass(frozen=True)
class Pki:
    """PEM files of a throwaway CA, a server certificate for 127.0.0.1 and client certificates."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path
    stranger_key: Path


def _issue(
    tmp: Path,
    name: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    server: bool = False,
    ca: bool = False,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, Path, Path]:
    """A certificate for ``name`` signed by ``issuer`` (self-signed when None), written as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
        .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usages = dict.fromkeys(
            (
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "encipher_only",
                "decipher_only",
                "digital_signature",
            ),
            False,
        )
        builder = builder.add_extension(
            x509.KeyUsage(key_cert_sign=True, crl_sign=True, **usages), critical=True
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    if server:
        san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_path, key_path = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key, cert_path, key_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA with a server and a client certificate, and a client cert from another CA."""
    tmp_path = tmp_path_factory.mktemp("pki")
    ca_cert, ca_key, ca_path, _ = _issue(tmp_path, "ca", None, ca=True)
    _, _, server_cert, server_key = _issue(tmp_path, "server", (ca_cert, ca_key), server=True)
    _, _, client_cert, client_key = _issue(tmp_path, "client", (ca_cert, ca_key))
    other = _issue(tmp_path, "other-ca", None, ca=True)
    _, _, stranger_cert, stranger_key = _issue(tmp_path, "stranger", (other[0], other[1]))
    return Pki(
        ca_path, server_cert, server_key, client_cert, client_key, stranger_cert, stranger_key
    )


@pytest.fixture(scope="module")
def mtls_running(pki: Pki) -> Iterator[HTTPServer]:
    """An HTTPS server on 127.0.0.1 that requires a client certificate issued by the CA."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(pki.ca)
    server = HTTPServer(host="127.0.0.1", port=0, ssl_context=ctx)
    server.start()
    server.expect_request("/fhir").respond_with_data("", 200)
    yield server
    server.clear()
    server.stop()


@pytest.fixture
def mtls_server(mtls_running: HTTPServer) -> HTTPServer:
    """The mTLS server with an empty request log."""
    mtls_running.clear_log()
    return mtls_running


def test_mtls_with_client_certificate_succeeds(
    mtls_server: HTTPServer, pki: Pki, transport: RequestsTransport
) -> None:
    """With the client certificate and the CA configured, the mTLS server answers 200."""
    url = mtls_server.url_for("/fhir")
    tls = ClientTls(
        cert_file=str(pki.client_cert), key_file=str(pki.client_key), ca_file=str(pki.ca)
    )
    response = transport.send(post(url), destination(url).model_copy(update={"tls": tls}))
    assert response.status == 200


def test_mtls_without_client_certificate_fails(
    mtls_server: HTTPServer, transport: RequestsTransport
) -> None:
    """Without TLS settings the handshake fails (the server's private CA is not trusted)."""
    url = mtls_server.url_for("/fhir")
    with pytest.raises(TransportError) as caught:
        transport.send(post(url), destination(url))
    # The client refuses the server certificate during its own handshake: always an SSLError.
    assert caught.value.kind == "tls"
    assert mtls_server.log == []


def test_mtls_with_untrusted_client_certificate_fails(
    mtls_server: HTTPServer, pki: Pki, transport: RequestsTransport
) -> None:
    """A client certificate the server's CA did not issue gets no response."""
    url = mtls_server.url_for("/fhir")
    tls = ClientTls(
        cert_file=str(pki.stranger_cert), key_file=str(pki.stranger_key), ca_file=str(pki.ca)
    )
    with pytest.raises(TransportError) as caught:
        transport.send(post(url), destination(url).model_copy(update={"tls": tls}))
    # Under TLS 1.3 the client finishes its handshake before the server checks the client
    # certificate; the server's rejection then arrives either as a TLS alert (SSLError -> "tls")
    # or as a closed/reset connection (-> "connection"), depending on timing.
    assert caught.value.kind in {"tls", "connection"}
    assert mtls_server.log == []


def test_missing_certificate_file_is_tls_error(
    mtls_server: HTTPServer, tmp_path: Path, transport: RequestsTransport
) -> None:
    """A configured client certificate file that does not exist raises kind ``tls``."""
    url = mtls_server.url_for("/fhir")
    tls = ClientTls(cert_file=str(tmp_path / "nope.crt"), key_file=str(tmp_path / "nope.key"))
    with pytest.raises(TransportError) as caught:
        transport.send(post(url), destination(url).model_copy(update={"tls": tls}))
    assert caught.value.kind == "tls"
    assert "nope" not in str(caught.value)
