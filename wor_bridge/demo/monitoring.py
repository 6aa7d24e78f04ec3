"""The demo's last step: the monitoring report of what it just did, fetched as an operator would
(``GET /reports/monitoring``, admin key) and printed as a few lines. Counts from 1 to 4 show as
"<5": the demo's handful of referrals is exactly what small-cell suppression is for."""

from __future__ import annotations

from typing import Any

import requests

from wor_bridge.demo.credentials import ADMIN_KEY

SHOWN = ("referrals", "funnel", "outcome", "reasons", "feedback")


def _cell(cell: dict[str, Any], threshold: int) -> str:
    if cell["count"] is None:
        return f"<{threshold}" if cell["suppressed"] else "-"
    return f"{cell['count']}" + (f" ({cell['percent']:g}%)" if cell["percent"] is not None else "")


def run(base: str) -> bool:
    """Print the report; True when it was served."""
    answer = requests.get(
        f"{base}/reports/monitoring",
        params={"period": "year", "breakdown": "total"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=(3.05, 30),
    )
    if answer.status_code != 200:
        print(f"\nmonitoring report: HTTP {answer.status_code}")
        return False
    report = answer.json()
    threshold = report["threshold"]
    periods = ", ".join(report["periods"])
    print(
        f"\nmonitoring report of this demo (per year, no patient data; counts 1-{threshold - 1}"
        f" and what would give them away are withheld): {periods}"
    )
    for figure in report["figures"]:
        if figure["id"] not in SHOWN:
            continue
        parts = [
            f"{c['category']} {_cell(c, threshold)}"
            for c in figure["cells"]
            if c["group"] == "totaal" and (c["count"] != 0 or c["suppressed"])
        ]
        print(f"  {figure['title']} [{figure['unit']}]: {'; '.join(parts) or 'none'}")
    return True
