"""The deployment artefacts under ``deploy/`` (issue 13): the systemd unit (checked with
``systemd-analyze verify`` and its offline security score where systemd is installed), the
Containerfile (parsed: no container engine here) with its health check run against the real
service, and the nginx example."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service_harness import ServiceProcess, free_port, receiver, write_config
from wor_bridge.cli.main import build_parser

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "wor-bridge.service"
CONTAINERFILE = DEPLOY / "Containerfile"
NGINX = DEPLOY / "nginx" / "wor-bridge.conf"
SANDBOXING = {
    "ProtectSystem": "strict",
    "NoNewPrivileges": "yes",
    "StateDirectory": "wor-bridge",
    "PrivateTmp": "yes",
    "ProtectHome": "yes",
    "CapabilityBoundingSet": "",
    "PrivateDevices": "yes",
    "RestrictSUIDSGID": "yes",
    "UMask": "0077",
}


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def _instructions() -> list[tuple[str, str]]:
    """The Containerfile as (INSTRUCTION, arguments), continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in CONTAINERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        pending += " " + line.removesuffix("\\").strip()
        if not line.endswith("\\"):
            word, _, rest = pending.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def _final_stage() -> list[tuple[str, str]]:
    steps = _instructions()
    last_from = max(n for n, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_systemd_unit_has_the_sandboxing() -> None:
    """The unit runs as its own user with ProtectSystem=strict, NoNewPrivileges, no capabilities,
    a private /tmp, no /home, its state directory only, and restarts except on usage errors."""
    settings = _unit_settings()
    for key, value in SANDBOXING.items():
        assert settings.get(key) == [value], key
    assert settings["User"] == ["wor-bridge"]
    assert settings["RestartPreventExitStatus"] == ["64"]
    (exec_start,) = settings["ExecStart"]
    argv = shlex.split(exec_start)
    assert build_parser().parse_args(argv[1:]).command == "serve"
    assert "--config" in argv


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_unit_and_rates_it_ok(tmp_path: Path) -> None:
    """``systemd-analyze verify`` has nothing to say about the unit (ExecStart pointed at this
    installation), and its offline security exposure is at most 2.0 ("OK")."""
    program = Path(sys.executable).parent / "wor-bridge"
    text = UNIT.read_text(encoding="utf-8").replace("/opt/wor-bridge/bin/wor-bridge", str(program))
    unit = tmp_path / "wor-bridge.service"
    unit.write_text(text, encoding="utf-8")
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert verify.returncode == 0, verify.stderr
    assert verify.stderr.strip() == ""
    security = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", security.stdout)
    assert found, "systemd-analyze security printed no exposure level"
    assert float(found.group(1)) <= 2.0


def test_containerfile_runs_as_non_root_from_the_lock_with_a_health_check() -> None:
    """Final stage: a numeric non-root USER, the lock installed with hashes and the wheel without
    dependencies, the store on a VOLUME, EXPOSE/HEALTHCHECK on the configured port, /readyz, and a
    command line the CLI accepts; every COPY source exists."""
    stage = _final_stage()
    words = [word for word, _ in stage]
    args = dict(stage)
    user = args["USER"].split(":")[0]
    assert user.isdigit()
    assert int(user) != 0
    assert words.index("USER") > max(n for n, w in enumerate(words) if w == "RUN")
    (install,) = [rest for word, rest in stage if word == "RUN"]
    assert "pip install --no-cache-dir --require-hashes -r /tmp/base.lock" in install
    assert "pip install --no-cache-dir --no-deps /tmp/dist/*.whl" in install
    env = dict(re.findall(r"(WOR_BRIDGE_\w+)=(\S+)", args["ENV"]))
    port = env["WOR_BRIDGE_SERVICE__PORT"]
    assert args["EXPOSE"] == port
    volume = json.loads(args["VOLUME"])
    assert any(env["WOR_BRIDGE_STORE__PATH"].startswith(v + "/") for v in volume)
    assert f"http://127.0.0.1:{port}/readyz" in args["HEALTHCHECK"]
    command = [*json.loads(args["ENTRYPOINT"]), *json.loads(args["CMD"])]
    assert command[0] == "wor-bridge"
    assert build_parser().parse_args(command[1:]).command == "serve"
    for word, rest in _instructions():
        if word == "COPY" and not rest.startswith("--from"):
            for source in rest.split()[:-1]:
                assert (REPO / source).exists(), source


def test_the_containers_health_check_passes_on_a_ready_service_only(tmp_path: Path) -> None:
    """The HEALTHCHECK command exits 0 against the running service and non-zero when nothing
    listens (the command as written, with the port of this test's service)."""
    (_, rest) = next(item for item in _final_stage() if item[0] == "HEALTHCHECK")
    argv = json.loads(rest.split(" CMD ", 1)[1])
    with receiver() as welfare:
        service = ServiceProcess(write_config(tmp_path, welfare.base_url))
        service.start()
        try:
            ready = [a.replace("127.0.0.1:8080", f"127.0.0.1:{service.port}") for a in argv]
            ok = subprocess.run(ready, capture_output=True, check=False, timeout=30)
        finally:
            service.stop()
    down = [a.replace("127.0.0.1:8080", f"127.0.0.1:{free_port()}") for a in argv]
    refused = subprocess.run(down, capture_output=True, check=False, timeout=30)
    assert ok.returncode == 0
    assert refused.returncode != 0


def test_nginx_example_terminates_tls_and_passes_no_certificate_claims() -> None:
    """The proxy example forwards to the loopback service, clears any client-supplied
    certificate header, keeps query strings out of its log and passes mTLS through instead."""
    text = NGINX.read_text(encoding="utf-8")
    assert "proxy_pass http://wor_bridge;" in text
    assert "server 127.0.0.1:8080;" in text
    assert 'proxy_set_header X-SSL-Client-Cert "";' in text
    assert "$request_uri" not in text
    assert "$args" not in text
    assert "ssl_preread" in text or "proxy_pass 127.0.0.1:8443;" in text
