"""Task search as FHIR REST defines it (search.html), pure: parameters in, a ``TaskSearch`` out.

Search parameters (``TASK_PARAMS``): ``_id``; ``identifier`` (the bridge's own,
``urn:ietf:rfc:3986|urn:uuid:<Task id>``, or the HIS's referral number ``system|value``;
``value`` alone matches either, ``system|`` any value of that system); ``focus``
(``ServiceRequest/<id>``, ``<id>`` or ``[base]/ServiceRequest/<id>``; modifier ``:ServiceRequest``);
``status`` (the status as GET returns it, ``[http://hl7.org/fhir/task-status|]code``); ``owner``
(``Organization/<id>``, modifier ``:Organization``); ``_lastUpdated`` (one date per parameter,
prefix ``eq`` ``gt`` ``ge`` ``lt`` ``le``; a date or time without a zone is UTC). A comma is OR
within a parameter, repeated parameters are AND; empty values are ignored.

Result parameters: ``_count`` (0 to ``MAX_COUNT``, default ``DEFAULT_COUNT``; more is capped),
``_offset`` (the paging links), ``_sort`` (``_lastUpdated`` or ``-_lastUpdated``), ``_summary``
(``true``, ``false``, ``count``, ``data``), ``_elements``, ``_format``, ``_pretty``.

Anything else is unknown: refused (400) with ``Prefer: handling=strict``, ignored (and left out
of the ``self`` link) with ``handling=lenient``, the default. A modifier or prefix the bridge does
not support is refused either way (FHIR: a server SHALL reject an unsupported modifier).
Diagnostics name the parameter's position and the expectation, never the value or an unknown
name.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlencode

from wor_bridge.core import identifiers as ids
from wor_bridge.core.outbox import State
from wor_bridge.core.search_terms import Alternative
from wor_bridge.errors import Issue

TASK_STATUS_SYSTEM: Final = "http://hl7.org/fhir/task-status"
DEFAULT_COUNT: Final = 20
MAX_COUNT: Final = 100
Summary = Literal["true", "false", "count", "data"]


@dataclass(frozen=True, slots=True)
class Param:
    """A search parameter as the CapabilityStatement states it."""

    type: Literal["token", "reference", "date"]
    documentation: str
    target: str = ""


TASK_PARAMS: Final = {
    "_id": Param("token", "The Task's logical id."),
    "identifier": Param(
        "token",
        "The bridge's identifier (urn:ietf:rfc:3986|urn:uuid:<Task id>) or the HIS's own "
        "referral number (system|value, as ServiceRequest.identifier[0] had it).",
    ),
    "focus": Param("reference", "The referral's ServiceRequest.", "ServiceRequest"),
    "status": Param("token", "The status as GET returns it (failed after a dead letter)."),
    "owner": Param("reference", "The welfare Organization the Task is routed to.", "Organization"),
    "_lastUpdated": Param("date", "meta.lastUpdated; prefixes eq, gt, ge, lt, le; UTC."),
}
RESULT_PARAMS: Final = frozenset(
    {"_count", "_offset", "_sort", "_summary", "_elements", "_format", "_pretty"}
)
_COLUMN: Final = {"_id": "id", "focus": "focus", "owner": "owner", "status": "status"}
_SORTS: Final = {"_lastUpdated": False, "-_lastUpdated": True}
_SUMMARIES: Final = frozenset({"true", "false", "count", "data"})
_ELEMENT: Final = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,63}$")
_DATE: Final = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})(?:T(?P<H>\d{2}):(?P<M>\d{2})"
    r"(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?(?P<z>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_PREFIXES: Final = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})

_DELIVERY_STATUS: Final = {
    "pending": ("requested", "queued"),
    "delivered": ("requested", "delivered"),
    "dead": ("failed", "delivery-failed"),
}


def task_status(status: str, business_status: str | None, delivery: State) -> tuple[str, str]:
    """The status and businessStatus code of the Task as GET returns it: the referral's delivery
    state until the welfare side reports (``failed`` after a dead letter), then its own."""
    shown, business = _DELIVERY_STATUS[delivery]
    if status != "requested" or business_status:
        return status, business_status or business
    return shown, business


@dataclass(frozen=True, slots=True)
class Parsed:
    """A parsed Task search: what the store runs, how the page is shaped, the links' query."""

    where: tuple[tuple[Alternative, ...], ...] = ()
    updated_from: dt.datetime | None = None
    updated_before: dt.datetime | None = None
    newest_first: bool = False
    count: int = DEFAULT_COUNT
    offset: int = 0
    summary: Summary = "false"
    elements: tuple[str, ...] = ()
    used: tuple[tuple[str, str], ...] = field(default=())
    """the parameters applied, as given (the ``self`` link repeats them)"""
    keep: tuple[tuple[str, str], ...] = field(default=())
    """``_format``, ``_pretty``, ``_sort``, ``_summary``, ``_elements`` as given (every link)"""


def _fail(position: int, message: str, code: str = "invalid") -> Issue:
    kind = "not-supported" if code == "n/s" else code
    return Issue(kind, "(query)", f"search parameter {position + 1}: {message}")  # type: ignore[arg-type]


def split(value: str, sep: str) -> list[str]:
    """``value`` split at ``sep`` where it is not escaped with a backslash, then unescaped."""
    parts, current, escaped = [], [], False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts


def _identifier(token: str) -> tuple[Alternative, ...]:
    system: str | None = None
    value = token
    if "|" in token:
        system, value = token.split("|", 1)
    alts: list[Alternative] = []
    if system in (None, ids.URI_IDENTIFIER):
        if value == "" and system is not None:
            alts.append(())  # every Task has the bridge's identifier
        elif value.startswith("urn:uuid:"):
            alts.append((("id", value.removeprefix("urn:uuid:")),))
    if system != "":  # "|value" asks for no system: the bridge's identifiers all have one
        his: list[tuple[str, str]] = [] if system is None else [("his_system", system)]
        if value:
            his.append(("his_value", value))
        if his:
            alts.append(tuple(his))
    return tuple(alts)


def _reference(value: str, target: str, base: str) -> str | None:
    """The id a reference parameter names (None when it names another type or server)."""
    local = value.removeprefix(base.rstrip("/") + "/") if base else value
    if "://" in local:
        return None
    parts = local.split("/")
    if len(parts) == 1:
        return parts[0]
    if len(parts) == 2 and parts[0] == target:
        return parts[1]
    return None


def date_range(value: str) -> tuple[dt.datetime, dt.datetime] | None:
    """The instants [start, end) a FHIR date, dateTime or instant covers (UTC unless zoned)."""
    match = _DATE.match(value)
    if match is None:
        return None
    g = match.groupdict()
    zone = dt.UTC
    if g["z"] and g["z"] != "Z":
        sign = 1 if g["z"][0] == "+" else -1
        zone = dt.timezone(sign * dt.timedelta(hours=int(g["z"][1:3]), minutes=int(g["z"][4:])))
    try:
        year, month, day = int(g["y"]), int(g["m"] or 1), int(g["d"] or 1)
        start = dt.datetime(year, month, day, int(g["H"] or 0), int(g["M"] or 0), 0, tzinfo=zone)
        if g["S"] is not None:
            digits = (g["f"] or "")[:6]
            micros = int(digits.ljust(6, "0")) if digits else 0
            start = start.replace(second=int(g["S"]), microsecond=micros)
            end = start + dt.timedelta(microseconds=10 ** (6 - len(digits)) if digits else 10**6)
        elif g["H"] is not None:
            end = start + dt.timedelta(minutes=1)
        elif g["d"] is not None:
            end = start + dt.timedelta(days=1)
        elif g["m"] is not None:
            end = start.replace(year=year + month // 12, month=month % 12 + 1)
        else:
            end = start.replace(year=year + 1)
    except ValueError:
        return None
    return start.astimezone(dt.UTC), end.astimezone(dt.UTC)


def _updated(value: str, position: int, bounds: list[dt.datetime | None]) -> Issue | None:
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    rest = value[2:] if value[:2] in _PREFIXES else value
    if prefix not in ("eq", "gt", "ge", "lt", "le"):
        return _fail(position, "supports the prefixes eq, gt, ge, lt and le", "not-supported")
    if "," in rest:
        return _fail(position, "must be one date per _lastUpdated parameter", "not-supported")
    found = date_range(rest)
    if found is None:
        return _fail(position, "must be a FHIR date, dateTime or instant")
    start, end = found
    lower = {"eq": start, "ge": start, "gt": end}.get(prefix)
    upper = {"eq": end, "le": end, "lt": start}.get(prefix)
    if lower is not None:
        bounds[0] = lower if bounds[0] is None else max(bounds[0], lower)
    if upper is not None:
        bounds[1] = upper if bounds[1] is None else min(bounds[1], upper)
    return None


def _token_group(name: str, value: str, modifier: str, base: str) -> tuple[Alternative, ...]:
    alts: list[Alternative] = []
    for one in split(value, ","):
        if name == "identifier":
            alts += _identifier(one)
        elif name == "status":
            system, code = one.split("|", 1) if "|" in one else (TASK_STATUS_SYSTEM, one)
            if system == TASK_STATUS_SYSTEM:
                alts.append((("status", code),))
        elif name in ("focus", "owner"):
            target = TASK_PARAMS[name].target
            found = _reference(one, modifier or target, base) if modifier in ("", target) else None
            if found:
                alts.append(((_COLUMN[name], found),))
        else:
            alts.append(((_COLUMN[name], one),))
    return tuple(alts)


def parse(  # noqa: PLR0912 - one branch per parameter kind
    params: list[tuple[str, str]], *, strict: bool, base: str
) -> Parsed | list[Issue]:
    """The Task search ``params`` (in order, as given) ask for, or why they are refused."""
    where: list[tuple[Alternative, ...]] = []
    used: list[tuple[str, str]] = []
    keep: list[tuple[str, str]] = []
    issues: list[Issue] = []
    bounds: list[dt.datetime | None] = [None, None]
    shaped: dict[str, object] = {"count": DEFAULT_COUNT, "offset": 0, "summary": "false"}
    elements: tuple[str, ...] = ()
    newest = False
    for position, (raw, value) in enumerate(params):
        name, _, modifier = raw.partition(":")
        if name in RESULT_PARAMS:
            problem = _result(name, value, position, shaped)
            if problem is not None:
                issues.append(problem)
            elif name == "_sort" and value in _SORTS:
                newest = _SORTS[value]
                keep.append((raw, value))
            elif name == "_sort" and value and strict:
                issues.append(_fail(position, "sorts by _lastUpdated only", "not-supported"))
            elif name == "_elements":
                elements = tuple(e for e in (v.strip() for v in value.split(",")) if e)
                if any(not _ELEMENT.match(e) for e in elements):
                    issues.append(_fail(position, "must name elements (letters and digits)"))
                keep.append((raw, value))
            elif name in ("_format", "_pretty", "_summary"):
                keep.append((raw, value))
            continue
        if name not in TASK_PARAMS:
            if strict:
                issues.append(_fail(position, "is not a Task search parameter of this server"))
            continue
        allowed = {"focus": ("ServiceRequest",), "owner": ("Organization",)}.get(name, ())
        if modifier and modifier not in allowed:
            issues.append(_fail(position, "has a modifier this server does not support", "n/s"))
            continue
        if value == "":
            continue
        used.append((raw, value))
        if name == "_lastUpdated":
            problem = _updated(value, position, bounds)
            if problem is not None:
                issues.append(problem)
            continue
        where.append(_token_group(name, value, modifier, base))
    if issues:
        return issues
    return Parsed(
        where=tuple(where),
        updated_from=bounds[0],
        updated_before=bounds[1],
        newest_first=newest,
        count=int(str(shaped["count"])),
        offset=int(str(shaped["offset"])),
        summary=shaped["summary"],  # type: ignore[arg-type]
        elements=elements,
        used=tuple(used),
        keep=tuple(keep),
    )


def _result(name: str, value: str, position: int, shaped: dict[str, object]) -> Issue | None:
    """Check (and note) ``_count``, ``_offset`` and ``_summary``; None when fine."""
    if name in ("_count", "_offset"):
        if not value.isdigit():
            return _fail(position, "must be a whole number, 0 or more")
        number = int(value[:9])
        shaped["count" if name == "_count" else "offset"] = (
            min(number, MAX_COUNT) if name == "_count" else number
        )
    elif name == "_summary":
        if value not in _SUMMARIES:
            return _fail(position, "supports true, false, count and data", "not-supported")
        shaped["summary"] = value
    return None


def query_string(parsed: Parsed, offset: int) -> str:
    """The query of a paging link: the parameters applied, then count and offset."""
    pairs = [*parsed.used, *parsed.keep, ("_count", str(parsed.count)), ("_offset", str(offset))]
    return urlencode(pairs)


def links(url: str, parsed: Parsed, total: int) -> list[dict[str, str]]:
    """``self``, ``previous`` and ``next`` links of a searchset page (absolute ``url``)."""
    out = [{"relation": "self", "url": f"{url}?{query_string(parsed, parsed.offset)}"}]
    step = max(parsed.count, 1)
    if parsed.offset > 0 and parsed.count > 0:
        before = max(parsed.offset - step, 0)
        out.append({"relation": "previous", "url": f"{url}?{query_string(parsed, before)}"})
    if parsed.count > 0 and parsed.offset + parsed.count < total:
        after = parsed.offset + step
        out.append({"relation": "next", "url": f"{url}?{query_string(parsed, after)}"})
    return out


def referral_keys(bundle: dict[str, Any]) -> tuple[str, str, str]:
    """The searchable keys of a mapped referral Bundle: the HIS's referral number (system and
    value of the ServiceRequest's first identifier that is not the bridge's) and the id of the
    Organization the Task is owned by. Empty strings where the Bundle has none."""
    resources = [e.get("resource") for e in bundle.get("entry") or [] if isinstance(e, dict)]
    his_system = his_value = owner = ""
    for res in resources:
        if not isinstance(res, dict):
            continue
        if res.get("resourceType") == "ServiceRequest" and not his_value:
            for ident in res.get("identifier") or []:
                if ident.get("system") not in (None, ids.URI_IDENTIFIER) and ident.get("value"):
                    his_system, his_value = str(ident["system"]), str(ident["value"])
                    break
        if res.get("resourceType") == "Task":
            reference = str((res.get("owner") or {}).get("reference") or "")
            owner = reference.rsplit(":", 1)[-1].rsplit("/", 1)[-1]
    return his_system, his_value, owner
