"""The two MonitoringReaders give the same figures: SQLite counts from its rows
(``SqliteMonitoringTables.tallies``), the in-memory store through the pure path; both are held
against ``core.monitoring.compute`` over the stored trajectories, on the same generated data."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from wor_bridge.adapters import sqlite_monitoring as hooks
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.adapters.sqlite_monitoring_derived import DERIVED, encode_activities, encode_reasons
from wor_bridge.adapters.sqlite_rows import ts
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.core.monitoring import compute
from wor_bridge.core.monitoring_facts import Progress, ReferralFacts, monitoring_key
from wor_bridge.core.monitoring_grid import BREAKDOWNS, grid_of
from wor_bridge.core.monitoring_period import PERIODS
from wor_bridge.core.monitoring_settings import MonitoringSettings
from wor_bridge.usecases.monitoring import Reader, monitoring_report

NOW = dt.datetime(2026, 6, 1, 12, tzinfo=dt.UTC)
START = dt.datetime(2025, 11, 1, tzinfo=dt.UTC)
STATUSES = ("accepted", "in-progress", "completed", "cancelled", "rejected", "failed", "on-hold")
READERS = (
    Reader("admin", admin=True),
    Reader("practice", practice="agb:01090001"),
    Reader("municipality", municipality="Tiel", welfare="welzijn-a"),
    Reader("nobody"),
)


class _Clock:
    def now(self) -> dt.datetime:
        return NOW


def _moment(rng: random.Random, base: dt.datetime) -> dt.datetime:
    """A time after ``base``, often with a fraction of a second, sometimes exactly on it."""
    choice = rng.random()
    if choice < 0.1:
        return base
    if choice < 0.2:
        return base + dt.timedelta(microseconds=rng.choice((-1, 1)))
    return base + dt.timedelta(seconds=rng.uniform(0, 30 * 86400))


def _generate(seed: int, n: int = 400) -> Iterator[tuple[ReferralFacts, list[Progress], bool]]:
    """Referrals, their progress and whether feedback reached the GP (opaque values only)."""
    rng = random.Random(seed)
    for i in range(n):
        received = START + dt.timedelta(seconds=rng.uniform(0, 200 * 86400))
        deadline = None if rng.random() < 0.2 else received + dt.timedelta(days=7)
        if deadline is not None and rng.random() < 0.1:
            deadline = NOW + dt.timedelta(microseconds=rng.choice((-1, 0, 1)))
        facts = ReferralFacts(
            key=monitoring_key(f"task-{i}"), received_at=received, authored_on=received.date(),
            practice=rng.choice(("agb:01090001", "agb:01090002", "ura:1", "")),
            source_system=rng.choice(("his", "his-2")),
            referrer_type=rng.choice(("huisarts", "poh-ggz", "")),
            welfare=rng.choice(("welzijn-a", "welzijn-b")),
            municipality=rng.choice(("Tiel", "Culemborg", "onbekend")),
            sex=rng.choice(("male", "female", "unknown")),
            age_band=rng.choice(("18-29", "65-74", "onbekend")),
            reasons=tuple(rng.sample(("eenzaamheid", "vastlopen", "rouw", "schulden"),
                                     rng.randrange(0, 4))),
            deadline_at=deadline,
        )  # fmt: skip
        steps: list[Progress] = []
        moment = received
        for _ in range(rng.randrange(0, 5)):
            moment = _moment(rng, moment)
            first = None
            if rng.random() < 0.4:
                first = _moment(rng, deadline) if deadline and rng.random() < 0.5 else moment
            waiting = rng.random() < 0.2
            steps.append(
                Progress(
                    at=moment, status=rng.choice(STATUSES),
                    reason_code=rng.choice((None, "geen-contact", "doel-bereikt")),
                    accepted_at=moment if rng.random() < 0.5 else None,
                    first_contact_at=first,
                    intake_at=moment if rng.random() < 0.2 else None,
                    activity_at=moment if rng.random() < 0.2 else None,
                    closed_at=moment if rng.random() < 0.2 else None,
                    follow_up_at=moment if rng.random() < 0.1 else None,
                    waiting_since=moment if waiting else None,
                    waiting_until=moment if not waiting and rng.random() < 0.2 else None,
                    conversations=rng.choice((None, 0, 1, 3, 8)),
                    activities=tuple(sorted({(rng.choice(("natuur", "bewegen")),
                                              rng.choice(("participant", "vrijwilliger")))
                                             for _ in range(rng.randrange(0, 3))})),
                )
            )  # fmt: skip
        yield facts, steps, rng.random() < 0.3


def _stores(tmp_path: Path, seed: int) -> tuple[SqliteOutboxStore, MemoryOutboxStore]:
    sqlite, memory = SqliteOutboxStore(tmp_path / f"r{seed}.sqlite"), MemoryOutboxStore()
    with sqlite._write() as conn:
        for i, (facts, steps, feedback) in enumerate(_generate(seed)):
            hooks.insert_facts(conn, facts)
            memory._monitoring.insert_facts(facts)
            for step in steps:
                hooks.apply_progress(conn, facts.key, step)
                memory._monitoring.apply_progress(facts.key, step)
            if feedback:
                conn.execute(
                    "UPDATE monitoring_referral SET feedback_at = COALESCE(feedback_at, ?)"
                    " WHERE key = ?",
                    (ts(NOW), facts.key),
                )
                memory._monitoring.note(f"task-{i}", "feedback-delivered", NOW)
    return sqlite, memory


@pytest.fixture(params=[1, 2, 3])
def stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[SqliteOutboxStore, MemoryOutboxStore]]:
    """The same generated referrals in a fresh SQLite store and a fresh in-memory store."""
    sqlite, memory = _stores(tmp_path, request.param)
    yield sqlite, memory
    sqlite.close()
    memory.close()


def test_sqlite_and_memory_readers_give_identical_figures(
    stores: tuple[SqliteOutboxStore, MemoryOutboxStore],
) -> None:
    """Every period, breakdown and reader scope: the same report from both stores, and the same
    as ``compute`` over the SQLite store's trajectories (the earlier path)."""
    sqlite, memory = stores
    assert sqlite.trajectories() == memory.trajectories()
    settings = MonitoringSettings()
    differing = []
    for period in PERIODS:
        for breakdown in BREAKDOWNS:
            for reader in READERS:
                kw = {"reader": reader, "period": period, "breakdown": breakdown}
                one = monitoring_report(sqlite, settings, _Clock(), **kw)  # type: ignore[arg-type]
                two = monitoring_report(memory, settings, _Clock(), **kw)  # type: ignore[arg-type]
                mine = [t for t in sqlite.trajectories() if reader.sees(t)]
                three = compute(
                    mine, period=period, breakdown=breakdown, settings=settings, now=NOW,
                    threshold=settings.threshold, scope=reader.scope,
                )  # fmt: skip
                if not one == two == three:
                    differing.append((period, breakdown, reader.user))
    assert not differing, differing


def test_sqlite_tallies_give_the_same_grids_in_the_same_order(
    stores: tuple[SqliteOutboxStore, MemoryOutboxStore],
) -> None:
    """The completed grids agree cell by cell in insertion order, relation by relation (the order
    secondary suppression follows) and sample by sample (as multisets)."""
    sqlite, memory = stores
    for period in PERIODS:
        for breakdown in BREAKDOWNS:
            kw = {"period": period, "breakdown": breakdown, "now": NOW}
            one = sqlite.tallies(**kw)  # type: ignore[arg-type]
            two = memory.tallies(**kw)  # type: ignore[arg-type]
            assert sorted(one) == sorted(two), (period, breakdown)
            for label in one:
                a, b = grid_of(one[label]), grid_of(two[label])
                assert list(a.values.items()) == list(b.values.items()), (period, breakdown, label)
                assert a.relations == b.relations, (period, breakdown, label)
                assert a.groups == b.groups
                assert {k: sorted(v) for k, v in a.samples.items()} == {
                    k: sorted(v) for k, v in b.samples.items()
                }, (period, breakdown, label)


def test_sqlite_window_and_scope_match_the_memory_reader(
    stores: tuple[SqliteOutboxStore, MemoryOutboxStore],
) -> None:
    """A window ``[since, until)`` and a reader's scope select the same referrals in both."""
    sqlite, memory = stores
    since, until = dt.date(2026, 1, 1), dt.date(2026, 3, 1)
    for reader in READERS:
        kw = {"period": "month", "breakdown": "practice", "now": NOW, "since": since,
              "until": until, "where": reader.where}  # fmt: skip
        one, two = sqlite.tallies(**kw), memory.tallies(**kw)  # type: ignore[arg-type]
        assert sorted(one) == sorted(two), reader.user
        for label in one:
            assert list(grid_of(one[label]).values.items()) == list(
                grid_of(two[label]).values.items()
            ), (reader.user, label)


def test_a_store_made_before_the_derived_columns_is_filled_and_counts_the_same(
    tmp_path: Path,
) -> None:
    """A version-8 store (without ``order_key``/``reasons``/``activities``/``contact_days``) gets
    them filled by schema step 9 when opened, and then gives the in-memory store's figures."""
    sqlite, memory = _stores(tmp_path, 4)
    path = sqlite.path
    expected = {
        (period, breakdown): memory.tallies(period=period, breakdown=breakdown, now=NOW)
        for period in PERIODS
        for breakdown in ("total", "practice")
    }
    with sqlite._write() as conn:
        for name, _kind in DERIVED:
            conn.execute(f"ALTER TABLE monitoring_referral DROP COLUMN {name}")
        conn.execute("DELETE FROM schema_version WHERE version >= 9")  # a version-8 store
    sqlite.close()
    reopened = SqliteOutboxStore(path)
    try:
        for (period, breakdown), tallies in expected.items():
            mine = reopened.tallies(period=period, breakdown=breakdown, now=NOW)  # type: ignore[arg-type]
            assert sorted(mine) == sorted(tallies), (period, breakdown)
            for label in mine:
                a, b = grid_of(mine[label]), grid_of(tallies[label])
                assert list(a.values.items()) == list(b.values.items()), (period, label)
                assert a.relations == b.relations, (period, breakdown, label)
    finally:
        reopened.close()
        memory.close()


def test_derived_sets_follow_every_change(tmp_path: Path) -> None:
    """Reasons are recorded once per referral (a repeated intake adds none, as in memory) and the
    activities column follows every new activity, so both stores keep the same sets."""
    sqlite, memory = SqliteOutboxStore(tmp_path / "s.sqlite"), MemoryOutboxStore()
    facts = next(_generate(5, 1))[0]
    again = replace(facts, reasons=(*facts.reasons, "extra-reden"))
    steps = [
        Progress(at=NOW, status="in-progress", activities=(("natuur", "participant"),)),
        Progress(at=NOW, status="in-progress", activities=(("bewegen", "vrijwilliger"),)),
        Progress(at=NOW, status="in-progress", activities=(("natuur", "participant"),)),
    ]
    with sqlite._write() as conn:
        for f in (facts, again):
            hooks.insert_facts(conn, f)
            memory._monitoring.insert_facts(f)
        for step in steps:
            hooks.apply_progress(conn, facts.key, step)
            memory._monitoring.apply_progress(facts.key, step)
    try:
        assert sqlite.trajectories() == memory.trajectories()
        row = (
            sqlite._conn().execute("SELECT reasons, activities FROM monitoring_referral").fetchone()
        )
        assert row[0] == (encode_reasons(facts.reasons) if facts.reasons else None)
        assert row[1] == encode_activities([("bewegen", "vrijwilliger"), ("natuur", "participant")])
        one = sqlite.tallies(period="year", breakdown="total", now=NOW)
        two = memory.tallies(period="year", breakdown="total", now=NOW)
        assert one == two
    finally:
        sqlite.close()
        memory.close()
