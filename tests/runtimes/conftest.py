"""Runtime fixtures: a small seeded data set, a version folder and a loader."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inferline.runtimes.base import Model
from inferline.runtimes.loader import load_model
from inferline.settings import ModelSettings

Loader = Callable[..., Awaitable[Model]]

N_FEATURES = 6
N_CLASSES = 3


@pytest.fixture(scope="session")
def classification() -> tuple[np.ndarray, np.ndarray]:
    """200 rows, 6 FP64 features, 3 INT64 classes that depend on the first three features.

    Built with numpy alone, so the torch, XGBoost and LightGBM tests do not need sklearn.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, N_FEATURES))
    y = np.argmax(x[:, :N_CLASSES] + 0.3 * rng.normal(size=(200, N_CLASSES)), axis=1)
    return x, y.astype(np.int64)


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="test-model") as pool:
        yield pool


@pytest.fixture
def version_dir(tmp_path: Path) -> Path:
    """``<tmp>/m/1``: where a test saves the artifact of model ``m`` version 1."""
    path = tmp_path / "m" / "1"
    path.mkdir(parents=True)
    return path


@pytest.fixture
def load(version_dir: Path, executor: ThreadPoolExecutor) -> Loader:
    """``await load("onnx", **model_settings)`` loads ``version_dir`` as the server would."""

    async def load_version(runtime: str, **settings: Any) -> Model:
        model_settings = ModelSettings(name="m", runtime=runtime, **settings)
        return await load_model(model_settings, "1", version_dir, executor)

    return load_version
