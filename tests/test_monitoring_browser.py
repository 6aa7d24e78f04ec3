"""The monitoring page in real headless Chromium: it renders, and asks for nothing elsewhere."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from tests import browser
from tests.inprocess import ADMIN, WELFARE, observation
from tests.monitoring_cases import empty_world, push, seed_reasons
from tests.service_harness import free_port

pytestmark = pytest.mark.skipif(browser.CHROMIUM is None, reason="Debian chromium not installed")
LOCAL = ("data:", "about:", "chrome:", "chrome-error:")


def with_key(app: Any, key: str) -> Any:
    """The app, with ``Authorization: Bearer key`` added to every request (a browser has none)."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = [*scope["headers"], (b"authorization", f"Bearer {key}".encode())]
            scope = {**scope, "headers": headers}
        await app(scope, receive, send)

    return wrapped


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """The real service app with 53 referrals, ten with a first contact, on a loopback port."""
    world = empty_world(tmp_path)
    for number, reasons in enumerate(seed_reasons()):
        task = push(world, number, reasons)
        if number < 10:
            answer = world.call(
                "POST", "/fhir/r4/Observation", WELFARE, json=observation(task, "first-contact")
            )
            assert answer.status_code == 201, answer.status_code
    port = free_port()
    config = uvicorn.Config(with_key(world.app, ADMIN), host="127.0.0.1", port=port,
                            log_level="warning", access_log=False)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def outside(urls: list[str], base: str) -> list[str]:
    """The URLs that are neither the service nor local to the browser."""
    return [u for u in urls if not u.startswith(base) and not u.startswith(LOCAL)]


def test_report_page_renders_and_requests_nothing_outside_the_service(
    served: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The HTML report loads in Chromium, a screenshot is kept, and nothing else is fetched."""
    folder = tmp_path_factory.mktemp("browser-artefacts")
    page = f"{served}/reports/monitoring?format=html&period=year"
    urls = browser.load(page, folder, "monitoring-report.png")
    assert page in urls
    assert outside(urls, served) == []
    shot = folder / "monitoring-report.png"
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


class _Leaky(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        """A page that loads an image from elsewhere (the control)."""
        body = b"<html><body><img src='http://example.invalid/x.png'></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        """Quiet."""


def test_the_check_catches_a_page_that_loads_from_elsewhere(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Control: a page with an image from another host is caught by the same check."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Leaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        urls = browser.load(f"{base}/", tmp_path_factory.mktemp("browser-control"))
    finally:
        server.shutdown()
        server.server_close()
    assert any("example.invalid" in u for u in outside(urls, base))


def _static(body: bytes) -> type[http.server.BaseHTTPRequestHandler]:
    """A handler that serves ``body`` as HTML with no Content-Security-Policy."""

    class Static(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            """The page, as is."""
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            """Quiet."""

    return Static


def test_the_page_itself_requests_nothing_even_without_its_policy(
    served: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The service's page served elsewhere without the Content-Security-Policy header (which
    would block a stray reference before Chromium logs it) still asks for nothing else."""
    answer = httpx.get(f"{served}/reports/monitoring", params={"format": "html",
                       "period": "year"}, timeout=30)  # fmt: skip
    assert answer.status_code == 200
    assert "Content-Security-Policy" in answer.headers
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _static(answer.content))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        folder = tmp_path_factory.mktemp("browser-no-policy")
        urls = browser.load(f"{base}/", folder, "monitoring-report-no-policy.png")
    finally:
        server.shutdown()
        server.server_close()
    assert f"{base}/" in urls
    assert outside(urls, base) == []
    assert (folder / "monitoring-report-no-policy.png").stat().st_size > 10_000
