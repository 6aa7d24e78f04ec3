"""``GET /fhir/stu3/<Type>?...``: the searches a TA Notification offers as
``query-available-resources`` (Twiin-01: "FHIR search queries that can be used to retrieve
resources made available at the sender"; VIPLive "5. Pull uitvoeren").

With a pull token only, while its Task is open (as a read), and only over that referral's pullable
resources: the answer is an STU3 ``searchset`` Bundle (``total``, each entry's ``fullUrl`` under
``{pull.base_url}/fhir/stu3``, ``search.mode`` match). Parameters: ``ta_notified_pull.SEARCHES``
(``_id``, and ``patient``/``subject`` as a reference to the Patient); any other is a 400
``not-supported`` that does not repeat it. Every answer is audited (``referral_pull``).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.responses import Response

from wor_bridge.connectors import notified_pull, ta_notified_pull
from wor_bridge.core.fhir import JsonDict
from wor_bridge.service.access import Attempt
from wor_bridge.service.stu3_routes import Stu3Response, Stu3Routes, outcome


class Stu3Search:
    """The search routes over the read routes' access checks."""

    def __init__(self, routes: Stu3Routes) -> None:
        self.routes = routes

    def search(self, stu3_type: str, request: Request) -> Response:
        """The referral's resources of ``stu3_type`` that match the query."""
        access = self.routes.pull_access(request, (stu3_type, ""))
        if isinstance(access, Response):
            return access
        task, client = access
        ctx = self.routes.ctx
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "_format"]
        pullable = notified_pull.pullable(json.loads(task.bundle))
        keys = ta_notified_pull.search(pullable, stu3_type, params)
        if keys is None:
            ctx.audit("referral_pull", "refused", client.id, task, "search parameter")
            offered = ", ".join(ta_notified_pull.SEARCHES[stu3_type])
            return outcome(400, "not-supported", f"search parameters offered: {offered}")
        base = f"{ctx.c.config.core.pull.base_url.rstrip('/')}/fhir/stu3"
        bundle: JsonDict = {
            "resourceType": "Bundle",
            "type": "searchset",
            "total": len(keys),
            "entry": [
                {"fullUrl": f"{base}/{key}", "resource": pullable[key], "search": {"mode": "match"}}
                for key in keys
            ],
        }
        ctx.audit("referral_pull", "served", client.id, task, f"search: {len(keys)} found")
        return Stu3Response(bundle)

    def add(self, app: FastAPI) -> None:
        """One route per searchable type (``/fhir/stu3/metadata`` stays its own route)."""
        for stu3_type in ta_notified_pull.SEARCHES:
            app.add_api_route(
                f"/fhir/stu3/{stu3_type}",
                self._endpoint(stu3_type),
                methods=["GET"],
                tags=["notified pull"],
                name=f"search_{stu3_type}",
            )

    def _endpoint(self, stu3_type: str) -> Callable[[Request], Response]:
        def search(request: Request) -> Response:
            """Search the referral the bearer token is for (``query-available-resources``)."""
            attempt = Attempt("referral_pull", "R", "", stu3_type)
            trail = self.routes.trail
            return trail.answer_sync(attempt, lambda: self.search(stu3_type, request))

        return search
