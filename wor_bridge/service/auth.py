"""Client authentication (hashed API keys / bearer tokens), scopes and per-client rate limits.

Each client has two token buckets of ``service.rate_per_s`` and ``burst``: one for the API
routes, one for ``/metrics`` (``bucket="metrics"``), so a Prometheus scrape never takes from a
GP system's intake budget, and a runaway scraper is throttled on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from typing import Literal

from wor_bridge.config import ClientSettings
from wor_bridge.core.ratelimit import TokenBucket


@dataclass(frozen=True, slots=True)
class Denied:
    """Why a request may not proceed: HTTP status, FHIR issue code, message, Retry-After, and
    who asked, for the audit trail (the client id once the key matched one; ``unverified:<id>``
    when its certificate did not; ``(unknown)`` for no or an unknown key)."""

    status: int
    code: str
    message: str
    retry_after_s: float | None = None
    user: str = "(unknown)"


def hash_key(key: str) -> str:
    """SHA-256 hex of a client key: what the configuration stores (``key_sha256``)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def presented_key(authorization: str | None, api_key: str | None) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``."""
    if api_key:
        return api_key.strip()
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return None


class Authenticator:
    """Finds the client for a presented key and applies scopes and rate limits."""

    def __init__(self, clients: tuple[ClientSettings, ...], rate_per_s: float, burst: int) -> None:
        self._clients = clients
        self._buckets = {c.id: TokenBucket(rate_per_s, burst) for c in clients}
        self._scrapes = {c.id: TokenBucket(rate_per_s, burst) for c in clients}
        self._lock = threading.Lock()

    def client(self, key: str | None) -> ClientSettings | None:
        """The client whose key hash matches (constant-time comparison), or None."""
        if not key:
            return None
        digest = hash_key(key)
        found = None
        for client in self._clients:
            if client.key_sha256 and hmac.compare_digest(client.key_sha256, digest):
                found = client
        return found

    def check(
        self,
        key: str | None,
        scope: str,
        cert_sha256: str | None,
        *,
        bucket: Literal["api", "metrics"] = "api",
    ) -> ClientSettings | Denied:
        """The authenticated client allowed ``scope`` within the rate of its ``bucket``, or why
        not (401 ``login``/``security``, 403 ``forbidden``, 429 ``throttled`` with the wait).

        A client with ``cert_sha256`` configured must present exactly that TLS certificate
        (``cert_sha256`` is the fingerprint of the one the connection presented, if any).
        """
        client = self.client(key)
        if client is None:
            return Denied(401, "login", "a valid API key or bearer token is required")
        if "referral:pull" in client.scopes:  # its secret is for /oauth/token only
            return Denied(
                401, "login", "a notified-pull client uses tokens from /oauth/token", user=client.id
            )
        if client.cert_sha256 is not None and (
            cert_sha256 is None or not hmac.compare_digest(cert_sha256, client.cert_sha256)
        ):
            return Denied(
                401,
                "security",
                "the client certificate does not belong to this key",
                user=f"unverified:{client.id}",
            )
        if scope not in client.scopes and "admin" not in client.scopes:
            return Denied(403, "forbidden", f"the client lacks the scope {scope}", user=client.id)
        wait = self.take(client.id, bucket)
        if wait > 0:
            return Denied(429, "throttled", "too many requests; retry later", wait, client.id)
        return client

    def take(self, client_id: str, bucket: Literal["api", "metrics"] = "api") -> float:
        """Take one request from the client's bucket: 0 to go ahead, else seconds to wait."""
        found = (self._scrapes if bucket == "metrics" else self._buckets).get(client_id)
        if found is None:
            return 0.0
        with self._lock:
            return found.take(time.monotonic())
