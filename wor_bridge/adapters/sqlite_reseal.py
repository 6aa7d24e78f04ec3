"""Key rotation in the store (a mixin of ``SqliteOutboxStore``, so of ``PostgresOutboxStore``
too): ``reseal`` moves a batch of rows to the active key (``wor-bridge store rotate-key``).

A row needs it when one of its sealed columns is sealed under another key, or is still in
clear (a store from before encryption): its values are opened with whatever key sealed them
and sealed again, and ``referral.his_value`` is indexed again from the referral's Bundle. An
outbox entry whose payload is its referral's Bundle becomes ``SHARED`` (each Bundle stored
once, also in a store written before that). Each batch is one transaction (SQLite: ``BEGIN
IMMEDIATE``; PostgreSQL: its rows locked ``FOR UPDATE``),
so a run that stops can be started again: what is done stays done, what is not is still
readable with the older key. Audit records are append-only and keep the key that sealed them;
``audit_keys`` counts them per key, so an older key stays configured while they exist.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from typing import Final, Protocol

from wor_bridge.adapters.sealing import (
    INDEX_PREFIX,
    MAGIC,
    Sealer,
    SealingError,
    aad,
    header,
    is_sealed,
)
from wor_bridge.adapters.sql_conn import SqlConnection
from wor_bridge.adapters.sqlite_rows import (
    SHARED,
    open_bundle,
    open_payload,
    open_text,
    seal_bundle,
    seal_payload,
    seal_text,
)
from wor_bridge.core.search import referral_keys
from wor_bridge.errors import StoreError
from wor_bridge.records import ResealCount


class _Connected(Protocol):
    _sealer: Sealer
    _row_lock: str

    def _conn(self) -> SqlConnection: ...

    def _write(self) -> AbstractContextManager[SqlConnection]: ...


def _active(sealer: Sealer) -> str:
    if sealer.active_key_id is None:
        raise SealingError('rotating keys needs [store] encryption = "aes-gcm" with its keys')
    return sealer.active_key_id


_NEWEST: Final = (
    ("referral", "bundle", "SELECT task_id, bundle FROM referral ORDER BY rowid DESC LIMIT 1"),
    (
        "outbox",
        "payload",
        "SELECT idempotency_key, payload FROM outbox WHERE length(payload) > 0"
        " ORDER BY id DESC LIMIT 1",
    ),
    (
        "audit",
        "patient_id",
        "SELECT CAST(id AS TEXT), patient_id FROM audit WHERE patient_id != ''"
        " ORDER BY id DESC LIMIT 1",
    ),
)
"""Per sealed column: the newest row's key and stored value (cheap: by rowid, backwards)."""


def check_keys(
    conn: SqlConnection,
    sealer: Sealer,
    where: str,
    newest: tuple[tuple[str, str, str], ...] = _NEWEST,
) -> None:
    """Raise ``StoreError`` when the newest referral Bundle, outbox payload or audit patient
    identifier is sealed and encryption is off (values written in clear beside them would defeat
    it), or when the newest Bundle or payload does not open with ``sealer``'s keys: its key is
    missing or another secret stands under its id (values written with that one could never be
    read with the right one). Audit records keep the key that sealed them (README, Rotation).
    Names the key id, never a value; values in clear are left to ``rotate-key``. ``newest``:
    the statements that read each column's newest value (``_NEWEST``, SQLite's)."""
    for table, column, sql in newest:
        row = conn.execute(sql).fetchone()
        if row is None or not is_sealed(row[1]):
            continue
        if sealer.active_key_id is None:
            raise StoreError(
                f"{where}: the store holds encrypted values but [store] encryption is off:"
                ' configure encryption = "aes-gcm" with its keys'
            )
        if table == "audit":  # append-only: its older keys may go once the data has moved
            continue
        stored = bytes(row[1])
        key_id = stored[5 : 5 + stored[4]].decode("ascii", "replace")
        try:
            sealer.open(stored, aad(table, column, str(row[0])))
        except SealingError as err:
            raise StoreError(
                f"{where}: the newest {table} value, sealed with key {key_id!r}, does not open"
                f" with the configured keys ({err})"
            ) from None


class SqliteResealing:
    """``reseal`` and ``audit_keys``."""

    def reseal(self: _Connected, limit: int) -> ResealCount:
        """Seal up to ``limit`` referrals and ``limit`` outbox entries again under the active
        key, in one transaction (on PostgreSQL their rows locked ``FOR UPDATE``: a Task update
        meanwhile waits, so nothing it writes is overwritten); counts of what moved (0 and 0:
        nothing left)."""
        sealer = self._sealer
        key_id = _active(sealer)
        head, index = header(key_id), f"{INDEX_PREFIX}{key_id}:"
        lock = self._row_lock
        with self._write() as conn:
            referrals = conn.execute(
                "SELECT task_id, bundle, patient_id, reason_text FROM referral"  # noqa: S608 - a constant clause
                " WHERE substr(bundle, 1, ?) != ?"
                " OR (patient_id != '' AND substr(patient_id, 1, ?) != ?)"
                " OR (COALESCE(reason_text, '') != '' AND substr(reason_text, 1, ?) != ?)"
                f" OR (his_value != '' AND substr(his_value, 1, ?) != ?) LIMIT ?{lock}",
                (*(len(head), head) * 3, len(index), index, limit),
            ).fetchall()
            for row in referrals:
                _reseal_referral(conn, sealer, row)
            entries = conn.execute(
                "SELECT o.id, o.idempotency_key, o.task_id, o.payload, r.bundle FROM outbox o"  # noqa: S608 - a constant clause
                " LEFT JOIN referral r ON r.task_id = o.task_id"
                " WHERE length(o.payload) > 0 AND substr(o.payload, 1, ?) != ?"
                f" LIMIT ?{lock and f'{lock} OF o'}",
                (len(head), head, limit),
            ).fetchall()
            for row in entries:
                _reseal_entry(conn, sealer, row)
        return ResealCount(key_id, len(referrals), len(entries))

    def audit_keys(self: _Connected) -> dict[str, int]:
        """Audit records with a patient identifier, per key that sealed it (``clear``: none)."""
        rows = self._conn().execute(
            "SELECT CASE WHEN substr(patient_id, 1, ?) = ?"
            " THEN CAST(substr(patient_id, 6, unicode(substr(patient_id, 5, 1))) AS TEXT)"
            " ELSE 'clear' END AS key, COUNT(*) AS n FROM audit WHERE patient_id != ''"
            " GROUP BY key ORDER BY key",
            (len(MAGIC), MAGIC),
        )
        return {str(r["key"]): int(r["n"]) for r in rows.fetchall()}


def _reseal_referral(conn: SqlConnection, sealer: Sealer, row: sqlite3.Row) -> None:
    task_id = row["task_id"]
    bundle = open_bundle(sealer, task_id, row["bundle"])
    patient = open_text(sealer, "referral", "patient_id", task_id, row["patient_id"])
    reason = open_text(sealer, "referral", "reason_text", task_id, row["reason_text"])
    _, his_value, _ = referral_keys(json.loads(bundle))
    conn.execute(
        "UPDATE referral SET bundle = ?, patient_id = ?, reason_text = ?, his_value = ?"
        " WHERE task_id = ?",
        (
            seal_bundle(sealer, task_id, bundle),
            seal_text(sealer, "referral", "patient_id", task_id, patient, conn=conn),
            seal_text(sealer, "referral", "reason_text", task_id, reason, conn=conn),
            sealer.index(his_value),
            task_id,
        ),
    )


def _reseal_entry(conn: SqlConnection, sealer: Sealer, row: sqlite3.Row) -> None:
    payload = open_payload(sealer, row["idempotency_key"], row["payload"], row["task_id"], None)
    own = row["bundle"]
    if own is not None and payload == open_bundle(sealer, row["task_id"], own):
        stored = SHARED  # the referral's own Bundle: keep it once, in referral.bundle
    else:
        stored = seal_payload(sealer, row["idempotency_key"], payload)
    conn.execute("UPDATE outbox SET payload = ? WHERE id = ?", (stored, row["id"]))
