"""The monitoring tables of the SQLite store: facts without patient data, and their readers.

Written only by the hooks below, called inside the store's own transactions (``add_referral``,
``save_task_update``, ``record_attempt``), so a fact is recorded exactly when its event is. The
tables hold no BSN, name, address, birth date, referral number or free text, and no foreign key to
``referral``: purging referral payloads leaves them intact.

- ``monitoring_referral``: one row per referral, milestone times set once (``COALESCE``);
- ``monitoring_reason`` / ``monitoring_activity``: the multi-valued facts;
- ``monitoring_event``: the append-only log of every recorded change (kind, status, code, time).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Mapping
from typing import Any, Final, Protocol

from wor_bridge.adapters.sql_conn import SqlConnection
from wor_bridge.adapters.sqlite_monitoring_derived import (
    activities_of,
    contact_days,
    encode_reasons,
    order_key,
)
from wor_bridge.adapters.sqlite_rows import from_ts, ts
from wor_bridge.adapters.sqlite_tallies import count_window
from wor_bridge.core.monitoring_facts import Progress, ReferralFacts, Trajectory, monitoring_key
from wor_bridge.core.monitoring_grid import Breakdown, Tally
from wor_bridge.core.monitoring_period import Period

MONITORING_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS monitoring_referral (
    key TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    authored_on TEXT NOT NULL,
    practice TEXT NOT NULL,
    source_system TEXT NOT NULL,
    referrer_type TEXT NOT NULL,
    welfare TEXT NOT NULL,
    municipality TEXT NOT NULL,
    sex TEXT NOT NULL,
    age_band TEXT NOT NULL,
    deadline_at REAL,
    status TEXT NOT NULL DEFAULT 'requested',
    reason_code TEXT,
    accepted_at REAL,
    first_contact_at REAL,
    intake_at REAL,
    activity_at REAL,
    closed_at REAL,
    follow_up_at REAL,
    waiting_since REAL,
    waiting_until REAL,
    conversations INTEGER,
    feedback_at REAL,
    delivery_failed_at REAL
);
CREATE INDEX IF NOT EXISTS monitoring_referral_authored ON monitoring_referral (authored_on);
CREATE INDEX IF NOT EXISTS monitoring_referral_order
    ON monitoring_referral (authored_on, received_at, key);
CREATE TABLE IF NOT EXISTS monitoring_reason (
    key TEXT NOT NULL,
    code TEXT NOT NULL,
    PRIMARY KEY (key, code)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS monitoring_activity (
    key TEXT NOT NULL,
    category TEXT NOT NULL,
    role TEXT NOT NULL,
    PRIMARY KEY (key, category, role)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS monitoring_event (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    status TEXT,
    business_status TEXT,
    code TEXT
);
CREATE TRIGGER IF NOT EXISTS monitoring_event_no_update BEFORE UPDATE ON monitoring_event
BEGIN SELECT RAISE(ABORT, 'monitoring_event is append-only'); END;
"""

_SET_ONCE: Final = (
    "accepted_at",
    "first_contact_at",
    "intake_at",
    "activity_at",
    "closed_at",
    "follow_up_at",
    "waiting_since",
)


def _opt(moment: dt.datetime | None) -> float | None:
    return ts(moment) if moment is not None else None


def insert_facts(conn: SqlConnection, facts: ReferralFacts) -> None:
    """Record a new referral's facts (inside the intake transaction; ignored when the key is
    known: facts are recorded once per referral)."""
    received, authored = ts(facts.received_at), facts.authored_on.isoformat()
    inserted = conn.execute(
        "INSERT OR IGNORE INTO monitoring_referral (key, received_at, authored_on, practice,"
        " source_system, referrer_type, welfare, municipality, sex, age_band, deadline_at,"
        " order_key, reasons) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            facts.key,
            received,
            authored,
            facts.practice,
            facts.source_system,
            facts.referrer_type,
            facts.welfare,
            facts.municipality,
            facts.sex,
            facts.age_band,
            _opt(facts.deadline_at),
            order_key(authored, received, facts.key),
            encode_reasons(facts.reasons),
        ),
    ).rowcount
    if not inserted:
        return
    conn.executemany(
        "INSERT OR IGNORE INTO monitoring_reason (key, code) VALUES (?, ?)",
        [(facts.key, code) for code in facts.reasons],
    )
    conn.execute(
        "INSERT INTO monitoring_event (key, at, kind, status) VALUES (?, ?, 'referred', ?)",
        (facts.key, received, "requested"),
    )


def apply_progress(conn: SqlConnection, key: str, progress: Progress) -> None:
    """Add one change to a referral's facts (inside the Task update's transaction)."""
    once = ", ".join(f"{c} = COALESCE({c}, ?)" for c in _SET_ONCE)
    sql = (
        "UPDATE monitoring_referral SET status = ?, contact_days = COALESCE(contact_days, ?),"  # noqa: S608 - constant column names only
        " reason_code = COALESCE(?, reason_code),"
        f" {once}, waiting_until = CASE WHEN ? IS NOT NULL THEN ? ELSE waiting_until END,"
        " conversations = CASE WHEN ? IS NULL THEN conversations"
        " WHEN COALESCE(conversations, 0) >= ? THEN COALESCE(conversations, 0) ELSE ? END"
        " WHERE key = ?"
    )
    days = None
    if progress.first_contact_at is not None:
        row = conn.execute(
            "SELECT received_at, first_contact_at FROM monitoring_referral WHERE key = ?", (key,)
        ).fetchone()
        if row is not None and row[1] is None:
            days = contact_days(row[0], ts(progress.first_contact_at))
    conn.execute(
        sql,
        (
            progress.status,
            days,
            progress.reason_code,
            *(_opt(getattr(progress, c)) for c in _SET_ONCE),
            _opt(progress.waiting_until),
            _opt(progress.waiting_until),
            progress.conversations,
            progress.conversations,
            progress.conversations,
            key,
        ),
    )
    if progress.activities:
        conn.executemany(
            "INSERT OR IGNORE INTO monitoring_activity (key, category, role) VALUES (?, ?, ?)",
            [(key, category, role) for category, role in progress.activities],
        )
        conn.execute(
            "UPDATE monitoring_referral SET activities = ? WHERE key = ?",
            (activities_of(conn, key), key),
        )
    conn.execute(
        "INSERT INTO monitoring_event (key, at, kind, status, business_status, code)"
        " VALUES (?, ?, 'task', ?, ?, ?)",
        (key, ts(progress.at), progress.status, progress.business_status, progress.reason_code),
    )


def note_attempt(conn: SqlConnection, entry_id: int, state: str, now: dt.datetime) -> None:
    """After a recorded attempt: feedback that reached the GP record, or a referral whose
    delivery was given up (inside ``record_attempt``'s transaction)."""
    if state not in ("delivered", "dead"):
        return
    row = conn.execute(
        "SELECT o.task_id, o.idempotency_key, r.idempotency_key AS referral_key FROM outbox o"
        " LEFT JOIN referral r ON r.task_id = o.task_id WHERE o.id = ?",
        (entry_id,),
    ).fetchone()
    if row is None:
        return
    key = monitoring_key(row["task_id"])
    if state == "delivered" and str(row["idempotency_key"]).startswith("gp|"):
        kind, column = "feedback-delivered", "feedback_at"
    elif state == "dead" and row["idempotency_key"] == row["referral_key"]:
        kind, column = "delivery-failed", "delivery_failed_at"
    else:
        return
    conn.execute(
        f"UPDATE monitoring_referral SET {column} = COALESCE({column}, ?) WHERE key = ?",  # noqa: S608 - constant column names only
        (ts(now), key),
    )
    conn.execute(
        "INSERT INTO monitoring_event (key, at, kind) VALUES (?, ?, ?)", (key, ts(now), kind)
    )


class _Connected(Protocol):
    def _conn(self) -> SqlConnection: ...


def _trajectory(
    row: Any, reasons: tuple[str, ...], acts: tuple[tuple[str, str], ...]
) -> Trajectory:
    facts = ReferralFacts(
        key=row["key"],
        received_at=dt.datetime.fromtimestamp(row["received_at"], tz=dt.UTC),
        authored_on=dt.date.fromisoformat(row["authored_on"]),
        practice=row["practice"],
        source_system=row["source_system"],
        referrer_type=row["referrer_type"],
        welfare=row["welfare"],
        municipality=row["municipality"],
        sex=row["sex"],
        age_band=row["age_band"],
        reasons=reasons,
        deadline_at=from_ts(row["deadline_at"]),
    )
    return Trajectory(
        facts=facts,
        status=row["status"],
        reason_code=row["reason_code"],
        accepted_at=from_ts(row["accepted_at"]),
        first_contact_at=from_ts(row["first_contact_at"]),
        intake_at=from_ts(row["intake_at"]),
        activity_at=from_ts(row["activity_at"]),
        closed_at=from_ts(row["closed_at"]),
        follow_up_at=from_ts(row["follow_up_at"]),
        waiting_since=from_ts(row["waiting_since"]),
        waiting_until=from_ts(row["waiting_until"]),
        conversations=row["conversations"],
        feedback_at=from_ts(row["feedback_at"]),
        delivery_failed_at=from_ts(row["delivery_failed_at"]),
        activities=acts,
    )


class SqliteMonitoringTables:
    """``MonitoringReader`` on the store's file (a mixin of ``SqliteOutboxStore``)."""

    def trajectories(
        self: _Connected, since: dt.date | None = None, until: dt.date | None = None
    ) -> list[Trajectory]:
        """Referrals authored in ``[since, until)`` with their progress, oldest first."""
        low = since.isoformat() if since is not None else ""
        high = until.isoformat() if until is not None else "9999-12-31"
        conn = self._conn()
        window = "SELECT key FROM monitoring_referral WHERE authored_on >= ? AND authored_on < ?"
        reasons: dict[str, list[str]] = {}
        for key, code in conn.execute(
            f"SELECT key, code FROM monitoring_reason WHERE key IN ({window})",  # noqa: S608 - constant SQL only
            (low, high),
        ):
            reasons.setdefault(key, []).append(code)
        acts: dict[str, list[tuple[str, str]]] = {}
        for key, category, role in conn.execute(
            f"SELECT key, category, role FROM monitoring_activity WHERE key IN ({window})",  # noqa: S608 - constant SQL only
            (low, high),
        ):
            acts.setdefault(key, []).append((category, role))
        rows = conn.execute(
            "SELECT * FROM monitoring_referral WHERE authored_on >= ? AND authored_on < ?"
            " ORDER BY authored_on, received_at, key",
            (low, high),
        )
        return [
            _trajectory(
                r, tuple(sorted(reasons.get(r["key"], ()))), tuple(sorted(acts.get(r["key"], ())))
            )
            for r in rows
        ]

    def tallies(
        self: _Connected,
        *,
        period: Period,
        breakdown: Breakdown,
        now: dt.datetime,
        since: dt.date | None = None,
        until: dt.date | None = None,
        where: Mapping[str, str] | None = None,
    ) -> dict[str, Tally]:
        """The tallies of the referrals authored in ``[since, until)`` visible in ``where``
        (counted by SQLite: ``sqlite_tallies.count_window``)."""
        conn = self._conn()
        assert isinstance(conn, sqlite3.Connection)  # noqa: S101 - PostgreSQL counts its own way
        return count_window(conn, period, breakdown, now, since=since, until=until, where=where)
