"""The ``inbox`` destination type: the organisation's inbox is at the bridge (issue 17).

A welfare organisation without a registration system that speaks FHIR gets its referrals in the
browser console: the referral, an amendment or a GP withdrawal is already stored with its Task
when it is queued, so "delivering" it sends nothing (no request, one effect however often it is
repeated) and the outbox records it delivered, which the GP record is told as for any other
type. The coaches' answers go through the same transition table and feedback path as every
other channel (``usecases.inbox``).
"""

from __future__ import annotations

from wor_bridge.connectors.outgoing import Outgoing
from wor_bridge.core.delivery import HttpRequest
from wor_bridge.core.settings import Destination, Settings


def render(_message: Outgoing, _destination: Destination, _settings: Settings) -> list[HttpRequest]:
    """No request: the message is in the inbox once it is stored."""
    return []
