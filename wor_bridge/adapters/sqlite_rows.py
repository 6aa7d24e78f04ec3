"""Row helpers shared by the SQLite store's modules: time conversion, the two inserts that
several transactions make (audit records, outbox messages), and the sealing of the columns
that hold patient data (``adapters/sealing.py``; the README's column table).

Sealed columns and the row key each value is bound to (``sealing.aad``):
``referral.bundle``, ``referral.patient_id`` and ``referral.reason_text`` (the Task id),
``outbox.payload`` (the entry's idempotency key), ``audit.patient_id`` (the record's id).
``referral.his_value`` holds a blind index. An outbox entry whose ``payload`` is empty carries
its referral's own Bundle: the Bundle is stored once, in ``referral.bundle``.

The sealed text columns are ``TEXT`` on SQLite (a sealed value is a BLOB in them: dynamic
typing) and ``BYTEA`` on PostgreSQL (migration step 13): there a clear value is stored as its
UTF-8 bytes (``text_param``) and read back as text (``clear_text``). A sealed value starts with a
NUL byte (``sealing.MAGIC``); a clear text with a NUL is refused on PostgreSQL, as its ``TEXT``
columns refused it, so no clear value can pass for a sealed one.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from dataclasses import replace
from typing import Final

from wor_bridge.adapters.sealing import Sealer, aad
from wor_bridge.adapters.sql_conn import SqlConnection
from wor_bridge.errors import StoreError
from wor_bridge.records import Added, AuditEvent, NewMessage, NewReferral

SHARED: Final = b""
"""``outbox.payload`` of an entry that carries its referral's Bundle (``referral.bundle``)."""


def ts(moment: dt.datetime) -> float:
    return moment.timestamp()


def from_ts(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, tz=dt.UTC)


def text_param(conn: SqlConnection, value: str | bytes | None) -> str | bytes | None:
    """A sealable text column's parameter on ``conn``: as it is on SQLite; on PostgreSQL
    (``BYTEA``) a text as its UTF-8 bytes. ``StoreError`` for a text with a NUL character on
    PostgreSQL (it could pass for a sealed value; PostgreSQL's text never held one)."""
    if not isinstance(value, str) or isinstance(conn, sqlite3.Connection):
        return value
    if "\x00" in value:
        raise StoreError("a text value holds a NUL character, which the store does not keep")
    return value.encode()


def clear_text(stored: str | bytes | None) -> str | None:
    """A clear value of a sealable text column as text (PostgreSQL reads it as bytes)."""
    return stored.decode() if isinstance(stored, bytes) else stored


def seal_text(
    sealer: Sealer, table: str, column: str, row: str, value: str | None, *, conn: SqlConnection
) -> str | bytes | None:
    """A text column's stored value on ``conn``: the text itself with encryption off (as
    ``text_param`` makes it), else sealed bytes ('' and None stay empty: nothing to hide)."""
    if not value or sealer.active_key_id is None:
        return text_param(conn, value)
    return sealer.seal(value.encode(), aad(table, column, row))


def open_text(
    sealer: Sealer, table: str, column: str, row: str, stored: str | bytes | None
) -> str | None:
    """The text of a column sealed by ``seal_text`` ('' and None as they are)."""
    if stored is None or len(stored) == 0:
        return None if stored is None else ""
    raw = stored if isinstance(stored, bytes) else stored.encode()
    return sealer.open(raw, aad(table, column, row)).decode()


def seal_bundle(sealer: Sealer, task_id: str, bundle: bytes) -> bytes:
    """``referral.bundle`` as stored."""
    return sealer.seal(bundle, aad("referral", "bundle", task_id))


def open_bundle(sealer: Sealer, task_id: str, stored: bytes) -> bytes:
    """``referral.bundle`` as the ports carry it (empty stays empty: nothing kept)."""
    if len(stored) == 0:
        return b""
    return sealer.open(bytes(stored), aad("referral", "bundle", task_id))


def seal_payload(sealer: Sealer, idempotency_key: str, payload: bytes) -> bytes:
    """``outbox.payload`` as stored (``SHARED`` stays ``SHARED``)."""
    if payload == SHARED:
        return SHARED
    return sealer.seal(payload, aad("outbox", "payload", idempotency_key))


def open_payload(
    sealer: Sealer, idempotency_key: str, stored: bytes, task_id: str, bundle: bytes | None
) -> bytes:
    """An outbox entry's payload: its own, or (``SHARED``) its referral's Bundle ``bundle``."""
    if bytes(stored) == SHARED:
        return open_bundle(sealer, task_id, bundle or b"")
    return sealer.open(bytes(stored), aad("outbox", "payload", idempotency_key))


def _next_audit_id(conn: SqlConnection) -> int:
    """The id the next audit record gets (SQLite: as AUTOINCREMENT would, under the write lock;
    PostgreSQL: drawn from the identity's sequence)."""
    if isinstance(conn, sqlite3.Connection):
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'audit'").fetchone()
        top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM audit").fetchone()[0]
        return max(int(seq[0]) if seq else 0, int(top)) + 1
    drawn = conn.execute("SELECT nextval(pg_get_serial_sequence('audit', 'id'))").fetchone()
    return int(drawn[0])


def insert_audit(conn: SqlConnection, sealer: Sealer, event: AuditEvent, now: dt.datetime) -> None:
    """Append an audit record inside the caller's write transaction; ``patient_id`` sealed
    under the record's id (taken here: ``_next_audit_id``)."""
    record_id: int | None = None
    sealing = bool(event.patient_id) and sealer.active_key_id is not None
    if sealing or not isinstance(conn, sqlite3.Connection):  # PostgreSQL: no id from NULL
        record_id = _next_audit_id(conn)
    patient = (
        sealer.seal(event.patient_id.encode(), aad("audit", "patient_id", str(record_id)))
        if sealing
        else text_param(conn, event.patient_id)
    )
    conn.execute(
        'INSERT INTO audit (id, at, event, action, outcome, "user", responsible, source_system,'
        " patient_id, object_type, object_id, detail) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            record_id,
            ts(now),
            event.event,
            event.action,
            event.outcome,
            event.user,
            event.responsible,
            event.source_system,
            patient,
            event.object_type,
            event.object_id,
            event.detail,
        ),
    )


def insert_message(
    conn: SqlConnection, sealer: Sealer, message: NewMessage, now: dt.datetime
) -> int | None:
    """Queue a message (INSERT OR IGNORE on its key); the new entry's id, None if it existed.
    A ``message.payload`` of ``SHARED`` carries the referral's own Bundle."""
    cursor = conn.execute(
        "INSERT OR IGNORE INTO outbox (idempotency_key, task_id, destination, state, created_at,"
        " next_attempt_at, payload) VALUES (?, ?, ?, 'pending', ?, ?, ?) RETURNING id",
        (
            message.idempotency_key,
            message.task_id,
            message.destination,
            ts(now),
            ts(now),
            seal_payload(sealer, message.idempotency_key, message.payload),
        ),
    )
    row = cursor.fetchone()
    return None if row is None else int(row[0])


def known_referral(
    conn: SqlConnection,
    sealer: Sealer,
    referral: NewReferral,
    now: dt.datetime,
    audit: AuditEvent | None,
) -> Added | None:
    """The stored referral with this key or Task (audited as a duplicate), or None."""
    row = conn.execute(
        "SELECT o.id, o.task_id FROM outbox o WHERE o.idempotency_key = ? UNION ALL"
        " SELECT o.id, o.task_id FROM referral r JOIN outbox o"
        " ON o.idempotency_key = r.idempotency_key WHERE r.task_id = ? LIMIT 1",
        (referral.idempotency_key, referral.task_id),
    ).fetchone()
    if row is None:
        return None
    if audit is not None:
        insert_audit(conn, sealer, replace(audit, outcome="duplicate"), now)
    return Added(row["task_id"], row["id"], created=False)
