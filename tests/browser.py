"""Headless Chromium for page tests: load a URL, keep a screenshot, and list every URL the page
asked for, from Chromium's net log: the navigation itself and every request whose initiator is a
web origin (the browser's own background requests have none). Anything not on loopback goes to a
proxy that refuses it, so a test never reaches the internet. Debian's ``chromium``; the tests are
skipped only where it is not installed."""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


class _Refuse(http.server.BaseHTTPRequestHandler):
    seen: list[str]

    def _refuse(self) -> None:
        self.seen.append(self.path)
        self.send_response(403)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = do_CONNECT = do_HEAD = _refuse  # noqa: N815 - http.server's names

    def log_message(self, *_args: object) -> None:
        """Quiet."""


@contextmanager
def refusing_proxy() -> Iterator[tuple[int, list[str]]]:
    """A proxy on loopback that refuses and records every request (port, what it saw)."""
    seen: list[str] = []
    handler = type("Refuse", (_Refuse,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


def load(url: str, folder: Path, screenshot: str = "page.png") -> list[str]:
    """Load ``url`` headless, save a screenshot in ``folder``; the URLs the page requested."""
    assert CHROMIUM is not None
    netlog = folder / "netlog.json"
    with refusing_proxy() as (port, _seen):
        subprocess.run(
            [
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={folder / 'profile'}",
                f"--proxy-server=http://127.0.0.1:{port}",
                f"--log-net-log={netlog}",
                "--window-size=1100,2600",
                f"--screenshot={folder / screenshot}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    events = json.loads(netlog.read_text(encoding="utf-8"))["events"]
    found: list[str] = []
    for event in events:
        params = event.get("params") or {}
        initiator = params.get("initiator")
        by_page = isinstance(initiator, str) and "://" in initiator
        if "url" in params and (by_page or params["url"] == url):
            found.append(str(params["url"]))
    return list(dict.fromkeys(found))
