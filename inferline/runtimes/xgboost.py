"""XGBoost boosters (JSON, UBJSON or the older binary files), predicted in place."""

from __future__ import annotations

import numpy as np
import xgboost

from inferline.errors import ModelLoadError
from inferline.runtimes._signature import batch_spec, check_declared, single_input
from inferline.runtimes.base import Inputs, Model, Outputs
from inferline.settings import TensorSpec

__all__ = ["XGBoostModel"]


class XGBoostModel(Model):
    """An ``xgboost.Booster``: input ``input`` (FP32 ``[-1, num_features]``), output ``predict``.

    ``predict`` is FP32, ``[-1]`` or ``[-1, k]`` (e.g. multi-class probabilities);
    its shape comes from one prediction on a row of zeros at load.
    ``inplace_predict`` needs no DMatrix and is safe to call from several threads.
    ``parameters.nthread`` (default 1) sets XGBoost's threads per prediction.
    """

    artifact_suffixes = (".json", ".ubj", ".bst", ".model")

    def load(self) -> None:
        self._input = single_input(self.name, self.inputs)
        data = self.artifact.read_bytes()
        # XGBoost's UBJSON reader trusts every length it reads (no bounds check in
        # UBJReader::ReadStream), so a truncated file reads past its buffer and can hang
        # or allocate gigabytes. A JSON or UBJSON model is one object: whole, it ends in "}".
        if data.startswith(b"{") and not data.rstrip().endswith(b"}"):
            raise ModelLoadError(
                f"model {self.name!r}: {self.artifact.name} is truncated (a JSON or UBJSON "
                "XGBoost model ends with '}'); copy it again, and pin its sha256"
            )
        # From bytes, XGBoost detects JSON, UBJSON or the old binary format itself
        # instead of guessing from the suffix (and warning about .bst and .model).
        booster = xgboost.Booster(model_file=bytearray(data))
        booster.set_param({"nthread": int(self.settings.parameters.get("nthread", 1))})
        n_features = booster.num_features()
        if not self.inputs:
            self.inputs = [TensorSpec(name="input", datatype="FP32", shape=[-1, n_features])]
        if self.outputs:
            check_declared(self.name, "output", self.outputs, ["predict"])
        else:
            probe = booster.inplace_predict(np.zeros((1, n_features), dtype=np.float32))
            self.outputs = [batch_spec("predict", probe)]
        self._booster = booster

    def predict(self, inputs: Inputs) -> Outputs:
        return {"predict": self._booster.inplace_predict(inputs[self._input])}

    def unload(self) -> None:
        del self._booster
