"""Pure delivery rules: classifying answers, Retry-After, redaction, the retry decision, and the
outbox state machine (run against MemoryOutboxStore and SqliteOutboxStore)."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.cases import PATIENT_VALUES
from wor_bridge.adapters.memory_store import MemoryOutboxStore
from wor_bridge.adapters.sqlite_store import SqliteOutboxStore
from wor_bridge.core import outbox
from wor_bridge.core.delivery import (
    Delivered,
    HttpResponse,
    Rejected,
    RetryLater,
    classify_error,
    classify_response,
    parse_retry_after,
    redacted_reason,
)
from wor_bridge.core.outbox import STATES, Decision, RetryPolicy, State, decide
from wor_bridge.ports import OutboxStore
from wor_bridge.records import NewReferral

NOW = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
Json = dict[str, Any]


def response(status: int, body: Any = None, **headers: str) -> HttpResponse:
    """An HttpResponse with a JSON body (bytes kept as they are) and lower-case headers."""
    data = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    return HttpResponse(status, {k.replace("_", "-").lower(): v for k, v in headers.items()}, data)


def operation_outcome(*issues: Any) -> Json:
    """An OperationOutcome with these issues."""
    return {"resourceType": "OperationOutcome", "issue": list(issues)}


def http_date(moment: dt.datetime) -> str:
    """``moment`` as an IMF-fixdate (``Sat, 01 Mar 2025 09:02:00 GMT``)."""
    return email.utils.format_datetime(moment, usegmt=True)


# --- classification -----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status: int) -> None:
    """Every 2xx answer is Delivered with its status."""
    assert classify_response(response(status), NOW) == Delivered(status)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_transient_statuses_retry_later(status: int) -> None:
    """408, 425, 429 and every 5xx are RetryLater with the status kept."""
    outcome = classify_response(response(status), NOW)
    assert isinstance(outcome, RetryLater)
    assert outcome.status == status
    assert outcome.retry_after_s is None
    assert outcome.reason == f"HTTP {status}"


@pytest.mark.parametrize("status", [100, 301, 302, 304, 400, 401, 403, 404, 409, 410, 422, 600])
def test_other_statuses_are_rejected(status: int) -> None:
    """Any other status (other 4xx, redirects, nonsense) is Rejected: resending will not help."""
    outcome = classify_response(response(status, retry_after="5"), NOW)
    assert outcome == Rejected(f"HTTP {status}", status)


def test_retry_after_seconds_is_carried() -> None:
    """A 503 with ``Retry-After: 30`` asks for 30 seconds."""
    outcome = classify_response(response(503, retry_after="30"), NOW)
    assert isinstance(outcome, RetryLater)
    assert outcome.retry_after_s == 30.0


def test_retry_after_http_date_is_carried() -> None:
    """A 429 with an HTTP-date Retry-After asks for the seconds until that date."""
    outcome = classify_response(
        response(429, retry_after=http_date(NOW + dt.timedelta(minutes=2))), NOW
    )
    assert isinstance(outcome, RetryLater)
    assert outcome.retry_after_s == 120.0


@pytest.mark.parametrize("kind", ["timeout", "connection", "tls", "auth"])
def test_no_response_retries_later(kind: str) -> None:
    """A request without a response is RetryLater naming only the kind of failure."""
    assert classify_error(kind) == RetryLater(f"no response ({kind})")


# --- Retry-After --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("120", 120.0),
        ("0", 0.0),
        (" 7 ", 7.0),
        ("", None),
        ("soon", None),
        ("-5", None),
        ("1.5", None),
        ("Sat, 01 Mar 2025 09:01:30 GMT", 90.0),  # IMF-fixdate
        ("Saturday, 01-Mar-25 09:01:30 GMT", 90.0),  # obsolete RFC 850 form
        ("Sat Mar  1 09:01:30 2025", 90.0),  # obsolete asctime form, no zone: UTC
        ("Sat, 01 Mar 2025 10:01:30 +0100", 90.0),  # a numeric zone is honoured
        ("Sat, 01 Mar 2025 08:00:00 GMT", 0.0),  # a date in the past means now
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After is delta-seconds or an HTTP-date (seconds from now, never negative)."""
    assert parse_retry_after(value, NOW) == expected


@given(st.integers(min_value=0, max_value=10**9))
def test_parse_retry_after_delta_seconds_roundtrip(seconds: int) -> None:
    """Any delta-seconds value is read as exactly that many seconds."""
    assert parse_retry_after(str(seconds), NOW) == float(seconds)


@given(st.integers(min_value=-(10**6), max_value=10**8))
def test_parse_retry_after_http_date_roundtrip(offset_s: int) -> None:
    """An HTTP-date ``offset_s`` from now is read as ``max(0, offset_s)`` seconds."""
    value = http_date(NOW + dt.timedelta(seconds=offset_s))
    assert parse_retry_after(value, NOW) == max(0.0, float(offset_s))


@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E)))
def test_parse_retry_after_total_on_ascii(value: str) -> None:
    """Any printable-ASCII header value gives None or a non-negative number, never an error."""
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or seconds >= 0.0


@given(st.text())
@example("²")
def test_parse_retry_after_total_on_any_text(value: str) -> None:
    """Any header value, even a non-ASCII one a server sent in latin-1, never raises."""
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or seconds >= 0.0


# --- redaction ----------------------------------------------------------------------------------


def test_reason_without_body_is_the_status() -> None:
    """With no body the reason is ``HTTP <status>``."""
    assert redacted_reason(response(400)) == "HTTP 400"


def test_reason_lists_issue_codes_once_in_order() -> None:
    """Issue codes appear once each, in order, at most five."""
    codes = ["invalid", "business-rule", "invalid", "required", "value", "structure", "security"]
    body = operation_outcome(*({"severity": "error", "code": c} for c in codes))
    assert redacted_reason(response(422, body)) == (
        "HTTP 422 (invalid, business-rule, required, value, structure)"
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"\xff\xfe\x00garbage",
        b"[]",
        b'"OperationOutcome"',
        {"resourceType": "Patient", "issue": [{"code": "invalid"}]},
        operation_outcome({"code": 42}, {"code": ["invalid"]}, "invalid", None),
        operation_outcome({"code": "not a code"}, {"code": "a;b"}, {"code": "-"}),
        {"resourceType": "OperationOutcome", "issue": None},
        {"resourceType": "OperationOutcome", "issue": {"code": "invalid"}},
    ],
)
def test_reason_ignores_what_is_not_an_issue_code(body: Any) -> None:
    """Bodies that are not JSON, not an OperationOutcome or carry no usable code give the status."""
    assert redacted_reason(response(400, body)) == "HTTP 400"


def test_reason_never_holds_diagnostics() -> None:
    """Diagnostics, details and expressions echoing the patient never reach the reason."""
    echo = " ".join(PATIENT_VALUES)
    body = operation_outcome(
        {
            "severity": "error",
            "code": "invalid",
            "diagnostics": f"Patient {echo} is unknown",
            "details": {"text": echo, "coding": [{"code": "Jansen", "display": echo}]},
            "expression": [f"Patient.name.where(family='{PATIENT_VALUES[3]}')"],
        }
    )
    reason = redacted_reason(response(400, body))
    assert reason == "HTTP 400 (invalid)"
    assert not any(value in reason for value in PATIENT_VALUES)


issue_codes = st.sampled_from(["invalid", "structure", "required", "business-rule", "processing"])
free_text = st.text(min_size=1, max_size=40)


@given(
    status=st.integers(min_value=100, max_value=599),
    issues=st.lists(
        st.fixed_dictionaries(
            {"code": issue_codes},
            optional={
                "diagnostics": free_text,
                "details": st.fixed_dictionaries({"text": free_text}),
                "expression": st.lists(free_text, max_size=2),
                "severity": free_text,
            },
        ),
        max_size=6,
    ),
)
def test_reason_does_not_depend_on_free_text(status: int, issues: list[Json]) -> None:
    """The reason is the same with or without any diagnostics, details or expression text."""
    bare = [{"code": issue["code"]} for issue in issues]
    with_text = redacted_reason(response(status, operation_outcome(*issues)))
    without = redacted_reason(response(status, operation_outcome(*bare)))
    assert with_text == without


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_reason_total_on_arbitrary_bodies(body: bytes) -> None:
    """Any body bytes give ``HTTP <status>...``, never an error."""
    assert redacted_reason(response(500, body)).startswith("HTTP 500")


@given(st.lists(json_values, max_size=4))
def test_reason_total_on_arbitrary_issue_lists(issues: list[Any]) -> None:
    """An OperationOutcome whose issue list holds anything at all gives a reason, never an error."""
    assert redacted_reason(response(400, operation_outcome(*issues))).startswith("HTTP 400")


def test_reason_total_when_issue_is_not_a_list() -> None:
    """An OperationOutcome whose ``issue`` is a number still gives a reason, never an error."""
    assert redacted_reason(response(400, {"resourceType": "OperationOutcome", "issue": 1})) == (
        "HTTP 400"
    )


def test_reason_total_on_deeply_nested_json() -> None:
    """A deeply nested JSON body (well under the 1 MiB cap) gives a reason, never an error."""
    assert redacted_reason(response(502, b"[" * 100_000)) == "HTTP 502"


def test_reason_never_holds_a_name_put_in_the_code() -> None:
    """An issue code that is not a FHIR IssueType (here a patient's name) is not copied."""
    body = operation_outcome({"severity": "error", "code": "Jansen", "diagnostics": "Pieter"})
    reason = redacted_reason(response(400, body))
    assert "Jansen" not in reason


# --- the retry decision -------------------------------------------------------------------------

POLICY = RetryPolicy(base_s=2.0, cap_s=900.0, max_attempts=12, max_age_s=3 * 24 * 3600.0)


def test_delivered_is_delivered_whatever_the_history() -> None:
    """Delivered ends the entry as delivered, even past the attempt and age limits."""
    assert decide(POLICY, Delivered(201), 99, 10**9, 0.5) == Decision("delivered")


def test_rejected_is_dead_at_once() -> None:
    """Rejected is a dead letter on the first attempt."""
    assert decide(POLICY, Rejected("HTTP 400", 400), 1, 0.0, 0.5) == Decision("dead")


def test_retry_with_attempts_left_is_pending_with_backoff() -> None:
    """A transient failure waits ``jitter * min(cap, base * 2**(attempt-1))``."""
    assert decide(POLICY, RetryLater("HTTP 503", 503), 1, 0.0, 0.5) == Decision("pending", 1.0)
    assert decide(POLICY, RetryLater("HTTP 503", 503), 4, 0.0, 0.5) == Decision("pending", 8.0)
    assert decide(POLICY, RetryLater("HTTP 503", 503), 11, 0.0, 0.5) == Decision("pending", 450.0)


def test_last_attempt_is_dead() -> None:
    """The ``max_attempts``-th failed attempt makes a dead letter."""
    assert decide(POLICY, RetryLater("HTTP 503", 503), 12, 0.0, 0.0) == Decision("dead")


def test_too_old_is_dead() -> None:
    """A retry that would fall beyond ``max_age_s`` makes a dead letter."""
    assert decide(POLICY, RetryLater("x"), 2, POLICY.max_age_s - 1.0, 0.9) == Decision("dead")
    assert decide(POLICY, RetryLater("x"), 2, POLICY.max_age_s - 1.0, 0.0) == Decision("pending", 0)


def test_retry_after_beyond_cap_is_capped() -> None:
    """A Retry-After longer than ``cap_s`` waits ``cap_s``."""
    outcome = RetryLater("HTTP 429", 429, retry_after_s=10_000.0)
    assert decide(POLICY, outcome, 1, 0.0, 0.0) == Decision("pending", POLICY.cap_s)


policies = st.builds(
    RetryPolicy,
    base_s=st.floats(min_value=0.01, max_value=100.0),
    cap_s=st.floats(min_value=0.01, max_value=7200.0),
    max_attempts=st.integers(min_value=1, max_value=60),
    max_age_s=st.floats(min_value=1.0, max_value=30 * 24 * 3600.0),
)
retry_afters = st.none() | st.floats(min_value=0.0, max_value=10**7)
outcomes = (
    st.builds(Delivered, st.integers(200, 299))
    | st.builds(Rejected, st.just("HTTP 400"), st.integers(400, 499))
    | st.builds(RetryLater, st.just("HTTP 503"), st.none() | st.integers(500, 599), retry_afters)
)


@given(
    policy=policies,
    outcome=outcomes,
    attempts=st.integers(min_value=1, max_value=100),
    age_s=st.floats(min_value=0.0, max_value=60 * 24 * 3600.0),
    jitter=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_decision_properties(
    policy: RetryPolicy, outcome: Any, attempts: int, age_s: float, jitter: float
) -> None:
    """Delivered->delivered, Rejected->dead, out of attempts->dead; else a delay in [0, cap] that
    honours Retry-After (capped), or dead only when that delay would pass ``max_age_s``."""
    decision = decide(policy, outcome, attempts, age_s, jitter)
    if isinstance(outcome, Delivered):
        assert decision == Decision("delivered")
    elif isinstance(outcome, Rejected) or attempts >= policy.max_attempts:
        assert decision == Decision("dead")
    elif decision.state == "pending":
        assert decision.delay_s is not None
        assert 0.0 <= decision.delay_s <= policy.cap_s
        if outcome.retry_after_s is not None:
            assert decision.delay_s >= min(outcome.retry_after_s, policy.cap_s)
        else:
            assert decision.delay_s <= policy.base_s * 2 ** (attempts - 1)
        assert age_s + decision.delay_s <= policy.max_age_s
    else:
        assert decision == Decision("dead")
        floor = min(outcome.retry_after_s or 0.0, policy.cap_s)
        ceiling = min(policy.cap_s, policy.base_s * 2 ** (attempts - 1))
        assert age_s + max(floor, jitter * ceiling) > policy.max_age_s


def test_decision_with_many_attempts_allowed() -> None:
    """With ``max_attempts`` above 1025 a late retry still waits ``cap_s`` at most."""
    policy = RetryPolicy(max_attempts=5000, max_age_s=10.0**12)
    decision = decide(policy, RetryLater("HTTP 503", 503), 1100, 0.0, 0.5)
    assert decision == Decision("pending", policy.cap_s * 0.5)


def test_idempotency_key_names_referral_and_destination() -> None:
    """The delivery key joins the referral's business key and the destination id."""
    assert (
        outbox.idempotency_key("his|urn:oid:1|VW-1", "welzijn-a") == "his|urn:oid:1|VW-1|welzijn-a"
    )


# --- the outbox state machine never loses an entry ----------------------------------------------

T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
OWNERS = ("worker-a", "worker-b")
KEYS = 8


@dataclass
class Expected:
    """What the model says one outbox entry must look like."""

    key: str
    state: State = "pending"
    attempts: int = 0
    next_at: float = 0.0
    owner: str | None = None
    lease_until: float | None = None


class OutboxMachine(RuleBasedStateMachine):
    """Random add / claim / record / requeue / clock moves against a store and a simple model."""

    kind = "memory"

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="outbox-machine-"))
        self.store: OutboxStore = (
            SqliteOutboxStore(self.folder / "outbox.sqlite")
            if self.kind == "sqlite"
            else MemoryOutboxStore()
        )
        self.clock = 0
        self.ids: dict[str, int] = {}
        self.model: dict[int, Expected] = {}

    def teardown(self) -> None:
        """Close the store and remove its folder."""
        if isinstance(self.store, SqliteOutboxStore):
            self.store.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def now(self) -> dt.datetime:
        """The machine's clock as a datetime."""
        return T0 + dt.timedelta(seconds=self.clock)

    def pick(self, index: int) -> int:
        """An existing entry id chosen by ``index``."""
        ids = sorted(self.model)
        return ids[index % len(ids)]

    @rule(n=st.integers(min_value=0, max_value=KEYS - 1))
    def add(self, n: int) -> None:
        """Add referral ``n``; a known key returns the same entry."""
        key = f"his|ref-{n}|welzijn-a"
        added = self.store.add_referral(
            NewReferral(
                task_id=f"task-{n}",
                idempotency_key=key,
                source_system="his",
                destination="welzijn-a",
                mapping="m@1.0.0",
                patient_id=f"urn:uuid:p-{n}",
                responsible="",
                client_id="c",
                bundle=b"{}",
            ),
            self.now(),
        )
        if key in self.ids:
            assert not added.created
            assert added.outbox_id == self.ids[key]
        else:
            assert added.created
            assert added.outbox_id not in self.model
            self.ids[key] = added.outbox_id
            self.model[added.outbox_id] = Expected(key, next_at=self.clock)

    @rule(
        owner=st.sampled_from(OWNERS),
        limit=st.integers(min_value=0, max_value=4),
        lease_s=st.integers(min_value=1, max_value=120),
    )
    def claim(self, owner: str, limit: int, lease_s: int) -> None:
        """Claim: exactly the due, unleased pending entries, in order, up to ``limit``."""
        due = sorted(
            (
                (e.next_at, i)
                for i, e in self.model.items()
                if e.state == "pending"
                and e.next_at <= self.clock
                and (e.lease_until is None or e.lease_until <= self.clock)
            )
        )[:limit]
        claimed = self.store.claim_due(owner, self.now(), lease_s, limit)
        assert [e.id for e in claimed] == [i for _, i in due]
        for entry in claimed:
            self.model[entry.id].owner = owner
            self.model[entry.id].lease_until = self.clock + lease_s

    @precondition(lambda self: self.model)
    @rule(
        index=st.integers(min_value=0, max_value=KEYS),
        owner=st.sampled_from(OWNERS),
        state=st.sampled_from(STATES),
        delay_s=st.integers(min_value=0, max_value=120),
    )
    def record(self, index: int, owner: str, state: State, delay_s: int) -> None:
        """Record an attempt: accepted only for the lease holder of a pending entry."""
        entry_id = self.pick(index)
        expected = self.model[entry_id]
        holds = expected.owner == owner and expected.state == "pending"
        kept = self.store.record_attempt(
            entry_id,
            owner,
            now=self.now(),
            state=state,
            next_attempt_at=self.now() + dt.timedelta(seconds=delay_s),
            status=503,
            error="HTTP 503",
        )
        assert kept == holds
        if holds:
            expected.state = state
            expected.attempts += 1
            expected.next_at = self.clock + delay_s
            expected.owner = expected.lease_until = None

    @precondition(lambda self: self.model)
    @rule(indexes=st.lists(st.integers(min_value=0, max_value=KEYS), max_size=4))
    def requeue(self, indexes: list[int]) -> None:
        """Requeue some entries (and an unknown id): exactly the dead ones are requeued."""
        chosen = {self.pick(i) for i in indexes}
        finished = {i for i in chosen if self.model[i].state == "dead"}
        results = self.store.requeue([*chosen, 10_000], self.now())
        assert {i for i, why in results.items() if why is None} == finished
        assert results[10_000] == "unknown"
        for entry_id in finished:
            expected = self.model[entry_id]
            expected.state, expected.next_at = "pending", self.clock
            expected.owner = expected.lease_until = None
            expected.attempts = 0

    @rule(seconds=st.integers(min_value=0, max_value=150))
    def advance(self, seconds: int) -> None:
        """Let time pass."""
        self.clock += seconds

    @invariant()
    def every_key_once(self) -> None:
        """Every added key is present exactly once, with the state and attempts the model has."""
        entries = self.store.list_entries(None, 1000)
        keys = Counter(e.idempotency_key for e in entries)
        assert set(keys) == set(self.ids)
        assert all(count == 1 for count in keys.values())
        for entry in entries:
            expected = self.model[entry.id]
            assert entry.idempotency_key == expected.key
            assert (entry.state, entry.attempts) == (expected.state, expected.attempts)
        by_state = sorted(i for s in STATES for i in self.store.entry_ids(s))
        assert by_state == sorted(self.model)


class SqliteOutboxMachine(OutboxMachine):
    """The same machine on a SQLite file."""

    kind = "sqlite"


@pytest.mark.parametrize("machine", [OutboxMachine, SqliteOutboxMachine], ids=["memory", "sqlite"])
def test_outbox_state_machine_never_loses_an_entry(machine: type[OutboxMachine]) -> None:
    """Random add/claim/record/requeue sequences keep every added key present exactly once."""
    run_state_machine_as_test(
        machine, settings=hsettings(max_examples=60, stateful_step_count=30, deadline=None)
    )
