"""``order_key`` sorts bytewise (as SQLite compares TEXT) exactly like the tuple
``(authored_on, received_at, key)`` that orders ``MonitoringReader.trajectories``."""

from __future__ import annotations

import datetime as dt
import sqlite3

from hypothesis import given
from hypothesis import strategies as st

from wor_bridge.adapters.sqlite_monitoring_derived import order_key

ROWS = st.lists(
    st.tuples(
        st.dates(dt.date(1000, 1, 1), dt.date(9999, 12, 31)).map(dt.date.isoformat),
        st.floats(allow_nan=False, allow_infinity=False, width=64)
        | st.sampled_from((0.0, 1.5, 1.7e9, 1.7e9 + 1e-6, -1.0)),
        st.text(min_size=1, max_size=8),
    ),
    max_size=30,
)


@given(ROWS)
def test_order_key_sorts_like_the_tuple(rows: list[tuple[str, float, str]]) -> None:
    """Python's string order of the keys is the tuple order (equal tuples, equal keys)."""
    keyed = sorted(rows, key=lambda r: order_key(*r))
    assert [(a, b if b else 0.0, c) for a, b, c in keyed] == [
        (a, b if b else 0.0, c) for a, b, c in sorted(rows)
    ]


@given(ROWS)
def test_sqlite_min_of_order_key_is_the_first_in_sql_order(
    rows: list[tuple[str, float, str]],
) -> None:
    """SQLite's ``MIN(order_key)`` names the row that ``ORDER BY authored_on, received_at, key``
    puts first."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (a TEXT, r REAL, k TEXT, o TEXT)")
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", [(*r, order_key(*r)) for r in rows])
    first = conn.execute("SELECT a, r, k FROM t ORDER BY a, r, k LIMIT 1").fetchone()
    least = conn.execute("SELECT a, r, k FROM t WHERE o = (SELECT MIN(o) FROM t)").fetchone()
    assert least == first
    conn.close()
