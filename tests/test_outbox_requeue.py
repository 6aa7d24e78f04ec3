"""Operators send entries again without undoing the workflow: the store's requeue rules (held
against SQLite and the in-memory fake) and the ``outbox retry`` / ``replay`` commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests import sealed
from tests.cases import case_input
from tests.service_harness import write_config
from tests.test_store_contract import T0, at, record, referral
from wor_bridge import bootstrap
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.bootstrap import Components
from wor_bridge.cli.main import main as cli_main
from wor_bridge.core import feedback as fb
from wor_bridge.core import outbox
from wor_bridge.demo.fhir_server import SimulatedFhirServer
from wor_bridge.ports import OutboxStore
from wor_bridge.records import AuditEvent, NewMessage, OutboxEntry, TaskUpdate
from wor_bridge.service.dispatcher import Dispatcher
from wor_bridge.usecases import intake, way_back
from wor_bridge.usecases.caller import Caller

AUDIT = AuditEvent(
    event="t", action="U", outcome="success", user="u", responsible="", source_system=""
)


@pytest.fixture(params=["sqlite", "sqlite-sealed", "memory", "postgresql-sealed"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OutboxStore]:
    """A fresh, empty store of each kind."""
    impl: SqliteOutboxStore | MemoryOutboxStore = (
        SqliteOutboxStore(tmp_path / "outbox.sqlite", sealer=sealed.sealer())
        if request.param == "sqlite-sealed"
        else SqliteOutboxStore(tmp_path / "outbox.sqlite")
        if request.param == "sqlite"
        else MemoryOutboxStore()
        if request.param == "memory"
        else request.getfixturevalue("pg_sealed_store")
    )
    yield impl
    impl.close()


def later_message(
    store: OutboxStore, task_id: str, key: str, destination: str, *, status: str | None = None
) -> int:
    """Queue another message about ``task_id`` (through a Task update); its entry id."""
    task = store.get_task(task_id)
    assert task is not None
    update = TaskUpdate(
        status=status or task.status,
        business_status=None,
        reason_code=None,
        reason_text=None,
        first_contact=False,
        item_keys=(),
        message=NewMessage(key, task_id, destination, b'{"resourceType":"Bundle"}'),
    )
    assert store.save_task_update(task_id, task.version, update, audit=AUDIT, now=T0)
    return next(e.id for e in store.list_entries(None, 100) if e.idempotency_key == key)


def dead(store: OutboxStore, n: int = 1) -> int:
    """A referral whose delivery was rejected: its dead entry id."""
    entry_id = store.add_referral(referral(n), T0).outbox_id
    store.claim_due("w", T0, 60, 10)
    assert record(store, entry_id, "w", at(1), "dead", status=400, error="HTTP 400")
    return entry_id


def test_retry_takes_a_dead_entry_keeps_created_at_and_restarts_the_budget(
    store: OutboxStore,
) -> None:
    """A dead entry: pending, due now, 0 attempts, requeued_at now, created_at unchanged."""
    entry_id = dead(store)
    assert store.requeue([entry_id, entry_id], at(100)) == {entry_id: None}
    entry = store.get_entry(entry_id)
    assert entry is not None
    assert (entry.state, entry.attempts, entry.next_attempt_at) == ("pending", 0, at(100))
    assert (entry.created_at, entry.requeued_at) == (T0, at(100))
    assert [e.id for e in store.claim_due("w", at(100), 60, 10)] == [entry_id]


def test_retry_refuses_what_is_not_dead(store: OutboxStore) -> None:
    """Pending (even leased), delivered and unknown entries are refused, unchanged."""
    pending = store.add_referral(referral(1), T0).outbox_id
    done = store.add_referral(referral(2), T0).outbox_id
    store.claim_due("w", T0, 600, 1)
    store.claim_due("w", T0, 60, 10)
    assert record(store, done, "w", at(1), "delivered", status=201)
    results = store.requeue([pending, done, 404], at(2))
    assert results == {
        pending: "the entry is pending, not dead",
        done: "the entry is delivered, not dead",
        404: "unknown",
    }
    entry = store.get_entry(done)
    assert entry is not None
    assert (entry.state, entry.requeued_at, entry.attempts) == ("delivered", None, 1)


def test_replay_takes_delivered_entries_only(store: OutboxStore) -> None:
    """``wanted="delivered"`` requeues a delivered referral and refuses a dead one."""
    done = store.add_referral(referral(1), T0).outbox_id
    failed = dead(store, 2)
    store.claim_due("w", T0, 60, 10)
    assert record(store, done, "w", at(1), "delivered", status=201)
    assert store.requeue([done, failed], at(5), wanted="delivered") == {
        done: None,
        failed: "the entry is dead, not delivered",
    }


def test_a_referral_whose_task_moved_on_is_not_sent_again(store: OutboxStore) -> None:
    """A dead referral whose Task was cancelled meanwhile stays dead."""
    entry_id = dead(store)
    later_message(store, "task-1", "gp|x", "gp-record", status="cancelled")
    assert store.requeue([entry_id], at(5)) == {
        entry_id: "its Task moved on (status cancelled): the referral is not sent again"
    }


@pytest.mark.parametrize(
    ("later_state", "status", "allowed"),
    [
        ("delivered", 200, False),
        ("dead", 400, True),
        ("dead", None, False),
        ("pending", None, True),
    ],
)
def test_retry_never_overtakes_a_later_message_that_may_have_arrived(
    store: OutboxStore, later_state: str, status: int | None, allowed: bool
) -> None:
    """A dead message is not retried ahead of a later one that may have arrived."""
    store.add_referral(referral(1), T0)
    first = later_message(store, "task-1", "gp|1", "gp-record")
    second = later_message(store, "task-1", "gp|2", "gp-record")
    claimed = store.claim_due("w", T0, 60, 10)
    assert first in [e.id for e in claimed]
    assert record(store, first, "w", at(1), "dead", status=503, error="HTTP 503")
    if later_state != "pending":
        assert [e.id for e in store.claim_due("w", at(2), 60, 10)] == [second]
        assert record(store, second, "w", at(3), later_state, status=status)  # type: ignore[arg-type]
    result = store.requeue([first], at(5))[first]
    assert (result is None) is allowed
    if allowed and later_state == "pending":  # the earlier one goes first again
        assert [e.id for e in store.claim_due("w", at(5), 60, 10)] == [first]


def test_requeued_referral_moves_its_task_version_and_queues_the_notice(
    store: OutboxStore,
) -> None:
    """A requeued referral bumps its Task version and queues its notice in one transaction."""
    entry_id = dead(store)
    version = store.get_task("task-1").version  # type: ignore[union-attr]
    notice = NewMessage("delivery|task-1|queued|x", "task-1", "gp-record", b"{}")
    assert store.requeue([entry_id], at(5), messages={entry_id: notice}) == {entry_id: None}
    assert store.get_task("task-1").version == version + 1  # type: ignore[union-attr]
    keys = [e.idempotency_key for e in store.list_entries(None, 10)]
    assert notice.idempotency_key in keys
    again = NewMessage("delivery|task-1|queued|y", "task-1", "gp-record", b"{}")
    assert store.requeue([entry_id], at(6), messages={entry_id: again})[entry_id] is not None
    assert again.idempotency_key not in [e.idempotency_key for e in store.list_entries(None, 10)]


def test_delivery_state_changes_move_the_task_version(store: OutboxStore) -> None:
    """Delivered or dead moves the referral's Task version; a retry-later attempt does not."""
    added = store.add_referral(referral(1), T0)
    store.claim_due("w", T0, 60, 10)
    assert record(store, added.outbox_id, "w", at(1), "pending", status=503)
    assert store.get_task("task-1").version == 1  # type: ignore[union-attr]
    store.claim_due("w", at(2), 60, 10)
    assert record(store, added.outbox_id, "w", at(2), "delivered", status=201)
    assert store.get_task("task-1").version == 2  # type: ignore[union-attr]
    other = later_message(store, "task-1", "gp|1", "gp-record")
    store.claim_due("w", at(3), 60, 10)
    assert record(store, other, "w", at(3), "delivered", status=200)
    assert store.get_task("task-1").version == 3  # type: ignore[union-attr] - the update only


def test_refusal_rules_are_pure() -> None:
    """``requeue_refusal``: wrong state, a later message that may have arrived, a moved Task."""
    later = [outbox.Neighbour("dead", 2, None, leased=False)]
    assert outbox.requeue_refusal("dead", "dead", [], None) is None
    assert outbox.requeue_refusal("dead", "dead", later, None) is not None
    assert outbox.requeue_refusal("dead", "dead", [], "requested") is None
    assert outbox.requeue_refusal("dead", "dead", [], "accepted") is not None
    assert outbox.requeue_refusal("pending", "dead", [], None) is not None
    leased = [outbox.Neighbour("pending", 0, None, leased=True)]
    assert outbox.requeue_refusal("dead", "dead", leased, None) is not None


# --- the commands -------------------------------------------------------------------------------


@pytest.fixture
def bridge(
    tmp_path: Path,
) -> Iterator[tuple[Path, Components, SimulatedFhirServer, SimulatedFhirServer]]:
    """A configuration whose referrals go to one simulated receiver and feedback to a simulated
    GP record, and the components built from it (the CLI opens the same store file)."""
    welfare = SimulatedFhirServer("/fhir").start()
    gp = SimulatedFhirServer("/gp").start()
    config = write_config(tmp_path, welfare.base_url, endpoints={"gp-record": gp.base_url})
    components = bootstrap.load(config)
    try:
        yield config, components, welfare, gp
    finally:
        welfare.stop()
        gp.stop()


def outbox_cli(
    config: Path, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, Any, str]:
    """``wor-bridge outbox --config CONFIG ARGS`` in process: exit code, JSON stdout, and stderr
    without its JSON log lines (the CLI's logging set-up is undone afterwards)."""
    capsys.readouterr()
    try:
        code = cli_main(["outbox", "--config", str(config), *args])
    finally:
        structlog.reset_defaults()
    out, err = capsys.readouterr()
    message = "\n".join(line for line in err.splitlines() if not line.startswith("{"))
    return code, (json.loads(out) if code == 0 else None), message


def accept(components: Components, ref: str) -> str:
    """Push a referral (the accepted-contained fixture under another HIS number)."""
    document = json.loads(case_input("accepted-contained"))
    document["identifier"][0]["value"] = ref
    return intake.accept_referral(
        components.store,
        components.config.core,
        components.clock,
        data=json.dumps(document).encode(),
        content_type=None,
        caller=Caller("his"),
    ).task_id


def drain(components: Components) -> None:
    """Dispatcher rounds until nothing is due now."""
    while Dispatcher(components).run_once():
        pass


def entry_of(components: Components, task_id: str, prefix: str = "") -> OutboxEntry:
    """The outbox entry about ``task_id`` whose key starts with ``prefix`` (the referral's: '')."""
    record = components.store.get_referral(task_id)
    assert record is not None
    key = record.idempotency_key if not prefix else None
    return next(
        e
        for e in components.store.list_entries(None, 1000)
        if e.task_id == task_id
        and (e.idempotency_key == key or (prefix and e.idempotency_key.startswith(prefix)))
    )


def test_retry_of_a_cancelled_referral_is_refused_and_sends_nothing(
    bridge: tuple[Path, Components, SimulatedFhirServer, SimulatedFhirServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """retry/replay of a cancelled referral and of an unknown id: exit 1 or refused, none sent."""
    config, components, welfare, _ = bridge
    task_id = accept(components, "RETRY-1")
    drain(components)
    cancelled = way_back.apply_feedback(
        components.store,
        components.config.core,
        components.clock,
        fb.Feedback(
            task_id, "2026-11-04T10:00:00+01:00", status="cancelled", reason_code="declined"
        ),
        side="gp",
        caller=Caller("his", source_system=components.config.core.output.source_system),
    )
    assert isinstance(cancelled, way_back.Applied)
    drain(components)
    writes = len(welfare.requests())
    referral_entry = entry_of(components, task_id)
    code, _, err = outbox_cli(config, capsys, "retry", str(referral_entry.id))
    assert code == 1
    assert f"outbox entry {referral_entry.id} not retried: the entry is delivered, not dead" in err
    code, _, err = outbox_cli(config, capsys, "retry", "99999")
    assert (code, err.strip()) == (1, "wor-bridge: no outbox entry 99999")
    code, out, _ = outbox_cli(config, capsys, "replay", "--since", "2000-01-01")
    assert code == 0
    assert out["requeued"] == 0
    assert {r["id"]: r["reason"] for r in out["refused"]}[referral_entry.id] == (
        "a later message about its Task to this destination may have arrived already"
    )
    drain(components)
    assert len(welfare.requests()) == writes
    [task] = welfare.resources("Task")
    assert task["status"] == "cancelled"
    after = components.store.get_entry(referral_entry.id)
    assert after is not None
    fields = ("state", "attempts", "created_at", "next_attempt_at", "requeued_at")
    untouched = [getattr(after, f) == getattr(referral_entry, f) for f in fields]
    assert untouched == [True] * len(fields)  # (the entry itself holds patient data)


def test_retry_of_a_dead_referral_tells_the_gp_record_and_delivers_once(
    bridge: tuple[Path, Components, SimulatedFhirServer, SimulatedFhirServer],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A dead referral is told to the GP record; retry ID requeues it and it arrives once."""
    config, components, welfare, gp = bridge
    welfare.fail_next(400)
    task_id = accept(components, "RETRY-2")
    drain(components)
    dead_entry = entry_of(components, task_id)
    assert dead_entry.state == "dead"
    [failed] = [t for t in gp.resources("Task") if t["id"] == task_id]
    assert (failed["status"], failed["businessStatus"]["coding"][0]["code"]) == (
        "failed",
        "delivery-failed",
    )
    [told] = gp.resources("Communication")
    assert told["priority"] == "urgent"
    assert told["recipient"][0]["identifier"]["system"].endswith("agb-z")
    code, out, _ = outbox_cli(config, capsys, "retry", str(dead_entry.id))
    assert (code, out) == (0, {"requeued": 1, "refused": []})
    drain(components)
    again = components.store.get_entry(dead_entry.id)
    assert again is not None
    assert (again.state, again.created_at) == ("delivered", dead_entry.created_at)
    assert again.requeued_at is not None
    assert len(welfare.resources("ServiceRequest")) == 1
    [queued] = [t for t in gp.resources("Task") if t["id"] == task_id]
    assert (queued["status"], queued["businessStatus"]["coding"][0]["code"]) == (
        "requested",
        "queued",
    )
    assert len(gp.resources("Communication")) == 2
    code, _, err = outbox_cli(config, capsys, "retry", str(dead_entry.id))
    assert code == 1
    assert "not dead" in err
