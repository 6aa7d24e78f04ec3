"""``[monitoring]``: thresholds, age bands, postcode -> municipality, yearly targets and capacity.

Pure values (pydantic, frozen), checked at start-up with the rest of the settings.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Unit = Literal["municipality", "practice", "welfare"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MunicipalityRange(_Frozen):
    """Patients' 4-digit postcodes ``low``..``high`` belong to ``municipality``."""

    low: int = Field(ge=1000, le=9999)
    high: int = Field(ge=1000, le=9999)
    municipality: str = Field(min_length=1, max_length=80)

    @model_validator(mode="after")
    def _ordered(self) -> MunicipalityRange:
        if self.low > self.high:
            raise ValueError("monitoring.postcodes: low must not exceed high")
        return self


class Target(_Frozen):
    """The yearly target (*streefaantal*) and the coach hours of one municipality, practice
    (AGB/URA value) or welfare organisation (destination id) in one year."""

    unit: Unit
    value: str = Field(min_length=1, max_length=80)
    year: int = Field(ge=2000, le=2100)
    referrals: int = Field(ge=0, le=1_000_000)
    coach_hours_per_week: float = Field(default=0.0, ge=0, le=10_000)


class MonitoringSettings(_Frozen):
    """How monitoring facts are recorded and figures published."""

    threshold: int = Field(default=5, ge=1, le=1000)
    """Counts below this are suppressed (with secondary suppression); rates need a denominator
    of at least this."""
    age_bands: tuple[int, ...] = (18, 30, 45, 55, 65, 75, 85)
    """Lower edges of the age bands recorded at intake (the birth date is never kept)."""
    postcodes: tuple[MunicipalityRange, ...] = ()
    """Municipality of a patient by postcode, when the address carries no district."""
    targets: tuple[Target, ...] = ()

    @field_validator("age_bands")
    @classmethod
    def _increasing(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or list(value) != sorted(set(value)) or value[0] <= 0:
            raise ValueError("monitoring.age_bands must be increasing positive ages")
        return value

    @model_validator(mode="after")
    def _unique_targets(self) -> MonitoringSettings:
        keys = [(t.unit, t.value, t.year) for t in self.targets]
        if len(keys) != len(set(keys)):
            raise ValueError("monitoring.targets: one target per unit, value and year")
        return self
