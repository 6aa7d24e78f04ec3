"""The coach's pages: the organisation's inbox (``/console/inbox``), one referral, its actions and
the CSV export. Calls ``usecases.inbox`` only; another organisation's referral is a 404."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from wor_bridge.console import web
from wor_bridge.console.auth_routes import Guard
from wor_bridge.core import feedback as fb
from wor_bridge.core.account import Account
from wor_bridge.core.inbox import ACTIONS, Card, card
from wor_bridge.core.task import Refusal
from wor_bridge.ports import OutboxStore
from wor_bridge.records import TaskRecord
from wor_bridge.usecases import inbox


def _choices(codes: dict[str, frozenset[str]], system: str, mappings: str) -> list[tuple[str, str]]:
    """(code, Dutch display) of a local CodeSystem, in its file's order."""
    name = system.rsplit("/", 1)[-1]
    path = f"{mappings}/codesystems/{name}.json"
    try:
        with open(path, encoding="utf-8") as handle:  # noqa: PTH123 - a plain read
            concepts = json.load(handle).get("concept") or []
    except OSError:
        concepts = []
    known = codes.get(system, frozenset())
    return [(c["code"], c.get("display", c["code"])) for c in concepts if c["code"] in known]


def add_inbox_routes(app: FastAPI, guard: Guard) -> None:
    """The coach routes."""
    c = guard.c
    settings = c.config.core
    mappings = str(c.config.mappings_dir)
    choices = {
        "categories": _choices(settings.codes, fb.ACTIVITY_CATEGORY, mappings),
        "roles": _choices(settings.codes, fb.ACTIVITY_ROLE, mappings),
        "reasons": [
            r
            for r in _choices(settings.codes, fb.CLOSURE_REASON, mappings)
            if r[0] not in ("gp-withdrew", "entered-in-error", "redirected", "consent-withdrawn")
        ],
    }

    @app.get("/console/inbox", include_in_schema=False)
    async def inbox_list(request: Request) -> Response:
        """The organisation's referrals: dates, status and deadline only."""
        found = await guard.require(request, "coach")
        if isinstance(found, Response):
            return found
        session, account = found
        tasks = await run_in_threadpool(inbox.listed, c.store, account)
        name = next((d.name for d in settings.destinations if d.id == account.organisation), "")
        return web.page(
            "inbox.html", account=account, session=session, tasks=tasks, organisation=name
        )

    @app.get("/console/inbox/export.csv", include_in_schema=False)
    async def inbox_export(request: Request) -> Response:
        """Every referral of the organisation as CSV (each one an audited read)."""
        found = await guard.require(request, "coach")
        if isinstance(found, Response):
            return found
        body = await run_in_threadpool(inbox.export_csv, c.store, c.clock, found[1])
        return web.csv_file(body, f"verwijzingen-{found[1].organisation}.csv")

    @app.get("/console/inbox/{task_id}", include_in_schema=False)
    async def inbox_open(task_id: str, request: Request) -> Response:
        """One referral (an audited read); 404 when it is not the organisation's."""
        found = await guard.require(request, "coach")
        if isinstance(found, Response):
            return found
        session, account = found
        opened = await run_in_threadpool(inbox.open_referral, c.store, c.clock, account, task_id)
        if opened is None:
            return web.page("error.html", 404, account=account, message="Niet gevonden.")
        task, card = opened
        return web.page(
            "referral.html",
            account=account,
            session=session,
            task=task,
            card=card,
            message=request.query_params.get("m"),
            **choices,
        )

    @app.post("/console/inbox/{task_id}/{action}", include_in_schema=False)
    async def inbox_act(task_id: str, action: str, request: Request) -> Response:
        """One action on a referral, through the transition table and the way back."""
        signed = await guard.posted(request, "coach")
        if isinstance(signed, Response):
            return signed
        if action not in ACTIONS:
            return web.page("error.html", 404, account=signed.account, message="Niet gevonden.")
        result = await run_in_threadpool(
            lambda: inbox.act(
                c.store,
                settings,
                c.clock,
                signed.account,
                task_id,
                action=action,
                form=signed.fields,
            )
        )
        if isinstance(result, Refusal) and result.http_status == 404:
            return web.page("error.html", 404, account=signed.account, message="Niet gevonden.")
        if isinstance(result, Refusal | str):
            problem = result if isinstance(result, str) else _refusal_nl(result)
            opened = await run_in_threadpool(_task_and_card, c.store, signed.account, task_id)
            return web.page(
                "referral.html",
                422 if isinstance(result, str) else result.http_status,
                account=signed.account,
                session=signed.session,
                task=opened[0],
                card=opened[1],
                problem=problem,
                **choices,
            )
        if c.config.service.dispatcher:
            dispatcher = getattr(request.app.state, "dispatcher", None)
            if dispatcher is not None:
                dispatcher.wake()
        return web.see_other(f"/console/inbox/{task_id}?m=opgeslagen")


def _task_and_card(store: OutboxStore, account: Account, task_id: str) -> tuple[TaskRecord, Card]:
    """The Task and card again after a refused action (no new audit: the page was open)."""
    task = inbox.task_of(store, account, task_id)
    if task is None:  # pragma: no cover - checked by the action just before
        raise LookupError(task_id)
    return task, card(json.loads(task.bundle))


def _refusal_nl(refusal: Refusal) -> str:
    """A refusal of the transition table in Dutch (codes only)."""
    if refusal.http_status == 409:
        return f"Dat kan niet in de huidige status ({refusal.message})."
    return f"Niet opgeslagen: {refusal.message}."
