"""A bridge with the browser console on: the example configuration with ``welzijn-voorbeeld``
(where the fixture referrals route) as an ``inbox`` destination, the other destinations at a
simulated welfare receiver, the GP record at a simulated FHIR server, accounts made through the
use case, and the app served by uvicorn on a free loopback port (the dispatcher running).

Nothing here prints a page or a body: they hold synthetic patient data."""

from __future__ import annotations

import json
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import uvicorn

from tests.cases import case_input
from tests.service_harness import free_port, to_toml, write_config
from wor_bridge import bootstrap
from wor_bridge.core.account import Role
from wor_bridge.usecases import accounts

PASSWORD: Final = "correct horse battery staple"
INBOX: Final = "welzijn-voorbeeld"
HIS: Final = {"Authorization": "Bearer example-his-key"}


def console_config(tmp_path: Path, welfare_url: str, gp_url: str, **console: Any) -> Path:
    """The configuration file: console on (plain-http cookies: loopback), the inbox destination."""
    path = write_config(
        tmp_path,
        welfare_url,
        endpoints={"gp-record": gp_url},
        service={"console": {"enabled": True, "secure_cookies": False, **console}},
    )
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    for destination in raw["destinations"]:
        if destination["id"] == INBOX:
            destination["type"] = "inbox"
            destination.pop("endpoint", None)
    path.write_text(to_toml(raw), encoding="utf-8")
    return path


def add_account(
    config: Path, username: str, role: Role, organisation: str | None = None, *, totp: bool = False
) -> str | None:
    """Create an account with ``PASSWORD``; its TOTP secret (when asked for)."""
    c = bootstrap.load(config)
    assert c.accounts is not None
    made = accounts.create(
        c.accounts,
        c.store,
        c.clock,
        username=username,
        role=role,
        organisation=organisation,
        password=PASSWORD,
        known_organisations=frozenset(d.id for d in c.config.core.destinations),
        totp=totp,
    )
    return made.totp_secret


def referral(ref: str) -> bytes:
    """The contained fixture referral under HIS number ``ref`` (routes to the inbox)."""
    document = json.loads(case_input("accepted-contained"))
    document["identifier"][0]["value"] = ref
    return json.dumps(document).encode()


@contextmanager
def served(app: Any) -> Iterator[str]:
    """``app`` under uvicorn on a free loopback port; its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            access_log=False)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the service did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
