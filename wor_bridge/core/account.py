"""Console accounts and sessions as values, and the rules that decide about them. Pure.

An account is a person who signs in to the browser console (``wor_bridge.console``): an
``operator`` (the outbox, health and audit of the whole bridge) or a ``coach`` of exactly one
welfare organisation (that organisation's inbox, never a personal one). ``method`` says how the
account proves who it is: ``password`` (argon2 hash, optional TOTP second factor, RFC 6238) today;
``oidc`` is reserved so that an OpenID Connect login can be added without a new table (the
subject would be stored in ``subject``).

A session is an opaque random id in a cookie; only its SHA-256 is stored. It ends when it has been
idle for ``idle_timeout_s`` or open for ``max_age_s`` (OWASP Session Management: idle and
absolute timeouts), whichever comes first.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["operator", "coach"]
ROLES: Final = ("operator", "coach")
USERNAME: Final = re.compile(r"^[a-z0-9][a-z0-9._@-]{2,63}$")
MIN_PASSWORD_CHARS: Final = 12
"""NIST SP 800-63B 3.1.1.2: at least 8; the console asks 12 of people handling patient data."""
MAX_PASSWORD_CHARS: Final = 256


@dataclass(frozen=True, slots=True)
class Account:
    """One console account (no patient data; the username is the NEN 7513 "which user")."""

    username: str
    role: Role
    organisation: str | None
    """The destination id whose inbox a coach works in; None for an operator."""
    password_hash: str = ""
    totp_secret: str | None = None
    """Base32 TOTP secret (RFC 6238) when the second factor is on."""
    disabled: bool = False
    method: Literal["password", "oidc"] = "password"
    subject: str | None = None
    """Reserved for OpenID Connect (the ``sub`` claim of the organisation's provider)."""


@dataclass(frozen=True, slots=True)
class Session:
    """One signed-in browser: the id's SHA-256, whose it is, its CSRF token and its times."""

    id_hash: str
    username: str
    csrf: str
    created_at: dt.datetime
    seen_at: dt.datetime


def account_problem(username: str, role: str, organisation: str | None) -> str | None:
    """Why these account fields are not acceptable, or None (messages name the field)."""
    if not USERNAME.match(username):
        return "username must be 3-64 characters: lower-case letters, digits and . _ @ -"
    if role not in ROLES:
        return f"role must be one of {', '.join(ROLES)}"
    if role == "coach" and not organisation:
        return "a coach needs an organisation (the destination id of its inbox)"
    if role == "operator" and organisation:
        return "an operator works for the whole bridge: no organisation"
    return None


def password_problem(password: str) -> str | None:
    """Why a new password is not acceptable (length only: NIST SP 800-63B 5.1.1.2), or None."""
    if len(password) < MIN_PASSWORD_CHARS:
        return f"password must have at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"password must have at most {MAX_PASSWORD_CHARS} characters"
    return None


def hash_id(session_id: str) -> str:
    """The stored form of a session id (SHA-256 hex): a stolen table opens no session."""
    return hashlib.sha256(session_id.encode("utf-8")).hexdigest()


def same_token(given: str | None, expected: str) -> bool:
    """Constant-time comparison of a CSRF token."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def session_alive(
    session: Session, now: dt.datetime, *, idle_timeout_s: float, max_age_s: float
) -> bool:
    """True while the session has been idle less than ``idle_timeout_s`` and open less than
    ``max_age_s`` (seconds)."""
    idle = (now - session.seen_at).total_seconds()
    age = (now - session.created_at).total_seconds()
    return idle < idle_timeout_s and age < max_age_s


def throttled(failures: int, max_failures: int) -> bool:
    """True when a sign-in is refused outright: ``max_failures`` failed within the window."""
    return failures >= max_failures


class ConsoleSettings(BaseModel):
    """``[console]``: the browser console and the organisational inbox (README: Browser console
    and inbox). Times in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    idle_timeout_s: float = Field(default=900.0, gt=0, le=86_400)
    """A session unused this long ends (15 minutes)."""
    max_age_s: float = Field(default=8 * 3600.0, gt=0, le=7 * 86_400)
    """A session ends this long after sign-in however busy (a working day)."""
    login_max_failures: int = Field(default=5, ge=1, le=100)
    """Failed sign-ins per username within ``login_window_s`` before every try is refused."""
    address_max_failures: int = Field(default=20, ge=1, le=10_000)
    """Failed sign-ins per client address within ``login_window_s`` (password spraying)."""
    login_window_s: float = Field(default=900.0, gt=0, le=86_400)
    secure_cookies: bool = True
    """``Secure`` on the session cookie. ``false`` only for plain http on loopback (tests, the
    demo): the configuration is refused otherwise."""
