"""The console's sign-in and session rules over real HTTP (uvicorn on loopback, SQLite store):
CSRF, session fixation, tenancy of the inbox, brute force, idle timeout, headers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
import requests

from tests.console_world import HIS, INBOX, PASSWORD, add_account, console_config, referral, served
from wor_bridge import bootstrap
from wor_bridge.demo.fhir_server import SimulatedFhirServer
from wor_bridge.service.app import create_app

FHIR_JSON = "application/fhir+json"


def _token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def sign_in(
    base: str, username: str, password: str = PASSWORD, code: str = ""
) -> tuple[requests.Session, requests.Response]:
    """A browser-like session that signed in (the answer to the sign-in POST, not followed)."""
    browser = requests.Session()
    form = browser.get(f"{base}/console/login", timeout=10)
    answer = browser.post(
        f"{base}/console/login",
        data={"csrf": _token(form.text), "username": username, "password": password, "code": code},
        allow_redirects=False,
        timeout=10,
    )
    return browser, answer


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The console on a loopback port with a coach of the inbox, a coach of another
    organisation, an operator, and one referral in the inbox."""
    welfare = SimulatedFhirServer("/fhir").start()
    gp = SimulatedFhirServer("/gp").start()
    config = console_config(tmp_path, welfare.base_url, gp.base_url, login_max_failures=3)
    add_account(config, "coach.a", "coach", INBOX)
    add_account(config, "coach.b", "coach", "welzijn-rivierenland")
    add_account(config, "operator.a", "operator")
    components = bootstrap.load(config)
    app = create_app(components, start_dispatcher=False)
    try:
        with served(app) as base:
            pushed = requests.post(
                f"{base}/fhir/r4/ServiceRequest",
                data=referral("CONSOLE-1"),
                headers={**HIS, "Content-Type": FHIR_JSON},
                timeout=10,
            )
            assert pushed.status_code == 201
            task = pushed.headers["location"].split("/_history/")[0].rsplit("/", 1)[-1]
            yield {"base": base, "task": task, "config": config, "components": components}
    finally:
        welfare.stop()
        gp.stop()


def test_a_coach_signs_in_and_sees_the_inbox_with_strict_headers(world: dict[str, Any]) -> None:
    """Sign-in gives a 303 to the inbox and an HttpOnly SameSite=Strict cookie; pages carry CSP."""
    browser, answer = sign_in(world["base"], "coach.a")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/inbox"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    page = browser.get(f"{world['base']}/console/inbox", timeout=10)
    assert page.status_code == 200
    assert world["task"] in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "<script" not in page.text


def test_a_form_without_the_session_csrf_token_is_refused(world: dict[str, Any]) -> None:
    """A POST with a wrong or missing CSRF token is 403 and changes nothing."""
    browser, _ = sign_in(world["base"], "coach.a")
    url = f"{world['base']}/console/inbox/{world['task']}/accept"
    for data in ({"csrf": "forged"}, {}):
        answer = browser.post(url, data=data, allow_redirects=False, timeout=10)
        assert answer.status_code == 403
    task = world["components"].store.get_task(world["task"])
    assert task.status == "requested"


def test_a_sign_in_form_without_its_cookie_token_is_refused(world: dict[str, Any]) -> None:
    """Login CSRF: a sign-in POST whose token does not match the cookie is 403, no session."""
    answer = requests.post(
        f"{world['base']}/console/login",
        data={"csrf": "x", "username": "coach.a", "password": PASSWORD},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 403
    assert "wb_session" not in answer.headers.get("set-cookie", "")


def test_a_session_id_set_before_sign_in_is_never_the_signed_in_one(
    world: dict[str, Any],
) -> None:
    """Session fixation: sign-in issues a new id; the planted one opens nothing afterwards."""
    base = world["base"]
    browser = requests.Session()
    browser.cookies.set("wb_session", "planted-by-an-attacker", path="/")
    form = browser.get(f"{base}/console/login", timeout=10)
    answer = browser.post(
        f"{base}/console/login",
        data={"csrf": _token(form.text), "username": "coach.a", "password": PASSWORD},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 303
    new = answer.cookies.get("wb_session")
    assert new
    assert new != "planted-by-an-attacker"
    attacker = requests.Session()
    attacker.cookies.set("wb_session", "planted-by-an-attacker", path="/")
    page = attacker.get(f"{base}/console/inbox", allow_redirects=False, timeout=10)
    assert page.status_code == 303
    assert page.headers["location"] == "/console/login"


def test_another_organisations_referral_by_url_is_not_found(world: dict[str, Any]) -> None:
    """A coach of another organisation gets 404 for the referral, read or write, and the try
    is audited naming the user."""
    browser, _ = sign_in(world["base"], "coach.b")
    page = browser.get(f"{world['base']}/console/inbox/{world['task']}", timeout=10)
    assert page.status_code == 404
    unknown = browser.get(f"{world['base']}/console/inbox/no-such-task", timeout=10)
    assert unknown.status_code == 404
    inbox = browser.get(f"{world['base']}/console/inbox", timeout=10)
    token = _token(inbox.text)
    act = browser.post(
        f"{world['base']}/console/inbox/{world['task']}/accept", data={"csrf": token}, timeout=10
    )
    assert act.status_code == 404
    assert world["components"].store.get_task(world["task"]).status == "requested"
    rows = world["components"].audit.find_audit(
        __import__("wor_bridge.records", fromlist=["AuditQuery"]).AuditQuery(
            object_id=world["task"], event="referral_read"
        )
    )
    assert any(r.event.user == "console:coach.b" and r.event.outcome == "not-found" for r in rows)


def test_an_operator_does_not_see_coach_pages_and_a_coach_not_operator_pages(
    world: dict[str, Any],
) -> None:
    """Roles: each role's pages answer 404 to the other role."""
    coach, _ = sign_in(world["base"], "coach.a")
    operator, _ = sign_in(world["base"], "operator.a")
    assert coach.get(f"{world['base']}/console/outbox", timeout=10).status_code == 404
    assert operator.get(f"{world['base']}/console/inbox", timeout=10).status_code == 404


def test_brute_force_sign_in_is_refused_even_with_the_right_password(
    world: dict[str, Any],
) -> None:
    """After the allowed failures for a username, even the right password is refused (429)."""
    for _ in range(3):
        _, answer = sign_in(world["base"], "coach.a", "wrong password guess")
        assert answer.status_code == 401
    _, answer = sign_in(world["base"], "coach.a")
    assert answer.status_code == 429
    assert "Retry-After" in answer.headers
    _, other = sign_in(world["base"], "operator.a")
    assert other.status_code == 303


def test_an_unknown_user_and_a_wrong_password_get_the_same_answer(world: dict[str, Any]) -> None:
    """The refusal never says which part was wrong."""
    _, unknown = sign_in(world["base"], "nobody.here", "whatever password")
    _, wrong = sign_in(world["base"], "operator.a", "whatever password")
    assert unknown.status_code == wrong.status_code == 401
    assert unknown.text.replace(_token(unknown.text), "") == wrong.text.replace(
        _token(wrong.text), ""
    )


def test_sign_out_ends_the_session(world: dict[str, Any]) -> None:
    """After sign-out the old cookie opens nothing."""
    browser, answer = sign_in(world["base"], "coach.a")
    cookie = answer.cookies.get("wb_session")
    page = browser.get(f"{world['base']}/console/inbox", timeout=10)
    browser.post(f"{world['base']}/console/logout", data={"csrf": _token(page.text)}, timeout=10)
    replay = requests.get(
        f"{world['base']}/console/inbox",
        cookies={"wb_session": cookie},
        allow_redirects=False,
        timeout=10,
    )
    assert replay.status_code == 303


def test_totp_is_required_when_set(tmp_path: Path, world: dict[str, Any]) -> None:
    """An account with TOTP signs in with the current code only."""
    secret = add_account(world["config"], "operator.totp", "operator", totp=True)
    assert secret is not None
    _, without = sign_in(world["base"], "operator.totp")
    assert without.status_code == 401
    _, wrong = sign_in(world["base"], "operator.totp", code="000000")
    assert wrong.status_code == 401
    _, right = sign_in(world["base"], "operator.totp", code=pyotp.TOTP(secret).now())
    assert right.status_code == 303


def test_plain_http_cookies_are_refused_off_loopback(tmp_path: Path) -> None:
    """secure_cookies = false on a non-loopback host stops the start-up (ConfigError)."""
    from tests.service_harness import write_config  # noqa: PLC0415
    from wor_bridge.errors import ConfigError  # noqa: PLC0415

    config = write_config(
        tmp_path,
        "http://127.0.0.1:9/fhir",
        service={"host": "0.0.0.0", "console": {"enabled": True, "secure_cookies": False}},
    )
    with pytest.raises(ConfigError, match="loopback"):
        create_app(bootstrap.load(config), start_dispatcher=False)


def test_with_secure_cookies_the_cookie_is_secure_and_host_prefixed(tmp_path: Path) -> None:
    """The default: ``__Host-wb_session`` with Secure, HttpOnly, SameSite=Strict, Path=/."""
    from starlette.responses import Response  # noqa: PLC0415

    from wor_bridge.console import web  # noqa: PLC0415
    from wor_bridge.core.account import ConsoleSettings  # noqa: PLC0415

    response = Response()
    web.set_session_cookie(response, ConsoleSettings(), "abc")
    cookie = response.headers["set-cookie"]
    assert cookie.startswith("__Host-wb_session=abc;")
    for part in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert part.lower() in cookie.lower()
    assert "domain" not in cookie.lower()
