"""The README's main job: ``wor-bridge demo`` runs end to end and exits 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.cases import PATIENT_VALUES, REPO


def test_demo_delivers_every_accepted_referral_and_exits_zero() -> None:
    """The demo accepts, refuses and delivers as designed, via the installed console script."""
    script = Path(sys.executable).parent / "wor-bridge"
    proc = subprocess.run(
        [str(script), "demo"], cwd=REPO, capture_output=True, timeout=120, check=False
    )
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert "accepted 7 pushes (6 distinct referrals), refused 2, delivered 6 of 6" in out
    assert "already received; no second delivery" in out
    assert "the way back went as designed" in out
    assert "first-contact x1" in out
    assert "notified pull and STU3 went as designed" in out
    assert "GET workflow Task (Twiin-03)                 HTTP 200" in out
    assert "cancellation (Twiin-02) reached the receiver: True" in out
    assert "receiver welzijn-voorbeeld: 5 ServiceRequest(s), 5 Task(s), 0 Condition(s)" in out
    assert "Traceback" not in proc.stderr.decode()
    report = out.index("monitoring report of this demo")  # the report of what it just did
    assert report > out.index("first-contact x1")
    assert "Verwijzingen [verwijzing naar Welzijn op Recept]: referred " in out[report:]
    assert "the monitoring report was served" in out
    seen = out + proc.stderr.decode()
    leaks = [n for n, value in enumerate(PATIENT_VALUES) if value in seen]
    assert not leaks, f"patient values #{leaks} in the demo output"  # indexes only, never values
