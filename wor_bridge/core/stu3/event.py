"""Events: ``Observation`` and ``Communication``, both directions.

Sources: the HL7 converters ``Observation30_40`` and ``Communication30_40``
(hapifhir/org.hl7.fhir.core). Observation: R4 ``encounter`` ⇄ STU3 ``context``; ``note`` ⇄
``comment`` (first note's text); ``hasMember``/``derivedFrom`` ⇄ ``related`` of that type;
``interpretation`` is single in STU3. STU3 has no ``valueInteger`` (nor component
``valueBoolean``): an integer travels as a dimensionless UCUM Quantity (code ``1``) and such a
Quantity with an integer value comes back as ``valueInteger``. Communication: status
``on-hold``/``stopped`` ⇄ ``suspended``/``aborted``; R4 ``not-done`` ⇄ STU3 ``notDone`` (status
``unknown``); ``statusReason`` ⇄ ``notDoneReason``; ``about`` ⇄ STU3 ``topic`` (references);
``encounter`` ⇄ ``context``; ``instantiatesCanonical`` ⇄ ``definition``.

Lost towards STU3: Observation ``partOf``, ``focus``, ``effectiveInstant``, ``effectiveTiming``,
notes after the first and a note's author/time, interpretations after the first, a component
whose value is a boolean (the whole component); Communication ``instantiatesUri``, ``topic``
(a concept), ``priority``, ``inResponseTo``. Lost towards R4: Observation ``valueAttachment``
and ``related`` of other types.
"""

from __future__ import annotations

from typing import Any, Final

from wor_bridge.core.stu3.element import (
    CanonicalsToReferences,
    Codes,
    Pairs,
    ReferencesToCanonicals,
    Rename,
    Slot,
    Spec,
    context_to_encounter,
    copy_same,
    fit_object,
    lose,
)

UCUM: Final = "http://unitsofmeasure.org"
_RELATED: Final = {"hasMember": "has-member", "derivedFrom": "derived-from"}
_RELATED_R4: Final = {code: name for name, code in _RELATED.items()}
_SAME_EVENT: Final = frozenset({"preparation", "in-progress", "completed", "entered-in-error"})
_EVENT_STATUS: Final = {"on-hold": "suspended", "stopped": "aborted", "unknown": "unknown"}


def _integer_to_quantity(slot: Slot) -> Pairs:
    """An R4 integer value as a dimensionless STU3 Quantity."""
    return [("valueQuantity", {"value": slot.value, "system": UCUM, "code": "1"})]


def _is_integer_quantity(value: Any) -> bool:
    """True for exactly the Quantity ``_integer_to_quantity`` makes."""
    return (
        isinstance(value, dict)
        and set(value) == {"value", "system", "code"}
        and type(value["value"]) is int
        and (value["system"], value["code"]) == (UCUM, "1")
    )


def _quantity_to_r4(slot: Slot) -> Pairs:
    """An integer Quantity back to ``valueInteger``; any other Quantity as it is."""
    if _is_integer_quantity(slot.value):
        return [("valueInteger", slot.value["value"])]
    return copy_same(slot)


def _note_to_comment(slot: Slot) -> Pairs:
    """The first note's text as the STU3 comment; the rest of the notes is lost."""
    notes = slot.value if isinstance(slot.value, list) else []
    for i in range(1, len(notes)):
        slot.walk.lose(f"{slot.path}[{i}]")
    first = notes[0] if notes and isinstance(notes[0], dict) else {}
    for key in first:
        if key != "text":
            slot.walk.lose(f"{slot.path}[0].{key}")
    return [("comment", first["text"])] if "text" in first else []


def _comment_to_note(slot: Slot) -> Pairs:
    """The STU3 comment as one R4 note."""
    return [("note", [{"text": slot.value}])]


def _to_related(slot: Slot) -> Pairs:
    """R4 ``hasMember``/``derivedFrom`` references as STU3 ``related`` entries."""
    targets = slot.value if isinstance(slot.value, list) else []
    related = [
        {
            "type": _RELATED[slot.key],
            "target": fit_object(target, "Reference", "Reference", f"{slot.path}[{i}]", slot.walk),
        }
        for i, target in enumerate(targets)
        if isinstance(target, dict)
    ]
    return [("related", related)]


def _from_related(slot: Slot) -> Pairs:
    """STU3 ``related`` entries of the two R4 kinds as ``hasMember``/``derivedFrom``."""
    pairs: Pairs = []
    for i, entry in enumerate(slot.value if isinstance(slot.value, list) else []):
        name = _related_name(entry)
        if name is None:
            slot.walk.lose(f"{slot.path}[{i}]")
            continue
        path = f"{slot.path}[{i}].target"
        target = fit_object(entry["target"], "Reference", "Reference", path, slot.walk)
        pairs.append((name, [target]))
    return pairs


def _related_name(entry: Any) -> str | None:
    """The R4 element for a ``related`` entry that is just a known type and a target."""
    if not isinstance(entry, dict) or set(entry) != {"type", "target"}:
        return None
    if not isinstance(entry["target"], dict):
        return None
    return _RELATED_R4.get(str(entry["type"]))


def _communication_status_to_stu3(slot: Slot) -> Pairs:
    """R4 ``not-done`` is STU3 ``notDone`` (status unknown); two codes were renamed."""
    if slot.value == "not-done":
        return [("status", "unknown"), ("notDone", True)]
    return Codes(_EVENT_STATUS, _SAME_EVENT)(slot)


def _communication_status_to_r4(slot: Slot) -> Pairs:
    """STU3 ``notDone`` wins over the status; two codes were renamed."""
    if slot.owner.get("notDone") is True:
        return [("status", "not-done")]
    reverse = {stu3: r4 for r4, stu3 in _EVENT_STATUS.items()}
    return Codes(reverse, _SAME_EVENT)(slot)


def _status_reason_to_stu3(slot: Slot) -> Pairs:
    """STU3 has a reason only for a communication that did not happen."""
    if slot.owner.get("status") == "not-done":
        return Rename("notDoneReason")(slot)
    return slot.walk.lose(slot.path)


def _consumed(_: Slot) -> Pairs:
    """An element read by another element's rule (STU3 ``notDone``: see the status rule)."""
    return []


_OBSERVATION_TO_STU3: Final = Spec(
    {
        "encounter": Rename("context"),
        "note": _note_to_comment,
        "hasMember": _to_related,
        "derivedFrom": _to_related,
        "valueInteger": _integer_to_quantity,
    }
)
_OBSERVATION_TO_R4: Final = Spec(
    {
        "context": context_to_encounter,
        "comment": _comment_to_note,
        "related": _from_related,
        "valueQuantity": _quantity_to_r4,
    }
)

TO_STU3: Final = {
    ("Observation", "Observation"): _OBSERVATION_TO_STU3,
    ("ObservationComponent", "ObservationComponent"): Spec({"valueInteger": _integer_to_quantity}),
    ("Communication", "Communication"): Spec(
        {
            "instantiatesCanonical": CanonicalsToReferences("definition"),
            "status": _communication_status_to_stu3,
            "statusReason": _status_reason_to_stu3,
            "topic": lose,
            "about": Rename("topic"),
            "encounter": Rename("context"),
        }
    ),
}

TO_R4: Final = {
    ("Observation", "Observation"): _OBSERVATION_TO_R4,
    ("ObservationComponent", "ObservationComponent"): Spec({"valueQuantity": _quantity_to_r4}),
    ("Communication", "Communication"): Spec(
        {
            "definition": ReferencesToCanonicals("instantiatesCanonical"),
            "status": _communication_status_to_r4,
            "notDone": _consumed,
            "notDoneReason": Rename("statusReason"),
            "topic": Rename("about"),
            "context": context_to_encounter,
        }
    ),
}
