"""The operator's pages: the outbox, one entry (reveal, retry), replay, health per destination and
the audit search with its CSV. Calls ``usecases.operator_console`` and ``usecases.outbox_repair``
(the CLI's rules) only; lists never show patient data."""

from __future__ import annotations

import datetime as dt
import json
from typing import cast, get_args

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from wor_bridge.console import web
from wor_bridge.console.auth_routes import Guard
from wor_bridge.core.monitoring_grid import Breakdown
from wor_bridge.core.monitoring_period import Period
from wor_bridge.core.outbox import STATES, State
from wor_bridge.ports import AuditReader, MonitoringReader
from wor_bridge.records import AuditQuery
from wor_bridge.service.report_routes import render
from wor_bridge.usecases import operator_console as ops
from wor_bridge.usecases import outbox_repair
from wor_bridge.usecases.monitoring import Reader, monitoring_report


def _instant(value: str | None) -> dt.datetime | None:
    """A date or date-time from a form (UTC when it has no zone), or None."""
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _query(params: dict[str, str]) -> AuditQuery:
    return AuditQuery(
        patient_id=params.get("patient") or None,
        user=params.get("user") or None,
        object_id=params.get("object") or None,
        event=params.get("event") or None,
        since=_instant(params.get("since")),
        until=_instant(params.get("until")),
    )


def add_operator_routes(app: FastAPI, guard: Guard, audit: AuditReader) -> None:  # noqa: PLR0915 - the operator routes, read top to bottom
    """The operator routes."""
    c = guard.c
    destinations = [(d.id, d.name, d.type) for d in c.config.core.destinations]

    @app.get("/console/outbox", include_in_schema=False)
    async def outbox_list(request: Request) -> Response:
        """Entries by state, destination and age: ids, states and codes only."""
        found = await guard.require(request, "operator")
        if isinstance(found, Response):
            return found
        params = request.query_params
        state = params.get("state") if params.get("state") in STATES else None
        age = params.get("min_age_h") or ""
        listed = await run_in_threadpool(
            lambda: ops.entries(
                c.store,
                c.clock.now(),
                state=cast(State | None, state),
                destination=params.get("destination") or None,
                min_age_h=float(age) if age.replace(".", "", 1).isdigit() else None,
            )
        )
        return web.page(
            "outbox.html",
            account=found[1],
            session=found[0],
            entries=listed,
            states=STATES,
            destinations=destinations,
            chosen=dict(params),
            now=c.clock.now(),
        )

    @app.get("/console/outbox/{entry_id}", include_in_schema=False)
    async def outbox_entry(entry_id: int, request: Request) -> Response:
        """One entry: attempts, answers and its Task's audit trail (no content)."""
        found = await guard.require(request, "operator")
        if isinstance(found, Response):
            return found
        entry = await run_in_threadpool(c.store.get_entry, entry_id)
        if entry is None:
            return web.page("error.html", 404, account=found[1], message="Niet gevonden.")
        records = await run_in_threadpool(ops.trail, audit, entry.task_id)
        return web.page(
            "entry.html",
            account=found[1],
            session=found[0],
            entry=entry,
            records=records,
        )

    @app.post("/console/outbox/{entry_id}/reveal", include_in_schema=False)
    async def outbox_reveal(entry_id: int, request: Request) -> Response:
        """The entry's content, on an explicit request that is audited first."""
        signed = await guard.posted(request, "operator")
        if isinstance(signed, Response):
            return signed
        entry = await run_in_threadpool(c.store.get_entry, entry_id)
        if entry is None:
            return web.page("error.html", 404, account=signed.account, message="Niet gevonden.")
        payload = await run_in_threadpool(ops.reveal, c.store, c.clock, signed.account, entry)
        pretty = json.dumps(json.loads(payload), indent=2, ensure_ascii=False)
        return web.page(
            "reveal.html", account=signed.account, session=signed.session, entry=entry, body=pretty
        )

    @app.post("/console/outbox/{entry_id}/retry", include_in_schema=False)
    async def outbox_retry(entry_id: int, request: Request) -> Response:
        """Requeue a dead entry after a confirmation (the CLI's ``outbox retry`` rules)."""
        signed = await guard.posted(request, "operator")
        if isinstance(signed, Response):
            return signed
        entry = await run_in_threadpool(c.store.get_entry, entry_id)
        if entry is None:
            return web.page("error.html", 404, account=signed.account, message="Niet gevonden.")
        if signed.fields.get("confirm") != "ja":
            return web.page(
                "confirm.html",
                account=signed.account,
                session=signed.session,
                action=f"/console/outbox/{entry_id}/retry",
                question=f"Bericht {entry_id} opnieuw versturen?",
                fields={},
            )
        repair = await run_in_threadpool(
            lambda: outbox_repair.retry(
                c.store,
                c.config.core,
                c.clock,
                [entry_id],
                operator=f"console:{signed.account.username}",
            )
        )
        _wake(request)
        why = repair.refused.get(entry_id)
        records = await run_in_threadpool(ops.trail, audit, entry.task_id)
        return web.page(
            "entry.html",
            account=signed.account,
            session=signed.session,
            entry=await run_in_threadpool(c.store.get_entry, entry_id),
            records=records,
            message="Opnieuw in de wachtrij." if why is None else f"Niet opnieuw verstuurd: {why}",
        )

    @app.post("/console/replay", include_in_schema=False)
    async def outbox_replay(request: Request) -> Response:
        """Requeue delivered referrals since a date, after a confirmation (``outbox replay``)."""
        signed = await guard.posted(request, "operator")
        if isinstance(signed, Response):
            return signed
        since = _instant(signed.fields.get("since"))
        if since is None:
            return web.page("error.html", 422, account=signed.account, message="Geef een datum.")
        if signed.fields.get("confirm") != "ja":
            return web.page(
                "confirm.html",
                account=signed.account,
                session=signed.session,
                action="/console/replay",
                question=f"Verwijzingen afgeleverd sinds {since.date()} opnieuw versturen?",
                fields={"since": signed.fields.get("since", "")},
            )
        repair = await run_in_threadpool(
            lambda: outbox_repair.replay(
                c.store,
                c.config.core,
                c.clock,
                since,
                operator=f"console:{signed.account.username}",
            )
        )
        _wake(request)
        return web.page(
            "replayed.html",
            account=signed.account,
            session=signed.session,
            requeued=repair.requeued,
            refused=repair.refused,
        )

    @app.get("/console/health", include_in_schema=False)
    async def health(request: Request) -> Response:
        """Figures per destination."""
        found = await guard.require(request, "operator")
        if isinstance(found, Response):
            return found
        rows = await run_in_threadpool(ops.health, c.store, audit, c.clock.now(), destinations)
        return web.page("health.html", account=found[1], session=found[0], rows=rows)

    @app.get("/console/audit", include_in_schema=False)
    async def audit_search(request: Request) -> Response:
        """The audit search (a patient's access request: fill in the BSN)."""
        found = await guard.require(request, "operator")
        if isinstance(found, Response):
            return found
        params = dict(request.query_params)
        records = None
        if any(params.get(k) for k in ("patient", "user", "object", "event", "since")):
            records = await run_in_threadpool(
                ops.search_audit, c.store, audit, c.clock, found[1], _query(params)
            )
        return web.page(
            "audit.html", account=found[1], session=found[0], records=records, chosen=params
        )

    @app.get("/console/audit.csv", include_in_schema=False)
    async def audit_export(request: Request) -> Response:
        """The same search as CSV (audited as a search)."""
        found = await guard.require(request, "operator")
        if isinstance(found, Response):
            return found
        records = await run_in_threadpool(
            ops.search_audit, c.store, audit, c.clock, found[1], _query(dict(request.query_params))
        )
        return web.csv_file(ops.audit_csv(records), "audit.csv")


def add_report_route(app: FastAPI, guard: Guard) -> None:
    """``GET /console/report``: the monitoring report (HTML) of the whole bridge, audited as a
    ``monitoring_report`` read by the operator (the same use case as ``/reports/monitoring``)."""
    c = guard.c

    @app.get("/console/report", include_in_schema=False)
    async def report(request: Request) -> Response:
        """The monitoring figures, ``period`` and ``breakdown`` as in the API."""
        found = await guard.require(request, "operator")
        if isinstance(found, Response):
            return found
        period = request.query_params.get("period", "month")
        breakdown = request.query_params.get("breakdown", "total")
        if period not in get_args(Period) or breakdown not in get_args(Breakdown):
            return web.page("error.html", 422, account=found[1], message="Onbekende indeling.")
        if c.monitoring is None:  # pragma: no cover - bootstrap always wires it
            return web.page("error.html", 404, account=found[1], message="Niet beschikbaar.")
        reader = Reader(user=f"console:{found[1].username}", admin=True)
        made = await run_in_threadpool(
            lambda: monitoring_report(
                cast(MonitoringReader, c.monitoring),
                c.config.core.monitoring,
                c.clock,
                reader=reader,
                period=cast(Period, period),
                breakdown=cast(Breakdown, breakdown),
                audit=c.store,
                channel="console",
            )
        )
        answer = render(made, "html")  # self-contained; its own strict CSP (inline styles only)
        answer.headers.update({"Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"})
        return answer


def _wake(request: Request) -> None:
    dispatcher = getattr(request.app.state, "dispatcher", None)
    if dispatcher is not None:
        dispatcher.wake()
