"""JSON read in one pass that refuses ambiguity and cost before anything else looks at it.

``parse`` runs ``json.loads`` with three hooks: ``object_pairs_hook`` (``JsonScan.__call__``),
``parse_int`` and ``parse_float``. The decoder builds inner values first, so each object adopts
the findings of its values (prefixing their paths with the property name and index) and the root
ends up with all of them: one pass, no second walk. Arrays have no hook; their items are looked at
by the object that holds the array (or by ``parse`` for a root array).

What it finds:

- ambiguity (``strict``): a property name twice in one object (FHIR JSON: names SHALL be unique);
  control characters other than TAB, CR and LF in strings (FHIR string rules) or unpaired
  surrogates;
- cost (``InputLimits``, always): more values than ``max_elements`` (the pass stops at once), an
  array longer than ``max_array_items``, a string longer than ``max_string_chars``, a number with
  more than ``max_number_digits`` digits (never converted: ``int()`` of 5,000 digits raises, of
  4,000 it is slow) and objects and arrays nested deeper than ``max_depth``.

Before the pass, ``_values_at_least`` bounds the number of values from the bytes at C speed: the
decoder builds a whole array before any hook sees it, so a megabyte of ``[],`` or ``"a",`` would
otherwise cost tens of milliseconds and megabytes before the count could stop it.

Findings become issues at their FHIRPath (``fhirpath.locate``: model names and indices only, of
the R4 or STU3 model; a root that is not a FHIR resource is ``(body)``). No issue ever carries a
value from the body.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final, Literal

from wor_bridge.core import fhir, fhirpath
from wor_bridge.core.limits import InputLimits
from wor_bridge.errors import InboundError, Issue

FORBIDDEN: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
# JSON can only carry those characters as escapes: without one of these the strings are clean
_ESCAPES: Final = re.compile(rb"\\u00[01]|\\u[dD][89a-fA-F]|\\[bf]")
_KEEP: Final = frozenset(b'",:')
_DELETE: Final = bytes(b for b in range(256) if b not in _KEEP)

Kind = Literal["duplicate", "control", "surrogate", "name", "string", "array", "depth", "number"]


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem the pass saw, at a path of names and indices below some object."""

    kind: Kind
    path: tuple[str | int, ...]
    size: int = 0


class _Number:
    """Stands in for a number with too many digits (it is never converted)."""

    __slots__ = ("digits",)

    def __init__(self, digits: int) -> None:
        self.digits = digits


class _TooMany(Exception):  # noqa: N818 - internal: stops the decoder at once
    pass


def refuse(where: str, diagnostics: str, code: Any = "too-costly") -> InboundError:
    """An InboundError with one issue."""
    return InboundError([Issue(code, where, diagnostics)])


def too_many(limit: int) -> InboundError:
    """The refusal of a body with more values (or XML elements) than ``limit``."""
    return refuse("(body)", f"must hold at most {limit} elements (limits.max_elements; got more)")


def _values_at_least(body: bytes, limit: int) -> int:
    """A lower bound on the JSON values in ``body`` once it exceeds ``limit`` (else 0).

    Every comma outside strings precedes a value and every colon outside strings belongs to a
    member; strings are found by their quotes once escaped backslashes and quotes are gone. Only
    bodies whose raw counts exceed the limit (a flood, or prose full of commas) get that far.
    """
    if body.count(b",") <= limit and body.count(b":") <= limit:
        return 0
    marks = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _DELETE)
    marks = marks.replace(b'""', b"")  # strings without commas or colons (parity is kept)
    quotes = marks.count(b'"')
    if quotes > 4 * limit:  # more than 2 * limit strings: keys or values, > limit values
        return quotes // 4
    outside = b"".join(marks.split(b'"')[0::2])
    return max(outside.count(b","), outside.count(b":"))


class JsonScan:
    """The hooks of one pass (see the module docstring)."""

    def __init__(
        self,
        limits: InputLimits,
        *,
        strict: bool,
        check_strings: bool,
        long_strings: bool = True,
        version: fhir.Version = "R4",
    ) -> None:
        self.limits = limits
        self.version = version
        self.strict = strict
        self.check_strings = strict and check_strings
        # strings are looked at only when one may be too long or hold a control character
        self.strings = self.check_strings or long_strings
        self.pending: dict[int, list[Finding]] = {}
        self.heights: dict[int, int] = {}  # objects holding containers: levels below and own
        self.root_found: list[Finding] = []
        self.values = 0
        self.numbers = 0
        self.count = 0

    def number(self, text: str, convert: Any) -> Any:
        """``parse_int``/``parse_float``: counted, and never converted when too long."""
        self.numbers += 1
        if self.numbers > self.limits.max_elements:
            raise _TooMany
        if len(text) <= self.limits.max_number_digits:
            return convert(text)
        digits = sum(c.isdigit() for c in text)
        return _Number(digits) if digits > self.limits.max_number_digits else convert(text)

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        self.values += len(pairs)
        if self.values > self.limits.max_elements:
            raise _TooMany
        obj = dict(pairs)  # the last of two equal names wins here; strict mode refuses it
        found: list[Finding] = []
        if len(obj) != len(pairs) or self.check_strings:
            self._names(found, pairs)
        height = 1
        pending, heights, strings = self.pending, self.heights, self.strings
        for key, value in pairs:  # the usual cases inline: this runs for every member
            kind = type(value)
            if kind is dict:
                if pending and (inner := pending.pop(id(value), None)):
                    found += [Finding(f.kind, (key, *f.path), f.size) for f in inner]
                below = heights.pop(id(value), 1)
            elif kind is str:
                if strings:
                    self._value(found, (key,), value)
                continue
            elif kind is list:
                below = self._array(found, (key,), value)
            elif kind is _Number:
                below = self._value(found, (key,), value)
            else:
                continue
            if below >= height:
                height = below + 1
        return self._close(obj, found, height)

    def _close(self, obj: dict[str, Any], found: list[Finding], height: int) -> dict[str, Any]:
        """Keep an object's height (when it holds containers) and findings for its parent."""
        if height > 1:
            self.heights[id(obj)] = height
            if height == self.limits.max_depth + 1:
                self._note(found, Finding("depth", (), height))
        if found:
            self.pending[id(obj)] = found
        return obj

    def _names(self, found: list[Finding], pairs: list[tuple[str, Any]]) -> None:
        """Property names that occur twice (strict mode) or hold control characters."""
        seen: set[str] = set()
        for key, _ in pairs:
            if self.strict and key in seen:
                self._note(found, Finding("duplicate", (key,)))
            elif self.check_strings and FORBIDDEN.search(key):
                self._note(found, Finding("name", ()))
            seen.add(key)

    def _note(self, found: list[Finding], finding: Finding) -> None:
        """Record a new finding (at most ``fhir.MAX_ISSUES`` in all; adopted ones are kept)."""
        if self.count < fhir.MAX_ISSUES:
            self.count += 1
            found.append(finding)

    def _value(self, found: list[Finding], prefix: tuple[str | int, ...], value: Any) -> int:
        """Record the findings of one value; its height (0 for a scalar)."""
        kind = type(value)
        if kind is str:
            if len(value) > self.limits.max_string_chars:
                self._note(found, Finding("string", prefix, len(value)))
            elif self.check_strings and (hit := FORBIDDEN.search(value)) is not None:
                bad: Kind = "surrogate" if _SURROGATE.match(hit.group()) else "control"
                self._note(found, Finding(bad, prefix, len(value)))
            return 0
        if kind is dict:
            inner = self.pending.pop(id(value), None)
            if inner:
                found += [Finding(f.kind, prefix + f.path, f.size) for f in inner]
            return self.heights.pop(id(value), 1)
        if kind is list:
            return self._array(found, prefix, value)
        if kind is _Number:
            self._note(found, Finding("number", prefix, value.digits))
        return 0

    def _array(self, found: list[Finding], prefix: tuple[str | int, ...], items: list[Any]) -> int:
        self.values += len(items)
        if self.values > self.limits.max_elements:
            raise _TooMany
        if len(items) > self.limits.max_array_items:
            self._note(found, Finding("array", prefix, len(items)))
        height = 1
        pending, heights, strings = self.pending, self.heights, self.strings
        for i, item in enumerate(items):
            kind = type(item)
            if kind is dict:
                if pending and (inner := pending.pop(id(item), None)):
                    found += [Finding(f.kind, (*prefix, i, *f.path), f.size) for f in inner]
                below = heights.pop(id(item), 1)
            elif kind is str and not strings:
                continue
            else:
                below = self._value(found, (*prefix, i), item)
            if below >= height:
                height = below + 1
        if height == self.limits.max_depth + 1:
            self._note(found, Finding("depth", prefix, height))
        return height

    def root(self, value: Any) -> None:
        """Look at a root that is not an object (no hook saw its items)."""
        if not isinstance(value, dict):
            self._value(self.root_found, (), value)

    def issues(self, root: Any) -> list[Issue]:
        """The findings of the whole body as issues, located by model names and indices only."""
        found = self.pending.pop(id(root), []) if isinstance(root, dict) else self.root_found
        version = self.version
        fhir_root = isinstance(root, dict) and fhirpath.locate(root, (), version)[0] != "(body)"
        out = []
        for f in found[: fhir.MAX_ISSUES]:
            if fhir_root:
                where, complete = fhirpath.locate(root, f.path, version)
            else:  # not a FHIR resource: indices only, never the sender's names
                where = "(body)" + "".join(f"[{p}]" for p in f.path if isinstance(p, int))
                complete = True
            inside = f" (in an element that is not part of this FHIR {version} type)"
            inside = "" if complete else inside
            out.append(_issue(f, where, inside, self.limits))
        return out


def _issue(f: Finding, where: str, inside: str, limits: InputLimits) -> Issue:  # noqa: PLR0911
    if f.kind == "string":
        return Issue(
            "too-costly",
            where,
            f"must be at most {limits.max_string_chars} characters long "
            f"(limits.max_string_chars; got {f.size}){inside}",
        )
    if f.kind == "array":
        return Issue(
            "too-costly",
            where,
            f"must hold at most {limits.max_array_items} items "
            f"(limits.max_array_items; got {f.size}){inside}",
        )
    if f.kind == "number":
        return Issue(
            "too-costly",
            where,
            f"must be a number of at most {limits.max_number_digits} digits "
            f"(limits.max_number_digits; got {f.size}){inside}",
        )
    if f.kind == "depth":
        return Issue(
            "too-costly",
            where,
            f"must not nest objects and arrays more than {limits.max_depth} levels deep "
            f"(limits.max_depth; got more below this element){inside}",
        )
    if f.kind == "duplicate":
        return Issue(
            "structure",
            where,
            "must occur once: a JSON property name occurs twice in one object (FHIR JSON: "
            f"property names SHALL be unique; no value is picked){inside}",
        )
    if f.kind == "name":
        return Issue(
            "structure", where, f"must not hold a property name with a control character{inside}"
        )
    if f.kind == "surrogate":
        return Issue(
            "invalid",
            where,
            f"must be valid Unicode text (got a string of {f.size} characters with an unpaired "
            f"surrogate){inside}",
        )
    return Issue(
        "invalid",
        where,
        "must not contain control characters other than TAB, CR and LF (FHIR string rules; got "
        f"a string of {f.size} characters){inside}",
    )


@dataclass(frozen=True, slots=True)
class Parsed:
    """A decoded body and what the pass found in it (``issues`` locates them)."""

    value: Any
    scan: JsonScan

    def issues(self) -> list[Issue]:
        """Every finding as an issue (empty when the body is clean)."""
        return self.scan.issues(self.value)


def parse(
    body: bytes, limits: InputLimits, *, strict: bool = True, version: fhir.Version = "R4"
) -> Parsed:
    """Decode ``body`` with the hooks; raise InboundError for what stops the pass.

    That is: more values than the limit, nesting beyond the decoder's recursion guard, bytes
    that are not UTF-8 and syntax errors (with their line and column). Findings that do not stop
    the pass are left to ``Parsed.issues``, so the caller decides what comes first.
    """
    if _values_at_least(body, limits.max_elements) > limits.max_elements:
        raise too_many(limits.max_elements)
    scan = JsonScan(
        limits,
        strict=strict,
        check_strings=_ESCAPES.search(body) is not None,
        long_strings=len(body) > limits.max_string_chars,
        version=version,
    )
    try:
        value = json.loads(
            body,
            object_pairs_hook=scan,
            parse_int=lambda text: scan.number(text, int),
            parse_float=lambda text: scan.number(text, float),
        )
        scan.root(value)
    except _TooMany:
        raise too_many(limits.max_elements) from None
    except UnicodeDecodeError:
        raise refuse(
            "(body)", "must be UTF-8 encoded JSON (got undecodable bytes)", "structure"
        ) from None
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        if exc.msg.startswith("Invalid control character"):
            raise refuse(
                "(body)",
                "must not contain control characters in strings (JSON escapes them; FHIR allows "
                f"only TAB, CR and LF; got a raw one at {where})",
                "invalid",
            ) from None
        raise refuse(
            "(body)", f"must be well-formed JSON (syntax error at {where})", "structure"
        ) from None
    except RecursionError:
        raise refuse(
            "(body)", f"must not nest JSON this deeply (limits.max_depth is {limits.max_depth})"
        ) from None
    return Parsed(value, scan)


def load(body: bytes, limits: InputLimits, *, strict: bool = False) -> Any:
    """Decode ``body`` and raise InboundError with every finding; the value otherwise."""
    parsed = parse(body, limits, strict=strict)
    issues = parsed.issues()
    if issues:
        raise InboundError(issues)
    return parsed.value
