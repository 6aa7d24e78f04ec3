"""What one request body may cost (``[limits]``): a settings model, pure. Checked by
``core.jsonscan`` and ``core.fhirxml`` before any model validation, and by the service's body
readers per route."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class InputLimits(BaseModel):
    """What one request body may cost: checked before any model validation (``[limits]``).

    The structural limits hold for every JSON and XML body of every route (a refusal is HTTP 400,
    ``too-costly``, at the location, naming the limit); the byte limits per route are checked
    while the body streams in (HTTP 413). The intake's byte limit is ``max_body_bytes``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_elements: int = Field(default=1500, ge=100, le=1_000_000)
    """JSON values (every property value and array item) or XML elements and attributes."""
    max_depth: int = Field(default=32, ge=8, le=256)
    """Objects and arrays (XML: elements) nested in one another."""
    max_array_items: int = Field(default=500, ge=10, le=1_000_000)
    max_string_chars: int = Field(default=65_536, ge=1024, le=16_777_216)
    max_number_digits: int = Field(default=32, ge=16, le=4000)
    task_bytes: int = Field(default=65_536, ge=1024)
    """``PUT``/``PATCH /fhir/r4/Task/{id}`` and ``PUT /fhir/stu3/Task/{id}``."""
    observation_bytes: int = Field(default=65_536, ge=1024)
    """``POST /fhir/r4/Observation`` and ``POST /fhir/stu3/Observation``."""
    feedback_bundle_bytes: int = Field(default=262_144, ge=1024)
    """A welfare client's Bundle of Tasks and Observations (``POST /fhir/r4``)."""
    token_bytes: int = Field(default=16_384, ge=1024)
    """``POST /oauth/token`` (a form)."""
    webhook_bytes: int = Field(default=65_536, ge=1024)
    """``POST /feedback/{connector}``."""
    search_bytes: int = Field(default=16_384, ge=1024)
    """``POST /fhir/r4/Task/_search`` (a form)."""
