"""Why an outbox entry may not be requeued, read inside the store's transaction (a helper of
``SqliteOutboxStore.requeue``; the decision is ``core.outbox.requeue_refusal``)."""

from __future__ import annotations

import datetime as dt
from typing import cast

from wor_bridge.adapters.sql_conn import SqlConnection
from wor_bridge.adapters.sqlite_rows import ts
from wor_bridge.core import outbox
from wor_bridge.core.outbox import State


def requeue_refusal(
    conn: SqlConnection, entry_id: int, wanted: State, now: dt.datetime
) -> str | None:
    """``outbox.requeue_refusal`` for one entry, read inside the caller's transaction."""
    row = conn.execute(
        "SELECT o.state, o.task_id, o.destination, o.purged_at, r.status AS task_status"
        " FROM outbox o"
        " LEFT JOIN referral r ON r.idempotency_key = o.idempotency_key WHERE o.id = ?",
        (entry_id,),
    ).fetchone()
    if row is None:
        return "unknown"
    later = [
        outbox.Neighbour(
            state=cast(State, n["state"]),
            attempts=n["attempts"],
            last_status=n["last_status"],
            leased=n["lease_until"] is not None and n["lease_until"] > ts(now),
        )
        for n in conn.execute(
            "SELECT state, attempts, last_status, lease_until FROM outbox"
            " WHERE task_id = ? AND destination = ? AND id > ?",
            (row["task_id"], row["destination"], entry_id),
        )
    ]
    return outbox.requeue_refusal(
        cast(State, row["state"]),
        wanted,
        later,
        row["task_status"],
        purged=row["purged_at"] is not None,
    )
