"""The console's ``AccountStore`` and ``AuditReader``: the SQLite and PostgreSQL adapters and the
in-memory fake pass the same contract."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from tests import sealed
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.core.account import Account, Session
from wor_bridge.records import AuditEvent, AuditQuery

T0 = dt.datetime(2026, 11, 2, 9, 0, tzinfo=dt.UTC)
COACH = Account("coach.a", "coach", "welzijn-voorbeeld", password_hash="h1")


@pytest.fixture(params=["sqlite", "sqlite-sealed", "memory", "postgresql", "postgresql-sealed"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Any, Any]:
    """The store of one kind, as the outbox store and as the account store (one object)."""
    store: Any
    if request.param == "memory":
        store = MemoryOutboxStore()
    elif request.param == "postgresql":  # the same SQL on PostgreSQL (tests/pg.py)
        store = request.getfixturevalue("pg_store")
    elif request.param == "postgresql-sealed":  # and sealed, each patient_id apart
        store = request.getfixturevalue("pg_sealed_store")
    elif request.param == "sqlite-sealed":  # encryption at rest: each patient_id sealed apart
        store = SqliteOutboxStore(tmp_path / "store.sqlite", sealer=sealed.sealer())
    else:
        store = SqliteOutboxStore(tmp_path / "store.sqlite")
    return store, store


def test_an_account_is_stored_once_and_read_back(stores: tuple[Any, Any]) -> None:
    """A username is taken once; the account reads back equal; the list is by username."""
    _, accounts = stores
    assert accounts.add_account(COACH, T0)
    assert not accounts.add_account(dataclasses.replace(COACH, role="operator"), T0)
    operator = Account("admin.b", "operator", None, password_hash="h2", totp_secret="JBSWY3DP")
    accounts.add_account(operator, T0)
    assert accounts.get_account("coach.a") == COACH
    assert accounts.get_account("nobody") is None
    assert [a.username for a in accounts.list_accounts()] == ["admin.b", "coach.a"]


def test_disabling_or_rekeying_an_account_ends_its_sessions(stores: tuple[Any, Any]) -> None:
    """Sessions end when the account is disabled or its password changes, not otherwise."""
    _, accounts = stores
    accounts.add_account(COACH, T0)
    accounts.add_session(Session("s1", "coach.a", "t", T0, T0))
    assert accounts.change_account(dataclasses.replace(COACH, totp_secret="JBSWY3DP"))
    assert accounts.get_session("s1") is not None
    assert accounts.change_account(dataclasses.replace(COACH, password_hash="h9"))
    assert accounts.get_session("s1") is None
    accounts.add_session(Session("s2", "coach.a", "t", T0, T0))
    accounts.change_account(dataclasses.replace(COACH, password_hash="h9", disabled=True))
    assert accounts.get_session("s2") is None
    assert accounts.get_account("coach.a").disabled
    assert not accounts.change_account(Account("nobody", "operator", None))


def test_a_session_is_touched_and_ended(stores: tuple[Any, Any]) -> None:
    """touch moves seen_at only; end forgets the session."""
    _, accounts = stores
    accounts.add_account(COACH, T0)
    accounts.add_session(Session("s1", "coach.a", "t", T0, T0))
    later = T0 + dt.timedelta(minutes=5)
    accounts.touch_session("s1", later)
    assert accounts.get_session("s1") == Session("s1", "coach.a", "t", T0, later)
    accounts.end_session("s1")
    assert accounts.get_session("s1") is None


def test_login_failures_are_counted_per_key_within_the_window(stores: tuple[Any, Any]) -> None:
    """Failures count per key since a moment; older ones are forgotten; clear forgets a key."""
    _, accounts = stores
    for minutes in (0, 10, 20):
        accounts.add_login_failure("user:a", T0 + dt.timedelta(minutes=minutes))
    accounts.add_login_failure("addr:127.0.0.1", T0)
    assert accounts.login_failures("user:a", T0 + dt.timedelta(minutes=5)) == 2
    assert accounts.login_failures("addr:127.0.0.1", T0) == 0  # forgotten by the call before
    accounts.clear_login_failures("user:a")
    assert accounts.login_failures("user:a", T0) == 0


def test_the_audit_search_filters_and_orders_newest_first(stores: tuple[Any, Any]) -> None:
    """Every given field must match; since inclusive, until exclusive; newest first; limit."""
    outbox, accounts = stores
    for n, (user, patient) in enumerate((("a", "p1"), ("b", "p1"), ("a", "p2"))):
        outbox.audit(
            AuditEvent("referral_read", "R", "success", user, "org", "his", patient, "Task", "t"),
            T0 + dt.timedelta(hours=n),
        )
    found = accounts.find_audit(AuditQuery(patient_id="p1"))
    assert [r.event.user for r in found] == ["b", "a"]
    assert found[0].at == T0 + dt.timedelta(hours=1)
    assert [r.event.patient_id for r in accounts.find_audit(AuditQuery(user="a"))] == ["p2", "p1"]
    window = AuditQuery(since=T0 + dt.timedelta(hours=1), until=T0 + dt.timedelta(hours=2))
    assert [r.event.user for r in accounts.find_audit(window)] == ["b"]
    assert len(accounts.find_audit(AuditQuery(limit=2))) == 2
    assert len(accounts.find_audit(AuditQuery(patient_id="p1", limit=1))) == 1
    assert accounts.find_audit(AuditQuery(event="other")) == []
