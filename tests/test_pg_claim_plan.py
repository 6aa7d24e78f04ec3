"""The claim on PostgreSQL stays on its index however large the backlog and whatever the
planner's statistics say: it reads a handful of entries, not every pending one (schema step 12,
``PostgresOutboxStore._claim_plan``). Checked with the server's own ``EXPLAIN ANALYZE`` of the
statement the store runs, not with a clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from tests.pg import empty
from tests.test_store_contract import T0, at
from wor_bridge.adapters.postgres_db import translate
from wor_bridge.adapters.postgres_store import PostgresOutboxStore
from wor_bridge.adapters.sql_conn import SqlConnection

BACKLOG = 3000


class _Recording(PostgresOutboxStore):
    """The PostgreSQL store, remembering every statement its write transactions run."""

    seen: list[tuple[str, Any]]

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[Any]:
        with super()._write(durable=durable) as conn:
            yield _Spy(conn, self.seen)


class _Spy:
    """A session that records (sql, parameters) before running them."""

    def __init__(self, conn: SqlConnection, seen: list[tuple[str, Any]]) -> None:
        self._conn = conn
        self._seen = seen

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        self._seen.append((sql, parameters))
        return self._conn.execute(sql, parameters)

    def executemany(self, sql: str, rows: Any, /) -> Any:
        return self._conn.executemany(sql, rows)


def _nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from _nodes(child)


def test_a_claim_reads_a_few_entries_of_a_large_backlog_with_stale_statistics(
    pg_dsn: str,
) -> None:
    """3,000 pending entries (one Task waiting behind another's older message), statistics taken
    when the table was empty: the claim walks ``outbox_claim`` without a sort and stops early."""
    empty(pg_dsn)
    store = _Recording(pg_dsn, pool_size=2)
    store.seen = []
    try:
        with psycopg.connect(pg_dsn) as conn:
            conn.execute("ANALYZE outbox")  # statistics of an empty table
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO referral (task_id, idempotency_key, source_system, destination,"
                    " mapping, patient_id, responsible, client_id, received_at, bundle)"
                    " VALUES (%s, %s, 'his', 'welzijn-a', 'm', 'urn:uuid:p', 'agb|1', 'c', %s,"
                    " '{}')",
                    [(f"t{n}", f"r{n}", T0.timestamp()) for n in range(BACKLOG // 2)],
                )
                cur.executemany(
                    "INSERT INTO outbox (idempotency_key, task_id, destination, payload, state,"
                    " attempts, next_attempt_at, created_at) VALUES (%s, %s, 'welzijn-a',"
                    " '{}', 'pending', 0, %s, %s)",
                    [
                        (f"k{n}", f"t{n // 2}", at(n).timestamp(), T0.timestamp())
                        for n in range(BACKLOG)
                    ],
                )
        claimed = store.claim_due("replica-1", at(BACKLOG + 1), 60.0, 1)
        assert [e.idempotency_key for e in claimed] == ["k0"]
        sql, params = next((s, p) for s, p in store.seen if s.startswith("UPDATE outbox SET lease"))
        settings = [s for s, _ in store.seen if s.startswith("SET LOCAL enable_")]
        assert settings, "the claim's planner settings were not applied"
        with psycopg.connect(pg_dsn) as conn:  # one transaction, rolled back
            for setting in settings:
                conn.execute(setting)
            explain = f"EXPLAIN (ANALYZE, FORMAT JSON) {translate(sql)}"
            row = conn.execute(explain.encode(), params).fetchone()
            conn.rollback()
        assert row is not None
        plan = (row[0] if not isinstance(row[0], str) else json.loads(row[0]))[0]["Plan"]
        nodes = list(_nodes(plan))
        assert not [n for n in nodes if n["Node Type"] == "Sort"]
        walk = [n for n in nodes if n.get("Index Name") == "outbox_claim"]
        assert walk, "the claim did not walk outbox_claim"
        # k0 is leased now: the next free head of a Task is k2 (k1 waits behind k0)
        assert sum(n["Actual Rows"] * n["Actual Loops"] for n in walk) <= 5
    finally:
        store.close()
