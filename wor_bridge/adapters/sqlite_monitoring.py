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

from wor_bridge.adapters.sqlite_rows import from_ts, ts
from wor_bridge.core.monitoring_facts import (
    UNKNOWN,
    Progress,
    ReferralFacts,
    Trajectory,
    monitoring_key,
)
from wor_bridge.core.monitoring_grid import (
    CONTACT_BINS,
    SCOPE_FIELDS,
    TOTAL,
    Breakdown,
    Period,
    Profile,
    Tally,
    contact_bin,
    days,
    overdue_cells,
    profile_cells,
    tail_cells,
    tally_of_counts,
    waiting_end,
)

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


def insert_facts(conn: sqlite3.Connection, facts: ReferralFacts) -> None:
    """Record a new referral's facts (inside the intake transaction)."""
    conn.execute(
        "INSERT OR IGNORE INTO monitoring_referral (key, received_at, authored_on, practice,"
        " source_system, referrer_type, welfare, municipality, sex, age_band, deadline_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            facts.key,
            ts(facts.received_at),
            facts.authored_on.isoformat(),
            facts.practice,
            facts.source_system,
            facts.referrer_type,
            facts.welfare,
            facts.municipality,
            facts.sex,
            facts.age_band,
            _opt(facts.deadline_at),
        ),
    )
    conn.executemany(
        "INSERT OR IGNORE INTO monitoring_reason (key, code) VALUES (?, ?)",
        [(facts.key, code) for code in facts.reasons],
    )
    conn.execute(
        "INSERT INTO monitoring_event (key, at, kind, status) VALUES (?, ?, 'referred', ?)",
        (facts.key, ts(facts.received_at), "requested"),
    )


def apply_progress(conn: sqlite3.Connection, key: str, progress: Progress) -> None:
    """Add one change to a referral's facts (inside the Task update's transaction)."""
    once = ", ".join(f"{c} = COALESCE({c}, ?)" for c in _SET_ONCE)
    sql = (
        "UPDATE monitoring_referral SET status = ?, reason_code = COALESCE(?, reason_code),"  # noqa: S608 - constant column names only
        f" {once}, waiting_until = CASE WHEN ? IS NOT NULL THEN ? ELSE waiting_until END,"
        " conversations = CASE WHEN ? IS NULL THEN conversations"
        " ELSE MAX(COALESCE(conversations, 0), ?) END WHERE key = ?"
    )
    conn.execute(
        sql,
        (
            progress.status,
            progress.reason_code,
            *(_opt(getattr(progress, c)) for c in _SET_ONCE),
            _opt(progress.waiting_until),
            _opt(progress.waiting_until),
            progress.conversations,
            progress.conversations,
            key,
        ),
    )
    conn.executemany(
        "INSERT OR IGNORE INTO monitoring_activity (key, category, role) VALUES (?, ?, ?)",
        [(key, category, role) for category, role in progress.activities],
    )
    conn.execute(
        "INSERT INTO monitoring_event (key, at, kind, status, business_status, code)"
        " VALUES (?, ?, 'task', ?, ?, ?)",
        (key, ts(progress.at), progress.status, progress.business_status, progress.reason_code),
    )


def note_attempt(conn: sqlite3.Connection, entry_id: int, state: str, now: dt.datetime) -> None:
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
    def _conn(self) -> sqlite3.Connection: ...


def _trajectory(
    row: sqlite3.Row, reasons: tuple[str, ...], acts: tuple[tuple[str, str], ...]
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


_PERIOD_SQL: Final = {
    "month": "substr(authored_on, 1, 7)",
    "quarter": "substr(authored_on, 1, 4) || '-Q' || ((CAST(substr(authored_on, 6, 2) AS INTEGER)"
    " + 2) / 3)",
    "year": "substr(authored_on, 1, 4)",
}
_GROUP_COLUMN: Final = {
    "practice": "practice",
    "referrer_type": "referrer_type",
    "welfare": "welfare",
    "municipality": "municipality",
    "sex": "sex",
    "age_band": "age_band",
}
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_US: Final = dt.timedelta(microseconds=1)


def _us(value: float | None) -> int | None:
    """A stored time as whole microseconds, exactly as ``from_ts`` rounds it (SQL ``wor_us``;
    SQLite may evaluate it on NULL even behind an ``AND``)."""
    if value is None:
        return None
    return (dt.datetime.fromtimestamp(value, tz=dt.UTC) - _EPOCH) // _US


def _compare(a: str, op: str, b: str, b_us: str) -> str:
    """SQL for ``a op b`` on the times as ``from_ts`` reads them (whole microseconds): the
    stored REALs decide unless they are within a millisecond, then ``wor_us`` does."""
    return f"(CASE WHEN ABS({a} - {b}) > 0.001 THEN {a} {op} {b} ELSE wor_us({a}) {op} {b_us} END)"


_FLAGS: Final = (
    "(accepted_at IS NOT NULL) + 2 * (first_contact_at IS NOT NULL) + 4 * (intake_at IS NOT NULL)"
    " + 8 * (activity_at IS NOT NULL) + 16 * (follow_up_at IS NOT NULL)"
    " + 32 * (feedback_at IS NOT NULL) + 64 * (deadline_at IS NOT NULL)"
    f" + 128 * (deadline_at IS NOT NULL AND {_compare('deadline_at', '<', ':now', ':now_us')})"
    " + 256 * (deadline_at IS NOT NULL AND first_contact_at IS NOT NULL"
    f" AND {_compare('first_contact_at', '<=', 'deadline_at', 'wor_us(deadline_at)')})"
)


def _profile(status: str, reason_code: str | None, referrer: str, bits: int) -> Profile:
    return Profile(
        status=status, reason_code=reason_code, referrer_type=referrer, accepted=bool(bits & 1),
        first_contact=bool(bits & 2), intake=bool(bits & 4), activity=bool(bits & 8),
        follow_up=bool(bits & 16), feedback=bool(bits & 32), deadline=bool(bits & 64),
        deadline_passed=bool(bits & 128), on_time=bool(bits & 256),
    )  # fmt: skip


class _Counting:
    """Counts per period label: ``(group, variable, category) -> [count, first rank]``."""

    def __init__(self) -> None:
        self.cells: dict[str, dict[tuple[str, str, str], list[int]]] = {}
        self.samples: dict[str, dict[tuple[str, str], list[float]]] = {}

    def add(self, label: str, g: str, var: str, category: str, n: int, rank: int) -> None:  # noqa: PLR0917 - a hot loop, one call shape
        mine = self.cells.setdefault(label, {})
        seen = mine.get((g, var, category))
        if seen is None:
            mine[(g, var, category)] = [n, rank]
        else:
            seen[0] += n
            seen[1] = min(seen[1], rank)

    def sample(self, label: str, g: str, var: str, value: float) -> None:
        self.samples.setdefault(label, {}).setdefault((var, g), []).append(value)

    def tallies(self) -> dict[str, Tally]:
        return {
            label: tally_of_counts(
                ((g, var, c, n, rank) for (g, var, c), (n, rank) in cells.items()),
                self.samples.get(label, {}),
            )
            for label, cells in self.cells.items()
        }


def _count_rows(rows: Any, now: dt.datetime, counting: _Counting) -> None:
    """Count the referral rows (oldest first, so a cell's first rank is the first referral
    counted in it). Referrals with the same profile, or the same reasons or activities, are
    counted together and expanded into their cells once (``_expand``)."""
    at, utc = dt.datetime.fromtimestamp, dt.UTC
    profiles: dict[tuple[Any, ...], list[int]] = {}
    sets: dict[tuple[str, str, str], list[int]] = {}
    samples = counting.samples
    for rank, row in enumerate(rows):
        _key, label, g, status, _code, _referrer, _bits, received, first = row[:9]
        extra: tuple[Any, ...] = ()
        if first is not None:
            waited = days(at(received, utc), at(first, utc))
            samples.setdefault(label, {}).setdefault(("contact_time", g), []).append(waited)
            extra = (contact_bin(waited),)
        closed, since, until, conversations = row[9:13]
        if since is not None:
            end = waiting_end(status, from_ts(until), from_ts(closed))
            waited = days(at(since, utc), end or now)
            samples.setdefault(label, {}).setdefault(("waiting_time", g), []).append(waited)
            extra += ("now" if end is None else "ended",)
        if conversations is not None and conversations > 0:
            samples.setdefault(label, {}).setdefault(("conversations", g), []).append(
                float(conversations)
            )
            extra += ("conversations",)
        profile = (*row[1:7], extra)
        seen = profiles.get(profile)
        if seen is None:
            profiles[profile] = [1, rank]
        else:
            seen[0] += 1
        for multi in row[13:]:
            if multi is not None:
                seen = sets.get((label, g, multi))
                if seen is None:
                    sets[(label, g, multi)] = [1, rank]
                else:
                    seen[0] += 1
    _expand(profiles, sets, counting)


def _expand(
    profiles: dict[tuple[Any, ...], list[int]],
    sets: dict[tuple[str, str, str], list[int]],
    counting: _Counting,
) -> None:
    """The cells of each distinct profile and each distinct set of reasons or activities."""
    for (label, g, status, code, referrer, bits, extra), (n, rank) in profiles.items():
        p = _profile(status, code, referrer, bits)
        cells = [*profile_cells(p), ("referrer", p.referrer_type), *tail_cells(p)]
        if extra and extra[0] in _BINS:
            cells += [("contact_time", "n"), ("contact_days", extra[0])]
        cells += overdue_cells(p)
        if "now" in extra:
            cells.append(("waiting", "now"))
        if "now" in extra or "ended" in extra:
            cells.append(("waiting_time", "n"))
        if "conversations" in extra:
            cells.append(("conversations", "n"))
        for var, category in cells:
            counting.add(label, g, var, category, n, rank)
    for (label, g, multi), (n, rank) in sets.items():
        if multi.startswith(_REASONS):
            for code in multi[1:].split(_UNIT):
                counting.add(label, g, "reason", code, n, rank)
            continue
        pairs = [pair.split(_UNIT) for pair in multi[1:].split(_RECORD)]
        for category in sorted({c for c, _r in pairs}):
            counting.add(label, g, "activity_category", category, n, rank)
        for role in sorted({r for _c, r in pairs}):
            counting.add(label, g, "activity_role", role, n, rank)


_BINS: Final = frozenset(label for _top, label in CONTACT_BINS)
_UNIT, _RECORD, _REASONS, _ACTIVITIES = "\x1f", "\x1e", "r", "a"
_SETS_SQL: Final = (
    "(SELECT 'r' || group_concat(code, char(31)) FROM monitoring_reason x WHERE x.key = m.key),"
    " (SELECT 'a' || group_concat(category || char(31) || role, char(30))"
    " FROM monitoring_activity x WHERE x.key = m.key)"
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
        """The tallies of the referrals authored in ``[since, until)`` visible in ``where``."""
        if where is not None and not where:
            return {}
        scope = [name for name in SCOPE_FIELDS if where is not None and name in where]
        column = _GROUP_COLUMN.get(breakdown)
        group = f"COALESCE(NULLIF({column}, ''), :unknown)" if column else ":total"
        condition = "authored_on >= :low AND authored_on < :high" + "".join(
            f" AND {name} = :{name}" for name in scope
        )
        sql = (
            f"SELECT key, {_PERIOD_SQL[period]}, {group}, status, reason_code, referrer_type,"  # noqa: S608 - constant SQL only
            f" {_FLAGS}, received_at, first_contact_at, closed_at, waiting_since, waiting_until,"
            f" conversations, {_SETS_SQL} FROM monitoring_referral m WHERE {condition}"
            " ORDER BY authored_on, received_at, key"
        )
        params: dict[str, Any] = {
            "low": since.isoformat() if since is not None else "",
            "high": until.isoformat() if until is not None else "9999-12-31",
            "now": now.timestamp(),
            "now_us": (now - _EPOCH) // _US,
            "unknown": UNKNOWN,
            "total": TOTAL,
            **{name: where[name] for name in scope if where is not None},
        }
        conn = self._conn()
        conn.create_function("wor_us", 1, _us, deterministic=True)
        counting = _Counting()
        _count_rows(conn.execute(sql, params), now, counting)
        return counting.tallies()
