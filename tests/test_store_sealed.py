"""The SQLite store with its patient columns sealed: what lies in the file, each Bundle once,
blind-index search across keys, rotation (``SqliteResealing``) and the files' modes."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from tests import sealed
from wor_bridge.adapters.sealing import PLAIN, AesGcmSealer, SealingError, header, parse_keys
from wor_bridge.adapters.sqlite_directory import SqliteDirectoryReplica
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.errors import StoreError
from wor_bridge.records import (
    Amendment,
    AuditEvent,
    NewMessage,
    NewReferral,
    TaskSearch,
    TaskUpdate,
)

T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
BSN = "999990007"
HIS = "urn:oid:2.16.528.1.1007.99.1234.1"
SECRETS = (BSN, "Jansen", "Voelt zich eenzaam", "REF-7781", "Vroeger")


def bundle(name: str = "Jansen", number: str = "REF-7781") -> bytes:
    """A small referral Bundle with a patient name and the HIS referral number (synthetic)."""
    return (
        '{"resourceType":"Bundle","entry":[{"resource":{"resourceType":"ServiceRequest",'
        f'"identifier":[{{"system":"{HIS}","value":"{number}"}}]}}}},'
        f'{{"resource":{{"resourceType":"Patient","name":[{{"family":"{name}"}}]}}}}]}}'
    ).encode()


def number(n: int) -> str:
    """The HIS referral number of referral ``n``."""
    return "REF-7781" if n == 1 else f"REF-{n}"


def by_number(*numbers: str) -> TaskSearch:
    """A search for any of these HIS referral numbers, in every tenancy."""
    return TaskSearch(where=(tuple((("his_value", n),) for n in numbers),), everyone=True)


def referral(n: int = 1, content: bytes | None = None) -> NewReferral:
    """Referral ``n`` for patient BSN ``BSN`` (synthetic)."""
    return NewReferral(
        task_id=f"task-{n}",
        idempotency_key=f"his|ref-{n}|welzijn-a",
        source_system="his",
        destination="welzijn-a",
        mapping="wor-r4-default@1.0.0",
        patient_id=f"http://fhir.nl/fhir/NamingSystem/bsn|{BSN}",
        responsible="agb|01000001",
        client_id="client",
        bundle=content or bundle(number=number(n)),
        his_system=HIS,
        his_value=number(n),
    )


def audit(patient: str) -> AuditEvent:
    """An audit record about ``patient``."""
    return AuditEvent("referral_intake", "C", "accepted", "client", "", "his", patient, "Task")


def raw(path: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows read straight from the file, past the store."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql).fetchall()


def flat(rows: list[tuple[Any, ...]]) -> bytes:
    """Every value of ``rows`` as bytes, to look for a plaintext in."""
    return b"|".join(v if isinstance(v, bytes) else str(v).encode() for r in rows for v in r)


def filled(path: Path, keys: AesGcmSealer) -> SqliteOutboxStore:
    """A sealed store with one referral, a Task update with free text and a feedback message."""
    store = SqliteOutboxStore(path, sealer=keys)
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


def test_the_file_holds_no_patient_value_and_the_store_reads_them_back(tmp_path: Path) -> None:
    """Bundle, payloads, patient ids, free text and the HIS number are sealed or indexed in the
    file; through the store every value reads back as it was given."""
    path = tmp_path / "s.sqlite"
    store = filled(path, sealed.sealer())
    rows = raw(path, "SELECT * FROM referral") + raw(path, "SELECT * FROM outbox")
    rows += raw(path, "SELECT * FROM audit")
    found = [n for n, secret in enumerate(SECRETS) if secret.encode() in flat(rows)]
    assert not found, f"secrets #{found} in the file's rows"
    task = store.get_task("task-1")
    assert task is not None
    assert (task.bundle, task.reason_text) == (bundle(), "Voelt zich eenzaam")
    assert task.patient_id.endswith(BSN)
    assert [m for _, m in store.task_messages("task-1")] == [bundle(), bundle("Vroeger")]
    assert {r["patient_id"] for r in store.audit_records()} == {referral().patient_id, BSN}
    assert [t.task_id for t in store.search_tasks(by_number("REF-7781")).tasks] == ["task-1"]


def test_each_bundle_is_stored_once(tmp_path: Path) -> None:
    """The referral's outbox entry keeps no copy: its payload is empty and reads as the Bundle."""
    path = tmp_path / "s.sqlite"
    store = SqliteOutboxStore(path, sealer=PLAIN)
    added = store.add_referral(referral(), T0)
    assert raw(path, "SELECT payload FROM outbox") == [(b"",)]
    entry = store.get_entry(added.outbox_id)
    assert entry is not None
    assert entry.payload == bundle()
    assert [e.payload for e in store.claim_due("w", T0, 30, 10)] == [bundle()]
    assert flat(raw(path, "SELECT * FROM outbox")).count(b"Jansen") == 0


@pytest.mark.parametrize("keys", [PLAIN, sealed.sealer()], ids=["clear", "sealed"])
def test_an_amendment_keeps_what_the_first_entry_carried(tmp_path: Path, keys: Any) -> None:
    """After the referral's Bundle changes, its first entry still carries the Bundle it had,
    and a new message with the new Bundle is stored once, as the referral's."""
    store = SqliteOutboxStore(tmp_path / "s.sqlite", sealer=keys)
    first = store.add_referral(referral(), T0).outbox_id
    changed = dataclasses.replace(referral(), bundle=bundle("Pietersen"))
    again = NewMessage("his|ref-1|welzijn-a|2", "task-1", "welzijn-a", changed.bundle)
    assert store.amend_referral(Amendment(changed, 1, (again,)), T0, audit=audit(BSN)) == 2
    old = store.get_entry(first)
    assert old is not None
    assert old.payload == bundle()
    assert [m for _, m in store.task_messages("task-1")] == [bundle(), bundle("Pietersen")]
    payloads = raw(tmp_path / "s.sqlite", "SELECT payload FROM outbox ORDER BY id")
    assert len(payloads[0][0]) > 0
    assert payloads[1] == (b"",)


def test_a_value_moved_to_another_row_does_not_open(tmp_path: Path) -> None:
    """Copying one referral's sealed Bundle over another's is detected when it is read."""
    path = tmp_path / "s.sqlite"
    store = SqliteOutboxStore(path, sealer=sealed.sealer())
    store.add_referral(referral(1), T0)
    store.add_referral(referral(2, bundle("Berg", "REF-2")), T0)
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute(
            "UPDATE referral SET bundle = (SELECT bundle FROM referral WHERE task_id = 'task-1')"
            " WHERE task_id = 'task-2'"
        )
    assert store.get_task("task-1") is not None
    with pytest.raises(SealingError, match="does not authenticate"):
        store.get_task("task-2")


def test_rotation_moves_every_row_to_the_active_key_in_resumable_batches(tmp_path: Path) -> None:
    """Rows sealed with k1 are resealed under k2 batch by batch; searches find rows under either
    key meanwhile; afterwards k2 alone reads them (audit records keep k1, counted)."""
    path = tmp_path / "s.sqlite"
    k1, k2 = sealed.entries("k1"), sealed.entries("k2")
    filled(path, AesGcmSealer(parse_keys(k1))).add_referral(referral(2), T0)
    both = SqliteOutboxStore(path, sealer=AesGcmSealer(parse_keys(k2 + k1)))
    both.add_referral(referral(3), T0)
    first = both.reseal(1)
    assert (first.key_id, first.referrals, first.entries) == ("k2", 1, 1)
    search = by_number("REF-7781", "REF-2", "REF-3")
    assert both.search_tasks(search).total == 3  # mid-rotation: k1 and k2 indexes both found
    while (moved := both.reseal(1)).referrals or moved.entries:
        pass
    assert both.search_tasks(search).total == 3
    head = header("k2")
    for column, table in (("bundle", "referral"), ("patient_id", "referral")):
        values = [v for (v,) in raw(path, f"SELECT {column} FROM {table}")]
        assert all(v.startswith(head) for v in values), column
    assert all(v.startswith("bi1:k2:") for (v,) in raw(path, "SELECT his_value FROM referral"))
    assert both.audit_keys() == {"k1": 2}
    k2_only = SqliteOutboxStore(path, sealer=AesGcmSealer(parse_keys(k2)))
    task = k2_only.get_task("task-1")
    assert task is not None
    assert task.reason_text == "Voelt zich eenzaam"
    assert [m for _, m in k2_only.task_messages("task-1")] == [bundle(), bundle("Vroeger")]


def test_rotation_seals_a_store_written_in_clear_and_stores_each_bundle_once(
    tmp_path: Path,
) -> None:
    """A store from before encryption (Bundle also copied in the outbox) is sealed by the
    rotation, its duplicate Bundles dropped; then a strict sealer reads it."""
    path = tmp_path / "s.sqlite"
    plain = SqliteOutboxStore(path)
    plain.add_referral(referral(), T0, audit(BSN))
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:  # as older versions wrote it
        conn.execute("UPDATE outbox SET payload = (SELECT bundle FROM referral)")
    text = sealed.entries("k1")
    rotating = SqliteOutboxStore(path, sealer=AesGcmSealer(parse_keys(text), read_clear=True))
    with pytest.raises(SealingError, match="in clear"):
        SqliteOutboxStore(path, sealer=AesGcmSealer(parse_keys(text))).get_task("task-1")
    assert rotating.reseal(10).referrals == 1
    assert rotating.reseal(10).referrals == 0
    assert raw(path, "SELECT payload FROM outbox") == [(b"",)]
    assert rotating.audit_keys() == {"clear": 1}
    strict = SqliteOutboxStore(path, sealer=AesGcmSealer(parse_keys(text)))
    assert strict.get_referral("task-1") is not None
    assert b"Jansen" not in flat(raw(path, "SELECT * FROM referral"))


def test_rotation_needs_a_key(tmp_path: Path) -> None:
    """With encryption off there is nothing to rotate to: a clear error."""
    with pytest.raises(SealingError, match="needs"):
        SqliteOutboxStore(tmp_path / "s.sqlite").reseal(10)


def modes(folder: Path) -> dict[str, int]:
    """Permission bits of each file in ``folder``."""
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}


@pytest.mark.parametrize("first", ["store", "directory"])
def test_store_files_are_created_owner_only(tmp_path: Path, first: str) -> None:
    """The database, -wal and -shm files are 0600 even under a permissive umask."""
    path = tmp_path / "s.sqlite"
    old = os.umask(0)
    try:
        if first == "directory":
            SqliteDirectoryReplica(path)
        store = SqliteOutboxStore(path)
        store.add_referral(referral(), T0)
    finally:
        os.umask(old)
    found = modes(tmp_path)
    assert {"s.sqlite", "s.sqlite-wal", "s.sqlite-shm"} <= set(found)
    assert set(found.values()) == {0o600}, {k: oct(v) for k, v in found.items()}


def test_a_sealed_store_opened_with_encryption_off_is_refused(tmp_path: Path) -> None:
    """A store holding sealed values does not open with ``encryption = "off"``: no value in clear
    is written beside them."""
    path = tmp_path / "s.sqlite"
    filled(path, sealed.sealer()).close()
    with pytest.raises(StoreError, match=r"holds encrypted values but .*encryption is off"):
        SqliteOutboxStore(path).add_referral(referral(2, bundle("Pietersen")), T0)
    assert b"Pietersen" not in b"".join(p.read_bytes() for p in tmp_path.iterdir())


@pytest.mark.parametrize("configured", ["same id, other secret", "another id only"])
def test_a_key_that_does_not_open_the_store_stops_it_opening(
    tmp_path: Path, configured: str
) -> None:
    """With a key that does not open the newest sealed values (another secret under the same id,
    or their key missing) the store does not open: nothing is written that the right key could
    not read back."""
    path = tmp_path / "s.sqlite"
    filled(path, sealed.sealer("k1")).close()
    wrong = sealed.sealer("k1" if configured.startswith("same") else "k2")
    with pytest.raises(StoreError, match="k1") as caught:
        SqliteOutboxStore(path, sealer=wrong).add_referral(referral(2), T0)
    assert "Jansen" not in str(caught.value)
    assert raw(path, "SELECT COUNT(*) FROM referral") == [(1,)]
