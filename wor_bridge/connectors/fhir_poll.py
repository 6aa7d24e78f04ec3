"""Connector for polling a welfare system's FHIR R4 server for Task changes. Pure: no I/O.

The search is ``GET [base]/Task?_lastUpdated=gt<cursor>&_sort=_lastUpdated&_count=100``; the
first poll of a destination omits ``_lastUpdated``. It deliberately does **not** filter on the
owner on the server:

- ``owner:identifier=<system>|<value>`` only matches a *logical* reference
  (``Reference.identifier``) in R4, and the Task the bridge sent has a literal ``owner``
  reference, so it would match nothing;
- the chain ``owner:Organization.identifier=<system>|<value>`` is valid R4 but an optional server
  capability: a lenient server silently ignores it (so it guarantees nothing) and a strict one
  answers 400 (so polling stops);
- a welfare system may hand the Task to a team or a coach (a new ``owner``): an owner filter would
  then silently drop exactly the updates that matter.

What decides instead, client-side: a Task counts only when its ``identifier`` holds the bridge's own
Task id (``urn:ietf:rfc:3986|urn:uuid:<id>``), and ``way_back.apply_feedback`` lets a destination
touch only the Tasks routed to it. The cost is volume on a shared server, bounded by ``_count`` and
``MAX_PAGES``.

Cursor: ``_sort=_lastUpdated`` asks for ascending order. After a complete round the cursor is the
latest ``meta.lastUpdated`` seen. After a cut-short round (page limit, error) it moves only to the
last *complete* timestamp of an ascending run, so nothing unseen lies behind it; an unsorted answer
keeps the old cursor (the next round repeats, which ``apply_feedback`` makes harmless).

``next`` links and Observation references are followed only on the destination's own origin, so
its credentials never travel to another host.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

from wor_bridge.connectors.fhir_feedback import FeedbackFormatError
from wor_bridge.core import identifiers as ids
from wor_bridge.core.delivery import HttpRequest
from wor_bridge.core.settings import Destination

JsonDict = dict[str, Any]

PAGE_SIZE: Final = 100
"""Tasks asked for per page (``_count``)."""
MAX_PAGES: Final = 10
"""Pages followed per destination per round; the rest waits for the next round."""
ACCEPT: Final = (("Accept", "application/fhir+json"),)
_UUID_PREFIX: Final = "urn:uuid:"


@dataclass(frozen=True, slots=True)
class Searchset:
    """One page of a Task search: the bridge's Tasks, the timestamps seen and the next page."""

    tasks: tuple[tuple[str, JsonDict], ...]
    """(bridge Task id, the welfare side's Task) for every Task that carries the bridge's id."""
    stamps: tuple[str, ...]
    """``meta.lastUpdated`` of every Task entry, in the order of the page."""
    cursor: str | None
    """The latest ``meta.lastUpdated`` on the page (None when no Task had one)."""
    next_url: str | None
    others: int = 0
    """Task entries without the bridge's id (not ours: ignored)."""


def _base(destination: Destination) -> str:
    if not destination.endpoint:
        raise ValueError(f"destination {destination.id}: no endpoint to poll")
    return destination.endpoint.rstrip("/")


def search_request(destination: Destination, cursor: str | None) -> HttpRequest:
    """The Task search for changes after ``cursor`` (all Tasks when there is none yet)."""
    params = [("_sort", "_lastUpdated"), ("_count", str(PAGE_SIZE))]
    if cursor is not None:
        params.insert(0, ("_lastUpdated", f"gt{cursor}"))
    query = urlencode(params, quote_via=quote, safe=":")
    return HttpRequest("GET", f"{_base(destination)}/Task?{query}", b"", ACCEPT)


def _same_origin(destination: Destination, url: str) -> bool:
    base, other = urlsplit(_base(destination)), urlsplit(url)
    return (
        other.scheme.lower() == base.scheme.lower()
        and other.netloc.lower() == base.netloc.lower()
        and (other.path == base.path or other.path.startswith(base.path + "/"))
    )


def next_request(destination: Destination, url: str) -> HttpRequest | None:
    """The request for a ``next`` link, or None when it leaves the destination's server."""
    if not _same_origin(destination, url):
        return None
    return HttpRequest("GET", url, b"", ACCEPT)


def instant(text: object) -> dt.datetime | None:
    """A FHIR instant as an aware datetime (None when it is not one)."""
    if not isinstance(text, str) or "T" not in text:
        return None
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def bridge_task_id(task: JsonDict) -> str | None:
    """The bridge's Task id from ``identifier`` (system ``urn:ietf:rfc:3986``), or None."""
    for identifier in task.get("identifier") or []:
        if not isinstance(identifier, dict) or identifier.get("system") != ids.URI_IDENTIFIER:
            continue
        value = identifier.get("value")
        if isinstance(value, str) and value.startswith(_UUID_PREFIX):
            text = value[len(_UUID_PREFIX) :].lower()
            if _is_uuid(text):
                return text
    return None


def _is_uuid(text: str) -> bool:
    parts = text.split("-")
    return [len(p) for p in parts] == [8, 4, 4, 4, 12] and all(
        c in "0123456789abcdef" for c in "".join(parts)
    )


def parse_searchset(bundle: object) -> Searchset:
    """The bridge's Tasks on a searchset page, its latest ``meta.lastUpdated`` and next link."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise FeedbackFormatError("Bundle", "must be a Bundle")
    if bundle.get("type") != "searchset":
        raise FeedbackFormatError("Bundle.type", "must be searchset")
    tasks: list[tuple[str, JsonDict]] = []
    stamps: list[str] = []
    others = 0
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict) or resource.get("resourceType") != "Task":
            continue  # included resources, OperationOutcomes
        meta = resource.get("meta")
        stamp = meta.get("lastUpdated") if isinstance(meta, dict) else None
        if instant(stamp) is not None:
            stamps.append(str(stamp))
        task_id = bridge_task_id(resource)
        if task_id is None:
            others += 1
        else:
            tasks.append((task_id, resource))
    return Searchset(tuple(tasks), tuple(stamps), latest(stamps), _next_link(bundle), others)


def _next_link(bundle: JsonDict) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) and url else None
    return None


def latest(stamps: Sequence[str]) -> str | None:
    """The latest of some FHIR instants (as written), or None."""
    parsed = [(when, s) for s in stamps if (when := instant(s)) is not None]
    return max(parsed, key=lambda p: p[0])[1] if parsed else None


def next_cursor(stamps: Sequence[str], old: str | None, *, complete: bool) -> str | None:
    """The cursor after a round that saw ``stamps`` (in order); never earlier than ``old``.

    ``complete`` says the round reached the last page. A cut-short round keeps only the part of an
    ascending run that is certainly finished (every timestamp before the last one seen).
    """
    if complete:
        found = latest(stamps)
    else:
        parsed = [(when, s) for s in stamps if (when := instant(s)) is not None]
        ascending = all(a[0] <= b[0] for a, b in pairwise(parsed))
        done = [s for when, s in parsed if when < parsed[-1][0]] if parsed else []
        found = done[-1] if ascending and done else None
    if found is None:
        return old
    return latest([old, found]) if old is not None else found


def output_refs(task: JsonDict) -> list[str]:
    """References to Observations in ``Task.output`` (``valueReference``), in order."""
    refs: list[str] = []
    for output in task.get("output") or []:
        value = output.get("valueReference") if isinstance(output, dict) else None
        ref = value.get("reference") if isinstance(value, dict) else None
        if not isinstance(ref, str) or ref in refs:
            continue
        if ref.startswith("#") or "Observation/" in ref:
            refs.append(ref)
    return refs


def contained_observation(task: JsonDict, ref: str) -> JsonDict | None:
    """The contained Observation a ``#id`` reference points at, or None."""
    for resource in task.get("contained") or []:
        if (
            isinstance(resource, dict)
            and resource.get("resourceType") == "Observation"
            and f"#{resource.get('id')}" == ref
        ):
            return resource
    return None


def observation_request(destination: Destination, ref: str) -> HttpRequest | None:
    """The read of a referenced Observation, or None when it is not on the destination's server."""
    if ref.startswith(("#", "urn:")):
        return None
    if "://" in ref:
        if not _same_origin(destination, ref) or "/Observation/" not in ref:
            return None
        return HttpRequest("GET", ref, b"", ACCEPT)
    path = ref.lstrip("/")
    if not path.startswith("Observation/") or len(path.split("/")) not in (2, 4):
        return None
    return HttpRequest("GET", f"{_base(destination)}/{path}", b"", ACCEPT)
