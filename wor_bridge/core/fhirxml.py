"""FHIR XML (an already parsed, hardened lxml tree) -> FHIR JSON, following the R4 element model.

The FHIR XML rules (https://hl7.org/fhir/R4/xml.html): primitives carry ``value`` attributes and
may have an ``id`` attribute and ``extension`` children (-> ``_name`` in JSON); ``Extension.url``
and element ids are attributes; a resource inside ``contained``/``resource`` is wrapped in an
element named by its type; ``Narrative.div`` is XHTML. Which elements are arrays and which
primitives are JSON booleans or numbers comes from the R4B models (``fhir.elements``; the STU3
models for the STU3 intake).

The result is validated like JSON input afterwards, so this reader only has to be faithful, not
strict; but it never picks one of two occurrences of an element whose maximum cardinality is 1
(the JSON result could hold only one): that is refused at its FHIRPath, as unknown elements are.

With ``InputLimits`` (the service's reader passes them; ``inbound`` has counted the elements
already) it also refuses, at the element and before anything is validated, nesting deeper than
``max_depth``, more than ``max_array_items`` repetitions of an element, values longer than
``max_string_chars`` and numbers with more than ``max_number_digits`` digits (``too-costly``).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, Final

from lxml import etree

from wor_bridge.core import fhir
from wor_bridge.core.limits import InputLimits
from wor_bridge.errors import Issue

FHIR_NS: Final = "http://hl7.org/fhir"
XHTML_NS: Final = "http://www.w3.org/1999/xhtml"
_FHIR: Final = "{" + FHIR_NS + "}"


class _Reader:
    def __init__(self, version: fhir.Version, limits: InputLimits | None) -> None:
        self.issues: list[Issue] = []
        self.version = version
        self.limits = limits
        self.depth = 0

    def _costly(self, where: str, what: str) -> None:
        self.issues.append(Issue("too-costly", where, what))

    def resource(self, element: etree._Element, path: str) -> dict[str, Any] | None:
        rtype = etree.QName(element).localname
        if etree.QName(element).namespace != FHIR_NS or not fhir.is_resource_type(
            rtype, self.version
        ):
            self.issues.append(
                Issue(
                    "structure",
                    path,
                    f"must be a FHIR {self.version} resource element (unknown type)",
                )
            )
            return None
        out: dict[str, Any] = {"resourceType": rtype}
        self.children(element, rtype, out, path)
        return out

    def children(
        self, element: etree._Element, type_name: str, out: dict[str, Any], path: str
    ) -> None:
        limits = self.limits
        if limits is not None and self.depth >= limits.max_depth and len(element):
            self._costly(
                path,
                f"must not nest elements more than {limits.max_depth} levels deep "
                "(limits.max_depth; got more below this element)",
            )
            return
        self.depth += 1
        try:
            self._children(element, type_name, out, path)
        finally:
            self.depth -= 1

    def _children(
        self, element: etree._Element, type_name: str, out: dict[str, Any], path: str
    ) -> None:
        known = fhir.elements(type_name, self.version)
        seen: set[str] = set()  # elements of maximum cardinality 1 met so far
        over: set[str] = set()  # repeated elements past the limit (reported once)
        for child in element:
            if not isinstance(child.tag, str):
                continue  # comments, processing instructions
            qname = etree.QName(child)
            name = qname.localname
            info = known.get(name)
            where = f"{path}.{name}"
            if info is not None and info.is_list:
                index = len(out.get(name) or [])
                where += f"[{index}]"
                if self.limits is not None and index >= self.limits.max_array_items:
                    if name not in over:  # once per element name (the rest is skipped)
                        over.add(name)
                        self._costly(
                            f"{path}.{name}",
                            f"must occur at most {self.limits.max_array_items} times "
                            "(limits.max_array_items; got more)",
                        )
                    continue
            expected_ns = XHTML_NS if info is not None and info.kind == "xhtml" else FHIR_NS
            if qname.namespace != expected_ns or info is None:
                self.issues.append(  # at the parent: the unknown name came from the body
                    Issue(
                        "structure",
                        path if info is None else where,
                        f"must hold only elements of its FHIR {self.version} type "
                        "(got an element it does not define)",
                    )
                )
                continue
            if not info.is_list and name in seen:
                self.issues.append(
                    Issue(
                        "structure",
                        where,
                        "must occur at most once: its maximum cardinality is 1 (got it again; "
                        "no occurrence is picked)",
                    )
                )
                continue
            seen.add(name)
            self.element(child, name, info, out, where)
        for name in [
            k for k, v in out.items() if isinstance(v, list) and not any(x is not None for x in v)
        ]:
            del out[name]  # repeated primitives that only carry extensions: JSON omits the array

    def element(
        self,
        child: etree._Element,
        name: str,
        info: fhir.ElementInfo,
        out: dict[str, Any],
        where: str,
    ) -> None:
        if info.kind == "resource":
            inner = [c for c in child if isinstance(c.tag, str)]
            value: Any = self.resource(inner[0], where) if len(inner) == 1 else None
            if len(inner) != 1:
                self.issues.append(Issue("structure", where, "must wrap exactly one resource"))
            _put(out, name, value, info.is_list)
        elif info.kind == "xhtml":
            text = etree.tostring(child, encoding="unicode", with_tail=False)
            if self._too_long(text, "string", where):
                return
            _put(out, name, text, False)
        elif info.kind == "complex":
            obj: dict[str, Any] = {}
            _attributes(child, obj)
            self.children(child, info.type_name, obj, where)
            _put(out, name, obj, info.is_list)
        else:
            self.primitive(child, name, info, out, where)

    def primitive(
        self,
        child: etree._Element,
        name: str,
        info: fhir.ElementInfo,
        out: dict[str, Any],
        where: str,
    ) -> None:
        raw = child.get("value")
        if raw is not None and self._too_long(raw, info.kind, where):
            return
        value = _convert(raw, info.kind) if raw is not None else None
        ext: dict[str, Any] = {}
        _attributes(child, ext)
        self.children(child, "Element", ext, where)
        if info.is_list:
            values = out.setdefault(name, [])
            exts = out.get(f"_{name}")
            if ext or exts is not None:
                exts = out.setdefault(f"_{name}", [None] * len(values))
            values.append(value)
            if exts is not None:
                exts.append(ext or None)
        else:
            if value is not None:
                out[name] = value
            if ext:
                out[f"_{name}"] = ext

    def _too_long(self, raw: str, kind: str, where: str) -> bool:
        """Record a value over the string or number limit (its text is never converted)."""
        limits = self.limits
        if limits is None:
            return False
        if len(raw) > limits.max_string_chars:
            self._costly(
                where,
                f"must be at most {limits.max_string_chars} characters long "
                f"(limits.max_string_chars; got {len(raw)})",
            )
            return True
        if kind in ("integer", "decimal") and len(raw) > limits.max_number_digits:
            digits = sum(c.isdigit() for c in raw)
            if digits > limits.max_number_digits:
                self._costly(
                    where,
                    f"must be a number of at most {limits.max_number_digits} digits "
                    f"(limits.max_number_digits; got {digits})",
                )
                return True
        return False


def _attributes(element: etree._Element, out: dict[str, Any]) -> None:
    for attr in ("id", "url"):
        value = element.get(attr)
        if value is not None:
            out[attr] = value


def _put(out: dict[str, Any], name: str, value: Any, is_list: bool) -> None:
    if value is None:
        return
    if is_list:
        out.setdefault(name, []).append(value)
    else:
        out[name] = value


def _convert(raw: str, kind: str) -> Any:  # noqa: PLR0911 - one exit per JSON kind and guard
    """JSON type of a primitive; a value that does not convert stays a string for validation."""
    if kind == "boolean":
        return {"true": True, "false": False}.get(raw, raw)
    if kind == "integer":
        if len(raw) > 20:  # outside FHIR's 32-bit integer anyway; int() of huge text is slow
            return raw
        try:
            return int(raw)
        except ValueError:
            return raw
    if kind == "decimal":
        if len(raw) > 40:
            return raw
        try:
            number = Decimal(raw)
        except InvalidOperation:
            return raw
        if not number.is_finite() or abs(number.adjusted()) > 30:
            return raw  # no 1e1000000 expansions: the validator refuses the string instead
        if "e" in raw.lower() or "." in raw or number != number.to_integral_value():
            return float(number)
        return int(number)
    return raw


def read(
    root: etree._Element, version: fhir.Version = "R4", limits: InputLimits | None = None
) -> fhir.JsonDict | list[Issue]:
    """Convert the root resource element to FHIR JSON, or return the structural issues found
    (``version``: the element model to follow, R4 or STU3; with ``limits``: the cost issues
    too)."""
    reader = _Reader(version, limits)
    result = reader.resource(root, etree.QName(root).localname)
    if reader.issues or result is None:
        return reader.issues[: fhir.MAX_ISSUES] or [
            Issue("structure", "(body)", f"must be a FHIR {version} resource")
        ]
    return result
