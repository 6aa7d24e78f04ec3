"""The search side of the SQLite store (a mixin of ``SqliteOutboxStore``): Task searches and the
feedback Observations' Task; and the columns they need (``his_value`` a blind index when the
store seals: ``adapters/sealing.py``).

``add_search_columns`` (migration step 4) adds ``his_system``, ``his_value``, ``owner_id`` and
``updated_at`` to the ``referral`` table of a file made before them and fills them from the
stored Bundles; the ``touch_*`` helpers keep ``updated_at`` (``meta.lastUpdated``)
current inside the transactions that change what ``GET Task`` returns.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from contextlib import AbstractContextManager
from typing import Any, Final, Protocol

from wor_bridge.adapters.sealing import Sealer
from wor_bridge.adapters.sql_conn import SqlConnection
from wor_bridge.adapters.sqlite_rows import from_ts, open_bundle, open_text, ts
from wor_bridge.adapters.sqlite_schema import add_columns
from wor_bridge.core.search import referral_keys
from wor_bridge.records import NewReferral, TaskPage, TaskRecord, TaskSearch

TASK_COLUMNS: Final = (
    "r.task_id, r.destination, r.source_system, r.patient_id, r.bundle, r.status,"
    " r.business_status, r.reason_code, r.reason_text, r.version, r.deadline_at,"
    " r.first_contact_at, r.alerted_at, r.received_at, r.updated_at"
)
SEARCH_COLUMNS: Final = (
    ("his_system", "TEXT NOT NULL DEFAULT ''"),
    ("his_value", "TEXT NOT NULL DEFAULT ''"),
    ("owner_id", "TEXT NOT NULL DEFAULT ''"),
    ("updated_at", "REAL"),
)
SEARCH_INDEXES: Final = (
    "CREATE INDEX IF NOT EXISTS referral_his ON referral (his_value)",
    "CREATE INDEX IF NOT EXISTS referral_updated ON referral (updated_at)",
)
_STATUS: Final = (
    "(CASE WHEN r.status = 'requested' AND COALESCE(r.business_status, '') = ''"
    " THEN (CASE o.state WHEN 'dead' THEN 'failed' ELSE 'requested' END) ELSE r.status END)"
)
_EXPRESSIONS: Final = {
    "id": "r.task_id",
    "his_system": "r.his_system",
    "his_value": "r.his_value",
    "focus": "r.service_request_id",
    "owner": "r.owner_id",
    "status": _STATUS,
}


class _Connected(Protocol):
    _sealer: Sealer

    def _conn(self) -> SqlConnection: ...

    def _write(self) -> AbstractContextManager[SqlConnection]: ...


def task_record(sealer: Sealer, row: Any) -> TaskRecord:
    """A ``TASK_COLUMNS`` row as the port's value (its sealed columns opened)."""
    task_id = row["task_id"]
    return TaskRecord(
        task_id=task_id,
        destination=row["destination"],
        source_system=row["source_system"],
        patient_id=open_text(sealer, "referral", "patient_id", task_id, row["patient_id"]) or "",
        bundle=open_bundle(sealer, task_id, row["bundle"]),
        status=row["status"],
        business_status=row["business_status"],
        reason_code=row["reason_code"],
        reason_text=open_text(sealer, "referral", "reason_text", task_id, row["reason_text"]),
        version=row["version"],
        deadline_at=from_ts(row["deadline_at"]),
        first_contact_at=from_ts(row["first_contact_at"]),
        alerted_at=from_ts(row["alerted_at"]),
        received_at=from_ts(row["received_at"]),
        updated_at=from_ts(row["updated_at"]),
    )


def add_search_columns(conn: sqlite3.Connection) -> None:
    """Migration step: the search columns and indexes, filled from the stored Bundles (runs in
    the step's transaction; a column already there is kept). A store this old was written in
    clear: ``his_value`` is filled in clear, and ``store rotate-key`` indexes it (blind) when
    encryption is turned on."""
    add_columns(conn, "referral", SEARCH_COLUMNS)
    rows = conn.execute(
        "SELECT task_id, bundle, received_at FROM referral WHERE updated_at IS NULL"
    ).fetchall()
    for task_id, bundle, received_at in rows:
        his_system, his_value, owner = referral_keys(json.loads(bytes(bundle)))
        conn.execute(
            "UPDATE referral SET his_system = ?, his_value = ?, owner_id = ?,"
            " updated_at = ? WHERE task_id = ?",
            (his_system, his_value, owner, received_at, task_id),
        )
    for index in SEARCH_INDEXES:
        conn.execute(index)


def index_referral(
    conn: SqlConnection, sealer: Sealer, referral: NewReferral, now: dt.datetime
) -> None:
    """Note a new referral's search keys (``his_value`` as a blind index when sealing) and
    ``updated_at`` (inside its insert transaction)."""
    conn.execute(
        "UPDATE referral SET his_system = ?, his_value = ?, owner_id = ?, updated_at = ?"
        " WHERE task_id = ?",
        (
            referral.his_system,
            sealer.index(referral.his_value),
            referral.owner_id,
            ts(now),
            referral.task_id,
        ),
    )


def touch(conn: SqlConnection, task_id: str, now: dt.datetime) -> None:
    """The Task changed now."""
    conn.execute("UPDATE referral SET updated_at = ? WHERE task_id = ?", (ts(now), task_id))


def touch_delivery(conn: SqlConnection, entry_ids: list[int], now: dt.datetime) -> None:
    """The referrals whose own outbox entries are ``entry_ids`` reached (or, just before a
    requeue, are leaving) a final delivery state changed now."""
    marks = ",".join("?" * len(entry_ids))
    conn.execute(
        "UPDATE referral SET updated_at = ? WHERE idempotency_key IN"  # noqa: S608 - only ? placeholders are interpolated
        f" (SELECT idempotency_key FROM outbox WHERE id IN ({marks})"
        " AND state IN ('delivered', 'dead'))",
        (ts(now), *entry_ids),
    )


class SqliteSearchTables:
    """Task search and feedback-item lookup."""

    def search_tasks(self: _Connected, search: TaskSearch) -> TaskPage:
        """The matching Tasks within the search's tenancy: one page and the total."""
        clauses: list[str] = []
        args: list[Any] = []
        if not search.everyone:
            if search.source_system is None and search.destination is None:
                return TaskPage(0, ())
            for column, value in (
                ("r.source_system", search.source_system),
                ("r.destination", search.destination),
            ):
                if value is not None:
                    clauses.append(f"{column} = ?")
                    args.append(value)
        for group in search.where:
            options = []
            for alternative in group:
                terms = []
                for column, value in alternative:
                    # the HIS number is a blind index: compare with its form under every key
                    values = self._sealer.lookups(value) if column == "his_value" else (value,)
                    terms.append(f"{_EXPRESSIONS[column]} IN ({','.join('?' * len(values))})")
                    args += values
                options.append("(" + (" AND ".join(terms) or "TRUE") + ")")
            clauses.append("(" + (" OR ".join(options) or "FALSE") + ")")
        for op, moment in ((">=", search.updated_from), ("<", search.updated_before)):
            if moment is not None:
                clauses.append(f"r.updated_at {op} ?")
                args.append(ts(moment))
        where = " AND ".join(clauses) or "TRUE"
        joined = "FROM referral r JOIN outbox o ON o.idempotency_key = r.idempotency_key"
        conn = self._conn()
        total = conn.execute(f"SELECT COUNT(*) {joined} WHERE {where}", args).fetchone()[0]
        order = "DESC" if search.newest_first else "ASC"
        rows = conn.execute(
            f"SELECT {TASK_COLUMNS} {joined} WHERE {where}"
            f" ORDER BY r.updated_at {order}, r.task_id {order} LIMIT ? OFFSET ?",
            (*args, search.count, search.offset),
        ).fetchall()
        return TaskPage(int(total), tuple(task_record(self._sealer, r) for r in rows))

    def item_task(self: _Connected, key: str) -> str | None:
        """The Task id of a recorded feedback item."""
        row = (
            self._conn()
            .execute("SELECT task_id FROM feedback_item WHERE key = ?", (key,))
            .fetchone()
        )
        return None if row is None else str(row["task_id"])
