"""Choose the welfare organisation's inbox for a referral: practice AGB, then the patient's current
home address (postcode range, then municipality), then the catch-all. The rule is configuration;
this is the lookup.

Only a **current** address routes (``core/period.py``: not ``use`` old, its ``period`` covering
``authoredOn``): a patient who moved is referred where they live now. Among the current addresses
those with ``use`` home count; without one, those without a ``use``. Work, temporary and billing
addresses never route: a coach visits people at home. When the addresses that count lead to
different organisations, the referral is refused rather than routed by a guess.
"""

from __future__ import annotations

from typing import Any

from wor_bridge.core import identifiers as ids
from wor_bridge.core.graph import Located
from wor_bridge.core.period import Span, current
from wor_bridge.core.settings import Destination, Routing, Settings
from wor_bridge.errors import Issue


def home_addresses(addresses: Any, at: Span) -> list[Any]:
    """The addresses routing may use: current ones with use home, else current ones without use."""
    now = [a for a in current(addresses, at) if isinstance(a, dict)]
    home = [a for a in now if a.get("use") == "home"]
    return home or [a for a in now if "use" not in a]


def route(
    patient: Located, practice: Located, at: Span, settings: Settings, where: str
) -> Destination | Issue:
    """The destination for the referral, or the issue that says why there is none.

    ``where`` is the FHIRPath an unrouted referral is reported at (the practice reference).
    """
    table = settings.routing
    for _system, agb in ids.identifiers_in(practice.resource, frozenset({ids.AGB})):
        if agb in table.practices:
            return settings.destination(table.practices[agb])
    found = {_by_address(a, table) for a in home_addresses(patient.resource.get("address"), at)}
    if len(found) > 1:
        return Issue(
            "business-rule",
            f"{patient.location}.address",
            "must give one current home address to route by (got current home addresses "
            f"that route to {len(found)} different welfare organisations)",
        )
    chosen = next(iter(found), None) or table.catch_all
    if chosen:
        return settings.destination(chosen)
    return Issue(
        "business-rule",
        where,
        "must belong to a practice (AGB) or a patient's current home postcode/municipality "
        "that the routing table sends to a welfare organisation (no route found, no catch-all "
        "configured)",
    )


def _by_address(address: dict[str, Any], table: Routing) -> str | None:
    """The destination id one address routes to (postcode range, then municipality), or None."""
    postcode = str(address.get("postalCode") or "").replace(" ", "")[:4]
    if postcode.isdigit() and len(postcode) == 4:
        number = int(postcode)
        for rule in table.postcodes:
            if rule.low <= number <= rule.high:
                return rule.destination
    district = address.get("district")
    municipalities = {k.strip().lower(): v for k, v in table.municipalities.items()}
    if isinstance(district, str) and district.strip().lower() in municipalities:
        return municipalities[district.strip().lower()]
    return None
