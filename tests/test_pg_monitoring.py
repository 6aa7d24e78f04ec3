"""The monitoring tables on PostgreSQL: the generated referrals of ``test_monitoring_readers``
(copied row by row from its SQLite store) give the same trajectories and the same reports as the
in-memory and SQLite stores, and the PostgreSQL store's own counting (``sqlite_tallies.count_rows``
in PostgreSQL's dialect) gives exactly the pure path's figures (``core.monitoring.compute`` over
its stored trajectories) for every period, breakdown and reader scope."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.test_monitoring_readers import NOW, READERS, _Clock, _stores
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.adapters.postgres_store import PostgresOutboxStore
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.adapters.sqlite_tallies import POSTGRESQL, micros
from wor_bridge.core.monitoring import compute
from wor_bridge.core.monitoring_grid import BREAKDOWNS, grid_of
from wor_bridge.core.monitoring_period import PERIODS
from wor_bridge.core.monitoring_settings import MonitoringSettings
from wor_bridge.usecases.monitoring import monitoring_report


def _copy(sqlite: SqliteOutboxStore, pg: PostgresOutboxStore) -> None:
    """The SQLite store's monitoring rows (derived columns included) into the PostgreSQL store."""
    with pg._write() as conn:
        for table in ("monitoring_referral", "monitoring_reason", "monitoring_activity"):
            rows = sqlite._conn().execute(f"SELECT * FROM {table}").fetchall()
            for row in rows:
                names = ", ".join(row.keys())
                marks = ", ".join("?" * len(row.keys()))
                conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(row))


@pytest.fixture(params=[1, 7])
def copied(
    request: pytest.FixtureRequest, tmp_path: Path, pg_store: PostgresOutboxStore
) -> Iterator[tuple[PostgresOutboxStore, SqliteOutboxStore, MemoryOutboxStore]]:
    """The same generated referrals in PostgreSQL, SQLite and memory."""
    sqlite, memory = _stores(tmp_path, request.param)
    _copy(sqlite, pg_store)
    yield pg_store, sqlite, memory
    sqlite.close()
    memory.close()


def test_postgresql_monitoring_matches_the_pure_path_sqlite_and_memory(
    copied: tuple[PostgresOutboxStore, SqliteOutboxStore, MemoryOutboxStore],
) -> None:
    """Every period x breakdown x reader: PostgreSQL's report = pure path = memory = SQLite."""
    pg, sqlite, memory = copied
    assert pg.trajectories() == memory.trajectories() == sqlite.trajectories()
    settings = MonitoringSettings()
    differing = []
    for period in PERIODS:
        for breakdown in BREAKDOWNS:
            for reader in READERS:
                kw = {"reader": reader, "period": period, "breakdown": breakdown}
                one = monitoring_report(pg, settings, _Clock(), **kw)  # type: ignore[arg-type]
                two = monitoring_report(memory, settings, _Clock(), **kw)  # type: ignore[arg-type]
                three = monitoring_report(sqlite, settings, _Clock(), **kw)  # type: ignore[arg-type]
                pure = compute(
                    [t for t in pg.trajectories() if reader.sees(t)], period=period,
                    breakdown=breakdown, settings=settings, now=NOW,
                    threshold=settings.threshold, scope=reader.scope,
                )  # fmt: skip
                if not one == two == three == pure:
                    differing.append((period, breakdown, reader.user))
    assert not differing, differing


def test_postgresql_tallies_give_the_same_grids_in_the_same_order(
    copied: tuple[PostgresOutboxStore, SqliteOutboxStore, MemoryOutboxStore],
) -> None:
    """PostgreSQL's grids equal the pure path's: cells in order, relations, samples (multisets)."""
    pg, _sqlite, memory = copied
    for period in PERIODS:
        for breakdown in BREAKDOWNS:
            kw = {"period": period, "breakdown": breakdown, "now": NOW}
            one = pg.tallies(**kw)  # type: ignore[arg-type]
            two = memory.tallies(**kw)  # type: ignore[arg-type]
            assert sorted(one) == sorted(two), (period, breakdown)
            for label in one:
                a, b = grid_of(one[label]), grid_of(two[label])
                assert list(a.values.items()) == list(b.values.items()), (period, breakdown, label)
                assert a.relations == b.relations, (period, breakdown, label)
                assert a.groups == b.groups
                assert {k: sorted(v) for k, v in a.samples.items()} == {
                    k: sorted(v) for k, v in b.samples.items()
                }, (period, breakdown, label)


def test_postgresql_window_and_scope_match_the_memory_reader(
    copied: tuple[PostgresOutboxStore, SqliteOutboxStore, MemoryOutboxStore],
) -> None:
    """A window ``[since, until)`` and a reader's scope select the same referrals as in memory."""
    pg, _sqlite, memory = copied
    since, until = dt.date(2026, 1, 1), dt.date(2026, 3, 1)
    for reader in READERS:
        kw = {"period": "month", "breakdown": "practice", "now": NOW, "since": since,
              "until": until, "where": reader.where}  # fmt: skip
        one, two = pg.tallies(**kw), memory.tallies(**kw)  # type: ignore[arg-type]
        assert sorted(one) == sorted(two), reader.user
        for label in one:
            a, b = grid_of(one[label]), grid_of(two[label])
            assert list(a.values.items()) == list(b.values.items()), (reader.user, label)


def test_postgresql_microseconds_round_as_python_does(pg_store: PostgresOutboxStore) -> None:
    """PostgreSQL's ``micros`` expression rounds stored times as ``from_ts`` does, halves too."""
    rng = random.Random(3)
    values = [1.0, 0.5e-6, 1.5e-6, 2.5e-6, 1_700_000_000.0000005, 1_700_000_000.9999995]
    values += [rng.uniform(1.6e9, 1.9e9) for _ in range(3000)]
    base = dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()
    values += [base + n / 2_000_000 for n in range(-2000, 2000)]
    values += [round(rng.uniform(1.6e9, 1.9e9)) + k / 2e6 for k in range(1, 2_000_000, 99_991)]
    sql = f"SELECT {POSTGRESQL.us('CAST(v AS DOUBLE PRECISION)')} FROM unnest(%(v)s) AS t(v)"
    with pg_store.db.pool.connection() as conn:
        got = [row[0] for row in conn.execute(sql, {"v": values}).fetchall()]
    wrong = [v for v, us in zip(values, got, strict=True) if us != micros(v)]
    assert not wrong, wrong[:5]
