"""Typed settings: the server's (``Settings``) and each model's (``ModelSettings``).

Precedence, stated once: command-line flags > ``INFERLINE_*`` environment
variables (nested with ``__``) > a settings file > the defaults below. A model's
``model-settings.yaml`` is validated by the same machinery, and
``INFERLINE_MODEL_*`` variables override it.
"""

from inferline.settings.model import (
    MODEL_SETTINGS_FILE,
    BatchingSettings,
    CacheSettings,
    ModelSettings,
    PayloadLogSettings,
    TensorSpec,
    load_model_settings,
)
from inferline.settings.monitoring import (
    ALERT_METRICS,
    AlertRule,
    DriftSettings,
    ModelMonitoring,
    MonitoringSettings,
    QualitySettings,
    RetrainHook,
)
from inferline.settings.security import AuthSettings, JwtSettings, RateLimitSettings
from inferline.settings.server import Settings, setting_label, settings_error
from inferline.settings.streaming import StreamSettings
from inferline.settings.transport import ConnectionLimits

__all__ = [
    "ALERT_METRICS",
    "MODEL_SETTINGS_FILE",
    "AlertRule",
    "AuthSettings",
    "BatchingSettings",
    "CacheSettings",
    "ConnectionLimits",
    "DriftSettings",
    "JwtSettings",
    "ModelMonitoring",
    "ModelSettings",
    "MonitoringSettings",
    "PayloadLogSettings",
    "QualitySettings",
    "RateLimitSettings",
    "RetrainHook",
    "Settings",
    "StreamSettings",
    "TensorSpec",
    "load_model_settings",
    "setting_label",
    "settings_error",
]
