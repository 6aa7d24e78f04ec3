"""FHIR R4 OperationOutcome for refusals (one issue per problem) and acknowledgements."""

from __future__ import annotations

from collections.abc import Iterable

from wor_bridge.core.fhir import JsonDict
from wor_bridge.errors import Issue


def operation_outcome(issues: Iterable[Issue]) -> JsonDict:
    """An OperationOutcome with one ``issue`` per problem, in the order they were found."""
    out = []
    for issue in issues:
        item: JsonDict = {
            "severity": issue.severity,
            "code": issue.code,
            "diagnostics": issue.diagnostics,
        }
        if not issue.expression.startswith("("):
            item["expression"] = [issue.expression]
        else:
            item["location"] = [issue.expression]
        out.append(item)
    return {"resourceType": "OperationOutcome", "issue": out}


def information(message: str) -> JsonDict:
    """A one-issue informational OperationOutcome (e.g. for an accepted push)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": message}],
    }
