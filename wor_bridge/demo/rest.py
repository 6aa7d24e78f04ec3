"""How the demo's clients update a Task as a careful FHIR client does: read, then ``PUT`` with
``If-Match``; a 412 (the bridge moved the Task on in between, e.g. its delivery was recorded)
means read again and retry (FHIR R4 http.html#concurrency: version-aware updates)."""

from __future__ import annotations

from typing import Any

import requests

TIMEOUT = (3.05, 30)
ATTEMPTS = 5


def update_task(url: str, body: dict[str, Any], headers: dict[str, str]) -> int:
    """``GET`` the Task at ``url``, ``PUT`` ``body`` with its ETag; retried on 412 up to
    ``ATTEMPTS`` times. Returns the last HTTP status (the read's when it was not 200)."""
    status = 412
    for _ in range(ATTEMPTS):
        current = requests.get(url, headers=headers, timeout=TIMEOUT)
        if current.status_code != 200:
            return current.status_code
        put_headers = {
            **headers,
            "Content-Type": "application/fhir+json",
            "If-Match": current.headers.get("ETag", ""),
        }
        status = requests.put(url, json=body, headers=put_headers, timeout=TIMEOUT).status_code
        if status != 412:
            return status
    return status
