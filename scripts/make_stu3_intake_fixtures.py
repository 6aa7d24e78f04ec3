"""Write the STU3 intake fixtures under fixtures/stu3-intake/ (inputs, equivalents, case.md).

The STU3 inputs are the synthetic R4 referral fixtures (``fixtures/referral``) with the WoR marker
moved from ``category`` (which STU3 lacks) into ``code``, converted with ``convert.to_stu3``; that
R4 input is kept as ``equivalent.r4.json`` where the content is equivalent. Refused cases change one
thing each. Expected outputs (goldens) are written by the tests:
``pytest tests/test_stu3_intake.py --update-goldens``.
Run: ``python scripts/make_stu3_intake_fixtures.py`` (overwrites the inputs; review the diff).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from lxml import etree

from wor_bridge.core import fhir
from wor_bridge.core.stu3 import convert

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "fixtures" / "referral"
OUT = REPO / "fixtures" / "stu3-intake"
OPT_OUT = "http://hl7.org/fhir/ConsentPolicy/opt-out"

J = dict[str, Any]


def load(name: str) -> J:
    data: J = json.loads((SRC / name / "input.json").read_bytes())
    return data


def resources(root: J) -> list[J]:
    if root["resourceType"] == "Bundle":
        return [e["resource"] for e in root["entry"]]
    return [root, *root.get("contained", [])]


def of_type(root: J, rtype: str) -> J:
    return next(r for r in resources(root) if r["resourceType"] == rtype)


def marker_in_code(r4: J) -> J:
    """STU3 has no ReferralRequest.category: the WoR marker goes to code (STU3 type)."""
    sr = of_type(r4, "ServiceRequest")
    sr["code"]["coding"].extend(c for cc in sr.pop("category", []) for c in cc["coding"])
    return r4


def stu3_of(r4: J) -> J:
    bundle = r4["resourceType"] == "Bundle"
    return (convert.bundle_to_stu3(r4) if bundle else convert.to_stu3(r4)).resource


def dump(obj: J) -> bytes:
    return json.dumps(obj, ensure_ascii=False, indent=2).encode() + b"\n"


def write(case: str, stu3: J, md: str, r4: J | None = None, *, xml: bool = False) -> None:
    folder = OUT / case
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("input.*"):
        old.unlink()
    if xml:
        tree = etree.fromstring(fhir.to_xml(stu3, "STU3"))
        pretty = etree.tostring(tree, pretty_print=True, xml_declaration=True, encoding="UTF-8")
        (folder / "input.xml").write_bytes(pretty)
    else:
        (folder / "input.json").write_bytes(dump(stu3))
    if r4 is not None:
        (folder / "equivalent.r4.json").write_bytes(dump(r4))
    (folder / "case.md").write_text(md.strip() + "\n", encoding="utf-8")


def accepted() -> tuple[J, J]:
    """The accepted cases; returns the contained and the transaction STU3 inputs."""
    r4 = marker_in_code(load("accepted-contained"))
    contained = stu3_of(r4)
    write(
        "accepted-contained",
        contained,
        """
STU3 ReferralRequest (Z68 and the WoR marker in type) with Patient, referrer, practice and an opt-in Consent contained.
Expect: the R4 transaction Bundle of equivalent.r4.json (referral/accepted-contained, marker in code).""",
        r4,
    )
    write(
        "accepted-xml-contained",
        contained,
        """
accepted-contained as STU3 FHIR XML.
Expect: the same Bundle as accepted-contained and its equivalent R4 input.""",
        r4,
        xml=True,
    )
    only = copy.deepcopy(contained)
    only["description"] = "Verwijzing naar welzijn"
    only["serviceRequested"] = [{"text": "Welzijnscoach"}]
    only["requester"]["onBehalfOf"] = {"reference": "#org"}
    of_type(only, "Consent")["sourceIdentifier"] = {
        "system": "urn:oid:2.16.528.1.1007.99.1234.2",
        "value": "TOESTEMMING-1",
    }
    write(
        "accepted-stu3-only-elements",
        only,
        """
accepted-contained plus STU3 elements R4 has no place for: description, serviceRequested, requester.onBehalfOf, Consent.sourceIdentifier.
Expect: accepted, the same Bundle as equivalent.r4.json; the four are listed as not read.""",
        r4,
    )

    r4_urn = marker_in_code(load("accepted-bundle-transaction-urn"))
    transaction = stu3_of(r4_urn)
    write(
        "accepted-bundle-transaction-urn",
        transaction,
        """
STU3 transaction Bundle with urn:uuid fullUrls; request.url ReferralRequest.
Expect: the R4 transaction Bundle of equivalent.r4.json (referral/accepted-bundle-transaction-urn).""",
        r4_urn,
    )
    write(
        "accepted-xml-transaction-urn",
        transaction,
        """
accepted-bundle-transaction-urn as STU3 FHIR XML.
Expect: the same Bundle as its equivalent R4 input.""",
        r4_urn,
        xml=True,
    )

    r4_rel = marker_in_code(load("accepted-bundle-collection-relative"))
    for entry in r4_rel["entry"]:
        if entry["resource"]["resourceType"] == "ServiceRequest":
            entry["resource"]["id"] = "ref"
            entry["fullUrl"] = "https://his.example.org/fhir/ServiceRequest/ref"
    write(
        "accepted-bundle-collection-relative",
        stu3_of(r4_rel),
        """
STU3 collection Bundle, absolute fullUrls (ReferralRequest/ref among them), references as relative Type/id.
Expect: the R4 transaction Bundle of equivalent.r4.json.""",
        r4_rel,
    )

    r4_oid = marker_in_code(load("accepted-batch-oid-systems"))
    write(
        "accepted-batch-oid-systems",
        stu3_of(r4_oid),
        """
STU3 batch Bundle; BSN, AGB, URA and ICPC-1-NL as urn:oid systems.
Expect: URI systems in the output, as for equivalent.r4.json.""",
        r4_oid,
    )

    r4_age = marker_in_code(load("accepted-route-by-practice-bsn-ageband"))
    write(
        "accepted-route-by-practice-bsn-ageband",
        stu3_of(r4_age),
        """
STU3 ReferralRequest from practice AGB 01099998 (routed to the destination with BSN and age band).
Expect: the same Bundle as equivalent.r4.json: BSN forwarded, birth date as an age band.""",
        r4_age,
    )
    return contained, transaction


def refused(contained: J, transaction: J) -> None:
    """The refused cases, each changing one thing (the last one several)."""
    s = copy.deepcopy(contained)
    of_type(s, "Consent")["policyRule"] = OPT_OUT
    write(
        "refused-consent-optout",
        s,
        """
The Consent's base rule is STU3 opt-out (policyRule http://hl7.org/fhir/ConsentPolicy/opt-out).
Expect: 422 business-rule at ReferralRequest.contained[4].policyRule.""",
    )

    s = copy.deepcopy(transaction)
    of_type(s, "Consent")["policyRule"] = OPT_OUT
    write(
        "refused-consent-optout-xml-bundle",
        s,
        """
STU3 XML transaction Bundle whose Consent is opt-out.
Expect: 422 business-rule at Bundle.entry[4].resource.policyRule.""",
        xml=True,
    )

    s = copy.deepcopy(contained)
    s["contained"] = [r for r in s["contained"] if r["resourceType"] != "Consent"]
    s.pop("supportingInfo")
    write(
        "refused-no-consent",
        s,
        """
ReferralRequest without supportingInfo and without a Consent.
Expect: 422 business-rule at ReferralRequest.supportingInfo.""",
    )

    s = copy.deepcopy(contained)
    s["type"]["coding"] = [c for c in s["type"]["coding"] if c["code"] != "Z68"]
    write(
        "refused-no-z68",
        s,
        """
ReferralRequest.type has the WoR marker but no ICPC Z68.
Expect: 422 business-rule at ReferralRequest.type (STU3's place for R4 ServiceRequest.code).""",
    )

    s = copy.deepcopy(contained)
    s["type"]["coding"] = [c for c in s["type"]["coding"] if c["code"] == "Z68"]
    write(
        "refused-no-wor-marker",
        s,
        """
ReferralRequest.type has Z68 only (STU3 has no category for the marker).
Expect: 422 business-rule at ReferralRequest.type.""",
    )

    s = copy.deepcopy(contained)
    s["requester"] = {"reference": "#role"}
    s["code"] = s.pop("type")
    write(
        "refused-invalid-stu3",
        s,
        """
R4 shapes in an STU3 ReferralRequest: requester as a bare Reference, code instead of type.
Expect: 400, read against the STU3 models, at ReferralRequest.requester(.agent) and at ReferralRequest (an element STU3 does not define).""",
    )

    s = copy.deepcopy(contained)
    s["status"] = "on-hold"
    write(
        "refused-invalid-stu3-status",
        s,
        """
ReferralRequest.status on-hold: an R4 code (STU3 says suspended) that the STU3 models let through.
Expect: 400 at ReferralRequest.status, saying its content has no R4 equivalent.""",
    )

    s = copy.deepcopy(contained)
    s["contained"].append(
        {
            "resourceType": "Condition",
            "id": "cond",
            "code": {"text": "Eenzaamheid"},
            "subject": {"reference": "#pat"},
        }
    )
    s["reasonReference"] = [{"reference": "#cond"}]
    write(
        "refused-unsupported-resource",
        s,
        """
A Condition contained in the ReferralRequest (a type the STU3 intake does not convert; clinical data is never forwarded).
Expect: 400 not-supported at ReferralRequest.contained[5].""",
    )

    s = copy.deepcopy(contained)
    s["requester"] = {"agent": {"reference": "#prac"}, "onBehalfOf": {"reference": "#org"}}
    write(
        "refused-requester-practitioner",
        s,
        """
requester.agent is the Practitioner, the practice only in requester.onBehalfOf (R4 has no place for it).
Expect: 422 invalid at ReferralRequest.requester.agent: the referrer's PractitionerRole is needed.""",
    )

    s = copy.deepcopy(contained)
    of_type(s, "Consent")["period"] = {"start": "2026-01-01", "end": "2026-06-30"}
    write(
        "refused-consent-period-ended",
        s,
        """
The Consent's period ended before the referral date.
Expect: 422 business-rule at ReferralRequest.contained[4].period.end (R4 Consent.provision.period.end).""",
    )

    write(
        "refused-r4-servicerequest",
        load("accepted-contained"),
        """
An R4 ServiceRequest pushed to the STU3 intake.
Expect: 400 not-supported at resourceType (ServiceRequest is no STU3 resource type).""",
    )

    s = copy.deepcopy(contained)
    s["type"]["coding"] = [c for c in s["type"]["coding"] if c["code"] != "Z68"]
    of_type(s, "Patient")["identifier"][0]["value"] = "999990008"
    of_type(s, "Consent")["policyRule"] = OPT_OUT
    write(
        "refused-several-issues-at-once",
        s,
        """
No Z68, a BSN that fails the 11-test and an opt-out Consent.
Expect: 422 with all three issues, each at its STU3 element.""",
    )


if __name__ == "__main__":
    refused(*accepted())
