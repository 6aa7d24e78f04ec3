"""``ports.Transport`` over ``requests``: one session per destination, its auth and mutual TLS.

Every request has explicit connect and read timeouts and never follows a redirect (a redirect
must not carry patient data elsewhere). Bearer tokens come from the settings; OAuth2 client
credentials tokens (and Twiin tokens, one per grant: ``adapters.twiin_token``) are fetched,
cached until shortly before they expire, and refreshed once when the destination answers 401.
Exceptions become ``TransportError`` whose message is the exception class name only: never a
URL, a token or a secret.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlencode

import requests
from requests.auth import AuthBase, HTTPBasicAuth
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ReadTimeoutError

from wor_bridge.adapters import twiin_token
from wor_bridge.core.delivery import HttpRequest, HttpResponse
from wor_bridge.core.settings import Destination
from wor_bridge.errors import TransportError
from wor_bridge.ports import Clock

MAX_BODY_BYTES: Final = 1_048_576
"""The most of a response body read: status, headers and an OperationOutcome are enough."""

TOKEN_MARGIN_S: Final = 30.0
"""An OAuth2 token is refreshed this long before the token endpoint says it expires."""

DEFAULT_TOKEN_LIFETIME_S: Final = 300.0
"""The lifetime assumed for a token whose response carries no usable ``expires_in``."""

MAX_CACHED_GRANTS: Final = 1024
"""Twiin tokens kept per destination (one per grant, i.e. per referral) before the cache empties."""

_CHUNK_BYTES: Final = 65_536


@dataclass(eq=False)
class _Slot:
    """A destination's session and its cached OAuth2 token (guarded by ``lock``)."""

    session: requests.Session
    lock: threading.Lock = field(default_factory=threading.Lock)
    token: str | None = None
    expires_at: dt.datetime | None = None
    grants: dict[tuple[tuple[str, str], ...], tuple[str, dt.datetime]] = field(default_factory=dict)
    """Twiin tokens by the grant claims they were issued for."""


class RequestsTransport:
    """``ports.Transport`` over ``requests``, with one lazily created session per destination."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}

    def send(self, request: HttpRequest, destination: Destination) -> HttpResponse:
        """The destination's response; raises ``TransportError`` when there is none."""
        slot = self._slot(destination)
        headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(dict(request.headers))
        auth = destination.auth
        if auth.type == "bearer" and auth.token is not None:
            headers["Authorization"] = f"Bearer {auth.token.get_secret_value()}"
        if auth.type not in ("oauth2", "twiin"):
            return _perform(slot.session, request, headers, destination)
        token, fresh = self._token(slot, destination, request.grant)
        headers["Authorization"] = f"Bearer {token}"
        response = _perform(slot.session, request, headers, destination)
        if response.status != 401 or fresh:
            return response
        self._drop_token(slot, token)  # revoked or expired early: one new token, one retry
        token, _ = self._token(slot, destination, request.grant)
        headers["Authorization"] = f"Bearer {token}"
        return _perform(slot.session, request, headers, destination)

    def close(self) -> None:
        """Close every session and forget cached tokens."""
        with self._lock:
            slots, self._slots = list(self._slots.values()), {}
        for slot in slots:
            slot.session.close()

    def _slot(self, destination: Destination) -> _Slot:
        with self._lock:
            slot = self._slots.get(destination.id)
            if slot is None:
                slot = self._slots[destination.id] = _Slot(_new_session(destination))
            return slot

    def _token(
        self, slot: _Slot, destination: Destination, grant: tuple[tuple[str, str], ...]
    ) -> tuple[str, bool]:
        """A valid access token, and whether it was fetched just now."""
        if destination.auth.type == "twiin":
            return self._twiin_token(slot, destination, grant)
        with slot.lock:
            now = self._clock.now()
            if slot.token is not None and slot.expires_at is not None and now < slot.expires_at:
                return slot.token, False
            token, lifetime_s = _fetch_token(slot.session, destination)
            slot.token = token
            slot.expires_at = now + dt.timedelta(seconds=lifetime_s - TOKEN_MARGIN_S)
            return token, True

    def _twiin_token(
        self, slot: _Slot, destination: Destination, grant: tuple[tuple[str, str], ...]
    ) -> tuple[str, bool]:
        """A Twiin token for this grant (TA NP §3.2), cached like an OAuth2 token."""
        with slot.lock:
            now = self._clock.now()
            cached = slot.grants.get(grant)
            if cached is not None and now < cached[1]:
                return cached[0], False
            request = twiin_token.token_request(destination.auth, grant, now.timestamp())
            token, lifetime_s = _token_answer(
                _perform(slot.session, request, _headers(request), destination)
            )
            if len(slot.grants) >= MAX_CACHED_GRANTS:  # bounded: one grant per referral
                slot.grants.clear()
            slot.grants[grant] = (token, now + dt.timedelta(seconds=lifetime_s - TOKEN_MARGIN_S))
            return token, True

    def _drop_token(self, slot: _Slot, token: str) -> None:
        with slot.lock:
            if slot.token == token:  # another thread may have refreshed it already
                slot.token = slot.expires_at = None
            for grant, (cached, _) in list(slot.grants.items()):
                if cached == token:
                    del slot.grants[grant]


def _new_session(destination: Destination) -> requests.Session:
    session = requests.Session()
    # Settings only: no proxies, .netrc credentials or REQUESTS_CA_BUNDLE from the environment.
    session.trust_env = False
    if destination.tls is not None:
        session.cert = (destination.tls.cert_file, destination.tls.key_file)
        session.verify = destination.tls.ca_file or True
    return session


def _fetch_token(session: requests.Session, destination: Destination) -> tuple[str, float]:
    """An OAuth2 client credentials token and its lifetime in seconds."""
    auth = destination.auth
    if not (auth.token_url and auth.client_id and auth.client_secret):
        raise TransportError("auth", "oauth2 needs token_url, client_id and client_secret")
    form = {"grant_type": "client_credentials"}
    if auth.scope:
        form["scope"] = auth.scope
    request = HttpRequest("POST", auth.token_url, urlencode(form).encode("ascii"))
    headers: CaseInsensitiveDict[str] = CaseInsensitiveDict(
        {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    )
    basic = HTTPBasicAuth(auth.client_id, auth.client_secret.get_secret_value())
    return _token_answer(_perform(session, request, headers, destination, basic))


def _headers(request: HttpRequest) -> CaseInsensitiveDict[str]:
    return CaseInsensitiveDict(dict(request.headers))


def _token_answer(response: HttpResponse) -> tuple[str, float]:
    """The access token of a token endpoint's answer and its lifetime in seconds."""
    if not 200 <= response.status < 300:
        raise TransportError("auth", f"token endpoint answered HTTP {response.status}")
    try:
        payload = json.loads(response.body)
    except ValueError:
        payload = None
    token = payload.get("access_token") if isinstance(payload, dict) else None
    if not isinstance(token, str) or not token:
        raise TransportError("auth", "token endpoint answered without an access_token")
    return token, _lifetime_s(payload)


def _lifetime_s(payload: Mapping[str, object]) -> float:
    expires_in = payload.get("expires_in")
    if isinstance(expires_in, bool) or not isinstance(expires_in, int | float | str):
        return DEFAULT_TOKEN_LIFETIME_S
    try:
        return float(expires_in)  # some servers send it as a string
    except ValueError:
        return DEFAULT_TOKEN_LIFETIME_S


def _perform(
    session: requests.Session,
    request: HttpRequest,
    headers: CaseInsensitiveDict[str],
    destination: Destination,
    auth: AuthBase | None = None,
) -> HttpResponse:
    """Send once, read at most ``MAX_BODY_BYTES``, and map every failure to ``TransportError``."""
    try:
        with session.request(
            request.method,
            request.url,
            data=request.body,
            headers=headers,
            auth=auth,
            timeout=(destination.connect_timeout_s, destination.read_timeout_s),
            allow_redirects=False,
            stream=True,
        ) as response:
            body = _read_capped(response)
            names = {name.lower(): value for name, value in response.headers.items()}
            return HttpResponse(response.status_code, names, body)
    except requests.RequestException as exc:
        raise TransportError(_kind(exc), type(exc).__name__) from None
    except OSError as exc:  # requests raises it for a missing certificate, key or CA file
        raise TransportError("tls", type(exc).__name__) from None


def _read_capped(response: requests.Response) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(_CHUNK_BYTES):
        body += chunk
        if len(body) >= MAX_BODY_BYTES:
            break
    return bytes(body[:MAX_BODY_BYTES])


def _kind(exc: requests.RequestException) -> str:
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls"
    if isinstance(exc, requests.Timeout):
        return "timeout"
    # A read timeout while streaming the body arrives as ConnectionError(ReadTimeoutError).
    if exc.args and isinstance(exc.args[0], ReadTimeoutError):
        return "timeout"
    return "connection"
