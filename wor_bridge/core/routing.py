"""Choose the welfare organisation's inbox for a referral: practice AGB, then the patient's postcode
or municipality, then the catch-all. The rule is configuration; this is the lookup.
"""

from __future__ import annotations

from wor_bridge.core import identifiers as ids
from wor_bridge.core.gates import Referral, identifiers_in
from wor_bridge.core.settings import Destination, Settings
from wor_bridge.errors import Issue


def route(referral: Referral, settings: Settings) -> Destination | Issue:
    """The destination for ``referral``, or the issue that says no route exists."""
    table = settings.routing
    for _system, agb in identifiers_in(referral.practice.resource, frozenset({ids.AGB})):
        if agb in table.practices:
            return settings.destination(table.practices[agb])
    for address in referral.patient.resource.get("address") or []:
        postcode = str(address.get("postalCode") or "").replace(" ", "")[:4]
        if postcode.isdigit() and len(postcode) == 4:
            number = int(postcode)
            for rule in table.postcodes:
                if rule.low <= number <= rule.high:
                    return settings.destination(rule.destination)
        district = address.get("district")
        if isinstance(district, str) and district.strip().lower() in _lower(table.municipalities):
            return settings.destination(_lower(table.municipalities)[district.strip().lower()])
    if table.catch_all:
        return settings.destination(table.catch_all)
    return Issue(
        "business-rule",
        f"{referral.role.location}.organization",
        "must belong to a practice (AGB) or a patient postcode/municipality that the routing "
        "table sends to a welfare organisation (no route found, no catch-all configured)",
    )


def _lower(table: dict[str, str]) -> dict[str, str]:
    return {k.strip().lower(): v for k, v in table.items()}
