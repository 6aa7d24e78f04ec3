"""The Twiin token request of TA Notified Pull: the bridge (Sending System) asks the receiver's
token endpoint for the token that lets it create and cancel Notifications (VIPLive "2. Token
request verzender"; TA §3.2 / Afsprakenstelsel §10.2.5). Over the destination's mutual TLS
session (TA §3.1 / §10.2.10).

The form (``auth.type = "twiin"``, settings in ``core.destination_auth``):

- ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`` and
  ``client_assertion``: RFC 7523 §2.2, header ``typ`` JWT, ``alg`` (PS256 by default, as VIPLive),
  ``kid``; claims ``iss`` (``auth.issuer``), ``sub`` (``auth.client_id``), ``aud`` (the token
  endpoint), ``iat``, ``exp`` (``assertion_lifetime_s`` later), ``jti`` (a uuid) (TA §3.2.1,
  VIPLive's table);
- the authorization assertion (TA §3.2.2), signed the same way: ``iss``, ``aud``, ``iat``,
  ``exp``, ``jti`` and the request's grant claims (``sub`` = the initiating care provider, and
  the patient when so agreed): as ``assertion`` with ``grant_type`` jwt-bearer (RFC 7523 §2.1),
  or as ``authorization_assertion`` with ``grant_type=client_credentials``;
- ``scope`` when configured.

Raises ``TransportError("auth", ...)`` without any value of the request or the answer.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import jwt

from wor_bridge.core.delivery import HttpRequest
from wor_bridge.core.destination_auth import JWT_BEARER_GRANT, DestinationAuth
from wor_bridge.errors import TransportError

CLIENT_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def _signed(auth: DestinationAuth, key: bytes, claims: dict[str, Any]) -> str:
    headers = {"typ": "JWT", **({"kid": auth.key_id} if auth.key_id else {})}
    return jwt.encode(claims, key, algorithm=auth.algorithm, headers=headers)


def token_request(
    auth: DestinationAuth, grant: tuple[tuple[str, str], ...], now: float | None = None
) -> HttpRequest:
    """The token request (a form POST to ``auth.token_url``) for one grant."""
    if auth.token_url is None or auth.client_id is None or auth.private_key_file is None:
        raise TransportError("auth", "twiin needs token_url, client_id and private_key_file")
    try:
        key = Path(auth.private_key_file).read_bytes()
    except OSError:
        raise TransportError("auth", "the private_key_file cannot be read") from None
    issued = int(time.time() if now is None else now)
    common = {
        "iss": auth.issuer or auth.client_id,
        "aud": auth.token_url,
        "iat": issued,
        "exp": issued + auth.assertion_lifetime_s,
    }
    try:
        client = _signed(auth, key, {**common, "sub": auth.client_id, "jti": str(uuid.uuid4())})
        authorization = _signed(auth, key, {**common, "jti": str(uuid.uuid4()), **dict(grant)})
    except (ValueError, TypeError, jwt.PyJWTError) as err:
        raise TransportError("auth", f"cannot sign the assertions ({type(err).__name__})") from None
    form = {
        "grant_type": auth.grant_type,
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": client,
    }
    if auth.grant_type == JWT_BEARER_GRANT:
        form["assertion"] = authorization
    else:
        form["authorization_assertion"] = authorization
    if auth.scope:
        form["scope"] = auth.scope
    return HttpRequest(
        "POST",
        auth.token_url,
        urlencode(form).encode("ascii"),
        (("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json")),
    )
