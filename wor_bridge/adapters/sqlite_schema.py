"""The SQLite store's schema, and the one migration an older file needs.

``CREATE ... IF NOT EXISTS`` makes a new file; ``migrate`` adds the columns later versions
introduced to a file made before them (in one ``BEGIN IMMEDIATE`` transaction, so two processes
opening the same file do not both add a column).
"""

from __future__ import annotations

import sqlite3
from typing import Final

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS referral (
    task_id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    source_system TEXT NOT NULL,
    destination TEXT NOT NULL,
    mapping TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    responsible TEXT NOT NULL,
    client_id TEXT NOT NULL,
    received_at REAL NOT NULL,
    bundle BLOB NOT NULL,
    service_request_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'requested',
    business_status TEXT,
    reason_code TEXT,
    reason_text TEXT,
    version INTEGER NOT NULL DEFAULT 1,
    deadline_at REAL,
    first_contact_at REAL,
    alerted_at REAL
);
CREATE INDEX IF NOT EXISTS referral_request ON referral (service_request_id);
CREATE TABLE IF NOT EXISTS poll_state (
    destination TEXT PRIMARY KEY,
    cursor TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback_item (
    key TEXT PRIMARY KEY,
    task_id TEXT NOT NULL REFERENCES referral(task_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL REFERENCES referral(task_id),
    destination TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    delivered_at REAL,
    last_status INTEGER,
    last_error TEXT,
    payload BLOB NOT NULL,
    requeued_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS outbox_task ON outbox (task_id);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    event TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    user TEXT NOT NULL,
    responsible TEXT NOT NULL,
    source_system TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END;
"""

_ADDED_COLUMNS: Final = (("outbox", "requeued_at", "REAL"),)


def migrate(conn: sqlite3.Connection) -> None:
    """Create the tables (idempotent), then add any column an older file lacks."""
    conn.executescript(SCHEMA)  # idempotent DDL; executescript manages its own commit
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, kind in _ADDED_COLUMNS:
            names = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in names:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
