"""``[delivery]``: retries, leases and concurrency of the outbox dispatcher."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DeliverySettings(BaseModel):
    """Retry policy and leases of the outbox dispatcher."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_s: float = Field(default=2.0, gt=0)
    cap_s: float = Field(default=900.0, gt=0)
    max_attempts: int = Field(default=12, ge=1)
    max_age_s: float = Field(default=3 * 24 * 3600.0, gt=0)
    lease_s: float = Field(default=60.0, gt=0)
    concurrency: int = Field(default=1, ge=1, le=64)
    """Deliveries one process makes at once (to one destination or several). Messages about
    one Task still go one after the other: only the oldest pending one can be claimed."""
