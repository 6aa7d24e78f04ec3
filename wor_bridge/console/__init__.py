"""The browser console (issue 17): the operator's message browser and the welfare
organisations' inbox, server-rendered (Jinja2), no JavaScript, beside the FHIR routes.

``install`` adds its routes under ``/console`` when ``[service.console] enabled = true``. Every
page calls the same use cases as the FHIR routes and the CLI (``usecases.inbox``,
``usecases.operator_console``, ``usecases.outbox_repair``, ``usecases.way_back``); the pages are
not FHIR routes, so the CapabilityStatement does not list them.
"""

from __future__ import annotations

import ipaddress
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response

from wor_bridge.bootstrap import Components
from wor_bridge.console import web
from wor_bridge.console.auth_routes import Guard, add_auth_routes
from wor_bridge.console.inbox_routes import add_inbox_routes
from wor_bridge.console.operator_routes import add_operator_routes, add_report_route
from wor_bridge.errors import ConfigError

_CSS = resources.files("wor_bridge.console").joinpath("static/console.css").read_bytes()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def install(app: FastAPI, components: Components) -> None:
    """Add the console routes (when enabled); ``ConfigError`` when plain-http cookies are asked
    for on an address other than loopback, or the store has no account tables."""
    settings = components.config.service.console
    if not settings.enabled:
        return
    if not settings.secure_cookies and not _loopback(components.config.service.host):
        raise ConfigError(
            "service.console.secure_cookies = false is only allowed on a loopback host "
            "(tests, the demo); put the service behind TLS"
        )
    if components.accounts is None or components.audit is None:
        raise ConfigError("service.console needs a store with account tables")
    guard = Guard(components, components.accounts)
    add_auth_routes(app, guard)
    add_inbox_routes(app, guard)
    add_operator_routes(app, guard, components.audit)
    add_report_route(app, guard)

    @app.get("/console/static/console.css", include_in_schema=False)
    async def stylesheet() -> Response:
        """The console's one stylesheet."""
        return Response(
            _CSS,
            media_type="text/css",
            headers={**web.headers(), "Cache-Control": "public, max-age=3600"},
        )
