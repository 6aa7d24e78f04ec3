"""The FHIR XML reader is faithful: the XML of every official R4 example reads back the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from wor_bridge.core import fhir, fhirxml

CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
EXAMPLES = sorted((CORPORA / "fhir-r4-examples").glob("*.json")) + sorted(
    (CORPORA / "sdohcc-examples").glob("*.json")
)


def _canonical_xhtml(node: Any) -> Any:
    """Narrative ``div`` strings in C14N form: ``<td/>`` and ``<td></td>`` are the same XHTML."""
    if isinstance(node, dict):
        return {
            k: etree.tostring(etree.fromstring(v), method="c14n")
            if k == "div" and isinstance(v, str)
            else _canonical_xhtml(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_canonical_xhtml(v) for v in node]
    return node


def test_corpora_are_present() -> None:
    """The shared corpora must sit beside the repository (../shared/corpora)."""
    assert len(EXAMPLES) > 700, f"../shared/corpora is required (looked in {CORPORA})"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_xml_of_an_official_example_reads_back_to_the_same_resource(path: Path) -> None:
    """to_xml (fhir.resources) then fhirxml.read gives the resource the models normalise to."""
    original = json.loads(path.read_text(encoding="utf-8"))
    try:
        expected = fhir.round_trip(original)
        xml = fhir.to_xml(original)
    except Exception as exc:  # a few examples are invalid on purpose
        pytest.skip(f"the models reject this example ({type(exc).__name__})")
    root = etree.fromstring(xml)
    result = fhirxml.read(root)
    assert isinstance(result, dict), result
    assert _canonical_xhtml(fhir.round_trip(result)) == _canonical_xhtml(expected)


def test_unknown_element_is_reported_at_its_parent() -> None:
    """An element FHIR does not define is reported at its parent's path: no name or value echoed."""
    root = etree.fromstring(
        b'<Patient xmlns="http://hl7.org/fhir"><name><family value="Secret"/>'
        b'<nickname value="Geheim"/></name><name><given value="A"/></name></Patient>'
    )
    result = fhirxml.read(root)
    assert isinstance(result, list)
    assert [(i.code, i.expression) for i in result] == [("structure", "Patient.name[0]")]
    assert "Geheim" not in result[0].diagnostics
    assert "nickname" not in result[0].diagnostics


def test_primitive_extensions_align_with_their_array_values() -> None:
    """Extensions on repeated primitives go to _given, aligned with nulls where absent."""
    root = etree.fromstring(
        b'<Patient xmlns="http://hl7.org/fhir"><name><given value="A"/><given value="B">'
        b'<extension url="http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier">'
        b'<valueCode value="CL"/></extension></given></name><active value="true"/></Patient>'
    )
    result = fhirxml.read(root)
    assert result == {
        "resourceType": "Patient",
        "name": [
            {
                "given": ["A", "B"],
                "_given": [
                    None,
                    {
                        "extension": [
                            {
                                "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier",
                                "valueCode": "CL",
                            }
                        ]
                    },
                ],
            }
        ],
        "active": True,
    }
