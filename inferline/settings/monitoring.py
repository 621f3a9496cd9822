"""Monitoring settings: drift, quality, alerts (server-wide and per model)."""

from __future__ import annotations

import importlib.util
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Stattest = Literal["auto", "ks", "chisquare", "z", "wasserstein", "jensenshannon", "psi"]

_QUALITY = ("accuracy", "precision", "recall", "f1", "roc_auc", "mae", "rmse", "r2")
#: Every figure an alert rule may name; ``drift.feature.<column>`` takes any column.
ALERT_METRICS = (
    *(f"quality.{name}" for name in _QUALITY),
    "drift.share",
    "drift.dataset",
    "drift.prediction_share",
    "skew.share",
    *(f"latency.{name}" for name in ("p50", "p95", "p99", "mean")),
    "errors.rate",
    "requests.rate",
)
FEATURE_METRIC = "drift.feature."


class DriftSettings(BaseModel):
    """Drift and skew checks; the defaults follow Evidently's (see docs/monitoring.md)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    window_rows: int = Field(default=1000, ge=1)
    """Most recent served rows per model version that drift is measured on."""
    min_rows: int = Field(default=50, ge=1)
    """Fewer served rows than this (in the window, or values in a column): no verdict yet."""
    skew_rows: int = Field(default=200, ge=1)
    """Skew is judged on consecutive blocks of this many rows since a version went live;
    the latest judged block gives the verdict, so it clears once a block is clean."""
    small_reference_rows: int = Field(default=1000, ge=1)
    """References up to this many rows use tests (KS, chi-squared, z); larger ones use
    distances (Wasserstein, Jensen-Shannon)."""
    stattest: Stattest = "auto"
    """Method for every column: ``auto`` picks per column as Evidently does."""
    feature_stattest: dict[str, Stattest] = Field(default_factory=dict)
    """Method per column name, over ``stattest``."""
    p_value: float = Field(default=0.05, gt=0, lt=1)
    """False-positive rate of one report: with ``bonferroni`` each of its k columns'
    tests (ks, chisquare, z) flags drift when its p-value is below ``p_value / k``."""
    correction: Literal["bonferroni", "none"] = "bonferroni"
    """Multiple testing: ``bonferroni`` divides ``p_value`` by the number of columns
    compared together; ``none`` tests each column at ``p_value`` (about ``k * p_value``
    false alarms per report)."""
    distance_threshold: float = Field(default=0.1, gt=0)
    """Distances (wasserstein normed by the reference's std, jensenshannon) flag drift at
    or above this, when the column's test (ks; chisquare) also rejects at the report's
    level: at small sample sizes a distance is mostly noise."""
    psi_threshold: float = Field(default=0.1, gt=0)
    """PSI flags drift at or above this, when chi-squared on the same bins also rejects."""
    feature_threshold: dict[str, float] = Field(default_factory=dict)
    """Threshold per column name, over the method's default (a test's is used as given,
    not divided)."""
    drift_share: float = Field(default=0.5, gt=0, le=1)
    """The data set drifts when at least this share of its input features drift."""


class QualitySettings(BaseModel):
    """Joining ground truth to served predictions."""

    # store_url may carry a password: errors name the field and the reason, not the value.
    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, hide_input_in_errors=True
    )

    window: int = Field(default=1000, ge=1)
    """Most recent (prediction, truth) pairs per model version that quality is computed on."""
    pending: int = Field(default=100_000, ge=1)
    """Answered requests kept waiting for their truth; the oldest go first."""
    pending_seconds: float = Field(default=86_400.0, gt=0)
    """How long an answered request waits for its truth."""
    store_url: str | None = None
    """``redis://…`` to keep answered requests waiting for their truth, and the quality
    windows, in Redis: shared by ``--workers N`` processes and replicas (needs
    ``inferline[redis]``). None keeps them in the process."""
    store_prefix: str = Field(default="inferline:feedback:", min_length=1)
    """Prefix of the store's Redis keys; deployments sharing one Redis keep apart by it."""

    @field_validator("store_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme = url.partition(":")[0]
        if scheme not in ("redis", "rediss", "unix"):
            kinds = "a redis://, rediss:// or unix:// URL"
            raise ValueError(f"store_url must be {kinds}, not {scheme}:")
        if importlib.util.find_spec("redis") is None:
            raise ValueError("store_url needs the Redis client: pip install 'inferline[redis]'")
        return url


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

    @model_validator(mode="after")
    def _known_metric(self) -> AlertRule:
        """A misspelt figure would never breach: refused when the rules load, not ignored."""
        metric = self.metric
        if metric in ALERT_METRICS or (
            metric.startswith(FEATURE_METRIC) and len(metric) > len(FEATURE_METRIC)
        ):
            return self
        known = ", ".join([*ALERT_METRICS, f"{FEATURE_METRIC}<column>"])
        raise ValueError(
            f"alert rule {self.name!r} names unknown metric {metric!r}; known metrics: {known}"
        )


class MonitoringSettings(BaseModel):
    """Drift, skew, quality and alerts over what the server answers."""

    # The outermost model's config decides what errors show (see QualitySettings).
    model_config = ConfigDict(
        extra="forbid", use_attribute_docstrings=True, hide_input_in_errors=True
    )

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
