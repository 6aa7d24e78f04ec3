"""The Task state machine: the transition table of the issue, refusals, idempotence, properties."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from wor_bridge.core.task import (
    DELIVERY_CODES,
    FINISHED,
    REASON_REQUIRED,
    SETTABLE,
    STATUSES,
    Reason,
    Refusal,
    Side,
    TaskState,
    transition,
)

REASON = Reason(code="declined", text="wil geen verdere hulp")

# The legal status changes written out from the issue (DOMAIN.md section 3), not read from the
# module, so a change of the table in code shows up here.
WELFARE_LEGAL = {
    ("requested", "accepted"),
    ("requested", "rejected"),
    ("requested", "in-progress"),
    ("requested", "failed"),
    ("requested", "cancelled"),
    ("accepted", "in-progress"),
    ("accepted", "on-hold"),
    ("accepted", "failed"),
    ("accepted", "completed"),
    ("accepted", "cancelled"),
    ("in-progress", "on-hold"),
    ("in-progress", "completed"),
    ("in-progress", "failed"),
    ("in-progress", "cancelled"),
    ("on-hold", "in-progress"),
    ("on-hold", "failed"),
    ("on-hold", "completed"),
    ("on-hold", "cancelled"),
}
OPEN = ("requested", "accepted", "in-progress", "on-hold")
GP_LEGAL = {(s, "cancelled") for s in OPEN} | {
    (s, "entered-in-error") for s in STATUSES if s != "entered-in-error"
}
LEGAL: dict[Side, set[tuple[str, str]]] = {"welfare": WELFARE_LEGAL, "gp": GP_LEGAL}
SETTABLE_BY_ISSUE: dict[Side, set[str]] = {
    "gp": {"requested", "cancelled", "entered-in-error"},
    "welfare": {
        "accepted",
        "rejected",
        "in-progress",
        "on-hold",
        "failed",
        "completed",
        "cancelled",
    },
}
CHANGES = [
    (side, current, target)
    for side in ("welfare", "gp")
    for current, target in itertools.product(STATUSES, STATUSES)
    if current != target
]


def _at(status: str) -> TaskState:
    """A Task in ``status``, with a reason where that status needs one."""
    return TaskState(status=status, reason=REASON if status in REASON_REQUIRED else None)


def _refused(result: TaskState | Refusal) -> Refusal:
    assert isinstance(result, Refusal), f"expected a refusal, got {result}"
    return result


@pytest.mark.parametrize(("current", "target"), sorted(WELFARE_LEGAL))
def test_welfare_side_makes_every_legal_transition_of_the_issue(current: str, target: str) -> None:
    """Every welfare-side transition the issue lists is accepted and lands on the target status."""
    result = transition(_at(current), "welfare", target, None, REASON)
    assert isinstance(result, TaskState), result
    assert result.status == target


@pytest.mark.parametrize(("side", "current", "target"), CHANGES)
def test_transition_table_is_exactly_the_issue_table(side: Side, current: str, target: str) -> None:
    """A status change is accepted iff the issue allows it; otherwise 422 (side) or 409 (order)."""
    result = transition(_at(current), side, target, None, REASON)
    if (current, target) in LEGAL[side]:
        assert isinstance(result, TaskState), result
        assert result.status == target
    elif target not in SETTABLE_BY_ISSUE[side]:
        refusal = _refused(result)
        assert (refusal.http_status, refusal.code) == (422, "business-rule")
    else:
        refusal = _refused(result)
        assert (refusal.http_status, refusal.code) == (409, "conflict")
        assert current in refusal.message
        assert target in refusal.message


@pytest.mark.parametrize("current", OPEN)
@pytest.mark.parametrize("target", ["cancelled", "entered-in-error"])
def test_gp_side_may_cancel_or_mark_in_error_an_open_task(current: str, target: str) -> None:
    """The GP side sets cancelled (with a reason) and entered-in-error on a Task still open."""
    result = transition(_at(current), "gp", target, None, Reason(code="gp-withdrew"))
    assert isinstance(result, TaskState), result
    assert result.status == target


@pytest.mark.parametrize("target", ["accepted", "completed", "in-progress", "rejected", "on-hold"])
def test_gp_side_may_not_set_welfare_statuses(target: str) -> None:
    """The GP side setting accepted/completed/... is a 422 business-rule refusal naming the side."""
    refusal = _refused(transition(TaskState(), "gp", target, None, REASON))
    assert (refusal.http_status, refusal.code) == (422, "business-rule")
    assert "gp" in refusal.message
    assert target in refusal.message


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (current, target)
        for current in ("requested", "accepted", "in-progress", "on-hold", "completed")
        for target in ("entered-in-error", "requested")
        if current != target
    ],
)
def test_welfare_side_may_not_set_gp_statuses(current: str, target: str) -> None:
    """The welfare side setting entered-in-error or requested is a 422 business-rule refusal."""
    refusal = _refused(transition(_at(current), "welfare", target, None, REASON))
    assert (refusal.http_status, refusal.code) == (422, "business-rule")
    assert "welfare" in refusal.message


@pytest.mark.parametrize(
    ("side", "current", "status", "business_status", "reason"),
    [
        pytest.param(
            "welfare",
            TaskState(business_status="sent"),
            "requested",
            "received",
            None,
            id="welfare-sets-requested",
        ),
        pytest.param(
            "gp",
            TaskState("in-progress", "first-contact"),
            "in-progress",
            "activity-started",
            None,
            id="gp-sets-in-progress-milestone",
        ),
        pytest.param(
            "gp",
            TaskState("on-hold", None, REASON),
            "on-hold",
            None,
            Reason(text="andere reden"),
            id="gp-sets-on-hold-reason",
        ),
    ],
)
def test_a_side_cannot_change_a_task_through_a_status_it_may_not_set(
    side: Side,
    current: TaskState,
    status: str,
    business_status: str | None,
    reason: Reason | None,
) -> None:
    """Naming the current status does not bypass the side rule when the update changes the Task."""
    refusal = _refused(transition(current, side, status, business_status, reason))
    assert (refusal.http_status, refusal.code) == (422, "business-rule")


@pytest.mark.parametrize(
    ("current", "target"), [("requested", "rejected"), ("accepted", "on-hold")]
)
@pytest.mark.parametrize("reason", [None, Reason(), Reason(code="", text="")])
def test_welfare_reason_required(current: str, target: str, reason: Reason | None) -> None:
    """rejected/on-hold without a statusReason is 422 required, naming both statuses."""
    refusal = _refused(transition(_at(current), "welfare", target, None, reason))
    assert (refusal.http_status, refusal.code) == (422, "required")
    assert current in refusal.message
    assert target in refusal.message


@pytest.mark.parametrize(("side", "target"), [("welfare", "failed"), ("gp", "cancelled")])
def test_failed_and_cancelled_need_a_reason(side: Side, target: str) -> None:
    """failed and cancelled without a statusReason are 422 required, naming both statuses."""
    refusal = _refused(transition(TaskState("in-progress"), side, target, None, None))
    assert (refusal.http_status, refusal.code) == (422, "required")
    assert "in-progress" in refusal.message
    assert target in refusal.message


@pytest.mark.parametrize("reason", [Reason(code="not-reachable"), Reason(text="niet bereikbaar")])
def test_a_code_or_a_text_is_enough_as_reason(reason: Reason) -> None:
    """A statusReason with only a code, or only a text, satisfies the requirement and is kept."""
    result = transition(TaskState("in-progress"), "welfare", "failed", None, reason)
    assert result == TaskState("failed", None, reason)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("completed", "in-progress"),
        ("in-progress", "accepted"),
        ("rejected", "accepted"),
        ("cancelled", "completed"),
        ("failed", "in-progress"),
        ("on-hold", "accepted"),
    ],
)
def test_illegal_transition_is_a_conflict_naming_both_statuses(current: str, target: str) -> None:
    """An illegal (e.g. late, out-of-order) transition is a 409 naming current and target status."""
    refusal = _refused(transition(_at(current), "welfare", target, None, REASON))
    assert (refusal.http_status, refusal.code) == (409, "conflict")
    assert f"is {current}" in refusal.message
    assert target in refusal.message.replace(f"is {current}", "")


@pytest.mark.parametrize("status", ["ready", "received", "draft", "done", ""])
def test_unknown_or_excluded_status_is_refused(status: str) -> None:
    """ready/received (excluded by SDOH) and unknown statuses are 422 code-invalid."""
    for side in ("gp", "welfare"):
        refusal = _refused(transition(TaskState(), side, status, None, REASON))
        assert (refusal.http_status, refusal.code) == (422, "code-invalid")


@pytest.mark.parametrize(
    ("current", "update"),
    [
        (TaskState(), ("welfare", "accepted", "waiting-list", None)),
        (TaskState("accepted"), ("welfare", "in-progress", "first-contact", None)),
        (TaskState("in-progress"), ("welfare", "on-hold", None, REASON)),
        (
            TaskState("in-progress"),
            ("welfare", "completed", "closed", Reason("completed-activity")),
        ),
        (TaskState("accepted"), ("gp", "cancelled", None, Reason("gp-withdrew"))),
        (TaskState("completed"), ("gp", "entered-in-error", None, None)),
    ],
)
def test_same_update_twice_has_one_effect(
    current: TaskState, update: tuple[Side, str, str | None, Reason | None]
) -> None:
    """Applying the same update a second time is accepted and leaves the state unchanged."""
    once = transition(current, *update)
    assert isinstance(once, TaskState), once
    assert transition(once, *update) == once


def test_milestone_only_update_keeps_status_and_reason() -> None:
    """A milestone-only update (status None, first-contact) keeps status and reason."""
    current = TaskState("in-progress", "appointment-planned")
    assert transition(current, "welfare", None, "first-contact") == TaskState(
        "in-progress", "first-contact"
    )
    held = TaskState("on-hold", None, REASON)
    assert transition(held, "welfare", None, "conversations") == TaskState(
        "on-hold", "conversations", REASON
    )


def test_status_change_clears_old_milestone_and_reason() -> None:
    """Leaving on-hold without new values drops the on-hold reason and milestone."""
    held = TaskState("on-hold", "conversations", REASON)
    assert transition(held, "welfare", "in-progress") == TaskState("in-progress")


@pytest.mark.parametrize("finished", sorted(FINISHED))
def test_finished_task_refuses_new_milestones(finished: str) -> None:
    """A finished Task refuses a different milestone or reason with 409 naming its status."""
    refusal = _refused(transition(_at(finished), "welfare", None, "waiting-list"))
    assert (refusal.http_status, refusal.code) == (409, "conflict")
    assert finished in refusal.message
    other = Reason(text="iets anders")
    refusal = _refused(transition(_at(finished), "welfare", finished, None, other))
    # naming a status the welfare side may not set is refused before the order is looked at
    assert refusal.http_status == (409 if finished in SETTABLE["welfare"] else 422)


def test_refusal_messages_carry_no_free_text() -> None:
    """Refusal messages never echo the reason text sent with the update."""
    canary = Reason(text="CANARYPATIENTTEXT")
    for side, current, target in CHANGES:
        result = transition(_at(current), side, target, "first-contact", canary)
        if isinstance(result, Refusal):
            assert "CANARY" not in result.message


# --- properties -------------------------------------------------------------------------------

sides = st.sampled_from(["gp", "welfare"])
statuses = st.one_of(st.none(), st.sampled_from([*STATUSES, "ready", "received", "draft"]))
business = st.one_of(
    st.none(), st.sampled_from(["sent", "received", "waiting-list", "first-contact", "closed"])
)
reasons = st.one_of(
    st.none(),
    st.builds(
        Reason,
        st.one_of(st.none(), st.sampled_from(["", "declined", "not-reachable", "gp-withdrew"])),
        st.one_of(st.none(), st.sampled_from(["", "ziek", "verhuisd"])),
    ),
)
updates = st.tuples(sides, statuses, business, reasons)


@hsettings(max_examples=400)
@given(st.lists(updates, max_size=25))
def test_any_update_sequence_keeps_the_invariants(
    sequence: list[tuple[Side, str | None, str | None, Reason | None]],
) -> None:
    """Any update sequence: valid status, finished stays (bar entered-in-error), reasons kept."""
    state = TaskState()
    for update in sequence:
        result = transition(state, *update)
        if isinstance(result, Refusal):
            assert result.http_status in (409, 422)
            continue
        assert result.status in STATUSES
        assert result.status not in ("ready", "received")
        if state.status == "entered-in-error":
            assert result == state
        elif state.status in FINISHED:
            assert result.status in (state.status, "entered-in-error")
            if result.status == state.status:
                assert result == state
        if result.status in REASON_REQUIRED:
            assert result.reason is not None
            assert result.reason.code or result.reason.text
        assert transition(result, *update) == result
        state = result


def test_polling_may_jump_along_the_table_but_never_backwards() -> None:
    """With jump (polling), requested -> completed is admitted; completed -> accepted never is."""
    assert transition(TaskState(), "welfare", "completed", jump=True) == TaskState("completed")
    assert isinstance(transition(TaskState(), "welfare", "completed"), Refusal)
    done = TaskState("completed")
    refused = transition(done, "welfare", "accepted", jump=True)
    assert isinstance(refused, Refusal)
    assert refused.http_status == 409
    held = transition(TaskState(), "welfare", "on-hold", jump=True)
    assert isinstance(held, Refusal)
    assert held.code == "required"


def test_follow_up_may_follow_completion() -> None:
    """The 3/6-month follow-up milestone is accepted on a completed Task, nothing else moves."""
    done = TaskState("completed", "closed")
    assert transition(done, "welfare", None, "follow-up") == TaskState("completed", "follow-up")
    assert isinstance(
        transition(TaskState("failed", None, REASON), "welfare", None, "follow-up"), Refusal
    )


@pytest.mark.parametrize("code", sorted(DELIVERY_CODES))
@pytest.mark.parametrize("side", ["gp", "welfare"])
def test_delivery_codes_are_no_milestones(side: Side, code: str) -> None:
    """The bridge's delivery codes in an update are ignored, from either side."""
    target = "cancelled" if side == "gp" else "accepted"
    result = transition(TaskState(), side, target, code, REASON)
    assert isinstance(result, TaskState), result
    assert (result.status, result.business_status) == (target, None)


def test_gp_side_may_send_back_the_current_milestone_unchanged() -> None:
    """The GP side may send the current milestone back unchanged (kept), never a new one."""
    current = TaskState("in-progress", "first-contact")
    result = transition(current, "gp", "cancelled", "first-contact", REASON)
    assert result == TaskState("cancelled", "first-contact", REASON)
    assert transition(result, "gp", "cancelled", "first-contact", REASON) == result
    refused = _refused(transition(current, "gp", "cancelled", "closed", REASON))
    assert (refused.http_status, refused.message) == (422, "the gp side does not report milestones")
