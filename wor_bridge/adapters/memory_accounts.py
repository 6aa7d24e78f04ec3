"""In-memory ``AccountStore`` and ``AuditReader`` with ``SqliteAccountTables``' semantics: a mixin
of ``MemoryOutboxStore`` (its lock and its audit records), the fake the contract tests run beside
the SQLite adapter."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol

from wor_bridge.core.account import Account, Session
from wor_bridge.records import AuditEvent, AuditQuery, AuditRecord

_FIELDS = tuple(f.name for f in dataclasses.fields(AuditEvent))


@dataclass
class AccountRows:
    """The fake's tables."""

    accounts: dict[str, Account] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    failures: list[tuple[str, dt.datetime]] = field(default_factory=list)


class _Locked(Protocol):
    _lock: threading.Lock
    _account_rows: AccountRows

    def audit_records(self, limit: int = 1000) -> list[dict[str, Any]]: ...


class MemoryAccountTables:
    """Accounts, sessions and failed sign-ins in ``_account_rows``; audit search over the
    store's audit records."""

    def add_account(self: _Locked, account: Account, now: dt.datetime) -> bool:
        """Store a new account; False when the username is taken."""
        with self._lock:
            if account.username in self._account_rows.accounts:
                return False
            self._account_rows.accounts[account.username] = account
            return True

    def get_account(self: _Locked, username: str) -> Account | None:
        """The account, or None."""
        with self._lock:
            return self._account_rows.accounts.get(username)

    def change_account(self: _Locked, account: Account) -> bool:
        """Replace the account; its sessions end when disabled or re-keyed."""
        with self._lock:
            old = self._account_rows.accounts.get(account.username)
            if old is None:
                return False
            self._account_rows.accounts[account.username] = account
            if account.disabled or account.password_hash != old.password_hash:
                self._account_rows.sessions = {
                    k: s
                    for k, s in self._account_rows.sessions.items()
                    if s.username != account.username
                }
            return True

    def list_accounts(self: _Locked) -> list[Account]:
        """Every account, by username."""
        with self._lock:
            return [self._account_rows.accounts[k] for k in sorted(self._account_rows.accounts)]

    def add_session(self: _Locked, session: Session) -> None:
        """Store a new session."""
        with self._lock:
            self._account_rows.sessions[session.id_hash] = session

    def get_session(self: _Locked, id_hash: str) -> Session | None:
        """The session, or None."""
        with self._lock:
            return self._account_rows.sessions.get(id_hash)

    def touch_session(self: _Locked, id_hash: str, now: dt.datetime) -> None:
        """The session was used at ``now``."""
        with self._lock:
            session = self._account_rows.sessions.get(id_hash)
            if session is not None:
                self._account_rows.sessions[id_hash] = dataclasses.replace(session, seen_at=now)

    def end_session(self: _Locked, id_hash: str) -> None:
        """Forget the session."""
        with self._lock:
            self._account_rows.sessions.pop(id_hash, None)

    def add_login_failure(self: _Locked, key: str, now: dt.datetime) -> None:
        """One failed sign-in for ``key``."""
        with self._lock:
            self._account_rows.failures.append((key, now))

    def login_failures(self: _Locked, key: str, since: dt.datetime) -> int:
        """Failed sign-ins for ``key`` since ``since``; older ones are forgotten."""
        with self._lock:
            self._account_rows.failures = [
                (k, at) for k, at in self._account_rows.failures if at >= since
            ]
            return sum(1 for k, _ in self._account_rows.failures if k == key)

    def clear_login_failures(self: _Locked, key: str) -> None:
        """Forget the failures of ``key``."""
        with self._lock:
            self._account_rows.failures = [
                (k, at) for k, at in self._account_rows.failures if k != key
            ]

    def find_audit(self: _Locked, query: AuditQuery) -> list[AuditRecord]:
        """Audit records matching ``query``, newest first."""
        found: list[AuditRecord] = []
        for row in self.audit_records(-1):
            at = dt.datetime.fromtimestamp(row["at"], tz=dt.UTC)
            wanted = (
                ("patient_id", query.patient_id),
                ("user", query.user),
                ("object_id", query.object_id),
                ("event", query.event),
            )
            if any(value and row[name] != value for name, value in wanted):
                continue
            if (query.since is not None and at < query.since) or (
                query.until is not None and at >= query.until
            ):
                continue
            found.append(AuditRecord(at, AuditEvent(**{f: row[f] for f in _FIELDS})))
        found.sort(key=lambda r: r.at, reverse=True)
        return found[: query.limit]
