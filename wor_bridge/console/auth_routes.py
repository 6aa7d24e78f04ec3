"""Sign-in, sign-out and the session guard of the console (``/console/login``, ``/console/logout``).

``Guard.require`` is what every other console route calls first: the live session of the cookie
and its account with the role the route needs, else the sign-in page (no session) or 404 (a
signed-in account of the other role: a page it may not see is answered as one that does not
exist). A POST also needs the session's CSRF token (``Guard.posted``).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from wor_bridge.bootstrap import Components
from wor_bridge.console import web
from wor_bridge.core.account import Account, ConsoleSettings, Role, Session, hash_id, same_token
from wor_bridge.ports import AccountStore
from wor_bridge.usecases import accounts as uc


@dataclass(frozen=True, slots=True)
class Signed:
    """A request's live session, its account and (for a POST) its form."""

    session: Session
    account: Account
    fields: dict[str, str]


class Guard:
    """Sessions and roles for the console routes."""

    def __init__(self, components: Components, accounts: AccountStore) -> None:
        self.c = components
        self.accounts = accounts
        self.settings: ConsoleSettings = components.config.service.console

    def _current(self, request: Request) -> tuple[Session, Account] | None:
        cookie = request.cookies.get(web.cookie_name(self.settings))
        return uc.current(self.accounts, self.c.clock, self.settings, cookie)

    async def require(self, request: Request, role: Role) -> tuple[Session, Account] | Response:
        """The session and account, or the answer to give instead."""
        found = await run_in_threadpool(self._current, request)
        if found is None:
            return web.see_other("/console/login")
        if found[1].role != role:
            return web.page("error.html", 404, account=found[1], message="Niet gevonden.")
        return found

    async def posted(self, request: Request, role: Role) -> Signed | Response:
        """``require`` plus the form with the session's CSRF token (else 403, nothing done)."""
        found = await self.require(request, role)
        if isinstance(found, Response):
            return found
        session, account = found
        fields = await web.form(request)
        if fields is None or not web.csrf_ok(fields, session):
            return web.page(
                "error.html",
                403,
                account=account,
                message="Het formulier is verlopen of niet van deze sessie. Probeer het opnieuw.",
            )
        return Signed(session, account, fields)


def _login_page(
    settings: ConsoleSettings, status: int = 200, message: str | None = None
) -> Response:
    token = secrets.token_urlsafe(32)
    response = web.page("login.html", status, login_csrf=token, message=message)
    web.set_login_cookie(response, settings, token)
    return response


def add_auth_routes(app: FastAPI, guard: Guard) -> None:
    """``GET``/``POST /console/login``, ``POST /console/logout`` and ``GET /console``."""
    c, accounts, settings = guard.c, guard.accounts, guard.settings

    @app.get("/console/login", include_in_schema=False)
    async def login_form() -> Response:
        """The sign-in page (username, password, code of the second factor)."""
        return _login_page(settings)

    @app.post("/console/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        """Check the credentials; a new session (a new id, whatever cookie came in)."""
        fields = await web.form(request)
        if fields is None or not same_token(
            fields.get("csrf"), request.cookies.get(web.LOGIN_COOKIE) or "\0"
        ):
            return _login_page(settings, 403, "Het formulier is verlopen. Probeer het opnieuw.")
        address = request.client.host if request.client else "unknown"
        result = await run_in_threadpool(
            lambda: uc.sign_in(
                accounts,
                c.store,
                c.clock,
                settings,
                username=fields.get("username", ""),
                password=fields.get("password", ""),
                code=fields.get("code", ""),
                address=address,
            )
        )
        if isinstance(result, uc.Refused):
            if result.reason == "throttled":
                response = _login_page(
                    settings, 429, "Te veel mislukte pogingen. Probeer het later opnieuw."
                )
                response.headers["Retry-After"] = str(int(settings.login_window_s))
                return response
            return _login_page(settings, 401, "Aanmelden mislukt. Controleer uw gegevens.")
        old = request.cookies.get(web.cookie_name(settings))
        if old:  # whatever id came in is never used again (session fixation)
            await run_in_threadpool(accounts.end_session, hash_id(old))
        target = "/console/inbox" if result.account.role == "coach" else "/console/outbox"
        response = web.see_other(target)
        web.set_session_cookie(response, settings, result.session_id)
        response.delete_cookie(web.LOGIN_COOKIE, path="/console/login")
        return response

    @app.post("/console/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        """End the session (CSRF-checked) and remove the cookie."""
        cookie = request.cookies.get(web.cookie_name(settings))
        found = await run_in_threadpool(guard._current, request)
        fields = await web.form(request)
        if cookie and found is not None and web.csrf_ok(fields, found[0]):
            await run_in_threadpool(uc.sign_out, accounts, c.store, c.clock, cookie)
        response = web.see_other("/console/login")
        web.clear_session_cookie(response, settings)
        return response

    @app.get("/console", include_in_schema=False)
    async def home(request: Request) -> Response:
        """The start page of the account's role."""
        found = await run_in_threadpool(guard._current, request)
        if found is None:
            return web.see_other("/console/login")
        return web.see_other("/console/inbox" if found[1].role == "coach" else "/console/outbox")
