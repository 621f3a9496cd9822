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
    AlertRule,
    DriftSettings,
    ModelMonitoring,
    MonitoringSettings,
    QualitySettings,
    RetrainHook,
)
from inferline.settings.server import Settings
from inferline.settings.transport import ConnectionLimits

__all__ = [
    "MODEL_SETTINGS_FILE",
    "AlertRule",
    "BatchingSettings",
    "CacheSettings",
    "ConnectionLimits",
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
