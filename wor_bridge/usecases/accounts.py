"""Use case: console accounts (create, disable, reset), sign-in, and sessions.

Passwords are hashed with argon2id (``argon2-cffi``'s ``PasswordHasher``, RFC 9106 defaults); a
second factor is a TOTP code (RFC 6238, ``pyotp``; one step of clock drift either way), each code
accepted once (the store's ``use_once``). Sign-in
is refused outright after ``login_max_failures`` failures for the username, or
``address_max_failures`` for the client address, within ``login_window_s`` (OWASP Authentication:
throttling; the counts are in the store, so every process shares them). An unknown username costs
the same hash verification as a known one. Every sign-in, sign-out and account change is audited
with the username (NEN 7513 "which user"); the password never leaves this module.

A new session id (256 random bits) is made at every sign-in and only its SHA-256 is stored, so an
id set before sign-in (session fixation) never becomes a signed-in session.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
from dataclasses import dataclass, replace
from typing import Final, Literal

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from wor_bridge.core.account import (
    Account,
    ConsoleSettings,
    Role,
    Session,
    account_problem,
    hash_id,
    password_problem,
    session_alive,
    throttled,
)
from wor_bridge.ports import AccountStore, Clock, OutboxStore
from wor_bridge.records import AuditEvent

HASHER: Final = PasswordHasher()
_DUMMY: Final = HASHER.hash("not a password of anyone")
TOTP_MEMORY_S: Final = 120
"""How long a used TOTP code is refused: longer than its step and the drift allowed (90 s)."""


class AccountError(ValueError):
    """An account change that is not possible; the message names the field (no secret)."""


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new session: the id for the cookie (never stored) and the session as stored."""

    session_id: str
    session: Session
    account: Account


@dataclass(frozen=True, slots=True)
class Refused:
    """Sign-in refused: ``throttled`` (too many failures) or ``invalid`` (anything else; the
    answer never says which part was wrong)."""

    reason: Literal["throttled", "invalid"]


def audit_event(
    event: str, action: str, outcome: str, account: Account | str, detail: str = ""
) -> AuditEvent:
    """An audit record of a console action by ``account`` (no patient)."""
    username = account if isinstance(account, str) else account.username
    org = None if isinstance(account, str) else account.organisation
    return AuditEvent(
        event=event,
        action=action,
        outcome=outcome,
        user=f"console:{username}",
        responsible=org or f"console:{username}",
        source_system="",
        object_type="Account",
        object_id=username,
        detail=detail,
    )


def create(
    accounts: AccountStore,
    store: OutboxStore,
    clock: Clock,
    *,
    username: str,
    role: Role,
    organisation: str | None,
    password: str,
    known_organisations: frozenset[str],
    totp: bool = False,
    operator: str = "cli",
) -> Account:
    """Create an account; raises ``AccountError`` (bad field, unknown organisation, taken name).

    Returns the account; with ``totp`` its ``totp_secret`` is the new Base32 secret to give the
    person (shown once)."""
    problem = account_problem(username, role, organisation) or password_problem(password)
    if problem is None and organisation is not None and organisation not in known_organisations:
        problem = "organisation must be a configured destination id"
    if problem is not None:
        raise AccountError(problem)
    account = Account(
        username=username,
        role=role,
        organisation=organisation,
        password_hash=HASHER.hash(password),
        totp_secret=pyotp.random_base32() if totp else None,
    )
    if not accounts.add_account(account, clock.now()):
        raise AccountError("username is taken")
    store.audit(
        audit_event("account_create", "C", "success", operator, detail=username), clock.now()
    )
    return account


def disable(
    accounts: AccountStore, store: OutboxStore, clock: Clock, username: str, operator: str = "cli"
) -> None:
    """Disable an account and end its sessions; ``AccountError`` when unknown."""
    account = accounts.get_account(username)
    if account is None:
        raise AccountError("no such account")
    accounts.change_account(replace(account, disabled=True))
    store.audit(
        audit_event("account_disable", "U", "success", operator, detail=username), clock.now()
    )


def reset(
    accounts: AccountStore,
    store: OutboxStore,
    clock: Clock,
    username: str,
    password: str,
    *,
    totp: bool | None = None,
    operator: str = "cli",
) -> Account:
    """Set a new password (and enable the account again), ending its sessions; ``totp`` True
    makes a new TOTP secret, False removes it, None keeps it. ``AccountError`` when unknown or
    the password is not acceptable."""
    account = accounts.get_account(username)
    if account is None:
        raise AccountError("no such account")
    problem = password_problem(password)
    if problem is not None:
        raise AccountError(problem)
    secret = account.totp_secret
    if totp is not None:
        secret = pyotp.random_base32() if totp else None
    changed = replace(
        account, password_hash=HASHER.hash(password), totp_secret=secret, disabled=False
    )
    accounts.change_account(changed)
    store.audit(
        audit_event("account_reset", "U", "success", operator, detail=username), clock.now()
    )
    return changed


def _verified(account: Account | None, password: str, code: str, now: dt.datetime) -> bool:
    if account is None or account.disabled or account.method != "password":
        with contextlib.suppress(VerificationError):  # the same work for an unknown account:
            HASHER.verify(_DUMMY, password)  # its existence does not show in the time taken
        return False
    try:
        HASHER.verify(account.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    if account.totp_secret is not None:
        return pyotp.TOTP(account.totp_secret).verify(code.strip(), for_time=now, valid_window=1)
    return True


def sign_in(
    accounts: AccountStore,
    store: OutboxStore,
    clock: Clock,
    settings: ConsoleSettings,
    *,
    username: str,
    password: str,
    code: str = "",
    address: str,
) -> SignedIn | Refused:
    """Check the credentials and open a new session, or refuse (audited either way)."""
    now = clock.now()
    since = now - dt.timedelta(seconds=settings.login_window_s)
    name = username.strip().lower()[:64]
    user_key, addr_key = f"user:{name}", f"addr:{address}"
    if throttled(accounts.login_failures(user_key, since), settings.login_max_failures) or (
        throttled(accounts.login_failures(addr_key, since), settings.address_max_failures)
    ):
        store.audit(audit_event("console_login", "E", "throttled", name), now)
        return Refused("throttled")
    account = accounts.get_account(name)
    verified = _verified(account, password, code, now)
    if verified and account is not None and account.totp_secret is not None:
        # a TOTP code works once (RFC 6238 section 5.2): remembered for its window of drift
        key = f"totp|{account.username}|{code.strip()}"
        verified = store.use_once(key, now + dt.timedelta(seconds=TOTP_MEMORY_S), now)
    if not verified or account is None:
        accounts.add_login_failure(user_key, now)
        accounts.add_login_failure(addr_key, now)
        store.audit(audit_event("console_login", "E", "refused", name), now)
        return Refused("invalid")
    accounts.clear_login_failures(user_key)
    if HASHER.check_needs_rehash(account.password_hash):
        account = replace(account, password_hash=HASHER.hash(password))
        accounts.change_account(account)
    session_id = secrets.token_urlsafe(32)
    session = Session(hash_id(session_id), account.username, secrets.token_urlsafe(32), now, now)
    accounts.add_session(session)
    store.audit(audit_event("console_login", "E", "success", account), now)
    return SignedIn(session_id, session, account)


def current(
    accounts: AccountStore, clock: Clock, settings: ConsoleSettings, session_id: str | None
) -> tuple[Session, Account] | None:
    """The live session of this cookie value and its enabled account (its idle time starts
    again), or None: no cookie, unknown, timed out (then forgotten) or a disabled account."""
    if not session_id:
        return None
    id_hash = hash_id(session_id)
    session = accounts.get_session(id_hash)
    if session is None:
        return None
    now = clock.now()
    alive = session_alive(
        session, now, idle_timeout_s=settings.idle_timeout_s, max_age_s=settings.max_age_s
    )
    account = accounts.get_account(session.username)
    if not alive or account is None or account.disabled:
        accounts.end_session(id_hash)
        return None
    accounts.touch_session(id_hash, now)
    return session, account


def sign_out(accounts: AccountStore, store: OutboxStore, clock: Clock, session_id: str) -> None:
    """End the session of this cookie value (audited)."""
    session = accounts.get_session(hash_id(session_id))
    if session is None:
        return
    accounts.end_session(session.id_hash)
    store.audit(audit_event("console_logout", "E", "success", session.username), clock.now())
