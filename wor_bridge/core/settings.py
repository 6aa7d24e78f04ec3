"""Settings and mapping-file models: pure, frozen values (loading from disk is in ``config.py``).

Pydantic validates them, so a bad configuration or mapping file is refused at start-up with the
location of the problem, never half-applied.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from wor_bridge.core import identifiers as ids
from wor_bridge.core.destination_auth import ClientTls, DestinationAuth
from wor_bridge.core.limits import InputLimits
from wor_bridge.core.monitoring_settings import MonitoringSettings
from wor_bridge.core.ta_np import TaNpSettings

__all__ = ["ClientTls", "DestinationAuth"]  # their home is core.destination_auth

LOCAL_BASE = "https://wor-bridge.nl/fhir"
"""Canonical base of the project's local CodeSystems and tags."""

WOR_PROGRAMME_SYSTEM = f"{LOCAL_BASE}/CodeSystem/wor-programme"
BUSINESS_STATUS_SYSTEM = f"{LOCAL_BASE}/CodeSystem/task-business-status"
REFERRAL_REASON_SYSTEM = f"{LOCAL_BASE}/CodeSystem/referral-reason"
CONTACT_MODE_SYSTEM = f"{LOCAL_BASE}/CodeSystem/contact-mode"
REFERRER_TYPE_SYSTEM = f"{LOCAL_BASE}/CodeSystem/referrer-type"
MAPPING_TAG_SYSTEM = f"{LOCAL_BASE}/CodeSystem/mapping"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Coding(_Frozen):
    """A code in a system (the system is normalised to its URI form)."""

    system: str
    code: str
    display: str | None = None

    @field_validator("system")
    @classmethod
    def _uri_form(cls, value: str) -> str:
        return ids.normalize_system(value)


class IdentifierSetting(_Frozen):
    """A business identifier configured for an organisation (e.g. a KvK number)."""

    system: str
    value: str

    @field_validator("system")
    @classmethod
    def _uri_form(cls, value: str) -> str:
        return ids.normalize_system(value)


DEFAULT_WOR_MARKERS: tuple[Coding, ...] = (
    Coding(system=WOR_PROGRAMME_SYSTEM, code="wor", display="Welzijn op Recept"),
    Coding(system=ids.SNOMED, code="306238000", display="Referral to social services"),
    Coding(
        system=ids.SNOMED,
        code="871731000000106",
        display="Referral to social prescribing service",
    ),
)


class GateSettings(_Frozen):
    """What a referral must carry to pass the gates."""

    wor_markers: tuple[Coding, ...] = DEFAULT_WOR_MARKERS
    reason_paths: tuple[str, ...] = ("reasonCode.text",)
    max_reason_chars: int = Field(default=200, ge=20, le=1000)
    permitting_policies: tuple[str, ...] = ()
    """Policy URIs (a ``policyRule`` coding of system ``urn:ietf:rfc:3986``, or ``policy.uri``)
    whose consent permits disclosure as OPTIN does; other URIs are refused (``core/consent.py``)."""

    @field_validator("permitting_policies")
    @classmethod
    def _absolute_uris(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(":" not in uri or uri != uri.strip() or not uri for uri in value):
            raise ValueError("permitting_policies must be absolute URIs")
        return value

    @field_validator("reason_paths")
    @classmethod
    def _known_paths(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in value if p not in REASON_PATHS]
        if unknown or not value:
            raise ValueError(f"reason_paths must be taken from {sorted(REASON_PATHS)}")
        return value


REASON_PATHS = frozenset(
    {"reasonCode.text", "note.text", "patientInstruction", "code.text", "orderDetail.text"}
)


DestinationType = Literal["fhir-r4", "notified-pull-stu3", "zorgdomein-stu3", "inbox"]
"""Every destination type the bridge knows; ``connectors.outbound.TYPES`` has one connector each."""


class DestinationDirectory(_Frozen):
    """A destination whose endpoint comes from the care-services directory (``[directory]``):
    the organisation (URA or KvK; default the destination's ``identifier``) and the
    HealthcareService ``type`` it offers.

    ``static``: ``fallback`` uses the static ``endpoint``/``type`` only when the replica has no
    valid endpoint; ``override`` always uses them (the directory is not asked). ``types``: the
    destination types the directory may choose (default: the static ``type``).
    """

    service_type: Coding
    organization: IdentifierSetting | None = None
    static: Literal["fallback", "override"] = "fallback"
    types: tuple[DestinationType, ...] = ()


class Destination(_Frozen):
    """A welfare organisation's inbox: who it is, where it lives, which mapping it gets, and
    how the bridge delivers there."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    name: str
    identifier: IdentifierSetting
    type: DestinationType = "fhir-r4"
    """``fhir-r4``: the transaction Bundle (or PUTs); ``notified-pull-stu3``: an STU3 notification
    Task without personal data, the receiver pulls; ``zorgdomein-stu3``: an STU3 document Bundle;
    ``inbox``: nothing is sent, the referral stays at the bridge in the organisation's inbox in
    the browser console (``wor_bridge.console``)."""
    identifier_form: Literal["uri", "oid"] = "uri"
    """How STU3 messages write known Dutch identifier systems (VIPLive: AGB as ``urn:oid:``)."""
    endpoint: str | None = None
    mapping: str | None = None
    poll: bool = False
    delivery: Literal["transaction", "put"] = "transaction"
    create: Literal["conditional", "put", "plain"] | None = None
    """How an STU3 destination creates a referral once: ``conditional`` (the default:
    ``If-None-Exist`` on the identifier), ``put`` (PUT to a deterministic id) or ``plain`` (the
    receiver offers neither: at least once, a lost answer may leave a duplicate). A ``fhir-r4``
    destination's mapping decides (PUT or POST with ``ifNoneExist``): it takes no ``create``."""
    auth: DestinationAuth = DestinationAuth()
    tls: ClientTls | None = None
    connect_timeout_s: float = Field(default=3.05, gt=0, le=60)
    read_timeout_s: float = Field(default=15.0, gt=0, le=300)
    directory: DestinationDirectory | None = None
    """Take the endpoint from the care-services directory at delivery time (``[directory]``)."""
    pull_mode: Literal["single-task", "ta-np"] = "single-task"
    """``notified-pull-stu3`` only: the bridge's one-Task variant, or Twiin TA Notified Pull
    v1.0.1 (Notification + workflow Task + authorization base; ``core.ta_np``)."""
    ta_np: TaNpSettings = TaNpSettings()

    @field_validator("endpoint")
    @classmethod
    def _absolute_http(cls, value: str | None) -> str | None:
        """The FHIR base is an absolute ``http``/``https`` URL with a host (RFC 3986), or the
        delivery could only fail at run time; the value is not repeated (it may hold userinfo)."""
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("an absolute http or https URL (the FHIR base) is expected")
        return value

    def identifiers(self) -> frozenset[tuple[str, str]]:
        """``(system, value)`` of every identifier the organisation is known by (its identifier
        and the directory's organisation): what a Consent actor naming it can carry."""
        found = {(self.identifier.system, self.identifier.value)}
        if self.directory is not None and self.directory.organization is not None:
            found.add((self.directory.organization.system, self.directory.organization.value))
        return frozenset(found)

    @model_validator(mode="after")
    def _create_fits(self) -> Destination:
        if self.pull_mode == "ta-np" and self.type != "notified-pull-stu3":
            raise ValueError(f"destination {self.id}: pull_mode ta-np needs notified-pull-stu3")
        if self.type == "inbox" and (
            self.endpoint or self.poll or self.directory is not None or self.create is not None
        ):
            raise ValueError(
                f"destination {self.id}: an inbox is at the bridge: it takes no endpoint, poll,"
                " directory or create"
            )
        if self.type == "fhir-r4" and self.create is not None:
            raise ValueError(
                f"destination {self.id}: a fhir-r4 destination takes no create (its mapping's"
                " request decides: PUT, or POST with ifNoneExist)"
            )
        return self

    @property
    def at_least_once(self) -> bool:
        """True when a repeated create may leave a duplicate at the receiver (``plain``)."""
        return self.create == "plain"


class PostcodeRoute(_Frozen):
    """Patients whose 4-digit postcode lies in ``[low, high]`` go to ``destination``."""

    low: int = Field(ge=1000, le=9999)
    high: int = Field(ge=1000, le=9999)
    destination: str

    @model_validator(mode="after")
    def _ordered(self) -> PostcodeRoute:
        if self.low > self.high:
            raise ValueError("postcode route: low must not exceed high")
        return self


class Routing(_Frozen):
    """Practice AGB first, then the patient's postcode or municipality, then the catch-all."""

    practices: dict[str, str] = Field(default_factory=dict)
    postcodes: tuple[PostcodeRoute, ...] = ()
    municipalities: dict[str, str] = Field(default_factory=dict)
    catch_all: str | None = None

    def destination_ids(self) -> set[str]:
        """Every destination id the table refers to."""
        used = set(self.practices.values()) | set(self.municipalities.values())
        used |= {r.destination for r in self.postcodes}
        if self.catch_all:
            used.add(self.catch_all)
        return used


class FeedbackSettings(_Frozen):
    """The way back: where feedback goes and what it may carry."""

    gp_record: str | None = None
    note_max_chars: int = Field(default=500, ge=20, le=2000)
    reason_max_chars: int = Field(default=200, ge=20, le=2000)
    """Longest accepted ``statusReason`` text from the welfare side (characters)."""
    coach_max_chars: int = Field(default=100, ge=10, le=500)
    """Longest accepted coach name from the welfare side (characters)."""
    poll_interval_s: float = Field(default=900.0, ge=1.0)
    deadline_check_interval_s: float = Field(default=60.0, ge=0.1)


class PullSettings(_Frozen):
    """Notified pull: where receivers pull from and how long an access token lives."""

    base_url: str = Field(default="http://127.0.0.1:8080", pattern=r"^https?://[^\s/]+(/\S*)?$")
    """The bridge's public base URL: notification Tasks reference ``{base_url}/fhir/stu3/...``
    and the token endpoint is ``{base_url}/oauth/token`` (the private-key JWT audience)."""
    token_ttl_s: int = Field(default=300, ge=1, le=3600)
    token_key: SecretStr | None = Field(default=None, min_length=32)
    """HS256 key of the access tokens (set it when several bridge processes share receivers);
    without it each process draws a random key and its tokens end with it."""


class OutputSettings(_Frozen):
    """How the transaction Bundle is built."""

    source_system: str = Field(default="his", min_length=1)
    first_contact_days: int = Field(default=7, ge=1, le=90)


class PatientRule(_Frozen):
    """One field rule: read ``source`` of the Patient, apply ``transform``, write ``target``."""

    target: str
    source: str
    transform: str


class CodeTranslation(_Frozen):
    """Translate an incoming reason coding to what the destination understands."""

    source: Coding
    target: Coding


DEFAULT_PATIENT_RULES: tuple[PatientRule, ...] = (
    PatientRule(target="name", source="name", transform="human_names"),
    PatientRule(target="telecom", source="telecom", transform="contact_points"),
    PatientRule(target="address", source="address", transform="addresses"),
    PatientRule(target="gender", source="gender", transform="gender"),
    PatientRule(target="birthDate", source="birthDate", transform="copy"),
)


class MappingFile(_Frozen):
    """A destination's declarative mapping: what of the patient travels, and how it is sent."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    version: str = Field(pattern=r"^\d+\.\d+\.\d+$")
    description: str = ""
    source: Literal["fhir-r4"] = "fhir-r4"
    target: Literal["fhir-r4-transaction"] = "fhir-r4-transaction"
    request: Literal["PUT", "POST"] = "PUT"
    patient: tuple[PatientRule, ...] = DEFAULT_PATIENT_RULES
    age_bands: tuple[int, ...] = (18, 30, 45, 55, 65, 75, 85)
    reason_code_systems: tuple[str, ...] = (REFERRAL_REASON_SYSTEM,)
    code_translations: tuple[CodeTranslation, ...] = ()

    @field_validator("age_bands")
    @classmethod
    def _increasing(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or list(value) != sorted(set(value)) or value[0] <= 0:
            raise ValueError("age_bands must be increasing positive ages")
        return value

    @property
    def ref(self) -> str:
        """``id@version``: written into every Bundle this mapping produces."""
        return f"{self.id}@{self.version}"


class Settings(_Frozen):
    """Everything the pure core needs, checked for consistency as a whole."""

    gates: GateSettings = GateSettings()
    output: OutputSettings = OutputSettings()
    feedback: FeedbackSettings = FeedbackSettings()
    pull: PullSettings = PullSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    destinations: tuple[Destination, ...]
    routing: Routing
    mappings: dict[str, MappingFile]
    codes: dict[str, frozenset[str]] = Field(default_factory=dict)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    limits: InputLimits = InputLimits()

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        known = {d.id for d in self.destinations}
        if len(known) != len(self.destinations):
            raise ValueError("destinations: every id must be unique")
        missing = sorted(self.routing.destination_ids() - known)
        if missing:
            raise ValueError(f"routing refers to unknown destinations: {missing}")
        routed = self.routing.destination_ids()
        for dest in self.destinations:
            if dest.mapping is None:
                if dest.id in routed:
                    raise ValueError(
                        f"destination {dest.id}: routing sends referrals; needs a mapping"
                    )
                continue
            if dest.mapping not in self.mappings:
                raise ValueError(f"destination {dest.id}: unknown mapping {dest.mapping!r}")
            if dest.delivery == "put" and self.mappings[dest.mapping].request != "PUT":
                raise ValueError(
                    f"destination {dest.id}: delivery put needs a mapping with request PUT"
                )
        if self.pull.token_key is None and any(d.pull_mode == "ta-np" for d in self.destinations):
            raise ValueError("pull_mode ta-np needs [pull] token_key (the authorization base key)")
        if self.feedback.gp_record is not None and self.feedback.gp_record not in known:
            raise ValueError(f"feedback.gp_record: unknown destination {self.feedback.gp_record!r}")
        if (
            self.feedback.gp_record is not None
            and self.destination(self.feedback.gp_record).type != "fhir-r4"
        ):
            raise ValueError("feedback.gp_record: the GP record must be a fhir-r4 destination")
        self._check_codes()
        return self

    def _check_codes(self) -> None:
        """Code translations and WoR markers use codes the local CodeSystems define."""
        for mapping in self.mappings.values():
            for tr in mapping.code_translations:
                codes = self.codes.get(tr.target.system)
                if codes is not None and tr.target.code not in codes:
                    raise ValueError(
                        f"mapping {mapping.ref}: code {tr.target.code!r} is not in "
                        f"{tr.target.system}"
                    )
        for marker in self.gates.wor_markers:
            codes = self.codes.get(marker.system)
            if codes is not None and marker.code not in codes:
                raise ValueError(f"gates.wor_markers: {marker.code!r} is not in {marker.system}")

    def mapping_for(self, destination: Destination) -> MappingFile:
        """The mapping of a destination that receives referrals (checked at load)."""
        return self.mappings[destination.mapping or ""]

    def destination(self, destination_id: str) -> Destination:
        """The destination with this id (ids were checked at load)."""
        return next(d for d in self.destinations if d.id == destination_id)
