"""Write the synthetic referral fixtures under fixtures/referral/ (inputs and case.md only).

Every person here is invented; BSNs come from the 99999xxxx test range and pass the 11-test.
Expected outputs (goldens) are written by the tests: ``pytest tests/test_goldens.py --update-goldens``.
Run: ``python scripts/make_fixtures.py`` (overwrites the inputs; review the diff).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wor_bridge.core import fhir

ROOT = Path(__file__).resolve().parent.parent / "fixtures" / "referral"
LOCAL = "https://wor-bridge.nl/fhir/CodeSystem/"
BSN_URI = "http://fhir.nl/fhir/NamingSystem/bsn"
AGB_URI = "http://fhir.nl/fhir/NamingSystem/agb-z"
ICPC1 = "http://hl7.org/fhir/sid/icpc-1-nl"

J = dict[str, Any]


def patient(bsn: str = "999990007") -> J:
    return {
        "resourceType": "Patient",
        "id": "pat",
        "identifier": [{"system": BSN_URI, "value": bsn}],
        "name": [
            {
                "use": "official",
                "family": "Jansen",
                "_family": {
                    "extension": [
                        {
                            "url": "http://hl7.org/fhir/StructureDefinition/humanname-own-name",
                            "valueString": "Jansen",
                        }
                    ]
                },
                "given": ["Pieter"],
            }
        ],
        "telecom": [{"system": "phone", "value": "06-00000001", "use": "mobile"}],
        "gender": "male",
        "birthDate": "1952-03-14",
        "address": [
            {
                "use": "home",
                "line": ["Voorbeeldstraat 1"],
                "postalCode": "3511 AA",
                "city": "Utrecht",
                "district": "Utrecht",
                "country": "NL",
            }
        ],
        "maritalStatus": {"text": "Weduwnaar"},
    }


def practitioner() -> J:
    return {
        "resourceType": "Practitioner",
        "id": "prac",
        "identifier": [{"system": AGB_URI, "value": "01000001"}],
        "name": [{"family": "Bakker", "given": ["Anna"], "prefix": ["dr."]}],
    }


def role(code: str = "huisarts") -> J:
    return {
        "resourceType": "PractitionerRole",
        "id": "role",
        "practitioner": {"reference": "#prac"},
        "organization": {"reference": "#org"},
        "code": [{"coding": [{"system": LOCAL + "referrer-type", "code": code}]}],
        "telecom": [{"system": "phone", "value": "030-0000001", "use": "work"}],
    }


def organization(agb: str = "01099990") -> J:
    return {
        "resourceType": "Organization",
        "id": "org",
        "identifier": [{"system": AGB_URI, "value": agb}],
        "name": "Huisartsenpraktijk De Linde",
        "telecom": [{"system": "phone", "value": "030-0000000"}],
    }


def consent() -> J:
    return {
        "resourceType": "Consent",
        "id": "consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IDSCL"}
                ]
            }
        ],
        "patient": {"reference": "#pat"},
        "dateTime": "2026-11-02",
        "policyRule": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}
            ]
        },
        "provision": {
            "type": "permit",
            "period": {"start": "2026-11-02"},
            "provision": [
                {
                    "type": "permit",
                    "code": [
                        {"coding": [{"system": LOCAL + "consent-permission", "code": "feedback"}]}
                    ],
                }
            ],
        },
    }


def service_request(ref: Callable[[str], str] = lambda k: f"#{k}") -> J:
    return {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": "urn:oid:2.16.528.1.1007.99.1234.1", "value": "VW-2026-0001"}],
        "status": "active",
        "intent": "order",
        "category": [{"coding": [{"system": LOCAL + "wor-programme", "code": "wor"}]}],
        "code": {"coding": [{"system": ICPC1, "code": "Z68", "display": "Andere verwijzing"}]},
        "subject": {"reference": ref("pat")},
        "authoredOn": "2026-11-02T10:15:00+01:00",
        "requester": {"reference": ref("role")},
        "reasonCode": [
            {
                "coding": [{"system": LOCAL + "referral-reason", "code": "eenzaamheid"}],
                "text": "Voelt zich eenzaam sinds verhuizing, wil graag meer contact",
            }
        ],
        "supportingInfo": [{"reference": ref("consent")}],
    }


PARTS: list[Callable[[], J]] = [patient, practitioner, role, organization, consent]


def contained(**overrides: Any) -> J:
    sr = service_request()
    sr["contained"] = [p() for p in PARTS]
    sr.update(overrides)
    return sr


def as_bundle(sr_contained: J, btype: str = "transaction", style: str = "urn") -> J:
    """Turn a contained referral into a Bundle whose entries reference each other."""
    sr = copy.deepcopy(sr_contained)
    parts = sr.pop("contained")
    ids = {p["id"]: f"{p['resourceType']}/{p['id']}" for p in parts}
    uuids = {k: f"urn:uuid:00000000-0000-4000-8000-00000000000{n}" for n, k in enumerate(ids, 1)}

    def fix(obj: Any) -> Any:
        if isinstance(obj, dict):
            out = {}
            for k, v in obj.items():
                if k == "reference" and isinstance(v, str) and v.startswith("#"):
                    key = v[1:]
                    out[k] = uuids[key] if style == "urn" else ids[key]
                else:
                    out[k] = fix(v)
            return out
        if isinstance(obj, list):
            return [fix(x) for x in obj]
        return obj

    entries = []
    for original in [*parts, sr]:
        p = fix(original)
        if p["resourceType"] == "ServiceRequest":
            p["id"] = "sr"
            url = "urn:uuid:00000000-0000-4000-8000-000000000009" if style == "urn" else None
        else:
            url = (
                uuids[p["id"]] if style == "urn" else f"https://his.example.org/fhir/{ids[p['id']]}"
            )
        entry: J = {"fullUrl": url, "resource": p} if url else {"resource": p}
        if btype in ("transaction", "batch"):
            entry["request"] = {"method": "POST", "url": p["resourceType"]}
        entries.append(entry)
    return {"resourceType": "Bundle", "type": btype, "entry": entries}


def part(sr: J, rtype: str) -> J:
    return next(p for p in sr["contained"] if p["resourceType"] == rtype)


# Cases that must map to the same Bundle keep the first referral number; every other accepted
# case is a referral of its own (the number is the business key of every id).
SAME_REFERRAL = {
    "accepted-contained",
    "accepted-bundle-transaction-urn",
    "accepted-bundle-collection-relative",
    "accepted-xml-contained",
}


def _renumber(data: J, number: int) -> None:
    for res in [data, *[e.get("resource", {}) for e in data.get("entry", [])]]:
        if res.get("resourceType") == "ServiceRequest" and res.get("identifier"):
            res["identifier"][0]["value"] = f"VW-2026-{number:04d}"


def write(name: str, data: J | bytes, summary: str, expect: str, fmt: str = "json") -> None:
    if isinstance(data, dict) and name.startswith("accepted-") and name not in SAME_REFERRAL:
        _renumber(data, 100 + sorted(ACCEPTED_NAMES).index(name))
    folder = ROOT / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("input.*"):
        old.unlink()
    if isinstance(data, bytes):
        (folder / f"input.{fmt}").write_bytes(data)
    elif fmt == "xml":
        xml = fhir.to_xml(data)
        (folder / "input.xml").write_bytes(xml + b"\n")
    else:
        (folder / "input.json").write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n")
    (folder / "case.md").write_text(f"{summary}\nExpect: {expect}.\n", encoding="utf-8")


ACCEPTED_NAMES = [
    "accepted-contained",
    "accepted-bundle-transaction-urn",
    "accepted-bundle-collection-relative",
    "accepted-batch-oid-systems",
    "accepted-xml-contained",
    "accepted-xml-bundle",
    "accepted-dutch-name-prefixes",
    "accepted-icpc2-in-reasoncode",
    "accepted-poh-booked-appointment",
    "accepted-clinical-data-not-forwarded",
    "accepted-route-by-practice-bsn-ageband",
    "accepted-route-by-postcode",
    "accepted-email-only-no-bsn",
]


def accepted() -> None:
    write(
        "accepted-contained",
        contained(),
        "ServiceRequest with Patient, referrer, practice and Consent contained; URI identifier systems.",
        "a transaction Bundle for the catch-all destination",
    )
    write(
        "accepted-bundle-transaction-urn",
        as_bundle(contained()),
        "Transaction Bundle, references as urn:uuid fullUrls.",
        "the same Bundle as the contained case, bar the input shape",
    )
    write(
        "accepted-bundle-collection-relative",
        as_bundle(contained(), "collection", "relative"),
        "Collection Bundle with absolute fullUrls, references as relative Type/id.",
        "a transaction Bundle",
    )

    oid = contained()
    part(oid, "Patient")["identifier"][0]["system"] = "urn:oid:2.16.840.1.113883.2.4.6.3"
    part(oid, "Practitioner")["identifier"][0]["system"] = "urn:oid:2.16.840.1.113883.2.4.6.1"
    part(oid, "Organization")["identifier"] = [
        {"system": "urn:oid:2.16.528.1.1007.3.3", "value": "90000123"}
    ]
    oid["code"]["coding"][0]["system"] = "urn:oid:2.16.840.1.113883.2.4.4.31.1"
    write(
        "accepted-batch-oid-systems",
        as_bundle(oid, "batch"),
        "Batch Bundle; BSN, AGB, URA and ICPC-1-NL given as urn:oid systems.",
        "URI systems in the output",
    )

    write(
        "accepted-xml-contained",
        contained(),
        "The contained referral as FHIR XML.",
        "the same Bundle as accepted-contained",
        fmt="xml",
    )
    write(
        "accepted-xml-bundle",
        as_bundle(contained()),
        "A transaction Bundle as FHIR XML.",
        "a transaction Bundle",
        fmt="xml",
    )

    dutch = contained()
    p = part(dutch, "Patient")
    p["identifier"][0]["value"] = "999990019"
    p["name"] = [
        {
            "use": "official",
            "family": "van der Berg-ten Brink",
            "_family": {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/humanname-own-prefix",
                        "valueString": "van der",
                    },
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/humanname-own-name",
                        "valueString": "Berg",
                    },
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/humanname-partner-prefix",
                        "valueString": "ten",
                    },
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/humanname-partner-name",
                        "valueString": "Brink",
                    },
                ]
            },
            "given": ["Zoë", "Anne-Marie"],
            "_given": [
                {
                    "extension": [
                        {
                            "url": "http://hl7.org/fhir/StructureDefinition/iso21090-EN-qualifier",
                            "valueCode": "CL",
                        }
                    ]
                },
                None,
            ],
            "extension": [
                {
                    "url": "http://hl7.org/fhir/StructureDefinition/humanname-assembly-order",
                    "valueCode": "NL4",
                }
            ],
        }
    ]
    p["gender"] = "female"
    p["address"][0] = {
        "use": "home",
        "line": ["Ĳsselkade 12 bis"],
        "_line": [
            {
                "extension": [
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-streetName",
                        "valueString": "Ĳsselkade",
                    },
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-houseNumber",
                        "valueString": "12",
                    },
                    {
                        "url": "http://hl7.org/fhir/StructureDefinition/iso21090-ADXP-buildingNumberSuffix",
                        "valueString": "bis",
                    },
                ]
            }
        ],
        "postalCode": "7201 AB",
        "city": "Zutphen",
        "country": "NL",
    }
    write(
        "accepted-dutch-name-prefixes",
        dutch,
        "Dutch name with own and partner prefixes and diacritics (Zoë, Ĳsselkade) and address parts.",
        "name and address parts kept with their extensions",
    )

    icpc2 = contained()
    icpc2["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": "306238000"}]}
    icpc2["category"] = [{"coding": [{"system": "http://snomed.info/sct", "code": "306238000"}]}]
    icpc2["reasonCode"] = [
        {
            "coding": [{"system": "http://hl7.org/fhir/sid/icpc-2", "code": "Z68"}],
            "text": "Vastgelopen na verlies van werk",
        }
    ]
    write(
        "accepted-icpc2-in-reasoncode",
        icpc2,
        "Z68 as ICPC-2 in reasonCode; WoR marked by SNOMED 306238000 in code and category.",
        "ICPC-2 Z68 in the output code",
    )

    poh = contained()
    r = part(poh, "PractitionerRole")
    r["code"] = [{"coding": [{"system": LOCAL + "referrer-type", "code": "poh-ggz"}]}]
    poh["occurrenceDateTime"] = "2026-11-05T14:00:00+01:00"
    poh["locationCode"] = [
        {"coding": [{"system": LOCAL + "contact-mode", "code": "op-de-praktijk"}]}
    ]
    part(poh, "Consent")["provision"]["provision"][0]["code"].append(
        {"coding": [{"system": LOCAL + "consent-permission", "code": "pg-scores"}]}
    )
    write(
        "accepted-poh-booked-appointment",
        poh,
        "POH-GGZ refers; the practice booked the first appointment (occurrenceDateTime) at the practice.",
        "occurrenceDateTime and contact mode forwarded",
    )

    clinical = as_bundle(contained())
    sr = clinical["entry"][-1]["resource"]
    sr["reasonReference"] = [{"reference": "urn:uuid:00000000-0000-4000-8000-0000000000c1"}]
    sr["note"] = [{"text": "Journaal: somberheid, eerder verwezen naar GGZ."}]
    sr["reasonCode"][0]["coding"].append(
        {"system": ICPC1, "code": "P03", "display": "Depressief gevoel"}
    )
    clinical["entry"].insert(
        0,
        {
            "fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000c1",
            "resource": {
                "resourceType": "Condition",
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                            "code": "active",
                        }
                    ]
                },
                "code": {"coding": [{"system": ICPC1, "code": "P03"}], "text": "Depressief gevoel"},
                "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
            },
            "request": {"method": "POST", "url": "Condition"},
        },
    )
    clinical["entry"].insert(
        1,
        {
            "fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000c2",
            "resource": {
                "resourceType": "MedicationStatement",
                "status": "active",
                "medicationCodeableConcept": {"text": "Sertraline 50mg"},
                "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001"},
            },
            "request": {"method": "POST", "url": "MedicationStatement"},
        },
    )
    write(
        "accepted-clinical-data-not-forwarded",
        clinical,
        "Bundle with a Condition, a MedicationStatement, a journal note and a diagnosis code in reasonCode.",
        "none of the clinical data in the output",
    )

    agb = contained()
    part(agb, "Organization")["identifier"][0]["value"] = "01099998"
    part(agb, "Patient")["identifier"][0]["value"] = "999990020"
    write(
        "accepted-route-by-practice-bsn-ageband",
        agb,
        "Practice AGB 01099998 routes to the destination that receives BSN and an age band (POST ifNoneExist).",
        "BSN forwarded, birth date replaced by an age band",
    )

    pc = contained()
    part(pc, "Patient")["address"][0]["postalCode"] = "4001 XZ"
    part(pc, "Patient")["address"][0]["city"] = "Tiel"
    write(
        "accepted-route-by-postcode",
        pc,
        "Patient postcode 4001 lies in a configured postcode range.",
        "routed to welzijn-rivierenland",
    )

    mail = contained()
    del part(mail, "Consent")["provision"]["provision"]  # consents to the referral, not to feedback
    p = part(mail, "Patient")
    p["telecom"] = [{"system": "email", "value": "client@example.org"}]
    del p["address"]
    del p["identifier"]
    write(
        "accepted-email-only-no-bsn",
        mail,
        "No BSN, no address: an e-mail address is the only contact route; the consent covers"
        " the referral only, not feedback.",
        "accepted; no identifier but the bridge's own",
    )


def refused() -> None:
    no_z68 = contained()
    no_z68["code"] = {"coding": [{"system": ICPC1, "code": "P68"}]}
    write(
        "refused-no-z68",
        no_z68,
        "ICPC P68 instead of Z68.",
        "422, business-rule at ServiceRequest.code",
    )

    no_marker = contained()
    no_marker["category"] = []
    del no_marker["category"]
    write(
        "refused-no-wor-marker",
        no_marker,
        "Z68 without a Welzijn op Recept marker.",
        "422, business-rule at ServiceRequest.category",
    )

    no_consent = contained()
    no_consent["supportingInfo"] = []
    del no_consent["supportingInfo"]
    no_consent["contained"] = [c for c in no_consent["contained"] if c["resourceType"] != "Consent"]
    write(
        "refused-no-consent",
        no_consent,
        "No Consent referenced from supportingInfo.",
        "422, business-rule at ServiceRequest.supportingInfo",
    )

    inactive = contained()
    part(inactive, "Consent")["status"] = "inactive"
    write(
        "refused-consent-inactive",
        inactive,
        "The Consent is inactive.",
        "422 at ServiceRequest.contained[4].status",
    )

    deny = contained()
    part(deny, "Consent")["provision"]["type"] = "deny"
    write("refused-consent-deny", deny, "The Consent's provision denies.", "422 at provision.type")

    bad_bsn = contained()
    part(bad_bsn, "Patient")["identifier"][0]["value"] = "999990008"
    write(
        "refused-bsn-fails-11-test",
        bad_bsn,
        "BSN with nine digits that fail the 11-test.",
        "422, invalid, diagnostics without the value",
    )

    nothing = contained()
    p = part(nothing, "Patient")
    p["name"] = [{"use": "official"}]
    del p["telecom"]
    del p["address"]
    write(
        "refused-no-name-no-contact",
        nothing,
        "Patient without a name and without any contact route.",
        "two issues in one OperationOutcome",
    )

    anon = contained()
    part(anon, "Practitioner")["identifier"] = []
    del part(anon, "Practitioner")["identifier"]
    part(anon, "Organization")["identifier"] = [
        {"system": "http://example.org/local", "value": "x1"}
    ]
    write(
        "refused-referrer-and-practice-unidentified",
        anon,
        "Referrer without AGB/UZI; practice without AGB/URA.",
        "two issues",
    )

    no_reason = contained()
    no_reason["reasonCode"] = [{"coding": no_reason["reasonCode"][0]["coding"]}]
    write(
        "refused-no-reason",
        no_reason,
        "No one-line help question anywhere.",
        "422, required at reasonCode.text",
    )

    long_reason = contained()
    long_reason["reasonCode"][0]["text"] = "Eerste regel\nTweede regel met voorgeschiedenis"
    write(
        "refused-multiline-reason",
        long_reason,
        "The help question spans two lines.",
        "422 naming lines and length, not the text",
    )

    write(
        "refused-wrong-resource-type",
        patient(),
        "A Patient instead of a ServiceRequest or Bundle.",
        "400, not-supported",
    )
    write(
        "refused-malformed-json",
        b'{"resourceType": "ServiceRequest", "status": ',
        "Truncated JSON.",
        "400, structure",
    )
    write(
        "refused-malformed-xml",
        b'<ServiceRequest xmlns="http://hl7.org/fhir"><status value="active"></ServiceRequest>',
        "Mismatched XML tags.",
        "400, structure",
        fmt="xml",
    )
    write(
        "refused-xxe",
        b'<?xml version="1.0"?>\n<!DOCTYPE ServiceRequest [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>\n'
        b'<ServiceRequest xmlns="http://hl7.org/fhir"><status value="&xxe;"/></ServiceRequest>\n',
        "XML with an external entity (XXE).",
        "400, security; never resolved",
        fmt="xml",
    )
    lol = b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n <!ENTITY lol "lol">\n'
    for n in range(1, 10):
        prev = "lol" if n == 1 else f"lol{n - 1}"
        lol += f' <!ENTITY lol{n} "{("&" + prev + ";") * 10}">\n'.encode()
    lol += b']>\n<ServiceRequest xmlns="http://hl7.org/fhir"><status value="&lol9;"/></ServiceRequest>\n'
    write(
        "refused-billion-laughs",
        lol,
        "Nested entity expansion (billion laughs).",
        "400, security; never expanded",
        fmt="xml",
    )
    write(
        "refused-not-fhir",
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "#p"},
            "colour": "blue",
        },
        "A ServiceRequest with an element FHIR does not define.",
        "400, structure at ServiceRequest.colour",
    )
    bad_date = contained()
    part(bad_date, "Patient")["birthDate"] = "14-03-1952"
    write(
        "refused-invalid-birthdate-format",
        bad_date,
        "birthDate in Dutch day-month-year order.",
        "400, invalid at contained[0].birthDate, no value echoed",
    )
    search = as_bundle(contained())
    search["type"] = "searchset"
    for e in search["entry"]:
        e.pop("request", None)
    write(
        "refused-bundle-searchset",
        search,
        "A searchset Bundle.",
        "422, not-supported at Bundle.type",
    )
    many = contained()
    many["code"] = {"coding": [{"system": ICPC1, "code": "P68"}]}
    part(many, "Patient")["identifier"][0]["value"] = "123456789"
    many["supportingInfo"] = []
    del many["supportingInfo"]
    write(
        "refused-several-issues-at-once",
        many,
        "No Z68, a bad BSN and no consent reference together.",
        "all three issues in one OperationOutcome",
    )
    direct = contained()
    direct["requester"] = {"reference": "#prac"}
    write(
        "refused-requester-not-role",
        direct,
        "The requester references the Practitioner, not the PractitionerRole.",
        "422 at ServiceRequest.requester",
    )


if __name__ == "__main__":
    accepted()
    refused()
    print(f"fixtures written under {ROOT}")
