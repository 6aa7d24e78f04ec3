"""Access tokens for notified pull: client authentication at ``/oauth/token`` and bound tokens.

- A receiver authenticates with OAuth2 client credentials: its key as client secret
  (``client_secret_basic`` or ``client_secret_post``), or a private-key JWT (RFC 7523:
  ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``) signed with
  the key whose public half is configured; ``iss`` = ``sub`` = client id, ``aud`` = the token
  endpoint URL, a lifetime of at most five minutes and a ``jti`` that is never accepted twice
  (remembered in the store until the assertion expires: shared by every process on that store,
  and kept over a restart).
- The access token it gets is a JWT (HS256, the bridge's key) for exactly one Task: ``task``
  claim, short ``exp``, and, when it was asked for over mutual TLS, ``cnf.x5t#S256`` (RFC 8705):
  it then only works with the same client certificate.

Nothing here logs; callers audit. Problems are short English phrases without any presented value.
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt

from wor_bridge.config import ClientSettings
from wor_bridge.errors import ConfigError

JWT_BEARER: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_ALGORITHMS: Final = ["RS256", "RS384", "PS256", "ES256", "ES384"]
MAX_ASSERTION_LIFETIME_S: Final = 300
LEEWAY_S: Final = 30

FirstUse = Callable[[str, float, float], bool]
"""``(key, forget_at_s, now_s)``: True the first time ``key`` is seen before it is forgotten."""


class MemoryFirstUse:
    """A ``FirstUse`` in this process only (for a ``TokenService`` without a store)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def __call__(self, key: str, forget_at_s: float, now_s: float) -> bool:
        """True the first time ``key`` is seen before ``forget_at_s``."""
        with self._lock:
            self._seen = {k: v for k, v in self._seen.items() if v > now_s}
            if key in self._seen:
                return False
            self._seen[key] = forget_at_s
            return True


@dataclass(frozen=True, slots=True)
class Grant:
    """What a valid access token allows: this client, this Task."""

    client_id: str
    task_id: str
    expires_at: float


@dataclass(frozen=True, slots=True)
class TokenProblem:
    """Why a token or assertion is refused (``expired`` when only its time ran out).

    ``client_id`` is the subject of a token whose signature held (for the audit trail)."""

    message: str
    expired: bool = False
    client_id: str | None = None


def thumbprint(cert_sha256_hex: str) -> str:
    """RFC 8705 ``x5t#S256``: base64url (unpadded) of the certificate's SHA-256."""
    return base64.urlsafe_b64encode(bytes.fromhex(cert_sha256_hex)).rstrip(b"=").decode()


def load_public_keys(clients: tuple[ClientSettings, ...], base: Path) -> dict[str, bytes]:
    """The PEM public keys of clients that authenticate with a private-key JWT."""
    keys: dict[str, bytes] = {}
    for client in clients:
        if client.jwt_public_key_file is None:
            continue
        path = (base / client.jwt_public_key_file).resolve()
        try:
            keys[client.id] = path.read_bytes()
        except OSError:
            raise ConfigError(
                f"client {client.id}: cannot read jwt_public_key_file {path}"
            ) from None
    return keys


def _numeric_date(value: Any) -> float | None:
    """A JWT NumericDate as seconds, or None for anything else (NaN, strings, huge numbers)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not -(2**40) < value < 2**40:  # also rules out NaN and the infinities
        return None
    return float(value)


class TokenService:
    """Verifies client assertions and issues/verifies task-bound access tokens."""

    def __init__(
        self, key: bytes | None, issuer: str, ttl_s: int, first_use: FirstUse | None = None
    ) -> None:
        self._key = key or secrets.token_bytes(32)  # none configured: tokens die with the process
        self.issuer = issuer.rstrip("/")
        self.token_endpoint = f"{self.issuer}/oauth/token"
        self.audience = f"{self.issuer}/fhir/stu3"
        self.ttl_s = ttl_s
        self._first_use = first_use or MemoryFirstUse()

    # --- client assertions (private_key_jwt) ------------------------------------------------

    @staticmethod
    def assertion_issuer(assertion: str) -> str | None:
        """The unverified ``iss`` of an assertion: only to find whose key verifies it."""
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None
        iss = claims.get("iss")
        return iss if isinstance(iss, str) else None

    def verify_assertion(
        self, assertion: str, client_id: str, public_key_pem: bytes, now: float
    ) -> TokenProblem | None:
        """None when the assertion is the client's, fresh, for this endpoint and unused."""
        checked = self._checked(assertion, client_id, public_key_pem, now, client=True)
        return checked if isinstance(checked, TokenProblem) else None

    def authorization_claims(
        self, assertion: str, client_id: str, public_key_pem: bytes, now: float
    ) -> dict[str, Any] | TokenProblem:
        """The claims of a receiver's authorization assertion (TA NP §3.2.2, the RFC 7523 §2.1
        ``assertion`` of a jwt-bearer grant): signed with the client's key, ``iss`` the client,
        for this endpoint, fresh and unused like a client assertion; ``sub`` is whoever the
        receiver acts for, not checked here."""
        return self._checked(assertion, client_id, public_key_pem, now, client=False)

    def _checked(  # noqa: PLR0911 - one answer per refusal reason
        self, assertion: str, client_id: str, public_key_pem: bytes, now: float, *, client: bool
    ) -> dict[str, Any] | TokenProblem:
        try:
            claims: dict[str, Any] = jwt.decode(
                assertion,
                public_key_pem,
                algorithms=ASSERTION_ALGORITHMS,
                audience=self.token_endpoint,
                issuer=client_id,
                options={
                    "require": ["iss", "sub", "aud", "exp", "jti"],
                    "verify_exp": False,  # checked below against the service clock
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as err:
            return TokenProblem(f"the client assertion is not valid ({type(err).__name__})")
        if client and claims.get("sub") != client_id:
            return TokenProblem("the client assertion's sub must equal its iss")
        times = {k: _numeric_date(claims.get(k)) for k in ("exp", "nbf", "iat")}
        exp = times["exp"]
        if exp is None or any(times[k] is None for k in ("nbf", "iat") if k in claims):
            return TokenProblem("the client assertion's exp, nbf and iat must be NumericDates")
        if (times["nbf"] or now) > now + LEEWAY_S or (times["iat"] or now) > now + LEEWAY_S:
            return TokenProblem("the client assertion is not valid yet (nbf or iat)")
        if exp + LEEWAY_S <= now:
            return TokenProblem("the client assertion has expired", expired=True)
        if exp - now > MAX_ASSERTION_LIFETIME_S + LEEWAY_S:
            return TokenProblem("the client assertion may live at most five minutes")
        # remembered as long as the assertion could be accepted; hashed: fixed size, no raw value
        jti = hashlib.sha256(f"{client_id}|{claims['jti']}".encode()).hexdigest()
        if not self._first_use(f"jti|{jti}", exp + LEEWAY_S, now):
            return TokenProblem("the client assertion was used before (jti)")
        return claims

    # --- access tokens ------------------------------------------------------------------------

    def issue(self, client_id: str, task_id: str, cert_sha256: str | None, now: float) -> str:
        """A token for ``client_id`` to read and update Task ``task_id`` only."""
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client_id,
            "task": task_id,
            "iat": int(now),
            "exp": math.ceil(now) + self.ttl_s,  # never shorter than expires_in says
            "jti": str(uuid.uuid4()),
        }
        if cert_sha256:
            claims["cnf"] = {"x5t#S256": thumbprint(cert_sha256)}
        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify(self, token: str, cert_sha256: str | None, now: float) -> Grant | TokenProblem:
        """The grant of a valid token presented with the certificate it is bound to."""
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self._key,
                algorithms=["HS256"],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": ["sub", "task", "exp"],
                    "verify_exp": False,  # checked below against the service clock
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError:
            return TokenProblem("the access token is not valid")
        subject = str(claims["sub"])
        if float(claims["exp"]) <= now:
            return TokenProblem("the access token has expired", expired=True, client_id=subject)
        bound = (claims.get("cnf") or {}).get("x5t#S256")
        if bound is not None and (
            cert_sha256 is None or not secrets.compare_digest(bound, thumbprint(cert_sha256))
        ):
            return TokenProblem(
                "the access token is bound to another client certificate", client_id=subject
            )
        return Grant(subject, str(claims["task"]), float(claims["exp"]))
