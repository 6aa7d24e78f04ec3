"""A Twiin TA Notified Pull *receiving system* on loopback: its token endpoint and its FHIR Task
endpoint, as the bridge (the sending system) meets them. Used by the demo and the end-to-end tests.

- ``POST /token`` (VIPLive "2. Token request verzender"; TA §3.2): verifies the sender's client
  assertion (RFC 7523 §2.2: ``typ`` JWT, the configured algorithm, ``iss``/``sub``, ``aud`` = this
  endpoint, fresh, ``jti`` used once) and its authorization assertion (``assertion`` with the
  jwt-bearer grant, or ``authorization_assertion``), both with the sender's public key; over mutual
  TLS it also requires the sender's client certificate (TA §3.1). The verified authorization
  claims are kept (``grants``) for the tests to inspect; the answer is a random bearer token.
- ``POST [base]/Task`` (Twiin-01) and ``PUT [base]/Task?identifier=`` (Twiin-02): only with a
  token this endpoint issued; stored as the ``SimulatedFhirServer`` stores resources.

With an ``ssl.SSLContext`` it serves HTTPS (mutual TLS when the context requires client
certificates). Nothing is printed or logged.
"""

from __future__ import annotations

import hashlib
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import jwt

from wor_bridge.demo.fhir_server import SimulatedFhirServer, _Handler

CLIENT_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
NOTIFICATION_CODE: Final = ("http://fhir.nl/fhir/NamingSystem/TaskCode", "pull-notification")


class TaReceivingSystem:
    """The receiver's token endpoint and Task endpoint (see the module docstring)."""

    def __init__(
        self,
        *,
        sender_public_key: bytes,
        sender_client_id: str,
        algorithm: str = "PS256",
        tls: ssl.SSLContext | None = None,
        sender_cert_sha256: str | None = None,
        on_write: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.server = SimulatedFhirServer(on_write=on_write)
        self._key = sender_public_key
        self._client_id = sender_client_id
        self._algorithm = algorithm
        self._cert = sender_cert_sha256
        self._tls = tls
        self._lock = threading.Lock()
        self._tokens: set[str] = set()
        self._jtis: set[str] = set()
        self.grants: list[dict[str, Any]] = []
        """The verified authorization assertion claims, in order of the token requests."""
        self.refusals: list[str] = []
        """Why requests were refused (short phrases, no values)."""
        receiving = self

        class Handler(_Handler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                if urlsplit(self.path).path == "/token":
                    receiving._token(self)
                elif receiving._authorised(self):
                    super().do_POST()

            def do_PUT(self) -> None:  # noqa: N802 - the http.server name
                if receiving._authorised(self):
                    super().do_PUT()

        self.server._server.RequestHandlerClass = Handler
        if tls is not None:
            self.server._server.socket = tls.wrap_socket(
                self.server._server.socket, server_side=True
            )

    @property
    def origin(self) -> str:
        """``http(s)://127.0.0.1:<port>``."""
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{self.server.base_url.split('://', 1)[1].split('/', 1)[0]}"

    @property
    def base_url(self) -> str:
        """The Task endpoint's FHIR base (the destination ``endpoint``)."""
        return f"{self.origin}/fhir"

    @property
    def token_url(self) -> str:
        """The token endpoint (the destination's ``auth.token_url``)."""
        return f"{self.origin}/token"

    def start(self) -> TaReceivingSystem:
        """Serve in a background thread."""
        self.server.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.server.stop()

    def notifications(self) -> list[dict[str, Any]]:
        """The Notification Tasks received (created or cancelled), in no particular order."""
        return [
            t
            for t in self.server.resources("Task")
            if any(
                (c.get("system"), c.get("code")) == NOTIFICATION_CODE
                for c in (t.get("code") or {}).get("coding") or []
            )
            or t.get("status") == "cancelled"
        ]

    def _refuse(self, handler: _Handler, status: int, why: str) -> None:
        with self._lock:
            self.refusals.append(why)
        handler.close_connection = True
        issue = {"severity": "error", "code": "security"}
        handler._reply(status, {"resourceType": "OperationOutcome", "issue": [issue]})

    def _authorised(self, handler: _Handler) -> bool:
        """A write with a token of this endpoint; else 401 (the body is read and dropped)."""
        header = handler.headers.get("Authorization") or ""
        token = header[7:] if header[:7].lower() == "bearer " else ""
        with self._lock:
            known = token in self._tokens
        if known:
            return True
        handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        self._refuse(handler, 401, "no valid access token")
        return False

    def _peer_ok(self, handler: _Handler) -> bool:
        if self._cert is None:
            return True
        get = getattr(handler.connection, "getpeercert", None)
        der = get(binary_form=True) if get else None
        return der is not None and hashlib.sha256(der).hexdigest() == self._cert

    def _verify(self, assertion: str, *, client: bool) -> dict[str, Any]:
        """The claims of an assertion signed by the sender for this endpoint (PyJWTError)."""
        header = jwt.get_unverified_header(assertion)
        if header.get("typ") != "JWT" or not header.get("kid"):
            raise jwt.InvalidTokenError("typ JWT and kid are required")
        claims: dict[str, Any] = jwt.decode(
            assertion,
            self._key,
            algorithms=[self._algorithm],
            audience=self.token_url,
            options={"require": ["iss", "aud", "exp", "iat", "jti"]},
        )
        if client and claims.get("sub") != self._client_id:
            raise jwt.InvalidTokenError("the client assertion's sub is not the client")
        if claims["exp"] - claims["iat"] > 300 or claims["iat"] > time.time() + 30:
            raise jwt.InvalidTokenError("not fresh")
        with self._lock:
            if claims["jti"] in self._jtis:
                raise jwt.InvalidTokenError("jti used before")
            self._jtis.add(str(claims["jti"]))
        return claims

    def _token(self, handler: _Handler) -> None:
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        form = dict(parse_qsl(raw.decode("ascii", errors="replace")))
        if not self._peer_ok(handler):
            self._refuse(handler, 401, "not the sender's client certificate")
            return
        if form.get("client_assertion_type") != CLIENT_ASSERTION_TYPE:
            self._refuse(handler, 400, "client_assertion_type")
            return
        if form.get("grant_type") == JWT_BEARER_GRANT:
            authorization = form.get("assertion", "")
        else:
            authorization = form.get("authorization_assertion", "")
        try:
            self._verify(form.get("client_assertion", ""), client=True)
            claims = self._verify(authorization, client=False)
        except jwt.PyJWTError:
            self._refuse(handler, 401, "an assertion is not valid")
            return
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens.add(token)
            self.grants.append(claims)
        handler._reply(200, {"access_token": token, "token_type": "Bearer", "expires_in": 300})
