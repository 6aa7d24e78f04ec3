"""``GET /reports/monitoring``: the monitoring report for dashboards (scope ``report:read``).

The caller sees the figures of its own part only (``usecases.monitoring.Reader``); every request,
refused or answered, is audited (``access.AccessLog``), without patient data (there is none).
Formats: ``json`` (default), ``csv`` (``/reports/monitoring/dictionary.csv`` is its data
dictionary), ``html`` (self-contained; a Content-Security-Policy forbids loading anything) and
``measurereport`` (a FHIR ``collection`` Bundle of MeasureReports).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Final, cast, get_args

from fastapi import FastAPI, Request
from fastapi.responses import Response

from wor_bridge import collection
from wor_bridge.bootstrap import Components
from wor_bridge.config import ClientSettings
from wor_bridge.core import report_formats as formats
from wor_bridge.core.fhir import canonical_json
from wor_bridge.core.monitoring import Report, compute
from wor_bridge.core.monitoring_grid import Breakdown
from wor_bridge.core.monitoring_period import Period
from wor_bridge.core.report_html import to_html
from wor_bridge.core.report_json import json_text
from wor_bridge.service.access import AccessLog, Attempt
from wor_bridge.service.auth import Denied
from wor_bridge.usecases.monitoring import Reader, monitoring_report

FORMATS: Final = ("json", "csv", "html", "measurereport")
PAGE_POLICY: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'"


def reader_of(client: ClientSettings) -> Reader:
    """Whose figures ``client`` may see."""
    return Reader(
        user=client.id,
        admin="admin" in client.scopes,
        practice=client.practice,
        municipality=client.municipality,
        welfare=client.destination,
        source_system=client.source_system,
    )


def render(report: Report, form: str) -> Response:
    """The report in one of ``FORMATS`` (the cyclic garbage collector paused while it is
    written: ``collection.paused``)."""
    with collection.paused():
        return _render(report, form)


def _render(report: Report, form: str) -> Response:
    if form == "csv":
        return Response(formats.to_csv(report), media_type="text/csv; charset=utf-8")
    if form == "html":
        return Response(
            to_html(report),
            media_type="text/html; charset=utf-8",
            headers={"Content-Security-Policy": PAGE_POLICY},
        )
    if form == "measurereport":
        bundle = {
            "resourceType": "Bundle",
            "type": "collection",
            "entry": [{"resource": r} for r in formats.measure_reports(report)],
        }
        return Response(canonical_json(bundle), media_type="application/fhir+json")
    return Response(json_text(report, ensure_ascii=False), media_type="application/json")


class ReportRoutes:
    """Registers the report routes on the app."""

    def __init__(
        self,
        components: Components,
        authorise: Callable[[Request, str], ClientSettings | Denied],
        trail: AccessLog,
        outcome: Callable[..., Response],
        denied: Callable[[Denied], Response],
    ) -> None:
        self.c = components
        self.authorise = authorise
        self.trail = trail
        self.outcome = outcome
        self.denied = denied

    def add(self, app: FastAPI) -> None:
        """``GET /reports/monitoring`` and its data dictionary."""

        @app.get("/reports/monitoring", tags=["monitoring"])
        def get_report(request: Request) -> Response:
            """The monitoring figures the caller may see."""
            attempt = Attempt("monitoring_report", "R", object_type="MeasureReport")
            return self.trail.answer_sync(attempt, lambda: self._report(request, attempt))

        @app.get("/reports/monitoring/dictionary.csv", tags=["monitoring"])
        def get_dictionary(request: Request) -> Response:
            """The data dictionary of the CSV form."""
            attempt = Attempt("monitoring_report", "R", object_type="MeasureReport")
            return self.trail.answer_sync(attempt, lambda: self._dictionary(request, attempt))

    def _client(self, request: Request, attempt: Attempt) -> ClientSettings | Response:
        client = self.authorise(request, "report:read")
        if isinstance(client, Denied):
            attempt.user = client.user
            return self.denied(client)
        attempt.by(client)
        return client

    def _dictionary(self, request: Request, attempt: Attempt) -> Response:
        client = self._client(request, attempt)
        if isinstance(client, Response):
            return client
        empty = compute(
            [],
            period="month",
            breakdown="total",
            settings=self.c.config.core.monitoring,
            now=self.c.clock.now(),
        )
        return Response(formats.data_dictionary(empty), media_type="text/csv; charset=utf-8")

    def _report(self, request: Request, attempt: Attempt) -> Response:
        client = self._client(request, attempt)
        if isinstance(client, Response):
            return client
        q = request.query_params
        period, breakdown = q.get("period", "month"), q.get("breakdown", "total")
        form = q.get("format", "json")
        problem = None
        if period not in get_args(Period):
            problem = ("period", f"must be one of {', '.join(get_args(Period))}")
        elif breakdown not in get_args(Breakdown):
            problem = ("breakdown", f"must be one of {', '.join(get_args(Breakdown))}")
        elif form not in FORMATS:
            problem = ("format", f"must be one of {', '.join(FORMATS)}")
        threshold = q.get("threshold")
        if threshold is not None and not (threshold.isdigit() and 1 <= int(threshold) <= 1000):
            problem = ("threshold", "must be a whole number from 1 to 1000")
        try:
            since = dt.date.fromisoformat(q["since"]) if "since" in q else None
            until = dt.date.fromisoformat(q["until"]) if "until" in q else None
        except ValueError:
            problem = ("since/until", "must be dates (YYYY-MM-DD)")
        if problem is not None or self.c.monitoring is None:
            where, message = problem or ("(request)", "monitoring is not available")
            return self.outcome(400, "invalid", message, where)
        report = monitoring_report(
            self.c.monitoring,
            self.c.config.core.monitoring,
            self.c.clock,
            reader=reader_of(client),
            period=cast(Period, period),
            breakdown=cast(Breakdown, breakdown),
            threshold=int(threshold) if threshold else None,
            since=since,
            until=until,
            audit=self.trail.store,
            channel=f"http; format={form}",
        )
        return render(report, form)
