"""Small-cell suppression with secondary suppression, over any set of additive relations. Pure.

A report is a set of counts (cells) and the relations between them that a reader knows or can
infer: ``total = part + part + ...`` (a row of exclusive categories adds up to its denominator, a
column of groups adds up to the total row, ...). Publishing some cells and withholding others is
safe when no withheld cell's value follows from the published ones through those relations.

1. **Primary**: every count ``0 < n < threshold`` is withheld (zeros are published: they are
   structural, and withholding them protects nothing that an empty cell would not show).
2. **Secondary, line rule**: a relation with exactly one withheld member would give it away, so a
   second member is withheld: the smallest non-zero published part that is not *frozen* (else
   the total, else a zero part).
3. **Secondary, algebra**: relations combine (a chain of lines can pin a cell that no single line
   pins), so the withheld cells are solved as a linear system over the published values (exact
   elimination modulo a large prime); every withheld cell the system determines gets another
   member of one of its relations withheld, and the steps repeat until none is determined.

*Frozen* cells keep the decision another report made (the total row of a breakdown must be
withheld exactly as in the report without breakdown, or the two together would give away what
each alone protects).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

PRIME: Final = (1 << 61) - 1
"""Elimination modulo this prime: the relations have coefficients 0 and +-1, so the rank over
the rationals and over GF(p) agree unless p divides a minor, which a prime this large never does
for tables of this size."""


K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Relation(Generic[K]):
    """``total = sum(parts)``, known to every reader."""

    total: K
    parts: tuple[K, ...]

    def members(self) -> tuple[K, ...]:
        """The total and its parts."""
        return (self.total, *self.parts)


def suppress(
    values: Mapping[K, int],
    relations: Sequence[Relation[K]],
    threshold: int,
    frozen: Mapping[K, bool] | None = None,
) -> set[K]:
    """The cells to withhold (see the module docstring). ``frozen`` maps cells to a decision
    (True withheld, False published) that must not change."""
    fixed = dict(frozen or {})
    hidden = {k for k, v in values.items() if 0 < v < threshold and k not in fixed}
    hidden |= {k for k, withheld in fixed.items() if withheld and k in values}
    known = values.__contains__
    every = [(r, r.members()) for r in relations]
    kept = [(r, mine) for r, mine in every if all(map(known, mine))]
    relations = [r for r, _mine in kept]
    members = [mine for _r, mine in kept]
    while True:
        _line_rule(values, relations, members, hidden, fixed)
        determined = {
            k for k in _determined(relations, members, hidden) if 0 < values[k] < threshold
        }
        if not determined:
            return hidden
        if not _widen(values, relations, members, hidden, fixed, determined):
            return hidden  # nothing left to withhold (cannot happen with consistent totals)


def _candidates(
    relation: Relation[K],
    values: Mapping[K, int],
    hidden: set[K],
    fixed: Mapping[K, bool],
    *,
    zeros: bool = False,
) -> list[K]:
    """Members that may still be withheld: non-zero parts first (smallest first), then the
    total, then (with ``zeros``) zero parts (a zero withheld still leaves the reader an
    unknown)."""
    free = [
        m
        for m in relation.members()
        if m not in hidden and m not in fixed and (zeros or values[m] > 0)
    ]
    return sorted(
        free,
        key=lambda m: (values[m] == 0, m == relation.total, values[m], repr(m)),
    )


def _line_rule(
    values: Mapping[K, int],
    relations: Sequence[Relation[K]],
    members: Sequence[tuple[K, ...]],
    hidden: set[K],
    fixed: Mapping[K, bool],
) -> None:
    withheld = hidden.__contains__  # ``hidden`` grows below: the bound method sees it
    changed = True
    while changed:
        changed = False
        for relation, mine in zip(relations, members, strict=True):
            if sum(map(withheld, mine)) != 1:
                continue
            options = _candidates(relation, values, hidden, fixed)
            if options:
                hidden.add(options[0])
                changed = True


def _widen(  # noqa: PLR0917 - the state of ``suppress``, passed on
    values: Mapping[K, int],
    relations: Sequence[Relation[K]],
    members: Sequence[tuple[K, ...]],
    hidden: set[K],
    fixed: Mapping[K, bool],
    determined: Iterable[K],
) -> bool:
    cells = set(determined)
    for relation, mine in zip(relations, members, strict=True):
        if not cells.isdisjoint(mine):
            options = _candidates(relation, values, hidden, fixed, zeros=True)
            if options:
                hidden.add(options[0])
                return True
    # Every relation of the determined cells is fully withheld, yet a chain of other relations
    # still pins them: withhold another member of a relation that has withheld members (fail
    # closed: more is withheld, never less), until nothing is determined or nothing is left.
    for relation, mine in zip(relations, members, strict=True):
        if not hidden.isdisjoint(mine):
            options = _candidates(relation, values, hidden, fixed, zeros=True)
            if options:
                hidden.add(options[0])
                return True
    return False


def _determined(
    relations: Sequence[Relation[K]], members: Sequence[tuple[K, ...]], hidden: set[K]
) -> set[K]:
    """Withheld cells whose value follows from the published cells and the relations (which
    cells does not depend on the order of the unknowns: any order of the columns spans the same
    row space)."""
    unknowns = list(hidden)
    index = {k: i for i, k in enumerate(unknowns)}
    rows: list[dict[int, int]] = []
    for relation, mine in zip(relations, members, strict=True):
        if hidden.isdisjoint(mine):
            continue  # its row would be empty
        row: dict[int, int] = {}
        for member, sign in ((relation.total, 1), *((p, -1) for p in relation.parts)):
            if member in index:
                col = index[member]
                row[col] = (row.get(col, 0) + sign) % PRIME
        row = {c: v for c, v in row.items() if v}
        if row:
            rows.append(row)
    return {unknowns[c] for c in pinned(rows)}


def pinned(rows: list[dict[int, int]]) -> set[int]:
    """Columns whose unit vector lies in the row space (sparse Gauss-Jordan modulo PRIME)."""
    pivots: dict[int, dict[int, int]] = {}
    for original in rows:
        row = dict(original)
        for col in [c for c in row if c in pivots]:
            _eliminate(row, pivots[col], col)
        row = {c: v for c, v in row.items() if v}
        if not row:
            continue
        col = min(row)
        lead = row[col]
        if lead != 1:  # most leading entries are 1 already (coefficients are 0 and +-1)
            inverse = PRIME - 1 if lead == PRIME - 1 else pow(lead, PRIME - 2, PRIME)
            row = {c: v * inverse % PRIME for c, v in row.items()}
        for other in pivots.values():
            if col in other:
                _eliminate(other, row, col)
        pivots[col] = row
    return {col for col, row in pivots.items() if len(row) == 1}


def _eliminate(row: dict[int, int], pivot: dict[int, int], col: int) -> None:
    factor = row.get(col, 0)
    if not factor:
        return
    for c, v in pivot.items():
        row[c] = (row.get(c, 0) - factor * v) % PRIME
        if not row[c]:
            del row[c]
