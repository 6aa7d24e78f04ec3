"""Which requests deliver an outbox message, by destination type: the registry of connectors.

Every message is stored as an R4 transaction Bundle (``outgoing``: a referral, a Task update or a
GP-record message); the destination's ``type`` picks the connector that puts it on the wire, and
every connector makes each request have one effect however often it is repeated:

- ``fhir-r4`` (``fhir_r4.render``): the Bundle itself, whose entries are PUTs to deterministic
  ids or conditional creates (the mapping file chooses); also the GP record's type;
- ``notified-pull-stu3`` (``notified_pull.render``): no patient data. The referral becomes an
  STU3 notification Task, created once (``If-None-Exist`` on its identifier, or a PUT to its id);
  the receiver pulls the rest from the bridge. A Task update is a PUT of the ended Task. With
  ``pull_mode = "ta-np"`` (``ta_notified_pull.render``): Twiin TA Notified Pull v1.0.1, a new
  Notification per referral version (Twiin-01) and a cancellation of each (Twiin-02);
- ``zorgdomein-stu3`` (``zorgdomein.render``): the referral as an STU3 document Bundle, created
  once (``If-None-Exist`` on ``Bundle.identifier``, or a PUT to its id); a Task update is the
  STU3 Task, a conditional update on its identifier;
- ``inbox`` (``inbox.render``): no request at all. The referral stays at the bridge, where the
  organisation's coaches see it in the browser console; storing it was its delivery.

``create`` (a destination setting) says how the STU3 types create: ``conditional`` (default),
``put``, or ``plain`` for a receiver that offers neither: then a create is delivered at least
once, and a lost answer can leave a duplicate there (the README names the risk).

A new destination type is one connector module with a ``render`` and one row in ``TYPES``; the
drop-the-answer tests run over every row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, get_args

from wor_bridge.connectors import fhir_r4, inbox, notified_pull, ta_notified_pull, zorgdomein
from wor_bridge.connectors.outgoing import Kind, Outgoing, outgoing
from wor_bridge.core.delivery import HttpRequest
from wor_bridge.core.settings import Destination, DestinationType, Settings

Render = Callable[[Outgoing, Destination, Settings], list[HttpRequest]]


@dataclass(frozen=True, slots=True)
class Connector:
    """One destination type: how it renders, and which message kinds it receives."""

    render: Render
    kinds: frozenset[Kind]
    on_the_wire: bool = True
    """False for a type that sends nothing (``inbox``): no receiver, no answer to lose."""


def _notified_pull(
    message: Outgoing, destination: Destination, settings: Settings
) -> list[HttpRequest]:
    """Twiin TA Notified Pull or the bridge's single-Task variant, by ``pull_mode``."""
    if destination.pull_mode == "ta-np":
        return ta_notified_pull.render(message, destination, settings)
    return notified_pull.render(message, destination, settings)


TYPES: Final[dict[str, Connector]] = {
    "fhir-r4": Connector(fhir_r4.render, frozenset(get_args(Kind))),
    "notified-pull-stu3": Connector(
        _notified_pull, frozenset({"referral", "referral-update", "task-update"})
    ),
    "zorgdomein-stu3": Connector(
        zorgdomein.render, frozenset({"referral", "referral-update", "task-update"})
    ),
    "inbox": Connector(
        inbox.render, frozenset({"referral", "referral-update", "task-update"}), on_the_wire=False
    ),
}
if set(TYPES) != set(get_args(DestinationType)):  # pragma: no cover - a programming error
    raise RuntimeError("every destination type needs a connector in outbound.TYPES")


def render(
    payload: bytes,
    destination: Destination,
    idempotency_key: str,
    settings: Settings,
    *,
    created_at: str,
    earlier: Callable[[], list[bytes]] | None = None,
) -> list[HttpRequest]:
    """The requests that deliver ``payload`` to ``destination`` (ValueError when impossible).

    ``created_at`` (the outbox entry's creation instant, which never changes) dates a ZorgDomein
    document, so that a repeat sends the same bytes. ``earlier``: the payloads of the earlier
    messages about the Task to this destination (read only by a connector that needs them).
    """
    message = outgoing(payload, idempotency_key, created_at, earlier)
    connector = TYPES[destination.type]
    if message.kind not in connector.kinds:
        raise ValueError(f"a {destination.type} destination does not take {message.kind} messages")
    return connector.render(message, destination, settings)
