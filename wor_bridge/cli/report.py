"""``wor-bridge report``: the monitoring figures on stdout (or in a file), audited.

``--format json|csv|html|measurereport``; with ``csv`` the data dictionary follows the data after
one empty line (or, with ``--output FILE``, goes to ``FILE`` with ``.dictionary.csv``).
``--practice``/``--municipality``/``--welfare`` limit the figures to one part (the operator sees
everything otherwise).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from wor_bridge import bootstrap, collection
from wor_bridge.core import report_formats as formats
from wor_bridge.core.fhir import canonical_json
from wor_bridge.core.monitoring_grid import BREAKDOWNS
from wor_bridge.core.monitoring_period import PERIODS
from wor_bridge.core.report_html import to_html
from wor_bridge.core.report_json import json_text
from wor_bridge.usecases.monitoring import Reader, monitoring_report

FORMATS = ("json", "csv", "html", "measurereport")


def cmd_report(args: argparse.Namespace) -> int:
    """Print (or write) the report."""
    components = bootstrap.load(args.config, create=False)
    assert components.monitoring is not None  # noqa: S101 - bootstrap always wires it
    limited = any((args.practice, args.municipality, args.welfare))
    reader = Reader(
        user=args.operator,
        admin=not limited,
        practice=args.practice,
        municipality=args.municipality,
        welfare=args.welfare,
    )
    report = monitoring_report(
        components.monitoring,
        components.config.core.monitoring,
        components.clock,
        reader=reader,
        period=args.period,
        breakdown=args.breakdown,
        threshold=args.threshold,
        since=args.since,
        until=args.until,
        audit=components.store,
        channel=f"cli; format={args.format}",
    )
    with collection.paused():  # the text of a fine grid: many objects, no cycles
        dictionary = None
        if args.format == "csv":
            text = formats.to_csv(report)
            dictionary = formats.data_dictionary(report)
        elif args.format == "html":
            text = to_html(report)
        elif args.format == "measurereport":
            bundle: dict[str, Any] = {
                "resourceType": "Bundle",
                "type": "collection",
                "entry": [{"resource": r} for r in formats.measure_reports(report)],
            }
            text = canonical_json(bundle, pretty=True).decode("utf-8") + "\n"
        else:
            text = json_text(report, ensure_ascii=False, indent=2) + "\n"
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
        if dictionary is not None:
            args.output.with_suffix(".dictionary.csv").write_text(dictionary, encoding="utf-8")
    else:
        sys.stdout.write(text + ("\n" + dictionary if dictionary is not None else ""))
    return 0


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a date as YYYY-MM-DD, e.g. 2026-11-02") from None


def add_command(sub: Any) -> None:
    """Register ``report`` on the top-level subparsers."""
    p = sub.add_parser("report", help="monitoring figures (no patient data; small cells withheld)")
    p.add_argument("--period", choices=PERIODS, default="month")
    p.add_argument("--breakdown", choices=BREAKDOWNS, default="total")
    p.add_argument(
        "--threshold", type=int, default=None, help="withhold counts below this (never below "
        "the configured [monitoring] threshold)"
    )  # fmt: skip
    p.add_argument("--format", choices=FORMATS, default="json")
    p.add_argument("--since", type=_date, default=None, help="first referral date (YYYY-MM-DD)")
    p.add_argument("--until", type=_date, default=None, help="referral dates before this one")
    p.add_argument("--practice", default=None, help="only this practice (agb:<AGB>)")
    p.add_argument("--municipality", default=None, help="only this municipality")
    p.add_argument("--welfare", default=None, help="only this welfare organisation (id)")
    p.add_argument("--output", type=Path, default=None, help="write to this file")
    p.add_argument("--config", type=Path, default=None, help="TOML configuration file")
    p.add_argument("--operator", default="operator", help="recorded in the audit trail")
    p.set_defaults(func=cmd_report)
