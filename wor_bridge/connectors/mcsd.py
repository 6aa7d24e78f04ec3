"""Connector for an mCSD care-services directory (GF Adressering, ITI-90-NL / ITI-91-NL). Pure.

Requests (rule numbers of ``docs/standards/gf-adressering-mcsd.md`` section 2):

- initial load: ``GET [base]/{Type}?_count=n``, a type-level search without search parameters
  (L1; ``_count`` is a result parameter asking for pages of a size the server may lower, L2);
- incremental: ``GET [base]/{Type}/_history?_since={server time}&_count=n`` (S1); ``_since`` is
  inclusive in FHIR, which idempotent applying makes safe (L7);
- ``next`` links are followed until exhausted (L2), on the directory's own origin only, so its
  credentials never travel to another host.

Answers: a ``searchset`` or ``history`` Bundle. ``parse_page`` turns each entry into a
``DirectoryRecord`` (a history ``DELETE`` entry into a tombstone) and reports entries it cannot
use by location only, so one broken entry never stops the sync. An entry counts as broken when
its resource is not a valid FHIR R4 resource of the type asked for or carries no
``meta.lastUpdated`` (without it the version order of S6 cannot be decided). References are not
resolved (L8). The server time of a page is its ``Bundle.meta.lastUpdated`` (L5), else the HTTP
``Date`` header.
"""

from __future__ import annotations

import email.utils
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlencode, urlsplit

from wor_bridge.core import fhir
from wor_bridge.core.delivery import HttpRequest
from wor_bridge.core.directory import DirectoryRecord, index_keys, instant_us

ACCEPT: Final = (("Accept", "application/fhir+json"),)
_ID: Final = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_ETAG_VERSION: Final = re.compile(r'^(?:W/)?"([^"]+)"$')

JsonDict = dict[str, Any]


class McsdFormatError(ValueError):
    """The answer is not a Bundle of the expected type (``location`` says where; no values)."""

    def __init__(self, location: str, expectation: str) -> None:
        self.location = location
        super().__init__(f"{location}: {expectation}")


@dataclass(frozen=True, slots=True)
class Page:
    """One page: its records (oldest first), the entries skipped, the server time, the next link."""

    records: tuple[DirectoryRecord, ...]
    broken: tuple[str, ...]
    """``Bundle.entry[i]`` locations of unusable entries (no values)."""
    server_time: str | None
    next_url: str | None


def load_request(base_url: str, resource_type: str, page_size: int) -> HttpRequest:
    """L1: the first page of all resources of one type."""
    query = urlencode([("_count", str(page_size))])
    return HttpRequest("GET", f"{base_url.rstrip('/')}/{resource_type}?{query}", b"", ACCEPT)


def history_request(base_url: str, resource_type: str, since: str, page_size: int) -> HttpRequest:
    """S1: the first page of the type's history since ``since`` (a server time, URL-encoded)."""
    query = urlencode([("_since", since), ("_count", str(page_size))], quote_via=quote, safe=":")
    url = f"{base_url.rstrip('/')}/{resource_type}/_history?{query}"
    return HttpRequest("GET", url, b"", ACCEPT)


def next_request(base_url: str, url: str) -> HttpRequest | None:
    """The request for a ``next`` link; None when it leaves the directory's base."""
    base, other = urlsplit(base_url.rstrip("/")), urlsplit(url)
    same = (
        other.scheme.lower() == base.scheme.lower()
        and other.netloc.lower() == base.netloc.lower()
        and (other.path == base.path or other.path.startswith(base.path + "/"))
    )
    return HttpRequest("GET", url, b"", ACCEPT) if same else None


def server_time(bundle: JsonDict, date_header: str | None) -> str | None:
    """L5: ``Bundle.meta.lastUpdated`` (an instant), else the HTTP ``Date`` as an instant."""
    meta = bundle.get("meta")
    stamp = meta.get("lastUpdated") if isinstance(meta, dict) else None
    if instant_us(stamp) is not None:
        return str(stamp)
    if date_header:
        try:
            when = email.utils.parsedate_to_datetime(date_header)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is not None:
            return when.isoformat()
    return None


def parse_page(
    bundle: object, resource_type: str, *, history: bool, date_header: str | None = None
) -> Page:
    """The records of a ``searchset`` (``history`` False) or ``history`` page of one type."""
    kind = "history" if history else "searchset"
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise McsdFormatError("Bundle", "must be a Bundle")
    if bundle.get("type") != kind:
        raise McsdFormatError("Bundle.type", f"must be {kind}")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise McsdFormatError("Bundle.entry", "must be a list")
    records: list[DirectoryRecord] = []
    broken: list[str] = []
    for index, entry in enumerate(entries):
        where = f"Bundle.entry[{index}]"
        if not history and _not_a_match(entry):
            continue  # included resources and OperationOutcomes are not part of the result
        record = _history_record(entry, resource_type) if history else None
        if record is None:
            record = _resource_record(entry, resource_type)
        if record is None:
            broken.append(where)
        else:
            records.append(record)
    # FHIR history lists the newest version first; apply the oldest first (S6)
    ordered = sorted(records, key=lambda r: (r.last_updated_us, _number(r.version_id)))
    return Page(tuple(ordered), tuple(broken), server_time(bundle, date_header), _next(bundle))


def _not_a_match(entry: object) -> bool:
    search = entry.get("search") if isinstance(entry, dict) else None
    mode = search.get("mode") if isinstance(search, dict) else None
    return mode in ("include", "outcome")


def _number(version_id: str) -> int:
    return int(version_id) if version_id.isdigit() else 0


def _resource_record(entry: object, resource_type: str) -> DirectoryRecord | None:
    resource = entry.get("resource") if isinstance(entry, dict) else None
    if not isinstance(resource, dict) or resource.get("resourceType") != resource_type:
        return None
    rid = resource.get("id")
    meta = resource.get("meta")
    if not isinstance(rid, str) or not _ID.fullmatch(rid) or not isinstance(meta, dict):
        return None
    stamp = instant_us(meta.get("lastUpdated"))
    if stamp is None or fhir.validate(resource, resource_type):
        return None
    version = meta.get("versionId")
    return DirectoryRecord(
        resource_type,
        rid,
        stamp,
        version if isinstance(version, str) else "",
        fhir.canonical_json(resource),
        index_keys(resource),
    )


def _history_record(entry: object, resource_type: str) -> DirectoryRecord | None:
    """A ``DELETE`` entry as a tombstone (its version from ``response``); None otherwise."""
    if not isinstance(entry, dict):
        return None
    request = entry.get("request")
    if not isinstance(request, dict) or request.get("method") != "DELETE":
        return None
    parts = str(request.get("url") or "").split("?")[0].split("/")
    response = entry.get("response")
    if not isinstance(response, dict):
        return None
    stamp = instant_us(response.get("lastModified"))
    if len(parts) < 2 or parts[-2] != resource_type or not _ID.fullmatch(parts[-1]) or not stamp:
        return None
    etag = _ETAG_VERSION.match(str(response.get("etag") or ""))
    return DirectoryRecord(resource_type, parts[-1], stamp, etag.group(1) if etag else "", None)


def _next(bundle: JsonDict) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == "next":
            url = link.get("url")
            return url if isinstance(url, str) and url else None
    return None
