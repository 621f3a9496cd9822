"""Typed settings: the server's (``Settings``) and each model's (``ModelSettings``).

Precedence, stated once: command-line flags > ``INFERLINE_*`` environment
variables (nested with ``__``) > a settings file > the defaults below. A model's
``model-settings.yaml`` is validated by the same machinery, and
``INFERLINE_MODEL_*`` variables override it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from inferline.errors import ModelLoadError
from inferline.types import DATATYPES

__all__ = [
    "MODEL_SETTINGS_FILE",
    "AlertRule",
    "BatchingSettings",
    "CacheSettings",
    "DriftSettings",
    "ModelMonitoring",
    "ModelSettings",
    "MonitoringSettings",
    "PayloadLogSettings",
    "QualitySettings",
    "RetrainHook",
    "Settings",
    "TensorSpec",
    "load_model_settings",
]

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


Stattest = Literal["auto", "ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi"]


class DriftSettings(BaseModel):
    """Drift and skew checks; the defaults follow Evidently's (see docs/monitoring.md)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    window_rows: int = Field(default=1000, ge=1)
    """Most recent served rows per model version that drift is measured on."""
    min_rows: int = Field(default=50, ge=1)
    """Fewer served rows than this: no drift verdict yet (small windows are noise)."""
    skew_rows: int = Field(default=200, ge=1)
    """The first rows a version serves are checked once against its reference (skew)."""
    small_reference_rows: int = Field(default=1000, ge=1)
    """References up to this many rows use tests (KS, chi-squared, z); larger ones use
    distances (Wasserstein, Jensen-Shannon)."""
    stattest: Stattest = "auto"
    """Method for every column: ``auto`` picks per column as Evidently does."""
    feature_stattest: dict[str, Stattest] = Field(default_factory=dict)
    """Method per column name, over ``stattest``."""
    p_value: float = Field(default=0.05, gt=0, lt=1)
    """Tests (ks, chisquare, z) flag drift when their p-value is below this."""
    distance_threshold: float = Field(default=0.1, gt=0)
    """Distances (wasserstein normed by the reference's std, jensenshannon) flag drift at
    or above this."""
    psi_threshold: float = Field(default=0.1, gt=0)
    """PSI flags drift at or above this."""
    feature_threshold: dict[str, float] = Field(default_factory=dict)
    """Threshold per column name, over the method's default."""
    drift_share: float = Field(default=0.5, gt=0, le=1)
    """The data set drifts when at least this share of its input features drift."""


class QualitySettings(BaseModel):
    """Joining ground truth to served predictions."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    window: int = Field(default=1000, ge=1)
    """Most recent (prediction, truth) pairs per model version that quality is computed on."""
    pending: int = Field(default=100_000, ge=1)
    """Answered requests kept waiting for their truth; the oldest go first."""
    pending_seconds: float = Field(default=86_400.0, gt=0)
    """How long an answered request waits for its truth."""


class RetrainHook(BaseModel):
    """What starts the user's retraining pipeline: a webhook or a command (never a shell)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    webhook: str | None = None
    """URL that receives the alert as a JSON POST."""
    command: list[str] | None = None
    """Program and arguments; the alert JSON arrives on its standard input."""
    timeout_seconds: float = Field(default=3600.0, gt=0)
    """A command still running after this is killed."""

    @model_validator(mode="after")
    def _one_target(self) -> RetrainHook:
        if (self.webhook is None) == (self.command is None):
            raise ValueError("retrain needs exactly one of 'webhook' or 'command'")
        if self.command is not None and not self.command:
            raise ValueError("retrain 'command' must name a program")
        return self


class AlertRule(BaseModel):
    """A figure, a threshold, a window and a cool-down; a breach fires once per cool-down."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    name: str
    """Rule name, carried by the alert."""
    metric: str
    """``quality.<accuracy|precision|recall|f1|roc_auc|mae|rmse|r2>``, ``drift.share``,
    ``drift.dataset``, ``drift.prediction_share``, ``drift.feature.<column>``,
    ``skew.share``, ``latency.<p50|p95|p99|mean>``, ``errors.rate`` or ``requests.rate``."""
    model: str | None = None
    """Model the rule watches; None: every model."""
    version: str | None = None
    """Version the rule watches; None: every version with data."""
    op: Literal[">", ">=", "<", "<="] = ">"
    """How the figure compares with the threshold to count as a breach."""
    threshold: float
    """The figure's limit."""
    window_seconds: float | None = Field(default=None, gt=0)
    """Compute the figure over the last this many seconds only; None: the whole window."""
    cooldown_seconds: float = Field(default=300.0, ge=0)
    """After firing, a breach of the same rule and version stays quiet this long."""
    webhook: str | None = None
    """URL that receives the alert as a JSON POST (a log line is written either way)."""
    retrain: RetrainHook | None = None
    """Retraining pipeline to start when the rule fires."""


class MonitoringSettings(BaseModel):
    """Drift, skew, quality and alerts over what the server answers."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    enabled: bool = True
    """Watch served requests at all."""
    interval_seconds: float = Field(default=10.0, gt=0)
    """How often figures (and their gauges) are refreshed and alert rules evaluated."""
    request_window: int = Field(default=10_000, ge=1)
    """Recent requests per model version kept for latency, error and rate figures."""
    drift: DriftSettings = Field(default_factory=DriftSettings)
    """Drift and skew."""
    quality: QualitySettings = Field(default_factory=QualitySettings)
    """Ground truth and quality."""
    alerts: list[AlertRule] = Field(default_factory=list)
    """Alert rules."""


class ModelMonitoring(BaseModel):
    """How quality reads a model's outputs, when the signature does not say it plainly."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    task: Literal["auto", "classification", "regression"] = "auto"
    """``auto``: a 1-D integer/string output means classification, a 1-D float one regression."""
    prediction: str | None = None
    """Output holding the predicted label or value; guessed from names and datatypes."""
    probabilities: str | None = None
    """Output holding class probabilities ([-1, k]) or the positive class's score ([-1])."""


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
    """Where a sync predict runs: ``thread`` (a thread pool), ``inline`` (on the event
    loop: only for models that take microseconds), or ``auto`` (inline when a warm-up
    on zeros shows a median call under 100 us, else threads)."""
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
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: expected a mapping at the top level")
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


class Settings(BaseSettings):
    """Server settings (``INFERLINE_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="INFERLINE_",
        env_nested_delimiter="__",
        extra="ignore",
        use_attribute_docstrings=True,
    )

    host: str = "127.0.0.1"
    """Address both servers listen on."""
    http_port: int = Field(default=8080, ge=0, le=65535)
    """REST port (0 picks a free one)."""
    grpc_port: int | None = Field(default=8081, ge=0, le=65535)
    """gRPC port; None turns gRPC off."""
    model_dir: Path | None = None
    """Folder of models (``<name>/model-settings.yaml``, ``<name>/<version>/``) to serve
    instead of the registry."""
    home: Path = Path.home() / ".inferline"
    """Where the embedded registry database and artifact folder live by default."""
    registry_url: str | None = None
    """Registry database: ``sqlite:///path.db`` or ``postgresql://user@host/db``; default
    ``sqlite:///<home>/registry.db``."""
    artifact_dir: Path | None = None
    """Content-addressed artifact folder; default ``<home>/artifacts``."""
    registry_poll_seconds: float = Field(default=0.5, gt=0)
    """How often a server checks the registry for changes (replicas converge within it)."""
    workers: int = Field(default=1, ge=1)
    """Server processes sharing the same ports."""
    max_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """Largest REST body; bigger ones get 413 before they are read whole."""
    grpc_max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """Largest gRPC message in either direction."""
    max_tensors: int = Field(default=256, ge=1)
    """Most input tensors in one request."""
    max_elements: int = Field(default=16 * 1024 * 1024, ge=1)
    """Most elements in one input tensor."""
    executor_threads: int = Field(default=4, ge=1)
    """Threads that run synchronous model code, shared by all models."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Server log level."""
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    """Drift, skew, quality and alert rules (see docs/monitoring.md)."""
    log_format: Literal["json", "console"] = "json"
    """JSON lines (for log shippers) or plain console text."""
    request_log: Literal["debug", "info", "off"] = "info"
    """Level of the one-line-per-request log (request id, model, version, status, latency)."""
    cache_url: str | None = None
    """``redis://…`` to keep prediction caches in Redis (shared by workers and replicas)."""
    metrics: bool = True
    """Serve Prometheus metrics at ``/metrics``."""
    metrics_refresh_seconds: float = Field(default=1.0, gt=0)
    """How often in-flight, queue-depth, model and process gauges are sampled."""
    payload_log: Literal["off", "file", "redis", "postgres"] = "off"
    """Where request/response payloads are recorded (per-model sampling and redaction)."""
    payload_log_dir: Path | None = None
    """Folder of the rotating payload files; default ``<home>/payloads``."""
    payload_log_url: str | None = None
    """``redis://…`` for the Redis Stream sink, ``postgresql://…`` for the table sink."""
    payload_log_queue: int = Field(default=10_000, ge=1)
    """Records waiting to be written; past this they are dropped and counted."""
    payload_log_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Size at which the payload file rotates."""
    payload_log_backups: int = Field(default=5, ge=1)
    """Rotated payload files kept."""

    @property
    def registry_database(self) -> str:
        return self.registry_url or f"sqlite:///{self.home / 'registry.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.artifact_dir or self.home / "artifacts"

    @classmethod
    def load(cls, config_file: Path | None = None, **flags: Any) -> Settings:
        """Flags (non-None) > ``INFERLINE_*`` environment > YAML file > defaults."""
        values: dict[str, Any] = {}
        if config_file is not None:
            try:
                loaded = yaml.safe_load(config_file.read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise ValueError(f"cannot read settings file {config_file}: {exc}") from exc
            if not isinstance(loaded, dict):
                raise ValueError(f"settings file {config_file}: expected a mapping")
            values.update(loaded)
        from_env = cls()
        _merge(values, from_env.model_dump(exclude_unset=True))
        values.update({key: value for key, value in flags.items() if value is not None})
        return cls(**values)


def _merge(into: dict[str, Any], other: dict[str, Any]) -> None:
    """Nested update: ``INFERLINE_MONITORING__DRIFT__P_VALUE`` keeps the file's alert rules."""
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
