"""Fail points for crash tests: ``WOR_BRIDGE_FAULT=<name>`` makes the process SIGKILL itself there.

Names: ``after_commit`` (intake stored, 201 not yet sent) and ``after_send`` (the receiver answered
2xx, the outbox not yet updated). Unset in production; reading it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal


def hit(name: str) -> None:
    """Kill this process with SIGKILL when the configured fail point is ``name``."""
    if os.environ.get("WOR_BRIDGE_FAULT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
