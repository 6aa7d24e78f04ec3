"""The OpenAPI description the service publishes at ``/openapi.json``.

FastAPI derives operations from the routes, but the routes read raw bytes, so it knows neither
the FHIR bodies nor the answers, and it adds a 422 ``HTTPValidationError`` the service never
sends. ``install`` replaces that with what the routes really do: the security schemes and each
operation's authentication, the request bodies and their media types, and the answers (FHIR
resources, ``OperationOutcome`` for every refusal, RFC 6749 JSON at the token endpoint).
``/docs`` and ``/redoc`` are off (they load third-party CDN assets); any OpenAPI viewer reads
``/openapi.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from wor_bridge.connectors.ta_notified_pull import SEARCHES
from wor_bridge.service.readiness import UNGATED

Json = dict[str, Any]

FHIR_JSON: Final = "application/fhir+json"
FHIR_XML: Final = "application/fhir+xml"
STU3_JSON: Final = "application/fhir+json; fhirVersion=3.0"

SECURITY_SCHEMES: Final[Json] = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "The client's API key as `Authorization: Bearer <key>`; the "
        "configuration holds only its SHA-256. Scopes are per client (`clients.scopes`).",
    },
    "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    "mutualTLS": {
        "type": "mutualTLS",
        "description": "With `[service.tls]`: a client with `cert_sha256` must present exactly "
        "that certificate, on every route.",
    },
    "pullToken": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An access token from `/oauth/token`, bound to one Task (and to the "
        "client certificate it was asked for with).",
    },
    "clientCredentials": {
        "type": "oauth2",
        "description": "Client authentication: the client secret (HTTP Basic or form) or a "
        "private-key JWT (RFC 7523, `client_assertion`).",
        "flows": {"clientCredentials": {"tokenUrl": "/oauth/token", "scopes": {}}},
    },
    "webhookSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "X-WoR-Signature",
        "description": "`sha256=<hex HMAC-SHA256(secret, '<X-WoR-Timestamp>.' + body)>`, "
        "with `X-WoR-Timestamp` within the connector's replay window.",
    },
}

_ISSUE: Final[Json] = {
    "type": "object",
    "required": ["severity", "code"],
    "properties": {
        "severity": {"enum": ["fatal", "error", "warning", "information"]},
        "code": {"type": "string", "description": "FHIR IssueType"},
        "diagnostics": {
            "type": "string",
            "description": "The expectation and what was found by kind and size; never a value "
            "or an unknown name from the request.",
        },
        "expression": {"type": "array", "items": {"type": "string"}},
        "location": {"type": "array", "items": {"type": "string"}},
    },
}
SCHEMAS: Final[Json] = {
    "OperationOutcome": {
        "type": "object",
        "required": ["resourceType", "issue"],
        "properties": {
            "resourceType": {"const": "OperationOutcome"},
            "issue": {"type": "array", "items": _ISSUE},
        },
    },
    "Resource": {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string"}},
        "additionalProperties": True,
        "description": "A FHIR resource (JSON); the route names which type and version.",
    },
    "JsonPatch": {
        "type": "array",
        "items": {"type": "object", "required": ["op", "path"]},
        "description": "RFC 6902, applied to the Task as GET returns it.",
    },
    "TokenRequest": {
        "type": "object",
        "required": ["grant_type", "resource"],
        "properties": {
            "grant_type": {"const": "client_credentials"},
            "resource": {"type": "string", "description": "urn:uuid:<Task id>"},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
            "client_assertion_type": {"type": "string"},
            "client_assertion": {"type": "string"},
        },
    },
    "Token": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "scope"],
        "properties": {
            "access_token": {"type": "string"},
            "token_type": {"const": "Bearer"},
            "expires_in": {"type": "integer"},
            "scope": {"type": "string"},
        },
    },
    "OAuthError": {
        "type": "object",
        "required": ["error"],
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}},
    },
    "Form": {
        "type": "object",
        "additionalProperties": {"type": "string"},
        "description": "Search parameters as a form (the same as in the query string).",
    },
    "WebhookFeedback": {
        "type": "object",
        "description": "The sender's JSON; its fields are named by the connector's mapping file.",
        "additionalProperties": True,
    },
}

WHY: Final = {
    200: "the resource, a searchset or transaction-response Bundle, or an OperationOutcome per "
    "entry; for a push or an Observation: the same again (no second effect)",
    201: "created and stored durably: absolute Location and ETag of the Task (or Observation) "
    "version; the body by Prefer: return=minimal | representation | OperationOutcome",
    410: "an older version of the Task: the bridge keeps the current version only",
    400: "unreadable: not the JSON/XML/resource the route reads, or not UTF-8",
    401: "no or an unknown key, token or signature (WWW-Authenticate)",
    403: "the client lacks the scope, or access to the referral ended",
    404: "no such Task or resource for this caller (one that exists but is not the caller's "
    "is answered the same)",
    406: "Accept or _format names only another FHIR version, or an unknown format",
    409: "an illegal or out-of-order status transition",
    412: "If-Match names an older version",
    408: "the body did not arrive within service.body_timeout_s (the connection is closed)",
    413: "the body is larger than the route's byte limit (max_body_bytes, limits.*_bytes)",
    415: "another media type, charset, fhirVersion or Content-Encoding",
    422: "not acceptable: the gates, a missing reason, a status this side may not set, free "
    "text over its limit (with its location)",
    428: "If-Match is required",
    429: "over the client's rate, or its share of bodies in work (Retry-After)",
    503: "not ready: the store cannot take a durable write (/readyz names the check), or too "
    "many request bodies in work (Retry-After)",
}


@dataclass(frozen=True, slots=True)
class Operation:
    """What one operation needs, sends and answers."""

    security: tuple[str, ...]
    scope: str
    body: dict[str, str] = field(default_factory=dict)
    """media type -> schema name"""
    answers: tuple[int, ...] = ()
    success: tuple[int, str, str] = (200, FHIR_JSON, "Resource")
    """status, media type and schema of the success answer"""


API: Final = ("apiKey", "apiKeyHeader")
WRITE_ANSWERS: Final = (400, 401, 403, 404, 409, 415, 422, 429)
R4_BODY: Final = {FHIR_JSON: "Resource", "application/json": "Resource"}
INTAKE: Final = Operation(
    API,
    "referral:write",
    {**R4_BODY, FHIR_XML: "Resource", "application/xml": "Resource"},
    (200, 400, 401, 403, 413, 415, 422, 429),
    (201, FHIR_JSON, "Resource"),
)
STU3_INTAKE: Final = Operation(
    API,
    "referral:write",
    {FHIR_JSON: "Resource", FHIR_XML: "Resource", "application/xml": "Resource"},
    (400, 401, 403, 413, 415, 422, 429),
    (201, STU3_JSON, "OperationOutcome"),
)
READ: Final = Operation(API, "task:read", answers=(400, 401, 403, 404, 429))
PUT_TASK: Final = Operation(
    API, "task:update", R4_BODY, (*WRITE_ANSWERS, 412, 428), (200, FHIR_JSON, "Resource")
)
OPERATIONS: Final = {
    ("/fhir/r4/ServiceRequest", "post"): INTAKE,
    ("/fhir/r4", "post"): INTAKE,
    ("/fhir/r4/Task/{task_id}", "get"): READ,
    ("/fhir/r4/Task", "get"): READ,
    ("/fhir/r4/Task/_search", "post"): Operation(
        API, "task:read", {"application/x-www-form-urlencoded": "Form"}, READ.answers
    ),
    ("/fhir/r4/Task/{task_id}/_history/{vid}", "get"): Operation(
        API, "task:read", answers=(*READ.answers, 410)
    ),
    ("/fhir/r4/ServiceRequest/{request_id}", "get"): READ,
    ("/fhir/r4/ServiceRequest/{request_id}/_history/{vid}", "get"): READ,
    ("/fhir/r4/Observation/{observation_id}", "get"): READ,
    ("/fhir/r4/Observation/{observation_id}/_history/{vid}", "get"): READ,
    ("/fhir/r4/metadata", "get"): Operation((), "", {}, (), (200, FHIR_JSON, "Resource")),
    ("/fhir/stu3/metadata", "get"): Operation((), "", {}, (), (200, STU3_JSON, "Resource")),
    ("/fhir/r4/Task/{task_id}", "put"): PUT_TASK,
    ("/fhir/r4/Task/{task_id}", "patch"): Operation(
        API, "task:update", {"application/json-patch+json": "JsonPatch"}, PUT_TASK.answers
    ),
    ("/fhir/r4/Observation", "post"): Operation(
        API, "feedback:write", R4_BODY, (200, *WRITE_ANSWERS), (201, FHIR_JSON, "Resource")
    ),
    ("/feedback/{connector}", "post"): Operation(
        ("webhookSignature",),
        "(the connector's secret)",
        {"application/json": "WebhookFeedback"},
        (401, 404, 409, 413, 415, 422),
    ),
    ("/oauth/token", "post"): Operation(
        ("clientCredentials",),
        "referral:pull",
        {"application/x-www-form-urlencoded": "TokenRequest"},
        (400, 401, 429),
        (200, "application/json", "Token"),
    ),
    ("/fhir/stu3/ReferralRequest", "post"): STU3_INTAKE,
    ("/fhir/stu3", "post"): STU3_INTAKE,
    ("/fhir/stu3/{rtype}/{rid}", "get"): Operation(
        ("pullToken",), "(a token for this referral)", {}, (401, 403, 404), (200, STU3_JSON, "")
    ),
    **{
        (f"/fhir/stu3/{t}", "get"): Operation(
            ("pullToken",), "(a token for this referral)", {}, (400, 401, 403), (200, STU3_JSON, "")
        )
        for t in SEARCHES
    },
    ("/fhir/stu3/Task/{task_id}", "put"): Operation(
        ("pullToken", *API),
        "task:update",
        {FHIR_JSON: "Resource"},
        (*WRITE_ANSWERS, 412),
        (200, STU3_JSON, "Resource"),
    ),
    ("/fhir/stu3/Observation", "post"): Operation(
        ("pullToken", *API),
        "feedback:write",
        {FHIR_JSON: "Resource"},
        WRITE_ANSWERS,
        (201, STU3_JSON, "OperationOutcome"),
    ),
    ("/metrics", "get"): Operation(
        API, "metrics:read", {}, (401, 403, 429), (200, "text/plain", "")
    ),
    ("/reports/monitoring", "get"): Operation(  # monitoring: json, csv, html or measurereport
        API, "report:read", {}, (400, 401, 403, 429), (200, "application/json", "")
    ),
    ("/reports/monitoring/dictionary.csv", "get"): Operation(
        API, "report:read", {}, (401, 403, 429), (200, "text/csv", "")
    ),
    ("/healthz", "get"): Operation((), "", {}, (), (200, "application/json", "")),
    ("/readyz", "get"): Operation((), "", {}, (503,), (200, "application/json", "")),
}


def _content(media: str, schema: str) -> Json:
    ref = {"$ref": f"#/components/schemas/{schema}"} if schema else {"type": "string"}
    return {media: {"schema": ref}}


def _answers(op: Operation, path: str) -> Json:
    status, media, schema = op.success
    out: Json = {str(status): {"description": WHY.get(status, "ok"), "content": {}}}
    out[str(status)]["content"] = _content(media, schema)
    codes = list(op.answers)
    if path.startswith("/fhir/"):  # the negotiation layer answers these on every FHIR route
        codes += [c for c in (406, 415) if c not in codes]
    if op.body:  # the body layers answer these on every route that reads a body
        codes += [c for c in (408, 413, 429) if c not in codes]
    if path not in UNGATED and 503 not in codes:  # the readiness gate
        codes.append(503)
    for code in sorted(codes):
        if code == 503 and path == "/readyz":
            body = _content("application/json", "")
        elif op.success[2] == "Token":
            body = _content("application/json", "OAuthError")
        else:
            body = _content(FHIR_JSON, "OperationOutcome")
        out[str(code)] = {"description": WHY[code], "content": body}
    return out


def describe(app: FastAPI) -> Json:
    """The OpenAPI document of ``app`` with the operations above."""
    doc = get_openapi(
        title=app.title,
        version=app.version,
        summary=app.summary,
        description="Every refusal is a FHIR OperationOutcome (RFC 6749 JSON at /oauth/token).",
        routes=app.routes,
    )
    for path, methods in doc.get("paths", {}).items():
        for method, operation in methods.items():
            op = OPERATIONS.get((path, method))
            if op is None:  # a route this table does not know: at least not the unused 422
                operation.get("responses", {}).pop("422", None)
                continue
            operation["security"] = [{name: []} for name in op.security]
            if op.scope:
                operation["description"] = (
                    f"{operation.get('description', '')}\n\nScope: `{op.scope}`".strip()
                )
            if op.body:
                operation["requestBody"] = {
                    "required": True,
                    "content": {m: _content(m, s)[m] for m, s in op.body.items()},
                }
            operation["responses"] = _answers(op, path)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(SCHEMAS)
    components["securitySchemes"] = SECURITY_SCHEMES
    return doc


def install(app: FastAPI) -> None:
    """Serve ``describe(app)`` (built once) at ``/openapi.json``."""

    def openapi() -> Json:
        if app.openapi_schema is None:
            app.openapi_schema = describe(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
