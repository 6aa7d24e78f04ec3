"""Request bodies for ``bench_cost.py``: a normal one per route, the worst the limits admit, and
the hostile ones of the security review (refused with the limits).

"The worst the limits admit" is searched, not guessed: ``fill`` adds copies of one item to the
arrays of a body until one more would pass ``limits.max_elements`` (counted with the service's own
JSON pass), keeping every array within ``max_array_items``. Extensions with only a ``url`` were
the most expensive item per counted value among those tried (identifiers, codings, references,
periods, nested extensions, contained resources, notes): about 15 µs each in the models.
Bodies hold synthetic values only.
"""

from __future__ import annotations

import copy
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from lxml import etree

from wor_bridge.core import fhir, jsonscan
from wor_bridge.core.limits import InputLimits

ROOT: Final = Path(__file__).resolve().parent.parent
REFERRAL: Final = json.loads((ROOT / "fixtures/referral/accepted-contained/input.json").read_text())
EXTENSION: Final = {"url": "https://example.org/fhir/StructureDefinition/bench"}
UNLIMITED: Final = InputLimits(
    max_elements=1_000_000, max_array_items=1_000_000, max_string_chars=16_777_216
)

Json = dict[str, Any]


def dumps(value: Any) -> bytes:
    """Compact JSON (the densest a sender can make it)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def values(body: bytes) -> int:
    """JSON values as ``limits.max_elements`` counts them."""
    scan = jsonscan.JsonScan(UNLIMITED, strict=False, check_strings=False)
    json.loads(body, object_pairs_hook=scan)
    return scan.values


def xml_values(body: bytes) -> int:
    """XML elements and attributes as ``limits.max_elements`` counts them."""
    events = etree.iterparse(io.BytesIO(body), events=("start",))
    return sum(1 + len(element.attrib) for _, element in events)


def fill(
    base: Json,
    holders: Callable[[Json], list[Json]],
    item: Json,
    limits: InputLimits,
    count: Callable[[Json], int] = lambda body: values(dumps(body)),
) -> Json:
    """``base`` with as many copies of ``item`` in the ``extension`` arrays of ``holders(body)``
    as the element limit admits (binary search on the number of copies)."""

    def build(n: int) -> Json:
        body = copy.deepcopy(base)
        for holder in holders(body):
            take = min(n, limits.max_array_items - len(holder.get("extension", [])))
            if take <= 0:
                break
            holder.setdefault("extension", []).extend(copy.deepcopy(item) for _ in range(take))
            n -= take
        return body

    low, high = 0, limits.max_elements
    while low < high:
        mid = (low + high + 1) // 2
        if count(build(mid)) <= limits.max_elements:
            low = mid
        else:
            high = mid - 1
    return build(low)


def referral(number: int) -> Json:
    """The fixture referral with a distinct business identifier (a new referral each time)."""
    body = copy.deepcopy(REFERRAL)
    body["identifier"][0]["value"] = f"VW-BENCH-{number:07d}"
    return body


def with_identifier(body: Json, number: int) -> bytes:
    """``body`` (a referral) as bytes with a distinct business identifier."""
    body = copy.deepcopy(body)
    body["identifier"][0]["value"] = f"VW-BENCH-{number:07d}"
    return dumps(body)


def worst_referral(limits: InputLimits) -> Json:
    """The referral with url-only extensions up to the element limit (still accepted, 202)."""
    return fill(referral(0), lambda b: [b, *b["contained"]], EXTENSION, limits)


def worst_referral_xml(limits: InputLimits) -> Json:
    """The same in FHIR XML, counted as XML (an extension is one element and one attribute)."""
    return fill(
        referral(0),
        lambda b: [b, *b["contained"]],
        EXTENSION,
        limits,
        lambda body: xml_values(fhir.to_xml(body)),
    )


def long_strings_referral(limits: InputLimits, max_bytes: int) -> Json:
    """The referral with notes of the longest admitted string until the body limit is reached."""
    body = referral(0)
    size = len(dumps(body))
    text = "a" * limits.max_string_chars
    body["note"] = []
    while size + len(text) + 16 < max_bytes and len(body["note"]) < limits.max_array_items:
        body["note"].append({"text": text})
        size += len(text) + 16
    return body


def task(status: str = "in-progress") -> Json:
    """A welfare-side Task update (the bridge's fields are not required for the cost)."""
    return {"resourceType": "Task", "status": status, "intent": "order"}


def observation() -> Json:
    """A feedback Observation (first contact) of the R4 channel."""
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "315640000"}]},
        "basedOn": [{"reference": "ServiceRequest/00000000-0000-5000-8000-000000000000"}],
        "effectiveDateTime": "2026-11-10T10:00:00+01:00",
    }


def feedback_bundle(entries: list[Json]) -> Json:
    """A welfare client's Bundle of Tasks/Observations."""
    return {"resourceType": "Bundle", "type": "batch", "entry": [{"resource": e} for e in entries]}


NESTED: Final = {**EXTENSION, "extension": [EXTENSION]}  # 5 values: fills one array to the limit


def worst_of(base: Json, limits: InputLimits) -> Json:
    """Any resource with extensions (each holding one) up to the element limit."""
    return fill(base, lambda b: [b], NESTED, limits)


def worst_bundle(limits: InputLimits) -> Json:
    """A feedback Bundle of Observations, each filled with extensions, up to the element limit."""
    bundle = feedback_bundle([observation() for _ in range(8)])
    return fill(bundle, lambda b: [e["resource"] for e in b["entry"]], EXTENSION, limits)


def review_task(count: int = 330_000) -> bytes:
    """The review's Task: about 1 MiB of empty identifier objects (330,000 of them)."""
    return dumps({**task(), "identifier": [{}] * count})


def review_intake() -> bytes:
    """About 1 MiB of url-only extensions on a referral (the intake's size limit)."""
    body = referral(0)
    item = dumps(EXTENSION)
    body["extension"] = [EXTENSION] * ((1_040_000 - len(dumps(body))) // (len(item) + 1))
    return dumps(body)


def five_thousand_digits() -> bytes:
    """A referral with a 5,000-digit number (500 before the limits)."""
    body = dumps(referral(0))
    return body.replace(b'"status":', b'"x":' + b"9" * 5000 + b',"status":', 1)


def array_flood() -> bytes:
    """1 MiB of empty arrays in one array (no object hook sees them while they are decoded)."""
    return b'{"resourceType":"ServiceRequest","x":[' + b",".join([b"[]"] * 349_000) + b"]}"
