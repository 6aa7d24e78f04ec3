"""The monitoring tables on PostgreSQL: the generated referrals of ``test_monitoring_readers``
(copied row by row from its SQLite store) give the same trajectories and the same reports as the
in-memory and SQLite stores (the PostgreSQL store counts its tallies by the pure path)."""

from __future__ import annotations

from pathlib import Path

from tests.test_monitoring_readers import READERS, _Clock, _stores
from wor_bridge.adapters.postgres_store import PostgresOutboxStore
from wor_bridge.core.monitoring_grid import BREAKDOWNS
from wor_bridge.core.monitoring_period import PERIODS
from wor_bridge.core.monitoring_settings import MonitoringSettings
from wor_bridge.usecases.monitoring import monitoring_report


def test_postgresql_monitoring_matches_sqlite_and_memory(
    tmp_path: Path, pg_store: PostgresOutboxStore
) -> None:
    """Trajectories equal; every period, breakdown and reader: the same report on all three."""
    sqlite, memory = _stores(tmp_path, 7)
    with pg_store._write() as conn:
        for table in ("monitoring_referral", "monitoring_reason", "monitoring_activity"):
            rows = sqlite._conn().execute(f"SELECT * FROM {table}").fetchall()
            for row in rows:
                names = ", ".join(row.keys())
                marks = ", ".join("?" * len(row.keys()))
                conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(row))
    assert pg_store.trajectories() == memory.trajectories() == sqlite.trajectories()
    settings = MonitoringSettings()
    differing = []
    for period in PERIODS:
        for breakdown in BREAKDOWNS:
            for reader in READERS:
                kw = {"reader": reader, "period": period, "breakdown": breakdown}
                one = monitoring_report(pg_store, settings, _Clock(), **kw)  # type: ignore[arg-type]
                two = monitoring_report(memory, settings, _Clock(), **kw)  # type: ignore[arg-type]
                if one != two:
                    differing.append((period, breakdown, reader.user))
    assert not differing, differing
    sqlite.close()
    memory.close()
