"""Key rotation in the SQLite store (a mixin of ``SqliteOutboxStore``): ``reseal`` moves a batch
of rows to the active key (``wor-bridge store rotate-key``).

A row needs it when one of its sealed columns is sealed under another key, or is still in
clear (a store from before encryption): its values are opened with whatever key sealed them
and sealed again, and ``referral.his_value`` is indexed again from the referral's Bundle. An
outbox entry whose payload is its referral's Bundle becomes ``SHARED`` (each Bundle stored
once, also in a store written before that). Each batch is one ``BEGIN IMMEDIATE`` transaction,
so a run that stops can be started again: what is done stays done, what is not is still
readable with the older key. Audit records are append-only and keep the key that sealed them;
``audit_keys`` counts them per key, so an older key stays configured while they exist.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import AbstractContextManager
from typing import Protocol

from wor_bridge.adapters.sealing import INDEX_PREFIX, MAGIC, Sealer, SealingError, header
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

    def _conn(self) -> sqlite3.Connection: ...

    def _write(self) -> AbstractContextManager[sqlite3.Connection]: ...


def _active(sealer: Sealer) -> str:
    if sealer.active_key_id is None:
        raise SealingError('rotating keys needs [store] encryption = "aes-gcm" with its keys')
    return sealer.active_key_id


def refuse_clear_over_sealed(conn: sqlite3.Connection, sealer: Sealer, where: str) -> None:
    """Raise ``StoreError`` when encryption is off (``sealer`` has no key) and the store already
    holds a sealed referral, outbox payload or audit patient identifier: values written in clear
    beside them would defeat the encryption, and the sealed ones cannot be read."""
    if sealer.active_key_id is not None:
        return
    for table, column in (("referral", "bundle"), ("outbox", "payload"), ("audit", "patient_id")):
        found = conn.execute(
            f"SELECT 1 FROM {table} WHERE substr({column}, 1, ?) = ? LIMIT 1",  # noqa: S608 - fixed names
            (len(MAGIC), MAGIC),
        ).fetchone()
        if found:
            raise StoreError(
                f"{where}: the store holds encrypted values but [store] encryption is off:"
                ' configure encryption = "aes-gcm" with its keys'
            )


class SqliteResealing:
    """``reseal`` and ``audit_keys``."""

    def reseal(self: _Connected, limit: int) -> ResealCount:
        """Seal up to ``limit`` referrals and ``limit`` outbox entries again under the active
        key, in one transaction; counts of what moved (0 and 0: nothing left)."""
        sealer = self._sealer
        key_id = _active(sealer)
        head, index = header(key_id), f"{INDEX_PREFIX}{key_id}:"
        with self._write() as conn:
            referrals = conn.execute(
                "SELECT task_id, bundle, patient_id, reason_text FROM referral"
                " WHERE substr(bundle, 1, ?) IS NOT ?"
                " OR (patient_id != '' AND substr(patient_id, 1, ?) IS NOT ?)"
                " OR (COALESCE(reason_text, '') != '' AND substr(reason_text, 1, ?) IS NOT ?)"
                " OR (his_value != '' AND substr(his_value, 1, ?) IS NOT ?) LIMIT ?",
                (*(len(head), head) * 3, len(index), index, limit),
            ).fetchall()
            for row in referrals:
                _reseal_referral(conn, sealer, row)
            entries = conn.execute(
                "SELECT o.id, o.idempotency_key, o.task_id, o.payload, r.bundle FROM outbox o"
                " LEFT JOIN referral r ON r.task_id = o.task_id"
                " WHERE length(o.payload) > 0 AND substr(o.payload, 1, ?) IS NOT ? LIMIT ?",
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


def _reseal_referral(conn: sqlite3.Connection, sealer: Sealer, row: sqlite3.Row) -> None:
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
            seal_text(sealer, "referral", "patient_id", task_id, patient),
            seal_text(sealer, "referral", "reason_text", task_id, reason),
            sealer.index(his_value),
            task_id,
        ),
    )


def _reseal_entry(conn: sqlite3.Connection, sealer: Sealer, row: sqlite3.Row) -> None:
    payload = open_payload(sealer, row["idempotency_key"], row["payload"], row["task_id"], None)
    own = row["bundle"]
    if own is not None and payload == open_bundle(sealer, row["task_id"], own):
        stored = SHARED  # the referral's own Bundle: keep it once, in referral.bundle
    else:
        stored = seal_payload(sealer, row["idempotency_key"], payload)
    conn.execute("UPDATE outbox SET payload = ? WHERE id = ?", (stored, row["id"]))
