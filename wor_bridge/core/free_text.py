"""Length limits on free text from the welfare side: status reason, coach name, note.

Pure. Limits are counted in characters (``feedback.reason_max_chars``, ``coach_max_chars``,
``note_max_chars``). An over-long value is refused with its location in the sender's message:
never shortened (a cut note can change its meaning) and never repeated (only its length is).
Each channel says where it carries the three texts (``Places``).
"""

from __future__ import annotations

from dataclasses import dataclass

from wor_bridge.core.feedback import Feedback
from wor_bridge.core.settings import FeedbackSettings
from wor_bridge.errors import Issue


@dataclass(frozen=True, slots=True)
class Places:
    """Where a channel carries each free text (FHIRPath, or the sender's field)."""

    reason: str
    coach: str
    note: str


def task(location: str = "Task") -> Places:
    """A FHIR Task (R4 or STU3) at ``location``, as the welfare side PUTs, PATCHes, posts in a
    Bundle or is polled for it (its free text is ``statusReason.text``)."""
    return Places(f"{location}.statusReason.text", f"{location}.owner", f"{location}.note")


def observation(location: str) -> Places:
    """A feedback Observation at ``location`` (its note is ``valueString``)."""
    return Places(f"{location}.note.text", f"{location}.performer", f"{location}.valueString")


def too_long(feedback: Feedback, limits: FeedbackSettings, where: Places) -> Issue | None:
    """The first free text of ``feedback`` over its limit, as a ``too-long`` issue; else None."""
    texts = [
        (where.reason, feedback.reason_text, limits.reason_max_chars),
        (where.coach, feedback.coach.name if feedback.coach else None, limits.coach_max_chars),
        *[
            (where.note, str(i.value), limits.note_max_chars)
            for i in feedback.items
            if i.kind == "note" and isinstance(i.value, str)
        ],
    ]
    for location, text, limit in texts:
        if text is not None and len(text) > limit:
            return Issue(
                "too-long",
                location,
                f"must be at most {limit} characters (got {len(text)} characters)",
            )
    return None
