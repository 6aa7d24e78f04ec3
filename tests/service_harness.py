"""Helpers to run the real ``wor-bridge serve`` as a subprocess against a simulated receiver.

- ``write_config`` writes a temporary TOML configuration (absolute mappings_dir, a store in the
  temp dir, every destination pointed at the simulated receiver, quick retries);
- ``ServiceProcess`` starts the service on a free loopback port (or a port chosen beforehand),
  waits for ``/healthz`` (over HTTPS with a client certificate when the service serves mutual
  TLS), stops it with SIGTERM or SIGKILL and keeps everything it wrote (stdout and the JSON logs
  on stderr) out of the test output, for assertions;
- ``run_cli`` runs the ``wor-bridge`` CLI with the same configuration and environment;
- ``receiver`` is a context manager around ``SimulatedFhirServer``.

Nothing here prints process output or response bodies: they may hold patient data.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import requests

from tests.cases import PATIENT_VALUES, case_input
from wor_bridge.demo.credentials import demo_configuration
from wor_bridge.demo.fhir_server import SimulatedFhirServer

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "config" / "wor-bridge.toml"
DEADLINE_S = 20.0

# The clear keys of the example clients (config/wor-bridge.toml stores only their SHA-256).
HIS_KEY = "example-his-key"
ADMIN_KEY = "example-admin-key"
# A client configured by the tests with task:read only.
READER_KEY = "test-reader-key"
FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
# The ServiceRequest identifier value of the accepted-contained family of fixtures.
FIXTURE_REFERRAL_ID = b"VW-2026-0001"

T = TypeVar("T")


def auth(key: str, content_type: str | None = None) -> dict[str, str]:
    """Request headers with ``Authorization: Bearer key`` (and a Content-Type)."""
    headers = {"Authorization": f"Bearer {key}"}
    if content_type:
        headers["Content-Type"] = content_type
    return headers


def client(client_id: str, key: str, scopes: list[str], **extra: Any) -> dict[str, Any]:
    """A ``[[clients]]`` entry for ``key`` (stored as its SHA-256, as in production)."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()
    return {"id": client_id, "key_sha256": digest, "scopes": scopes, **extra}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def wait_until(
    check: Callable[[], T | None],
    what: str,
    timeout_s: float = DEADLINE_S,
    interval_s: float = 0.05,
) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


# --- configuration ----------------------------------------------------------------------------


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _toml_table(table: dict[str, Any], prefix: tuple[str, ...], out: list[str]) -> None:
    """Scalars first, then sub-tables, then arrays of tables (valid TOML for any nesting)."""
    for key, value in table.items():
        if not isinstance(value, dict) and not _is_table_array(value):
            out.append(f"{json.dumps(key)} = {_toml_value(value)}")
    for key, value in table.items():
        if isinstance(value, dict):
            path = (*prefix, key)
            out.append(f"\n[{'.'.join(json.dumps(p) for p in path)}]")
            _toml_table(value, path, out)
    for key, value in table.items():
        if _is_table_array(value):
            path = (*prefix, key)
            for item in value:
                out.append(f"\n[[{'.'.join(json.dumps(p) for p in path)}]]")
                _toml_table(item, path, out)


def to_toml(data: dict[str, Any]) -> str:
    """``data`` as TOML text."""
    out: list[str] = []
    _toml_table(data, (), out)
    return "\n".join(out) + "\n"


def example_clients() -> list[dict[str, Any]]:
    """The ``[[clients]]`` of the shipped example configuration."""
    return list(tomllib.loads(demo_configuration())["clients"])


def write_config(
    tmp_path: Path,
    endpoint: str,
    *,
    endpoints: dict[str, str] | None = None,
    destination: dict[str, Any] | None = None,
    **overrides: Any,
) -> Path:
    """A TOML config in ``tmp_path`` based on the shipped example; returns its path.

    Every destination's endpoint is ``endpoint`` unless ``endpoints`` names another for its id;
    the GP record (``feedback.gp_record``) is only kept when ``endpoints`` names ``gp-record``.
    and ``destination`` is merged into every destination (e.g. short timeouts for a short
    lease). The store is ``tmp_path/store.sqlite``; retries and the dispatcher are quick.
    ``overrides`` are merged section by section (``service={"burst": 2}``); lists such as
    ``clients`` replace the example's.
    """
    raw = tomllib.loads(demo_configuration())
    raw["mappings_dir"] = str(REPO / "mappings")
    chosen = endpoints or {}
    if "gp-record" not in chosen:
        # no GP record unless a test gives it one: feedback and deadline alerts then stay out
        # of the outbox, so referral deliveries are all the receiver sees
        raw.get("feedback", {}).pop("gp_record", None)
    raw["destinations"] = [
        {**d, "endpoint": chosen.get(d["id"], endpoint), **(destination or {})}
        for d in raw["destinations"]
    ]
    defaults = {
        "service": {"port": 0, "dispatcher_interval_s": 0.2},
        "store": {"path": str(tmp_path / "store.sqlite")},
        "delivery": {"base_s": 0.1, "cap_s": 2.0},
    }
    raw = _merge(_merge(raw, defaults), overrides)
    path = tmp_path / "wor-bridge-test.toml"
    path.write_text(to_toml(raw), encoding="utf-8")
    return path


def store_path(config: Path) -> Path:
    """The SQLite file a config written by ``write_config`` uses."""
    return Path(tomllib.loads(config.read_text(encoding="utf-8"))["store"]["path"])


def audit_rows(config: Path, event: str | None = None) -> list[dict[str, Any]]:
    """Rows of the store's audit table (optionally of one event), oldest first."""
    with contextlib.closing(sqlite3.connect(store_path(config), timeout=10)) as conn:
        conn.row_factory = sqlite3.Row
        where, params = ("", ()) if event is None else (" WHERE event = ?", (event,))
        rows = conn.execute(f"SELECT * FROM audit{where} ORDER BY id", params).fetchall()
    return [dict(r) for r in rows]


def outbox_states(config: Path) -> list[tuple[Any, ...]]:
    """(id, state, attempts, lease seconds left, last status, last error) per referral delivery.

    Ids, states and codes only (no payload): safe to show in a failure message. Messages to the
    GP record (feedback ``gp|...``, deadline alerts ``alert|...``) are left out.
    """
    now = time.time()
    with contextlib.closing(sqlite3.connect(store_path(config), timeout=10)) as conn:
        rows = conn.execute(
            "SELECT id, state, attempts, lease_until, last_status, last_error FROM outbox"
            " WHERE idempotency_key NOT LIKE 'gp|%' AND idempotency_key NOT LIKE 'alert|%'"
            " ORDER BY id"
        ).fetchall()
    return [
        (i, state, n, None if lease is None else round(lease - now, 1), status, error)
        for i, state, n, lease, status, error in rows
    ]


# --- processes --------------------------------------------------------------------------------


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The test's environment without WOR_BRIDGE_* settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WOR_BRIDGE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class _Lines:
    """Collects the lines a pipe yields, in a background thread."""

    def __init__(self, pipe: IO[bytes], into: list[str]) -> None:
        self._pipe = pipe
        self._into = into
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for raw in iter(self._pipe.readline, b""):
            self._into.append(raw.decode("utf-8", errors="replace").rstrip("\n"))

    def close(self) -> None:
        self._thread.join(10)
        self._pipe.close()


class ServiceProcess:
    """``python -m wor_bridge.cli serve --config ...`` on a free port; restartable.

    ``stderr_lines`` and ``stdout_lines`` accumulate over every run of this object.

    For a service with ``[service.tls]``: ``scheme="https"``, ``verify`` (the CA file that issued
    the server certificate; always pass it, REQUESTS_CA_BUNDLE may be set) and ``cert`` (a client
    certificate and key, when the service requires one) are used for the ``/healthz`` check.
    ``port`` fixes the port of every run (a configuration that names its own URL, such as
    ``[pull] base_url``, needs it before the start); by default each run draws a free one.
    """

    def __init__(
        self,
        config: Path,
        env: dict[str, str] | None = None,
        *,
        port: int | None = None,
        scheme: str = "http",
        verify: str | bool | None = None,
        cert: tuple[str, str] | None = None,
    ) -> None:
        if scheme not in ("http", "https"):
            raise ValueError("scheme must be http or https")
        self.config = config
        self.env = dict(env or {})
        self.scheme = scheme
        self.verify = verify
        self.cert = cert
        self._fixed_port = port
        self.port = 0
        self.stderr_lines: list[str] = []
        self.stdout_lines: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None
        self._readers: list[_Lines] = []

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (``https://`` with TLS) of the current run."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The process id of the current run (None before the first start)."""
        return None if self._proc is None else self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit status of the current run (None while it runs)."""
        return None if self._proc is None else self._proc.poll()

    def start(
        self, extra_env: dict[str, str] | None = None, *, wait: bool = True
    ) -> ServiceProcess:
        """Start a run (``extra_env`` for this run only) and wait for /healthz unless told not to.

        Use ``wait=False`` when the run may end on its own at once (a fail point).
        """
        if self._proc is not None and self._proc.poll() is None:
            raise RuntimeError("the service is already running")
        self._release()
        self.port = self._fixed_port or free_port()
        env = _clean_env({**self.env, **(extra_env or {})})
        env["WOR_BRIDGE_SERVICE__PORT"] = str(self.port)
        if self._fixed_port is None:  # absolute links name this run's URL (a fixed port's
            env.setdefault("WOR_BRIDGE_PULL__BASE_URL", self.base_url)  # config names its own)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "wor_bridge.cli", "serve", "--config", str(self.config)],
            cwd=self.config.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self._proc.stdout is not None
        assert self._proc.stderr is not None
        self._readers = [
            _Lines(self._proc.stdout, self.stdout_lines),
            _Lines(self._proc.stderr, self.stderr_lines),
        ]
        if wait:
            wait_until(self._healthy, "the service to answer /healthz")
        return self

    def _healthy(self) -> bool:
        if self._proc is not None and self._proc.poll() is not None:
            # start-up output holds configuration facts only, never patient data
            tail = "\n".join(self.stderr_lines[-10:])
            raise AssertionError(f"the service exited with {self._proc.returncode}:\n{tail}")
        tls: dict[str, Any] = {}
        if self.verify is not None:
            tls["verify"] = self.verify
        if self.cert is not None:
            tls["cert"] = self.cert
        try:
            with requests.get(f"{self.base_url}/healthz", timeout=1, **tls) as response:
                return response.status_code == 200
        except requests.RequestException:
            return False

    def wait_exit(self, timeout_s: float = DEADLINE_S) -> int:
        """Wait until the current run has ended; its exit status."""
        assert self._proc is not None
        code = self._proc.wait(timeout_s)
        self._release()
        return code

    def stop(self, timeout_s: float = DEADLINE_S) -> int | None:
        """SIGTERM and wait (SIGKILL if it does not end in time); the exit status."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout_s)
        code = self._proc.returncode
        self._release()
        return code

    def kill(self) -> int | None:
        """SIGKILL and wait; the exit status."""
        if self._proc is None:
            return None
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(DEADLINE_S)
        code = self._proc.returncode
        self._release()
        return code

    def _release(self) -> None:
        """Close the pipes of an ended run (its output stays in the line lists)."""
        if self._proc is None or self._proc.poll() is None:
            return
        for reader in self._readers:
            reader.close()
        self._readers = []

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``wor-bridge <args>`` with this service's configuration environment."""
        return run_cli(*args, env=self.env, cwd=self.config.parent)

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines on stderr so far, parsed (other lines are skipped)."""
        events = []
        for line in list(self.stderr_lines):
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    events.append(parsed)
        return events


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m wor_bridge.cli <args>`` with output captured (never printed)."""
    return subprocess.run(
        [sys.executable, "-m", "wor_bridge.cli", *args],
        env=_clean_env(env),
        cwd=cwd or REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def running_service(
    config: Path, env: dict[str, str] | None = None, **options: Any
) -> Iterator[ServiceProcess]:
    """A started ServiceProcess, killed afterwards whatever happens.

    ``options`` are ServiceProcess's keyword arguments (``port``, ``scheme``, ``verify``, ``cert``).
    """
    service = ServiceProcess(config, env, **options)
    try:
        yield service.start()
    finally:
        service.kill()


@contextlib.contextmanager
def receiver() -> Iterator[SimulatedFhirServer]:
    """A started SimulatedFhirServer on loopback, stopped afterwards."""
    server = SimulatedFhirServer().start()
    try:
        yield server
    finally:
        server.stop()


# --- small readers ----------------------------------------------------------------------------


def task_id_of(response: requests.Response) -> str:
    """The Task id from a push answer's ``Location: [base]/fhir/r4/Task/{id}/_history/{vid}``."""
    location = response.headers["Location"]
    assert "/fhir/r4/Task/" in location, "Location must name the Task"
    return location.split("/_history/")[0].rsplit("/", 1)[-1]


def business_status(task: dict[str, Any]) -> str:
    """The Task's businessStatus code."""
    return str(task["businessStatus"]["coding"][0]["code"])


def metric_value(text: str, sample: str) -> float | None:
    """The value of one Prometheus sample line (name with labels, exactly), or None."""
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return None


def referral_variant(case: str, referral_id: str) -> bytes:
    """A fixture's input with its ServiceRequest identifier value replaced (JSON or XML).

    The identifier is the referral's business key, so each value is a distinct referral.
    """
    data = case_input(case)
    assert data.count(FIXTURE_REFERRAL_ID) == 1, f"{case} must carry the identifier once"
    return data.replace(FIXTURE_REFERRAL_ID, referral_id.encode())


def service_requests(server: SimulatedFhirServer, referral_id: str) -> list[dict[str, Any]]:
    """The ServiceRequests the receiver holds with this identifier value."""
    return [
        r
        for r in server.resources("ServiceRequest")
        if any(i.get("value") == referral_id for i in r.get("identifier") or [])
    ]


def patient_value_hits(text: str) -> list[int]:
    """Indexes into ``PATIENT_VALUES`` of the values found in ``text`` (never the values)."""
    return [n for n, value in enumerate(PATIENT_VALUES) if value in text]


def posts_received(server: SimulatedFhirServer) -> int:
    """How many transaction POSTs the receiver got (failed ones included)."""
    return sum(1 for method, _ in server.requests() if method == "POST")
