"""Facts derived from a SQLite monitoring row when it is written, so a report counts with
``GROUP BY`` and one pass instead of building every referral (``sqlite_tallies``):

- ``order_key``: text that sorts as ``(authored_on, received_at, key)``, the order
  ``MonitoringReader.trajectories`` gives (a cell's first referral is the least key in it);
- ``reasons`` / ``activities``: the sorted set of the referral's reason codes and of its
  activities (category, role), as one text each (``encode_reasons``, ``encode_activities``);
- ``contact_days``: days from receipt to first contact, exactly as ``monitoring_cells.days``
  gives them on the stored times (``from_ts``), set with the first contact.

``add_derived`` is schema step 9 (``adapters.migrations``): it adds the columns to
``monitoring_referral`` when missing and fills them from the rows of an existing store. No
patient data is in any of them.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import struct
from collections.abc import Iterable
from typing import Final

from wor_bridge.adapters import sqlite_schema
from wor_bridge.adapters.sql_conn import SqlConnection
from wor_bridge.core.monitoring_cells import days

DERIVED: Final = (
    ("order_key", "TEXT"),
    ("reasons", "TEXT"),
    ("activities", "TEXT"),
    ("contact_days", "REAL"),
)
UNIT: Final = "\x1f"
"""Between the codes of a set, and between an activity's category and role."""
RECORD: Final = "\x1e"
"""Between the activities of a set."""
PG_DERIVED: Final = "".join(
    f"ALTER TABLE monitoring_referral ADD COLUMN IF NOT EXISTS {name} "
    f"{'DOUBLE PRECISION' if kind == 'REAL' else kind};\n"
    for name, kind in DERIVED
)
"""Step 9 on PostgreSQL: the same columns (a PostgreSQL store has no rows older than them)."""


def order_key(authored_on: str, received_at: float, key: str) -> str:
    """Text that sorts (bytewise, as SQLite compares TEXT) like ``(authored_on, received_at,
    key)`` with ``received_at`` compared as a number: the date (fixed width), the REAL's IEEE 754
    bits made order-preserving (sign bit set for positive numbers, all bits flipped for negative
    ones) in 16 hex digits, then the key."""
    (bits,) = struct.unpack(">Q", struct.pack(">d", received_at))
    bits = bits ^ 0xFFFF_FFFF_FFFF_FFFF if bits >> 63 else bits | 1 << 63
    return f"{authored_on}{bits:016x}{key}"


def encode_reasons(codes: Iterable[str]) -> str | None:
    """The set of reason codes as one text (sorted; None when there is none)."""
    return UNIT.join(sorted(set(codes))) or None


def encode_activities(pairs: Iterable[tuple[str, str]]) -> str | None:
    """The set of activities (category, role) as one text (sorted; None when there is none)."""
    return RECORD.join(f"{c}{UNIT}{r}" for c, r in sorted(set(pairs))) or None


def contact_days(received_at: float, first_contact_at: float | None) -> float | None:
    """Days from the stored receipt to the stored first contact (None without one)."""
    if first_contact_at is None:
        return None
    at, utc = dt.datetime.fromtimestamp, dt.UTC
    return days(at(received_at, utc), at(first_contact_at, utc))


def reasons_of(conn: SqlConnection, key: str) -> str | None:
    """A referral's reasons as stored in ``monitoring_reason``, encoded."""
    rows = conn.execute("SELECT code FROM monitoring_reason WHERE key = ?", (key,))
    return encode_reasons(code for (code,) in rows)


def activities_of(conn: SqlConnection, key: str) -> str | None:
    """A referral's activities as stored in ``monitoring_activity``, encoded."""
    rows = conn.execute("SELECT category, role FROM monitoring_activity WHERE key = ?", (key,))
    return encode_activities((c, r) for c, r in rows)


def add_derived(conn: sqlite3.Connection) -> None:
    """Schema step 9: the derived columns, added when missing and filled from the rows (inside
    the step's transaction; a store without referrals just gets the columns)."""
    sqlite_schema.add_columns(conn, "monitoring_referral", DERIVED)
    _fill(conn)


def _fill(conn: sqlite3.Connection) -> None:
    reasons: dict[str, list[str]] = {}
    for key, code in conn.execute("SELECT key, code FROM monitoring_reason"):
        reasons.setdefault(key, []).append(code)
    acts: dict[str, list[tuple[str, str]]] = {}
    for key, category, role in conn.execute("SELECT key, category, role FROM monitoring_activity"):
        acts.setdefault(key, []).append((category, role))
    rows = conn.execute(
        "SELECT key, authored_on, received_at, first_contact_at FROM monitoring_referral"
    ).fetchall()
    conn.executemany(
        "UPDATE monitoring_referral SET order_key = ?, reasons = ?, activities = ?,"
        " contact_days = ? WHERE key = ?",
        [
            (
                order_key(authored_on, received, key),
                encode_reasons(reasons.get(key, ())),
                encode_activities(acts.get(key, ())),
                contact_days(received, first),
                key,
            )
            for key, authored_on, received, first in rows
        ],
    )
