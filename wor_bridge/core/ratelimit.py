"""Token bucket per client (pure: the caller passes the time)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenBucket:
    """``rate_per_s`` tokens a second, at most ``burst`` saved up; one request costs one token."""

    rate_per_s: float
    burst: int
    tokens: float = -1.0
    updated_s: float = 0.0

    def take(self, now_s: float) -> float:
        """Take a token: 0.0 when allowed, else the seconds until one is available."""
        if self.tokens < 0:
            self.tokens, self.updated_s = float(self.burst), now_s
        elapsed = max(0.0, now_s - self.updated_s)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate_per_s)
        self.updated_s = now_s
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate_per_s
