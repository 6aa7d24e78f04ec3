"""SQLite ``AccountStore`` (console accounts, sessions, failed sign-ins) and ``AuditReader``: a
mixin of ``SqliteOutboxStore``, using its per-thread connection and ``BEGIN IMMEDIATE``
transactions.

The tables live in the store's file beside the outbox (``account``, ``console_session``,
``login_failure``, and an index of the audit table by patient for the access-request search):
``ACCOUNT_SCHEMA`` is step 11 of ``adapters/migrations.py``. Sessions keep only the SHA-256 of
their id.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Final, Protocol, cast

from wor_bridge.adapters.sealing import Sealer, is_sealed
from wor_bridge.adapters.sqlite_rows import clear_text, from_ts, open_text, text_param, ts
from wor_bridge.core.account import Account, Role, Session
from wor_bridge.records import AuditEvent, AuditQuery, AuditRecord

ACCOUNT_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS account (
    username TEXT PRIMARY KEY,
    role TEXT NOT NULL CHECK (role IN ('operator', 'coach')),
    organisation TEXT,
    method TEXT NOT NULL DEFAULT 'password',
    subject TEXT,
    password_hash TEXT NOT NULL DEFAULT '',
    totp_secret TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS console_session (
    id_hash TEXT PRIMARY KEY,
    username TEXT NOT NULL REFERENCES account(username),
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL,
    seen_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS console_session_user ON console_session (username);
CREATE TABLE IF NOT EXISTS login_failure (
    key TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failure_key ON login_failure (key, at);
CREATE INDEX IF NOT EXISTS audit_patient ON audit (patient_id);
"""


def _account(row: sqlite3.Row) -> Account:
    return Account(
        username=row["username"],
        role=cast(Role, row["role"]),
        organisation=row["organisation"],
        password_hash=row["password_hash"],
        totp_secret=row["totp_secret"],
        disabled=bool(row["disabled"]),
        method="oidc" if row["method"] == "oidc" else "password",
        subject=row["subject"],
    )


def _session(row: sqlite3.Row) -> Session:
    return Session(
        id_hash=row["id_hash"],
        username=row["username"],
        csrf=row["csrf"],
        created_at=cast(dt.datetime, from_ts(row["created_at"])),
        seen_at=cast(dt.datetime, from_ts(row["seen_at"])),
    )


class _Connected(Protocol):
    _sealer: Sealer

    @property
    def _sealed_patient(self) -> str: ...

    def _conn(self) -> sqlite3.Connection: ...

    def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...


class SqliteAccountTables:
    """Tables ``account``, ``console_session`` and ``login_failure``; the audit search."""

    _sealed_patient: ClassVar[str] = "typeof(patient_id) = 'blob'"
    """SQL true for an audit row whose ``patient_id`` is sealed (SQLite keeps seals as BLOBs;
    PostgreSQL: its envelope's first bytes)."""

    def add_account(self: _Connected, account: Account, now: dt.datetime) -> bool:
        """Store a new account; False when the username is taken."""
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO account (username, role, organisation, method, subject,"
                " password_hash, totp_secret, disabled, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (*_fields(account), ts(now)),
            )
            return cursor.rowcount == 1

    def get_account(self: _Connected, username: str) -> Account | None:
        """The account, or None."""
        row = (
            self._conn().execute("SELECT * FROM account WHERE username = ?", (username,)).fetchone()
        )
        return None if row is None else _account(row)

    def change_account(self: _Connected, account: Account) -> bool:
        """Replace the account's fields; its sessions end when disabled or re-keyed."""
        with self._write() as conn:
            old = conn.execute(
                "SELECT * FROM account WHERE username = ?", (account.username,)
            ).fetchone()
            if old is None:
                return False
            conn.execute(
                "UPDATE account SET role = ?, organisation = ?, method = ?, subject = ?,"
                " password_hash = ?, totp_secret = ?, disabled = ? WHERE username = ?",
                (*_fields(account)[1:], account.username),
            )
            if account.disabled or account.password_hash != old["password_hash"]:
                conn.execute("DELETE FROM console_session WHERE username = ?", (account.username,))
            return True

    def list_accounts(self: _Connected) -> list[Account]:
        """Every account, by username."""
        rows = self._conn().execute("SELECT * FROM account ORDER BY username").fetchall()
        return [_account(r) for r in rows]

    def add_session(self: _Connected, session: Session) -> None:
        """Store a new session."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO console_session (id_hash, username, csrf, created_at, seen_at)"
                " VALUES (?,?,?,?,?)",
                (
                    session.id_hash,
                    session.username,
                    session.csrf,
                    ts(session.created_at),
                    ts(session.seen_at),
                ),
            )

    def get_session(self: _Connected, id_hash: str) -> Session | None:
        """The session, or None."""
        row = (
            self._conn()
            .execute("SELECT * FROM console_session WHERE id_hash = ?", (id_hash,))
            .fetchone()
        )
        return None if row is None else _session(row)

    def touch_session(self: _Connected, id_hash: str, now: dt.datetime) -> None:
        """The session was used at ``now``."""
        with self._write() as conn:
            conn.execute(
                "UPDATE console_session SET seen_at = ? WHERE id_hash = ?", (ts(now), id_hash)
            )

    def end_session(self: _Connected, id_hash: str) -> None:
        """Forget the session."""
        with self._write() as conn:
            conn.execute("DELETE FROM console_session WHERE id_hash = ?", (id_hash,))

    def add_login_failure(self: _Connected, key: str, now: dt.datetime) -> None:
        """One failed sign-in for ``key``."""
        with self._write() as conn:
            conn.execute("INSERT INTO login_failure (key, at) VALUES (?, ?)", (key, ts(now)))

    def login_failures(self: _Connected, key: str, since: dt.datetime) -> int:
        """Failed sign-ins for ``key`` since ``since``; older ones are deleted."""
        with self._write() as conn:
            conn.execute("DELETE FROM login_failure WHERE at < ?", (ts(since),))
            row = conn.execute(
                "SELECT count(*) FROM login_failure WHERE key = ?", (key,)
            ).fetchone()
            return int(row[0])

    def clear_login_failures(self: _Connected, key: str) -> None:
        """Forget the failures of ``key``."""
        with self._write() as conn:
            conn.execute("DELETE FROM login_failure WHERE key = ?", (key,))

    def find_audit(self: _Connected, query: AuditQuery) -> list[AuditRecord]:
        """Audit records matching ``query``, newest first.

        A sealed ``patient_id`` (encryption at rest: sealed per record, so no two seals of one
        BSN are equal) is opened and compared here; a clear one (a record from before
        encryption) is compared in SQL. The patient in the answer is always in clear."""
        where, params = _audit_where(query)
        conn = self._conn()
        if query.patient_id:
            where += (
                " AND" if where else " WHERE"
            ) + f" (patient_id = ? OR {self._sealed_patient})"
            params = (*params, text_param(conn, query.patient_id))
        rows = conn.execute(
            f"SELECT * FROM audit{where} ORDER BY at DESC, id DESC",  # noqa: S608 - fixed column names; values bound
            params,
        )
        found: list[AuditRecord] = []
        for r in rows:
            patient = r["patient_id"]
            if is_sealed(patient):
                patient = open_text(self._sealer, "audit", "patient_id", str(r["id"]), patient)
            else:
                patient = clear_text(patient)
            if query.patient_id and patient != query.patient_id:
                continue
            found.append(
                AuditRecord(
                    at=cast(dt.datetime, from_ts(r["at"])),
                    event=AuditEvent(
                        event=r["event"],
                        action=r["action"],
                        outcome=r["outcome"],
                        user=r["user"],
                        responsible=r["responsible"],
                        source_system=r["source_system"],
                        patient_id=patient or "",
                        object_type=r["object_type"],
                        object_id=r["object_id"],
                        detail=r["detail"],
                    ),
                )
            )
            if len(found) >= query.limit:
                break
        return found


def _fields(account: Account) -> tuple[Any, ...]:
    return (
        account.username,
        account.role,
        account.organisation,
        account.method,
        account.subject,
        account.password_hash,
        account.totp_secret,
        int(account.disabled),
    )


def _audit_where(query: AuditQuery) -> tuple[str, tuple[Any, ...]]:
    terms: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("user", query.user),
        ("object_id", query.object_id),
        ("event", query.event),
    ):
        if value:
            terms.append(f'"{column}" = ?')  # quoted: user is reserved in PostgreSQL
            params.append(value)
    if query.since is not None:
        terms.append("at >= ?")
        params.append(ts(query.since))
    if query.until is not None:
        terms.append("at < ?")
        params.append(ts(query.until))
    return (" WHERE " + " AND ".join(terms) if terms else ""), tuple(params)
