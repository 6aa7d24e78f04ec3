"""Retention (issue 13, AVG): the audit trail deletable by the purge only, the Bundle skeleton a
purged referral keeps, the daily schedule, and ``wor-bridge purge [--dry-run]`` on a real store
whose files then hold none of the purged referral's patient values."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.cases import FIXTURES, PATIENT_VALUES, case_input
from tests.service_harness import (
    audit_rows,
    patient_value_hits,
    run_cli,
    store_path,
    wait_until,
    write_config,
)
from wor_bridge import bootstrap
from wor_bridge.adapters.clock import FixedClock
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.core import retention, translation
from wor_bridge.core.settings import Settings
from wor_bridge.records import AuditEvent
from wor_bridge.usecases import intake, task_view
from wor_bridge.usecases.caller import Caller
from wor_bridge.usecases.retention import Purger

NAMES = PATIENT_VALUES[3:]  # the BSNs stay in the audit trail for audit_days (NEN 7513)
EVENT = AuditEvent("task_read", "R", "success", "client", "", "his", "bsn|999990007")


def test_audit_trail_refuses_update_and_delete_outside_a_purge(tmp_path: Path) -> None:
    """An ordinary UPDATE or DELETE of an audit record is refused, also with a purge threshold
    set for older rows only; the purge removes the old record."""
    path = tmp_path / "store.sqlite"
    store = SqliteOutboxStore(path)
    old, new = dt.datetime(2020, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    store.audit(EVENT, old)
    store.audit(EVENT, new)
    with closing(sqlite3.connect(path)) as conn:
        for statement in ("UPDATE audit SET user = 'x'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                conn.execute(statement)
        conn.execute("INSERT INTO audit_purge VALUES (1, ?)", (old.timestamp() + 1,))
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM audit WHERE at = ?", (new.timestamp(),))
        conn.rollback()
    assert len(store.audit_records()) == 2
    counts = store.purge(old, old + dt.timedelta(days=1), new)
    assert counts.audit == 1
    assert [r["at"] for r in store.audit_records()] == [new.timestamp()]
    store.close()


def test_skeleton_of_a_mapped_referral_holds_no_patient_value_and_still_reads_as_a_task(
    settings: Settings,
) -> None:
    """The purge's Bundle skeleton of a real mapped referral has none of the fixture's patient
    values, and ``GET Task`` can still be answered from it (id, status, owner)."""
    result = translation.translate(case_input("accepted-contained"), None, settings)
    stored = json.dumps(result.bundle).encode()
    assert patient_value_hits(stored.decode())  # the fixture does hold patient values
    skeleton = retention.redact_bundle(stored)
    assert patient_value_hits(skeleton.decode()) == []
    kinds = {e["resource"]["resourceType"] for e in json.loads(skeleton)["entry"]}
    assert "Task" in kinds
    assert kinds <= {"Task", "PractitionerRole", "Practitioner", "Organization"}
    assert retention.redact_bundle(b"not json") == retention.PURGED_PAYLOAD


def test_skeleton_of_the_accepted_contained_bundle_matches_its_golden(update_goldens: bool) -> None:
    """The purge's skeleton of the reviewed golden Bundle of ``accepted-contained`` is exactly
    the reviewed golden skeleton (``tests/data/purged_accepted_contained.json``)."""
    mapped = (FIXTURES / "accepted-contained" / "expected.bundle.json").read_bytes()
    produced = json.dumps(json.loads(retention.redact_bundle(mapped)), indent=2).encode() + b"\n"
    golden = Path(__file__).parent / "data" / "purged_accepted_contained.json"
    if update_goldens or not golden.exists():
        golden.write_bytes(produced)
        if not update_goldens:
            pytest.fail("golden purged_accepted_contained.json was missing; written, review it")
    assert produced == golden.read_bytes()


_RESOURCE = st.fixed_dictionaries(
    {"resourceType": st.sampled_from(["Task", "Patient", "ServiceRequest", "Consent",
                                      "Organization", "Practitioner", "Observation"])},
    optional={key: st.text(max_size=5) for key in ("for", "note", "input", "status", "owner",
                                                   "description", "name", "identifier")},
)  # fmt: skip


@given(st.lists(_RESOURCE, max_size=8))
def test_skeleton_keeps_only_care_providers_and_the_tasks_allowed_elements(
    resources: list[dict[str, str]],
) -> None:
    """Whatever a stored Bundle holds, its skeleton has only Task, PractitionerRole,
    Practitioner and Organization entries, and a Task only the elements kept on purpose."""
    stored = json.dumps(
        {"resourceType": "Bundle", "entry": [
            {"fullUrl": f"urn:uuid:{n}", "resource": r} for n, r in enumerate(resources)]}
    ).encode()  # fmt: skip
    for entry in json.loads(retention.redact_bundle(stored))["entry"]:
        kind = entry["resource"]["resourceType"]
        assert kind in {"Task", "PractitionerRole", "Practitioner", "Organization"}
        if kind == "Task":
            assert set(entry["resource"]) <= {"resourceType", "status", "owner", "identifier"}


def test_next_run_is_the_next_purge_time_plus_the_delay() -> None:
    """Before the time of day: today; at or after it: tomorrow; the delay is added."""
    morning = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)
    assert retention.next_run(morning, "03:30", 0) == morning.replace(hour=3, minute=30)
    later = morning.replace(hour=3, minute=30)
    assert retention.next_run(later, "03:30", 60) == dt.datetime(2026, 3, 3, 3, 31, tzinfo=dt.UTC)


def test_purger_in_the_service_purges_at_its_time(tmp_path: Path) -> None:
    """The service's purge thread runs when its moment has come (a clock just before it, the
    largest jitter zero) and audits what it removed."""
    store = SqliteOutboxStore(tmp_path / "store.sqlite")
    now = dt.datetime(2026, 3, 2, 3, 29, 59, 900_000, tzinfo=dt.UTC)
    store.audit(EVENT, now - dt.timedelta(days=2000))
    purger = Purger(store, retention.RetentionSettings(jitter_s=0), FixedClock(now))
    assert purger.next_run() == pytest.approx(0.1)
    purger.start()
    try:
        wait_until(lambda: purger.runs, "the purge thread's first run")
    finally:
        purger.stop()
    assert purger.runs >= 1
    details = [r["detail"] for r in store.audit_records() if r["event"] == "retention_purge"]
    assert details[-1] == "referrals=0 payloads=0 audit=1"
    store.close()


def test_cli_purge_dry_run_then_purge(tmp_path: Path) -> None:
    """``purge --dry-run`` prints the counts and changes nothing; ``purge`` removes the dead
    referral's patient data and the audit records past five years, audits itself, and the store
    files then hold none of that referral's patient names or addresses."""
    config = write_config(tmp_path, "http://127.0.0.1:9/fhir")
    c = bootstrap.load(config)
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    clock = FixedClock(long_ago)
    data = case_input("accepted-contained")
    accepted = intake.accept_referral(
        c.store, c.config.core, clock, data=data, content_type=None, caller=Caller("his")
    )
    c.store.claim_due("w", long_ago, 60, 10)
    assert c.store.record_attempt(
        accepted.outbox_id,
        "w",
        now=long_ago,
        state="dead",
        next_attempt_at=None,
        status=422,
        error="refused",
    )
    c.store.audit(EVENT, long_ago - dt.timedelta(days=2000))
    c.store.close()
    dry = run_cli("purge", "--dry-run", "--config", str(config))
    assert dry.returncode == 0, dry.stderr[-300:]
    expected = {"referrals": 1, "payloads": 1, "audit": 1}
    assert json.loads(dry.stdout) == {"dry_run": True, **expected}
    assert audit_rows(config, "retention_purge") == []
    assert _names_in_store_files(tmp_path, config)  # the test can fail: they are there now
    done = run_cli("purge", "--config", str(config))
    assert done.returncode == 0, done.stderr[-300:]
    assert json.loads(done.stdout) == {"dry_run": False, **expected}
    assert [r["detail"] for r in audit_rows(config, "retention_purge")] == [
        "referrals=1 payloads=1 audit=1"
    ]
    assert _names_in_store_files(tmp_path, config) == []
    again = run_cli("purge", "--config", str(config))
    assert json.loads(again.stdout) == {"dry_run": False, "referrals": 0, "payloads": 0, "audit": 0}
    with closing(sqlite3.connect(store_path(config))) as conn:
        row = conn.execute("SELECT patient_id, purged_at FROM referral").fetchone()
    assert row[0] == ""
    assert row[1] is not None
    reader = SqliteOutboxStore(store_path(config))
    task = reader.get_task(accepted.task_id)
    assert task is not None
    assert task_view.task_resource(task, "dead")["id"] == accepted.task_id  # still readable
    reader.close()


def _names_in_store_files(folder: Path, config: Path) -> list[int]:
    """Indexes into ``NAMES`` of the values found in the store file and its -wal/-shm files."""
    files = [p for p in folder.iterdir() if p.name.startswith(store_path(config).name)]
    text = b"".join(p.read_bytes() for p in files).decode("utf-8", errors="replace")
    return [n for n, value in enumerate(NAMES) if value in text]
