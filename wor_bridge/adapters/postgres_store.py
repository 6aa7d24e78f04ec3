"""PostgreSQL implementation of ``OutboxStore`` (and ``MonitoringReader``): the SQLite store's
SQL on a psycopg 3 connection pool, shared by every replica of the service.

The statements are ``SqliteOutboxStore``'s and its mixins' (translated by ``postgres_db``); what
differs: claims choose their rows ``FOR UPDATE SKIP LOCKED`` (replicas never wait on each other's
claims, and a lease is held by one owner), an amendment reads its Task ``FOR UPDATE``, and every
concurrent path is decided by a unique key or a conditional ``UPDATE`` in the database (READ
COMMITTED): the same referral stored twice at once is one referral (``ON CONFLICT``), a deadline
alert is flagged once (``alerted_at IS NULL``), a ``jti`` is used once (primary key). Monitoring
tallies are counted by the SQLite store's ``GROUP BY`` statements in PostgreSQL's dialect
(``sqlite_tallies.count_rows``).

Dispatchers are woken by ``LISTEN``/``NOTIFY`` (``subscribe``), with their polling as fallback.

Encryption at rest (``sealer``) seals the same columns as on SQLite, with the same envelopes
(``adapters/sealing.py``); the sealed text columns are ``BYTEA`` here (migration step 13,
``sqlite_rows.text_param``), and the few statements that look inside an envelope in SQL are
PostgreSQL's own (``_sealed_patient``, ``_NEWEST``, ``audit_keys``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Final

import psycopg
from psycopg_pool import PoolTimeout

from wor_bridge.adapters import migrations, postgres_schema, sqlite_reseal, sqlite_retention
from wor_bridge.adapters.postgres_db import Database
from wor_bridge.adapters.sealing import MAGIC, PLAIN, Sealer
from wor_bridge.adapters.sql_conn import SqlConnection
from wor_bridge.adapters.sqlite_directory import SqliteDirectoryReplica
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.adapters.sqlite_tallies import POSTGRESQL, count_rows
from wor_bridge.core.monitoring_grid import Breakdown, Tally
from wor_bridge.core.monitoring_period import Period
from wor_bridge.ports import DirectoryReplica, OutboxStore
from wor_bridge.records import AuditEvent, PurgeCounts

_NEWEST: Final = (
    (
        "referral",
        "bundle",
        "SELECT task_id, bundle FROM referral WHERE updated_at IS NOT NULL"
        " ORDER BY updated_at DESC LIMIT 1",
    ),
    (
        "outbox",
        "payload",
        "SELECT idempotency_key, payload FROM outbox WHERE length(payload) > 0"
        " ORDER BY id DESC LIMIT 1",
    ),
    (
        "audit",
        "patient_id",
        "SELECT CAST(id AS TEXT), patient_id FROM audit WHERE length(patient_id) > 0"
        " ORDER BY id DESC LIMIT 1",
    ),
)
"""``sqlite_reseal._NEWEST`` without SQLite's ``rowid``: the referral touched last
(``referral_updated``), the newest outbox entry and audit record (by id, backwards)."""


class PostgresOutboxStore(SqliteOutboxStore):
    """``OutboxStore`` on one PostgreSQL database (``dsn``: a libpq connection string)."""

    _claim_lock: ClassVar[str] = " FOR UPDATE SKIP LOCKED"
    _row_lock: ClassVar[str] = " FOR UPDATE"
    _claim_plan: ClassVar[tuple[str, ...]] = (
        # The claim walks ``outbox_claim`` in (next_attempt_at, id) order and stops at the first
        # entry whose Task has no older pending message (``outbox_task_pending``). Statistics
        # taken while the table was small or had few pending entries made the planner sort and
        # join every pending entry for each claim (180 ms per claim at 1,000 pending entries,
        # measured in a drain): a burst after an outage is exactly when that happens.
        "SET LOCAL enable_sort = off",
        "SET LOCAL enable_bitmapscan = off",
        "SET LOCAL enable_hashjoin = off",
        "SET LOCAL enable_mergejoin = off",
    )
    _sealed_patient: ClassVar[str] = (
        f"substr(patient_id, 1, {len(MAGIC)}) = '\\x{MAGIC.hex()}'::bytea"
    )

    def __init__(
        self, dsn: str, *, pool_size: int = 10, migrate: bool = True, sealer: Sealer = PLAIN
    ) -> None:
        """Open the pool (raises ``psycopg.OperationalError`` at once when the database cannot
        be reached) and, unless ``migrate`` is False, bring the schema up to date and check the
        keys (``check_keys``); ``sealer`` encrypts the columns with patient data, as in the
        SQLite store."""
        self.path = "postgresql"
        self._sealer = sealer
        self.db = Database(dsn, pool_size=pool_size)
        self._listeners: list[threading.Event] = []
        if migrate:
            try:
                migrations.upgrade_postgres(self.db)
                self.check_keys()
            except BaseException:
                self.db.close()
                raise

    def check_keys(self) -> None:
        """``StoreError`` when the store's newest sealed values do not open with the sealer's
        keys, or are sealed while encryption is off (``sqlite_reseal.check_keys``; the store's
        name, never the DSN). Needs the schema (``migrate``, or ``upgrade_postgres``)."""
        sqlite_reseal.check_keys(self.db.reader, self._sealer, self.path, _NEWEST)

    def audit_keys(self) -> dict[str, int]:
        """Audit records with a patient identifier, per key that sealed it (``clear``: none),
        read from each envelope's header (``sealing.header``) in SQL."""
        rows = self.db.reader.execute(
            "SELECT CASE WHEN substr(patient_id, 1, ?) = ?"
            " THEN convert_from(substr(patient_id, 6, get_byte(patient_id, 4)), 'UTF8')"
            " ELSE 'clear' END AS key, COUNT(*) AS n FROM audit WHERE length(patient_id) > 0"
            " GROUP BY 1 ORDER BY 1",
            (len(MAGIC), MAGIC),
        )
        return {str(r["key"]): int(r["n"]) for r in rows.fetchall()}

    def _conn(self) -> SqlConnection:
        return self.db.reader

    @contextmanager
    def _write(self, *, durable: bool = True) -> Iterator[SqlConnection]:
        with self.db.write() as conn:
            if not durable:  # a lease: its loss in a crash costs nothing
                conn.execute("SET LOCAL synchronous_commit = off")
            yield conn

    def close(self) -> None:
        """Stop the listeners and close the pool."""
        for stop in self._listeners:
            stop.set()
        self.db.close()

    @contextmanager
    def exclusive(self, name: str) -> Iterator[bool]:
        """``pg_try_advisory_lock`` on a key drawn from ``name``, held for the block on a
        connection of its own (not the pool's, which the block uses; released by PostgreSQL too
        if that connection dies)."""
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), signed=True)
        with psycopg.connect(self.db.dsn, autocommit=True) as conn:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            held = row is not None and bool(row[0])
            try:
                yield held
            finally:
                if held:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))

    def purge(
        self,
        payload_before: dt.datetime,
        audit_before: dt.datetime,
        now: dt.datetime,
        *,
        audit: AuditEvent | None = None,
        dry_run: bool = False,
    ) -> PurgeCounts:
        """See ``OutboxStore.purge``: the SQLite store's one transaction, without its file
        steps (``secure_delete``, WAL checkpoint): on PostgreSQL the old row versions stay in
        the table files until ``VACUUM`` (autovacuum) reclaims them, and in the WAL and its
        archive for their retention (README, Several replicas and PostgreSQL). One replica
        purges at a time (an advisory lock); another that finds it held purges nothing."""
        with self.exclusive("retention-purge") as held:
            if not held:
                return PurgeCounts(0, 0, 0)
            return sqlite_retention.purge_rows(
                self, payload_before, audit_before, now, audit=audit, dry_run=dry_run
            )

    def check_writable(self, min_free_bytes: int = 0, *, probe: bool = True) -> str | None:
        """Whether a write acknowledged now is durable: None, or ``store-not-writable``. The
        files and the disk are the database server's (``min_free_bytes`` does not apply); with
        ``probe``, a transaction of its own runs an ``UPDATE`` (of no row), takes a transaction id
        and commits synchronously: that fails on a read-only database or standby, a full WAL
        disk, a lost server. Never raises; names no DSN."""
        del min_free_bytes
        if not probe:
            return None
        try:
            with self._write() as conn:
                conn.execute("SET LOCAL synchronous_commit = on")
                conn.execute("UPDATE schema_version SET name = name WHERE version < 0")
                conn.execute("SELECT txid_current()")
        except (psycopg.Error, PoolTimeout):
            return "store-not-writable"
        return None

    def subscribe(self, wake: Callable[[], None], retry_s: float = 5.0) -> Callable[[], None]:
        """Call ``wake`` when any replica queues a message (``NOTIFY``), from a daemon thread
        that reconnects after ``retry_s``; returns the function that stops it."""
        stop = threading.Event()
        self._listeners.append(stop)
        threading.Thread(
            target=self.db.listen,
            args=(wake, stop, retry_s),
            name="wor-bridge-store-listen",
            daemon=True,
        ).start()
        return stop.set

    def tallies(
        self,
        *,
        period: Period,
        breakdown: Breakdown,
        now: dt.datetime,
        since: dt.date | None = None,
        until: dt.date | None = None,
        where: Mapping[str, str] | None = None,
    ) -> dict[str, Tally]:
        """The tallies of the referrals authored in ``[since, until)`` visible in ``where``,
        counted by PostgreSQL with the SQLite store's statements (``sqlite_tallies.count_rows``
        in the ``POSTGRESQL`` dialect), both in one read-only REPEATABLE READ transaction so they
        see the same referrals. Raises ``psycopg.Error`` when the database fails."""
        with self.db.pool.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

            def run(sql: str, params: Mapping[str, Any]) -> Iterable[Sequence[Any]]:
                rows: list[Sequence[Any]] = conn.execute(sql, params).fetchall()
                return rows

            return count_rows(
                run, POSTGRESQL, period, breakdown, now, since=since, until=until, where=where
            )


def _conforms(store: PostgresOutboxStore) -> OutboxStore:
    """Lets mypy check that the class implements the port."""
    return store


class PostgresDirectoryReplica(SqliteDirectoryReplica):
    """``DirectoryReplica`` in the PostgreSQL store's database (its pool, its schema)."""

    _apply_lock: ClassVar[str] = f"SELECT pg_advisory_xact_lock({postgres_schema.LOCK_KEY + 1})"

    def __init__(self, store: PostgresOutboxStore) -> None:
        self.path = store.path
        self._db = store.db

    def _conn(self) -> SqlConnection:
        return self._db.reader

    @contextmanager
    def _write(self) -> Iterator[SqlConnection]:
        with self._db.write() as conn:
            yield conn

    def close(self) -> None:
        """Nothing of its own to close (the store owns the pool)."""


def _replica_conforms(replica: PostgresDirectoryReplica) -> DirectoryReplica:
    """Lets mypy check that the class implements the port."""
    return replica
