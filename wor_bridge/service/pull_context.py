"""What the notified-pull routes share: the token service, the clients and the audit helper."""

from __future__ import annotations

import datetime as dt
import hmac
from typing import Final

from wor_bridge.bootstrap import Components
from wor_bridge.config import ClientSettings
from wor_bridge.records import AuditEvent, TaskRecord
from wor_bridge.service.tokens import TokenService, load_public_keys

PULL_ALLOWED: Final = frozenset(
    {"requested", "received", "accepted", "ready", "in-progress", "on-hold"}
)
"""Task statuses in which the receiver may pull: the referral is open. Never once it ended
(rejected, cancelled, entered-in-error, and also completed or failed)."""


class PullContext:
    """Built once per app from the configuration."""

    def __init__(self, components: Components) -> None:
        self.c = components
        config = components.config
        pull = config.core.pull
        key = pull.token_key.get_secret_value().encode() if pull.token_key else None
        self.tokens = TokenService(key, pull.base_url, pull.token_ttl_s, self._first_use)
        self.clients = {c.id: c for c in config.clients}
        self.public_keys = load_public_keys(config.clients, config.path.parent)
        self.pull_destinations = frozenset(
            d.id for d in config.core.destinations if d.type == "notified-pull-stu3"
        )
        self.ta_destinations = frozenset(
            d.id for d in config.core.destinations if d.pull_mode == "ta-np"
        )
        """Destinations in Twiin TA mode: their receivers play the authorization base back."""
        self.base_key = key
        """The authorization base key (``[pull] token_key``; required for TA destinations)."""

    def _first_use(self, key: str, forget_at_s: float, now_s: float) -> bool:
        """The store's replay cache (shared by the processes on it; survives a restart)."""
        return self.c.store.use_once(
            key,
            dt.datetime.fromtimestamp(forget_at_s, tz=dt.UTC),
            dt.datetime.fromtimestamp(now_s, tz=dt.UTC),
        )

    def now(self) -> float:
        """The service clock as a POSIX timestamp (tokens are checked against it)."""
        return self.c.clock.now().timestamp()

    @staticmethod
    def cert_ok(client: ClientSettings, cert_sha256: str | None) -> bool:
        """A client with a configured certificate must present exactly that one."""
        if client.cert_sha256 is None:
            return True
        return cert_sha256 is not None and hmac.compare_digest(cert_sha256, client.cert_sha256)

    def pulled(self, task: TaskRecord) -> bool:
        """Whether the Task went to a notified-pull destination (others get no tokens)."""
        return task.destination in self.pull_destinations

    def audit(
        self,
        event: str,
        outcome: str,
        user: str,
        task: TaskRecord | None,
        detail: str,
        *,
        action: str = "R",
        object_ref: tuple[str, str] | None = None,
        responsible: str | None = None,
    ) -> None:
        """One NEN 7513 record: the client, and the patient when the Task is known to be its."""
        kind, oid = object_ref or ("Task", task.task_id if task else "")
        self.c.store.audit(
            AuditEvent(
                event=event,
                action=action,
                outcome=outcome,
                user=user,
                responsible=responsible or (task.destination if task else ""),
                source_system=task.source_system if task else "",
                patient_id=task.patient_id if task else "",
                object_type=kind,
                object_id=oid,
                detail=detail,
            ),
            self.c.clock.now(),
        )
