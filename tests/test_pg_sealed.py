"""The PostgreSQL store with its patient columns sealed (issue 14): what lies in the database's
rows, the sealed text columns as ``bytea``, rotation across keys, and the refusals the SQLite
store makes (encryption off on a sealed store, a key that does not open it, a clear value)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests import sealed
from tests.pg import empty
from tests.test_store_sealed import (
    BSN,
    SECRETS,
    T0,
    audit,
    bundle,
    by_number,
    flat,
    referral,
)
from wor_bridge.adapters.postgres_store import PostgresOutboxStore
from wor_bridge.adapters.sealing import (
    PLAIN,
    AesGcmSealer,
    Sealer,
    SealingError,
    header,
    parse_keys,
)
from wor_bridge.errors import StoreError
from wor_bridge.records import AuditQuery, NewMessage, ResealCount, TaskUpdate


@pytest.fixture
def dsn(pg_dsn: str) -> Iterator[str]:
    """The session's database, emptied (before and after: no sealed row outlives the test)."""
    empty(pg_dsn)
    yield pg_dsn
    empty(pg_dsn)


def raw(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    """Rows read straight from the database, past the store."""
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def filled(dsn: str, keys: Sealer) -> PostgresOutboxStore:
    """A store with one referral, a Task update with free text and a feedback message."""
    store = PostgresOutboxStore(dsn, pool_size=2, sealer=keys)
    store.add_referral(referral(), T0, audit(referral().patient_id))
    update = TaskUpdate(
        "accepted",
        "intake",
        None,
        "Voelt zich eenzaam",
        False,
        (),
        NewMessage("gp|task-1|1", "task-1", "gp-record", bundle("Vroeger")),
    )
    assert store.save_task_update("task-1", 1, update, audit=audit(BSN), now=T0) == 2
    return store


def everything(dsn: str) -> list[tuple[Any, ...]]:
    """Every row of the tables that hold patient data."""
    return [row for table in ("referral", "outbox", "audit") for row in raw(dsn, f"TABLE {table}")]


def test_the_database_holds_no_patient_value_and_the_store_reads_them_back(dsn: str) -> None:
    """Bundle, payloads, patient ids, free text and the HIS number are sealed or indexed in the
    rows PostgreSQL holds (its sealed text columns are ``bytea``); through the store every value
    reads back as it was given, and the audit search finds the patient's records."""
    store = filled(dsn, sealed.sealer())
    try:
        found = [n for n, secret in enumerate(SECRETS) if secret.encode() in flat(everything(dsn))]
        assert not found, f"secrets #{found} in the database's rows"
        head = header("k1")
        for table, column in (("referral", "patient_id"), ("referral", "reason_text")):
            (value,) = raw(dsn, f"SELECT {column} FROM {table}")[0]
            assert isinstance(value, bytes)
            assert value.startswith(head), column
        task = store.get_task("task-1")
        assert task is not None
        assert (task.bundle, task.reason_text) == (bundle(), "Voelt zich eenzaam")
        assert task.patient_id.endswith(BSN)
        assert [m for _, m in store.task_messages("task-1")] == [bundle(), bundle("Vroeger")]
        assert {r["patient_id"] for r in store.audit_records()} == {referral().patient_id, BSN}
        records = store.find_audit(AuditQuery(patient_id=BSN))
        assert [r.event.patient_id for r in records] == [BSN]
        assert [t.task_id for t in store.search_tasks(by_number("REF-7781")).tasks] == ["task-1"]
        assert store.audit_keys() == {"k1": 2}
    finally:
        store.close()


def test_a_store_in_clear_keeps_its_text_as_utf8_bytes(dsn: str) -> None:
    """With encryption off the sealable text columns hold each text's UTF-8 bytes (a backslash,
    a non-ASCII letter and a hex-looking value kept exactly), read back as text."""
    store = PostgresOutboxStore(dsn, pool_size=2)
    odd = "\\x41 Zoë \\\\ 100%"
    try:
        store.add_referral(dataclasses.replace(referral(), patient_id=odd), T0, audit(odd))
        assert raw(dsn, "SELECT patient_id FROM referral") == [(odd.encode(),)]
        task = store.get_task("task-1")
        assert task is not None
        assert task.patient_id == odd
        assert [r["patient_id"] for r in store.audit_records()] == [odd]
        assert [r.event.patient_id for r in store.find_audit(AuditQuery(patient_id=odd))] == [odd]
        assert store.audit_keys() == {"clear": 1}
    finally:
        store.close()


def test_a_clear_text_with_a_nul_is_refused_and_a_sealed_one_kept(dsn: str) -> None:
    """A patient identifier with a NUL character, which in clear could pass for a sealed value
    (its envelope starts with one), is refused in clear with a store error naming no value and
    nothing stored; sealed, it is kept exactly."""
    strange = dataclasses.replace(referral(), patient_id="\x00wb" + BSN)
    store = PostgresOutboxStore(dsn, pool_size=2)
    try:
        with pytest.raises(StoreError, match="NUL") as caught:
            store.add_referral(strange, T0, audit(strange.patient_id))
        assert BSN not in str(caught.value)
        assert raw(dsn, "SELECT COUNT(*) FROM referral") == [(0,)]
    finally:
        store.close()
    store = PostgresOutboxStore(dsn, pool_size=2, sealer=sealed.sealer())
    try:
        store.add_referral(strange, T0, audit(strange.patient_id))
        task = store.get_task("task-1")
        assert task is not None
        assert task.patient_id == strange.patient_id
        assert [r["patient_id"] for r in store.audit_records()] == [strange.patient_id]
    finally:
        store.close()


def test_rotation_moves_every_row_to_the_active_key_in_resumable_batches(dsn: str) -> None:
    """Rows sealed with k1 are resealed under k2 batch by batch; searches find rows under either
    key meanwhile; afterwards k2 alone reads them (audit records keep k1, counted)."""
    k1, k2 = sealed.entries("k1"), sealed.entries("k2")
    first = filled(dsn, AesGcmSealer(parse_keys(k1)))
    first.add_referral(referral(2), T0)
    first.close()
    both = PostgresOutboxStore(dsn, pool_size=2, sealer=AesGcmSealer(parse_keys(k2 + k1)))
    try:
        both.add_referral(referral(3), T0)
        moved = both.reseal(1)
        assert (moved.key_id, moved.referrals, moved.entries) == ("k2", 1, 1)
        search = by_number("REF-7781", "REF-2", "REF-3")
        assert both.search_tasks(search).total == 3  # mid-rotation: k1 and k2 indexes both found
        while (moved := both.reseal(1)).referrals or moved.entries:
            pass
        assert both.search_tasks(search).total == 3
        head = header("k2")
        for column in ("bundle", "patient_id"):
            values = [v for (v,) in raw(dsn, f"SELECT {column} FROM referral")]
            assert all(v.startswith(head) for v in values), column
        reasons = [v for (v,) in raw(dsn, "SELECT reason_text FROM referral") if v]
        assert reasons
        assert all(v.startswith(head) for v in reasons)
        assert all(v.startswith("bi1:k2:") for (v,) in raw(dsn, "SELECT his_value FROM referral"))
        assert both.audit_keys() == {"k1": 2}
    finally:
        both.close()
    k2_only = PostgresOutboxStore(dsn, pool_size=2, sealer=AesGcmSealer(parse_keys(k2)))
    try:
        task = k2_only.get_task("task-1")
        assert task is not None
        assert task.reason_text == "Voelt zich eenzaam"
        assert [m for _, m in k2_only.task_messages("task-1")] == [bundle(), bundle("Vroeger")]
    finally:
        k2_only.close()


def test_rotation_seals_a_store_written_in_clear(dsn: str) -> None:
    """A store from before encryption is refused by a strict sealer, sealed by the rotation
    (which reads clear values), and then read by the strict sealer; no row keeps a clear
    value but the append-only audit record, counted as ``clear``."""
    filled(dsn, PLAIN).close()
    text = sealed.entries("k1")
    strict = PostgresOutboxStore(dsn, pool_size=2, sealer=AesGcmSealer(parse_keys(text)))
    rotating = AesGcmSealer(parse_keys(text), read_clear=True)
    rotator = PostgresOutboxStore(dsn, pool_size=2, sealer=rotating)
    try:
        with pytest.raises(SealingError, match="in clear"):
            strict.get_task("task-1")
        assert rotator.reseal(10) == ResealCount("k1", 1, 1)
        assert rotator.reseal(10) == ResealCount("k1", 0, 0)
        assert rotator.audit_keys() == {"clear": 2}
        rows = raw(dsn, "TABLE referral") + raw(dsn, "TABLE outbox")
        assert not [s for s in SECRETS if s.encode() in flat(rows)]
        task = strict.get_task("task-1")
        assert task is not None
        assert task.reason_text == "Voelt zich eenzaam"
    finally:
        strict.close()
        rotator.close()


def test_a_sealed_store_opened_with_encryption_off_or_a_wrong_key_is_refused(dsn: str) -> None:
    """A store holding sealed values does not open with encryption off, with another secret
    under its key id, or with its key missing: nothing is written that could not be read."""
    filled(dsn, sealed.sealer("k1")).close()
    with pytest.raises(StoreError, match=r"holds encrypted values but .*encryption is off"):
        PostgresOutboxStore(dsn, pool_size=1)
    for wrong in (sealed.sealer("k1"), sealed.sealer("k2")):
        with pytest.raises(StoreError, match="k1") as caught:
            PostgresOutboxStore(dsn, pool_size=1, sealer=wrong)
        assert "Jansen" not in str(caught.value)
    assert raw(dsn, "SELECT COUNT(*) FROM referral") == [(1,)]


def test_a_value_moved_to_another_row_does_not_open(dsn: str) -> None:
    """Copying one referral's sealed patient identifier over another's is detected on reading."""
    store = PostgresOutboxStore(dsn, pool_size=2, sealer=sealed.sealer())
    try:
        store.add_referral(referral(1), T0)
        store.add_referral(referral(2, bundle("Berg", "REF-2")), T0)
        with psycopg.connect(dsn) as conn:
            conn.execute(
                "UPDATE referral SET patient_id = (SELECT patient_id FROM referral"
                " WHERE task_id = 'task-1') WHERE task_id = 'task-2'"
            )
        assert store.get_task("task-1") is not None
        with pytest.raises(SealingError, match="does not authenticate"):
            store.get_task("task-2")
    finally:
        store.close()
