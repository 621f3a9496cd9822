"""A model's ``model-settings.yaml``: how to load it and what it accepts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inferline.errors import ModelLoadError
from inferline.settings._files import read_mapping
from inferline.settings.monitoring import ModelMonitoring
from inferline.types import DATATYPES

logger = logging.getLogger(__name__)

MODEL_SETTINGS_FILE = "model-settings.yaml"


class TensorSpec(BaseModel):
    """One input or output of a model's signature."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str
    """Tensor name as clients send it."""
    datatype: str
    """V2 datatype (FP32, INT64, BYTES, ...)."""
    shape: list[int]
    """Dimensions; -1 for any size (the first is usually the batch dimension)."""
    min: float | list[float] | None = None
    """Smallest allowed value: one for all elements, or one per feature (last dimension)."""
    max: float | list[float] | None = None
    """Largest allowed value: one for all elements, or one per feature (last dimension)."""

    @field_validator("datatype")
    @classmethod
    def _known_datatype(cls, value: str) -> str:
        upper = value.upper()
        if upper not in DATATYPES:
            raise ValueError(f"unknown datatype {value!r}; expected one of {', '.join(DATATYPES)}")
        return upper

    @field_validator("shape")
    @classmethod
    def _valid_shape(cls, value: list[int]) -> list[int]:
        if any(d < -1 for d in value):
            raise ValueError(f"shape {value} has a dimension below -1")
        return value


class BatchingSettings(BaseModel):
    """Dynamic batching: requests are merged along the first dimension."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    max_batch_size: int = Field(default=0, ge=0)
    """Most rows in one merged batch; 0 turns batching off."""
    max_queue_delay_ms: float = Field(default=2.0, ge=0)
    """How long the first queued request waits for company before its batch runs."""
    max_queue_size: int = Field(default=1024, ge=1)
    """Queued requests beyond this are refused at once with 503 and Retry-After."""
    max_concurrent_batches: int = Field(default=2, ge=1)
    """Batches of this model that may run at the same time."""


class PayloadLogSettings(BaseModel):
    """Which of a model's requests the payload log keeps, and what it hides."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    sample_rate: float = Field(default=1.0, ge=0, le=1)
    """Share of requests recorded (1.0: all)."""
    redact: list[str] = Field(default_factory=list)
    """Input or output names whose values are replaced by "[redacted]"."""


class CacheSettings(BaseModel):
    """The prediction cache for one model: identical inputs answered without the model."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    enabled: bool = False
    """Cache this model's successful answers (requests opt out with parameter cache=false)."""
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """In-process cache size in bytes of cached outputs (least recently used go first)."""
    ttl_seconds: float = Field(default=300.0, gt=0)
    """How long an answer stays cached."""


class ModelSettings(BaseModel):
    """A model's ``model-settings.yaml``: how to load it and what it accepts."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str = ""
    """Model name; defaults to its folder name."""
    runtime: str
    """Runtime: an entry point of group ``inferline.runtimes`` or a dotted class path."""
    inputs: list[TensorSpec] | None = None
    """Input signature; read from the artifact when the format carries one."""
    outputs: list[TensorSpec] | None = None
    """Output signature; read from the artifact when the format carries one."""
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    """Dynamic batching; off unless ``max_batch_size`` is set."""
    executor: Literal["auto", "thread", "inline"] = "auto"
    """Where a sync predict runs: ``thread`` (the server's thread pool), ``inline`` (on
    the event loop: only for models that take microseconds), or ``auto`` (inline when a
    probe on zeros shows a median call under 100 us, for requests of up to
    ``inline_max_rows`` rows; else threads)."""
    probe_budget_ms: float = Field(default=50.0, gt=0)
    """Time ``executor: auto`` may spend timing predict at load: one untimed call, then
    up to 16 timed calls while within this budget (a slow model is called once)."""
    inline_max_rows: int = Field(default=64, ge=0)
    """With ``executor: auto``, a model that runs inline still sends requests (or
    batches) of more rows than this to the thread pool, so they never stall the loop."""
    max_threads: int | None = Field(default=None, ge=1)
    """Most calls of this model's sync code in the thread pool at once; default: all of
    ``executor_threads`` but one. A call past its ``timeout_ms`` keeps its thread until
    it returns, so this is what stops one slow model from starving the others."""
    payload_log: PayloadLogSettings = Field(default_factory=PayloadLogSettings)
    """Sampling and redaction for the payload log (when the server has one)."""
    cache: CacheSettings = Field(default_factory=CacheSettings)
    """Prediction cache (off by default)."""
    warmup_requests: int = Field(default=3, ge=0)
    """Inferences on zero-filled inputs before a new version takes traffic; 0 skips."""
    timeout_ms: float | None = Field(default=None, gt=0)
    """Per-request timeout; past it the client gets 504 / DEADLINE_EXCEEDED."""
    artifact: str | None = None
    """Artifact file name inside a version folder, when there is more than one file."""
    sha256: str | None = None
    """Pinned SHA-256 of the artifact; required for pickle/joblib files."""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """Runtime-specific options (e.g. ``class`` for the python runtime)."""
    monitoring: ModelMonitoring = Field(default_factory=ModelMonitoring)
    """How quality monitoring reads this model's outputs (task, prediction, probabilities)."""

    @model_validator(mode="after")
    def _unique_names(self) -> ModelSettings:
        for kind, specs in (("input", self.inputs), ("output", self.outputs)):
            names = [s.name for s in specs or ()]
            if len(names) != len(set(names)):
                raise ValueError(f"duplicate {kind} names in {names}")
        return self


class _ModelOverrides(BaseSettings):
    """``INFERLINE_MODEL_*`` variables that override any model-settings file."""

    model_config = SettingsConfigDict(env_prefix="INFERLINE_MODEL_", extra="ignore")

    runtime: str | None = None
    timeout_ms: float | None = None


def load_model_settings(folder: Path) -> ModelSettings:
    """Read and validate ``<folder>/model-settings.yaml`` (name defaults to the folder)."""
    path = folder / MODEL_SETTINGS_FILE
    try:
        raw = read_mapping(path, "model settings")
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
    overrides = _ModelOverrides().model_dump(exclude_none=True)
    raw.update(overrides)
    name = raw.get("name") or folder.name
    if raw.get("name") and raw["name"] != folder.name:
        logger.warning(
            "%s names model %r inside folder %r; using %r", path, raw["name"], folder.name, name
        )
    raw["name"] = name
    try:
        return ModelSettings.model_validate(raw)
    except ValidationError as exc:
        raise ModelLoadError(f"{path}: {exc}") from exc
