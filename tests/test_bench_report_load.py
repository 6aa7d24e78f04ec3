"""The PostgreSQL report benchmark's bulk load (``bench/bench_report.py --load copy``) writes
exactly the rows the store's hooks write into PostgreSQL (``--load hooks``), so its figures are
those of a store filled by the service."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from wor_bridge.adapters.postgres_store import PostgresOutboxStore
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore

ORDER = {
    "monitoring_referral": "key",
    "monitoring_reason": "key, code",
    "monitoring_activity": "key, category, role",
    "monitoring_event": "id",
}


def _bench() -> ModuleType:
    path = Path(__file__).parents[1] / "bench" / "bench_report.py"
    spec = importlib.util.spec_from_file_location("bench_report", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(store: PostgresOutboxStore, table: str) -> list[tuple[Any, ...]]:
    sql = f"SELECT * FROM {table} ORDER BY {ORDER[table]}"
    return [tuple(row) for row in store._conn().execute(sql).fetchall()]


def test_copied_rows_equal_the_rows_the_hooks_write(
    tmp_path: Path, pg_store: PostgresOutboxStore
) -> None:
    """COPY of the hooks' SQLite rows equals the hooks' PostgreSQL rows; event ids continue."""
    bench = _bench()
    bench.load(pg_store, 300, 3000)
    source = SqliteOutboxStore(tmp_path / "source.sqlite")
    bench.load(source, 300, 3000)
    with bench.database(pg_store.db.dsn) as dsn:
        copied = PostgresOutboxStore(dsn, pool_size=2)
        try:
            bench.copy_rows(source, copied)
            for table in ORDER:
                hooked = _rows(pg_store, table)
                assert hooked, table
                assert _rows(copied, table) == hooked, table
            with copied._write() as conn, pg_store._write() as other:
                sql = (
                    "INSERT INTO monitoring_event (key, at, kind) VALUES ('k', 0, 'x') RETURNING id"
                )
                assert conn.execute(sql).fetchone()[0] == other.execute(sql).fetchone()[0]
        finally:
            copied.close()
            source.close()
