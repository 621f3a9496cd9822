"""LightGBM boosters from their text model files."""

from __future__ import annotations

import lightgbm
import numpy as np

from inferline.runtimes._signature import check_declared, single_input
from inferline.runtimes.base import Inputs, Model, Outputs
from inferline.settings import TensorSpec

__all__ = ["LightGBMModel"]


class LightGBMModel(Model):
    """A ``lightgbm.Booster``: input ``input`` (FP64 ``[-1, num_feature]``), output ``predict``.

    ``predict`` is FP64: ``[-1]``, or ``[-1, k]`` when the booster builds k trees
    per iteration (multi-class). ``parameters.num_threads`` (default 1) sets
    LightGBM's threads per prediction; the executor already runs requests side by side.
    """

    artifact_suffixes = (".txt",)

    def load(self) -> None:
        self._input = single_input(self.name, self.inputs)
        booster = lightgbm.Booster(model_file=str(self.artifact))
        if not self.inputs:
            shape = [-1, booster.num_feature()]
            self.inputs = [TensorSpec(name="input", datatype="FP64", shape=shape)]
        if self.outputs:
            check_declared(self.name, "output", self.outputs, ["predict"])
        else:
            per_iteration = booster.num_model_per_iteration()
            shape = [-1] if per_iteration == 1 else [-1, per_iteration]
            self.outputs = [TensorSpec(name="predict", datatype="FP64", shape=shape)]
        self._num_threads = int(self.settings.parameters.get("num_threads", 1))
        self._booster = booster

    def predict(self, inputs: Inputs) -> Outputs:
        # predict is typed to return lists and sparse matrices too; for arrays, asarray is free.
        result = self._booster.predict(inputs[self._input], num_threads=self._num_threads)
        return {"predict": np.asarray(result)}

    def unload(self) -> None:
        del self._booster
