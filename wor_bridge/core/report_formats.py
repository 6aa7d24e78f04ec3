"""A monitoring ``Report`` as JSON, as CSV with its data dictionary, and as FHIR R4
``MeasureReport``s against the ``Measure`` resources in ``mappings/measures/``. Pure.

Withheld cells are written as withheld (``null`` / empty, ``suppressed`` true); nothing below
the threshold is ever written, and no row describes one referral.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from dataclasses import fields
from typing import Final

from wor_bridge.core.fhir import JsonDict
from wor_bridge.core.monitoring import Cell, Figure, Report
from wor_bridge.core.monitoring_grid import TOTAL
from wor_bridge.core.monitoring_period import period_range
from wor_bridge.core.settings import LOCAL_BASE

MEASURE_BASE: Final = f"{LOCAL_BASE}/Measure/"
POPULATION: Final = "http://terminology.hl7.org/CodeSystem/measure-population"
CATEGORY_SYSTEM: Final = f"{LOCAL_BASE}/CodeSystem/monitoring-category"
BREAKDOWN_SYSTEM: Final = f"{LOCAL_BASE}/CodeSystem/monitoring-breakdown"
COLUMNS: Final = (
    ("figure", "id of the figure (one Measure per figure: mappings/measures/<figure>.json)"),
    ("period", "the period: YYYY-MM (month), YYYY-Qn (quarter) or YYYY (year), by referral date"),
    ("breakdown", "what the groups are: total, practice, referrer_type, welfare, municipality, "
     "sex or age_band"),
    ("group", f"the group within the breakdown ('{TOTAL}' = all referrals the reader may see)"),
    ("category", "the category counted (a stage, status, reason code, ...) or the statistic"),
    ("count", "number of counting units (see the figure's unit); empty when withheld"),
    ("denominator", "the denominator of the percentage (see the figure's denominator)"),
    ("percent", "100 * count / denominator, one decimal; only when both are published and the "
     "denominator is at least the threshold"),
    ("value", "a statistic (days, conversations) or a configured value (target, coach hours)"),
    ("suppressed", "true when the value is withheld (small cell, or it would give one away)"),
)  # fmt: skip


CELL_FIELDS: Final = tuple(f.name for f in fields(Cell))
"""A cell's fields, in order (its JSON object; ``asdict`` copies deeply and costs ten times as
much on a large report)."""


def to_json(report: Report) -> JsonDict:
    """The report as plain JSON (figures, their unit and denominator, and cells)."""
    return {**report_head(report), "figures": [
        {**figure_head(f), "cells": [dict(zip(CELL_FIELDS, row, strict=True)) for row in
                                      f.cells.rows]}
        for f in report.figures
    ]}  # fmt: skip


def report_head(report: Report) -> JsonDict:
    """The report's JSON object without its figures."""
    return {
        "report": "wor-bridge monitoring",
        "period": report.period,
        "breakdown": report.breakdown,
        "threshold": report.threshold,
        "generated_at": report.generated_at.isoformat(timespec="seconds"),
        "periods": list(report.periods),
        "scope": report.scope,
    }


def figure_head(f: Figure) -> JsonDict:
    """A figure's JSON object without its cells."""
    return {"id": f.id, "title": f.title, "unit": f.unit, "denominator": f.denominator,
            "note": f.note}  # fmt: skip


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def to_csv(report: Report) -> str:
    """One line per cell (the columns of ``COLUMNS``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([name for name, _ in COLUMNS])
    text = _text
    for figure in report.figures:
        writer.writerows(
            [figure.id, period, report.breakdown, group, category, text(count), text(denominator),
             text(rate), text(value), "true" if suppressed else "false"]
            for period, group, category, count, denominator, rate, value, suppressed in
            figure.cells.rows
        )  # fmt: skip
    return out.getvalue()


def data_dictionary(report: Report) -> str:
    """The data dictionary: every column, then every figure with its unit and denominator."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["kind", "name", "meaning", "counting unit", "denominator", "note"])
    for name, meaning in COLUMNS:
        writer.writerow(["column", name, meaning, "", "", ""])
    for f in report.figures:
        writer.writerow(["figure", f.id, f.title, f.unit, f.denominator, f.note])
    writer.writerow(
        ["rule", "threshold", f"counts from 1 to {report.threshold - 1} are withheld, and "
         "others where they would give one away", "", "", ""]
    )  # fmt: skip
    return out.getvalue()


def _population(code: str, count: int | None) -> JsonDict:
    out: JsonDict = {"code": {"coding": [{"system": POPULATION, "code": code}]}}
    if count is not None:
        out["count"] = count
    return out


def measure_reports(report: Report) -> list[JsonDict]:
    """One MeasureReport (type summary) per figure and period; groups are the categories, the
    stratifier is the breakdown. Withheld counts are left out (a population without count)."""
    out: list[JsonDict] = []
    for figure in report.figures:
        by_period: dict[str, list[Cell]] = {}
        for c in figure.cells:
            by_period.setdefault(c.period, []).append(c)
        for label in report.periods:
            mine = by_period.get(label)
            if mine:
                out.append(_measure_report(report, figure, label, mine))
    return out


def _measure_report(report: Report, figure: Figure, label: str, cells: list[Cell]) -> JsonDict:
    start, end = period_range(label)
    by_category: dict[str, list[Cell]] = {}
    for c in cells:
        by_category.setdefault(c.category, []).append(c)
    groups: list[JsonDict] = []
    for category, same in by_category.items():
        total = next((c for c in same if c.group == TOTAL), None)
        group: JsonDict = {
            "code": {"coding": [{"system": CATEGORY_SYSTEM, "code": category}]},
            "population": [
                _population("numerator", total.count if total else None),
                _population("denominator", total.denominator if total else None),
            ],
        }
        if total is not None and (total.percent is not None or total.value is not None):
            score = total.percent if total.percent is not None else total.value
            group["measureScore"] = {"value": score}
        strata = [
            {
                "value": {"text": c.group},
                "population": [
                    _population("numerator", c.count),
                    _population("denominator", c.denominator),
                ],
                **(
                    {"measureScore": {"value": c.percent if c.percent is not None else c.value}}
                    if c.percent is not None or c.value is not None
                    else {}
                ),
            }
            for c in same
            if c.group != TOTAL
        ]
        if strata:
            code = {"coding": [{"system": BREAKDOWN_SYSTEM, "code": report.breakdown}]}
            group["stratifier"] = [{"code": [code], "stratum": strata}]
        groups.append(group)
    return {
        "resourceType": "MeasureReport",
        "status": "complete",
        "type": "summary",
        "measure": f"{MEASURE_BASE}{figure.id}",
        "date": report.generated_at.isoformat(timespec="seconds"),
        "period": {"start": start.isoformat(), "end": (end - _DAY).isoformat()},
        "group": groups,
    }


_DAY: Final = dt.timedelta(days=1)
