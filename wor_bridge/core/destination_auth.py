"""How the bridge authenticates at a destination: bearer, OAuth2 client credentials, or the Twiin
token request of TA Notified Pull; and the client certificate of mutual TLS. Frozen settings.

Twiin (``type = "twiin"``): TA Notified Pull v1.0.1 §3.2 / Afsprakenstelsel §10.2.5 "TTA FHIR -
Authentication & Authorization": the client is the *system*, shared secrets are not allowed, the
client authenticates with a **client assertion** (RFC 7523 §2.2, JWS with ``typ`` JWT, ``alg``
and ``kid``), and the token request carries an **authorization assertion** (TA §3.2.2) naming the
initiating care provider. VIPLive signs both PS256 (viplive-interop.gitbook.io, "2. Token
request verzender"), hence the default. The ``grant_type`` string and where the authorization
assertion travels could not be read in the TA (docs/standards/ta-notified-pull.md §4.4): the
default is RFC 7523 §2.1 (``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``,
``assertion=<authorization assertion>``); ``grant_type = "client_credentials"`` sends the same
assertion as ``authorization_assertion`` instead. Both are settings: both are assumptions.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
"""RFC 7523 §2.1: an assertion used as the authorization grant."""

SigningAlgorithm = Literal["PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "RS256"]


class DestinationAuth(BaseModel):
    """How the bridge authenticates at a destination (secrets never printed: SecretStr)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: Literal["none", "bearer", "oauth2", "twiin"] = "none"
    token: SecretStr | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    scope: str | None = None
    private_key_file: str | None = None
    """``twiin``: PEM private key that signs the client and authorization assertions."""
    key_id: str | None = None
    """``twiin``: the ``kid`` header (the key's id in the bridge's published JWKS)."""
    algorithm: SigningAlgorithm = "PS256"
    issuer: str | None = None
    """``twiin``: ``iss`` of the assertions (VIPLive: its FHIR host); default ``client_id``."""
    grant_type: Literal["urn:ietf:params:oauth:grant-type:jwt-bearer", "client_credentials"] = (
        JWT_BEARER_GRANT
    )
    assertion_lifetime_s: int = Field(default=60, ge=5, le=300)

    @model_validator(mode="after")
    def _complete(self) -> DestinationAuth:
        if self.type == "bearer" and self.token is None:
            raise ValueError("auth.type bearer needs auth.token")
        if self.type == "oauth2" and not (self.token_url and self.client_id and self.client_secret):
            raise ValueError("auth.type oauth2 needs token_url, client_id and client_secret")
        if self.type == "twiin" and not (
            self.token_url and self.client_id and self.private_key_file
        ):
            raise ValueError("auth.type twiin needs token_url, client_id and private_key_file")
        if self.type == "twiin" and self.client_secret is not None:
            raise ValueError("auth.type twiin: TA NP §3.2 allows no shared secret (client_secret)")
        return self


class ClientTls(BaseModel):
    """Mutual TLS towards a destination: the bridge's client certificate and the CA to trust."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cert_file: str
    key_file: str
    ca_file: str | None = None
