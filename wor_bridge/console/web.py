"""What every console page shares: templates, headers, forms, the session cookie and CSRF.

- **Templates**: Jinja2 with autoescape on (every value is HTML-escaped), from
  ``console/templates``; Dutch text; no JavaScript at all.
- **Headers**: ``Content-Security-Policy: default-src 'none'; style-src 'self'; img-src 'self';
  form-action 'self'; frame-ancestors 'none'`` (nothing runs, nothing loads from elsewhere, no
  framing), ``Referrer-Policy: no-referrer``; the service adds ``nosniff`` and ``no-store``.
- **Session cookie**: ``HttpOnly; SameSite=Strict; Path=/console`` and ``Secure`` with the
  ``__Host-`` prefix; only with ``secure_cookies = false`` (loopback, plain http: tests and the
  demo) without. Its value is a random id whose SHA-256 is stored (``usecases.accounts``).
- **CSRF**: every form carries the session's token (synchronizer token); a POST whose token
  differs is refused 403 and changes nothing. The sign-in form, before any session, carries a
  random token that must equal the one in a short-lived ``HttpOnly`` cookie (double submit).
- **Forms**: ``application/x-www-form-urlencoded`` only, at most ``MAX_FORM_BYTES``.
- **Redirects** after a POST (303, POST/redirect/GET) go to fixed relative paths under
  ``/console``: nothing is built from the ``Host`` header or from the request.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any, Final

from fastapi import Request
from fastapi.responses import HTMLResponse, PlainTextResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from wor_bridge.core.account import Account, ConsoleSettings, Session, same_token
from wor_bridge.core.inbox import LIST_STATUS_NL

CSP: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
MAX_FORM_BYTES: Final = 16_384
LOGIN_COOKIE: Final = "wb_login"

ENV: Final = Environment(
    loader=PackageLoader("wor_bridge.console", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.globals["status_nl"] = LIST_STATUS_NL


def cookie_name(settings: ConsoleSettings) -> str:
    """``__Host-wb_session`` (Secure, host-only, Path=/) or, on plain loopback, ``wb_session``."""
    return "__Host-wb_session" if settings.secure_cookies else "wb_session"


def headers() -> dict[str, str]:
    """The headers every console answer carries."""
    return {
        "Content-Security-Policy": CSP,
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


def page(
    template: str,
    status: int = 200,
    /,
    *,
    account: Account | None = None,
    session: Session | None = None,
    **context: Any,
) -> HTMLResponse:
    """A rendered page with the console's headers (``csrf`` is the session's token)."""
    html = ENV.get_template(template).render(
        account=account, csrf=session.csrf if session else "", **context
    )
    return HTMLResponse(html, status_code=status, headers=headers())


def text(body: str, status: int) -> PlainTextResponse:
    """A short plain-text answer with the console's headers."""
    return PlainTextResponse(body, status_code=status, headers=headers())


def see_other(path: str) -> Response:
    """303 to a fixed path under ``/console`` (POST/redirect/GET)."""
    if not path.startswith("/console"):  # pragma: no cover - a programming error
        raise ValueError("console redirects stay under /console")
    return Response(status_code=303, headers={**headers(), "Location": path})


def csv_file(body: str, filename: str) -> Response:
    """A CSV download (UTF-8 with a byte order mark, so spreadsheets read it as UTF-8)."""
    return Response(
        ("\ufeff" + body).encode("utf-8"),
        media_type="text/csv; charset=utf-8",
        headers={**headers(), "Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def form(request: Request) -> dict[str, str] | None:
    """The urlencoded form (the last of repeated names), or None when it is not one or too big."""
    kind = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        pairs = urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return None
    return dict(pairs)


def csrf_ok(fields: Mapping[str, str] | None, session: Session) -> bool:
    """The form carries the session's CSRF token."""
    return fields is not None and same_token(fields.get("csrf"), session.csrf)


def set_session_cookie(response: Response, settings: ConsoleSettings, session_id: str) -> None:
    """The session cookie: HttpOnly, SameSite=Strict, Secure unless on plain loopback."""
    response.set_cookie(
        cookie_name(settings),
        session_id,
        httponly=True,
        secure=settings.secure_cookies,
        samesite="strict",
        path="/",
    )


def clear_session_cookie(response: Response, settings: ConsoleSettings) -> None:
    """Remove the session cookie from the browser."""
    response.delete_cookie(
        cookie_name(settings),
        path="/",
        httponly=True,
        secure=settings.secure_cookies,
        samesite="strict",
    )


def set_login_cookie(response: Response, settings: ConsoleSettings, token: str) -> None:
    """The sign-in form's double-submit cookie (15 minutes, only sent to the sign-in path)."""
    response.set_cookie(
        LOGIN_COOKIE,
        token,
        max_age=900,
        httponly=True,
        secure=settings.secure_cookies,
        samesite="strict",
        path="/console/login",
    )
