"""Small-cell suppression: nothing below the threshold is published or derivable (Hypothesis)."""

from __future__ import annotations

import datetime as dt
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.test_monitoring_figures import trajectory
from wor_bridge.core.monitoring import hidden_cells
from wor_bridge.core.monitoring_grid import build, group_of
from wor_bridge.core.suppression import Relation, suppress

THRESHOLD = 5


def determined(values: dict, relations: list[Relation], hidden: set) -> set:
    """Withheld cells the published ones pin down (exact rational elimination, independent of
    the implementation's modular one)."""
    unknowns = sorted(hidden, key=repr)
    col = {k: i for i, k in enumerate(unknowns)}
    rows = []
    for r in relations:
        row = [Fraction(0)] * len(unknowns)
        for member, sign in ((r.total, 1), *((p, -1) for p in r.parts)):
            if member in col:
                row[col[member]] += sign
        if any(row):
            rows.append(row)
    found = set()
    for i, key in enumerate(unknowns):
        target = [Fraction(int(j == i)) for j in range(len(unknowns))]
        if _in_row_space(rows, target):
            found.add(key)
    return found


def small(values: dict, cells: set) -> set:
    """The cells with a count from 1 to the threshold minus one."""
    return {k for k in cells if 0 < values[k] < THRESHOLD}


def _rank(rows: list[list[Fraction]]) -> int:
    m = [list(r) for r in rows]
    rank, cols = 0, len(m[0]) if m else 0
    for c in range(cols):
        pivot = next((i for i in range(rank, len(m)) if m[i][c] != 0), None)
        if pivot is None:
            continue
        m[rank], m[pivot] = m[pivot], m[rank]
        for i in range(len(m)):
            if i != rank and m[i][c] != 0:
                f = m[i][c] / m[rank][c]
                m[i] = [a - f * b for a, b in zip(m[i], m[rank], strict=True)]
        rank += 1
    return rank


def _in_row_space(rows: list[list[Fraction]], target: list[Fraction]) -> bool:
    return bool(rows) and _rank(rows) == _rank([*rows, target])


tables = st.lists(
    st.lists(st.integers(min_value=0, max_value=12), min_size=2, max_size=4),
    min_size=2,
    max_size=4,
).filter(lambda t: len({len(r) for r in t}) == 1)


def as_cells(table: list[list[int]]) -> tuple[dict, list[Relation]]:
    """A table with row totals, column totals and a grand total, and its relations."""
    values = {("c", i, j): v for i, row in enumerate(table) for j, v in enumerate(row)}
    cols = len(table[0])
    relations = []
    for i, row in enumerate(table):
        values[("r", i)] = sum(row)
        relations.append(Relation(("r", i), tuple(("c", i, j) for j in range(cols))))
    for j in range(cols):
        values[("k", j)] = sum(row[j] for row in table)
        relations.append(Relation(("k", j), tuple(("c", i, j) for i in range(len(table)))))
    values["t"] = sum(map(sum, table))
    relations.append(Relation("t", tuple(("r", i) for i in range(len(table)))))
    relations.append(Relation("t", tuple(("k", j) for j in range(cols))))
    return values, relations


@settings(max_examples=150, deadline=None)
@given(tables)
def test_no_small_cell_is_published_or_derivable(table: list[list[int]]) -> None:
    """Property: every count 1..4 is withheld and no withheld cell follows from the others."""
    values, relations = as_cells(table)
    hidden = suppress(values, relations, THRESHOLD)
    assert all(k in hidden for k, v in values.items() if 0 < v < THRESHOLD)
    assert small(values, determined(values, relations, hidden)) == set()


trajectories = st.lists(
    st.tuples(
        st.sampled_from(["male", "female", "unknown"]),
        st.sampled_from(["huisarts", "poh-ggz", "poh-somatiek"]),
        st.sampled_from(["requested", "completed", "cancelled"]),
        st.sets(st.sampled_from(["eenzaamheid", "vastlopen", "rouw-verlies"]), max_size=2),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=25, deadline=None)
@given(trajectories)
def test_report_cells_below_threshold_are_never_derivable(rows: list[tuple]) -> None:
    """Property over whole reports (breakdown by sex): small cells withheld, none derivable,
    and the total row withheld exactly as in the report without breakdown."""
    items = [trajectory(i, sex=s, referrer=r, status=st_, reasons=tuple(sorted(rs)))
             for i, (s, r, st_, rs) in enumerate(rows)]  # fmt: skip
    now = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    grid = build(items, lambda t: group_of(t, "sex"), now)
    hidden = hidden_cells(grid, THRESHOLD)
    assert all(k in hidden for k, v in grid.values.items() if 0 < v < THRESHOLD)
    assert small(grid.values, determined(grid.values, grid.relations, hidden)) == set()
    alone = build(items, lambda t: group_of(t, "total"), now)
    alone_hidden = hidden_cells(alone, THRESHOLD)
    assert {k for k in hidden if k[1] == "totaal"} == alone_hidden


def test_secondary_suppression_hides_a_second_cell_in_the_line() -> None:
    """A row 3 + 10 = 13: the 3 is withheld, and so is the 10 (else 13 - 10 gives it away)."""
    values = {"a": 3, "b": 10, "c": 7, "t": 20}
    hidden = suppress(values, [Relation("t", ("a", "b", "c"))], THRESHOLD)
    assert hidden == {"a", "c"}


def test_frozen_cells_keep_their_decision() -> None:
    """A frozen published total stays published; parts are withheld instead."""
    values = {"a": 3, "b": 10, "c": 7, "t": 20}
    hidden = suppress(values, [Relation("t", ("a", "b", "c"))], THRESHOLD, {"t": False, "c": False})
    assert hidden == {"a", "b"}


def test_a_cell_pinned_by_a_chain_of_withheld_lines_gets_more_withheld() -> None:
    """A small total whose own lines are all withheld but which a chain of other lines still
    pins (found by the property above) is protected by withholding more, never left derivable."""
    rows = [
        ("male", "poh-ggz", "cancelled", ("eenzaamheid", "vastlopen")),
        ("male", "poh-somatiek", "cancelled", ("eenzaamheid", "vastlopen")),
        ("male", "poh-somatiek", "requested", ()),
        ("female", "poh-ggz", "completed", ()),
        ("female", "poh-somatiek", "requested", ()),
        ("unknown", "poh-ggz", "requested", ()),
        ("male", "poh-somatiek", "requested", ("rouw-verlies",)),
        ("female", "poh-ggz", "requested", ("rouw-verlies", "vastlopen")),
    ]
    items = [
        trajectory(i, sex=s, referrer=r, status=status, reasons=tuple(sorted(reasons)))
        for i, (s, r, status, reasons) in enumerate(rows)
    ]
    grid = build(items, lambda t: group_of(t, "sex"), dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
    hidden = hidden_cells(grid, THRESHOLD)
    assert small(grid.values, determined(grid.values, grid.relations, hidden)) == set()
