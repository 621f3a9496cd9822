"""The server's settings (``INFERLINE_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from inferline.settings._files import read_mapping
from inferline.settings.monitoring import MonitoringSettings
from inferline.settings.security import AuthSettings, Secret
from inferline.settings.streaming import StreamSettings
from inferline.settings.transport import ConnectionLimits

#: URL schemes each payload sink accepts in ``payload_log_url``.
_SINK_SCHEMES = {"redis": ("redis", "rediss", "unix"), "postgres": ("postgresql", "postgres")}


class Settings(BaseSettings):
    """Server settings (``INFERLINE_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="INFERLINE_",
        env_nested_delimiter="__",
        extra="ignore",
        use_attribute_docstrings=True,
        hide_input_in_errors=True,  # URLs in these settings may carry passwords
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
    registry_url: Secret | None = None
    """Registry database: ``sqlite:///path.db`` or ``postgresql://user@host/db``; default
    ``sqlite:///<home>/registry.db`` (a secret: it may carry a password)."""
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
    grpc_engine: Literal["native", "grpcio"] = "native"
    """What serves gRPC: ``native`` (inferline's own HTTP/2 server in the event loop,
    cleartext only, several times cheaper per call) or ``grpcio`` (grpc.aio); see
    docs/protocols.md."""
    limits: ConnectionLimits = Field(default_factory=ConnectionLimits)
    """What a hostile client may cost: connection caps, timeouts, frame budgets (see
    docs/security.md)."""
    tls_cert: Path | None = None
    """PEM certificate (chain) file: REST serves HTTPS and gRPC serves TLS (ALPN ``h2``
    on the native engine); reloaded on SIGHUP."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    tls_client_ca: Path | None = None
    """PEM CA bundle: clients must present a certificate it signed (mutual TLS)."""
    max_tensors: int = Field(default=256, ge=1)
    """Most input tensors in one request."""
    max_elements: int = Field(default=16 * 1024 * 1024, ge=1)
    """Most elements in one input tensor."""
    executor_threads: int = Field(default=4, ge=1)
    """Threads that run synchronous model code, shared by all models; each model may
    hold at most its ``max_threads`` of them (default: all but one)."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    """Server log level."""
    monitoring: MonitoringSettings = Field(default_factory=MonitoringSettings)
    """Drift, skew, quality and alert rules (see docs/monitoring.md)."""
    log_format: Literal["json", "console"] = "json"
    """JSON lines (for log shippers) or plain console text."""
    request_log: Literal["debug", "info", "off"] = "info"
    """Level of the one-line-per-request log (request id, model, version, status, latency)."""
    cache_url: Secret | None = None
    """``redis://…`` to keep prediction caches in Redis (shared by workers and replicas)."""
    metrics: bool = True
    """Serve Prometheus metrics at ``/metrics``."""
    metrics_refresh_seconds: float = Field(default=1.0, gt=0)
    """How often in-flight, queue-depth, model and process gauges are sampled."""
    payload_log: Literal["off", "file", "redis", "postgres"] = "off"
    """Where request/response payloads are recorded (per-model sampling and redaction)."""
    payload_log_dir: Path | None = None
    """Folder of the rotating payload files; default ``<home>/payloads``."""
    payload_log_url: Secret | None = Field(default=None, validate_default=True)
    """``redis://…`` for the Redis Stream sink, ``postgresql://…`` for the table sink
    (required by ``payload_log=redis`` and ``payload_log=postgres``)."""
    payload_log_queue: int = Field(default=10_000, ge=1)
    """Records waiting to be written; past this they are dropped and counted."""
    payload_log_max_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    """Size at which the payload file rotates."""
    payload_log_backups: int = Field(default=5, ge=1)
    """Rotated payload files kept."""
    auth: AuthSettings = Field(default_factory=AuthSettings)
    """Authentication, roles and rate limits (see docs/security.md). Authentication is
    on as soon as an API key exists or a JWT setting is set."""
    stream: StreamSettings = Field(default_factory=StreamSettings)
    """The stream consumer of ``inferline stream`` (see docs/streaming.md)."""
    insecure: bool = False
    """Allow serving without authentication on an address other than loopback."""
    allow_code_upload: bool = False
    """Accept Python code and pickles uploaded over HTTP (from the ``admin`` role only)."""
    trusted_pickle_sha256: list[str] = Field(default_factory=list)
    """SHA-256 digests of the pickles an HTTP upload may carry (with
    ``allow_code_upload``); the pin is never read from the uploading request."""

    @field_validator("payload_log_url")
    @classmethod
    def _payload_log_url(cls, url: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        kind = info.data.get("payload_log")
        if kind not in _SINK_SCHEMES:
            return url
        schemes = _SINK_SCHEMES[kind]
        if url is None or url.get_secret_value().partition(":")[0] not in schemes:
            raise ValueError(f"payload_log={kind} needs a {schemes[0]}:// URL here")
        return url

    @model_validator(mode="after")
    def _tls_files(self) -> Settings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if self.tls_client_ca is not None and self.tls_cert is None:
            raise ValueError("tls_client_ca needs tls_cert and tls_key")
        return self

    @property
    def registry_database(self) -> str:
        if self.registry_url is not None:
            return self.registry_url.get_secret_value()
        return f"sqlite:///{self.home / 'registry.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.artifact_dir or self.home / "artifacts"

    @classmethod
    def load(cls, config_file: Path | None = None, **flags: Any) -> Settings:
        """Flags (non-None) > ``INFERLINE_*`` environment > YAML file > defaults."""
        values: dict[str, Any] = {}
        if config_file is not None:
            values.update(read_mapping(config_file, "settings file"))
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


def settings_error(exc: ValidationError) -> str:
    """A validation error on one line: ``where (INFERLINE_…): why`` per error, ``;`` between."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        loc = [str(part) for part in error["loc"]]
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{setting_label(loc)}: {message}" if loc else message)
    return "; ".join(parts)


def setting_label(loc: list[str]) -> str:
    """A setting's dotted name and, for a plain field, the environment variable that sets it."""
    name = ".".join(loc)
    if any(part.isdigit() for part in loc):
        return name
    return f"{name} (INFERLINE_{'__'.join(loc).upper()})"
