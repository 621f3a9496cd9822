"""TorchScript models on CPU; the signature travels inside the archive.

Where the signature comes from, first found wins:

1. ``inputs``/``outputs`` in model-settings.yaml;
2. ``inferline-signature.json`` inside the archive (``torch.jit.save(...,
   _extra_files=...)``), ``{"inputs": [TensorSpec, ...], "outputs": [...]}``,
   which :func:`save_torchscript` writes;
3. an example input, run once at load: the archive's ``example_input.json`` (a
   nested list; floats become float32, integers int64) or a tensor attribute
   ``example_input`` of the module. It gives one input, ``input``.

Inputs are passed positionally in signature order. A returned tensor becomes
the one output (``output`` unless named), a tuple is named in signature order
(``output_0``, ``output_1``, ... unless named) and a dict keeps its keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inferline.errors import ModelLoadError
from inferline.runtimes._signature import batch_spec
from inferline.runtimes.base import Inputs, Model, Outputs
from inferline.settings import TensorSpec

__all__ = ["EXAMPLE_FILE", "SIGNATURE_FILE", "TorchModel", "save_torchscript"]

SIGNATURE_FILE = "inferline-signature.json"
EXAMPLE_FILE = "example_input.json"


class TorchModel(Model):
    """A TorchScript archive run on CPU in eval mode under ``torch.inference_mode``.

    ``parameters.num_threads`` (default 1) goes to ``torch.set_num_threads``. That
    setting is process-wide in PyTorch: the last torch model loaded sets it for all.
    """

    artifact_suffixes = (".pt", ".pth", ".torchscript")

    def load(self) -> None:
        torch.set_num_threads(int(self.settings.parameters.get("num_threads", 1)))
        extra: dict[str, Any] = {SIGNATURE_FILE: "", EXAMPLE_FILE: ""}
        module = torch.jit.load(  # type: ignore[no-untyped-call]
            str(self.artifact), map_location="cpu", _extra_files=extra
        )
        module.eval()
        if not (self.inputs and self.outputs):
            inputs, outputs = self._stored_signature(module, extra)
            self.inputs = self.inputs or inputs
            self.outputs = self.outputs or outputs
        self._input_names = [spec.name for spec in self.inputs]
        self._output_names = [spec.name for spec in self.outputs]
        self._module = module

    def predict(self, inputs: Inputs) -> Outputs:
        with torch.inference_mode():
            result = self._module(*[_tensor(inputs[name]) for name in self._input_names])
        return _named_outputs(result, self._output_names)

    def unload(self) -> None:
        del self._module

    def _stored_signature(
        self, module: Any, extra: dict[str, Any]
    ) -> tuple[list[TensorSpec], list[TensorSpec]]:
        if extra[SIGNATURE_FILE]:
            try:
                stored = json.loads(extra[SIGNATURE_FILE])
                return (
                    [TensorSpec.model_validate(spec) for spec in stored["inputs"]],
                    [TensorSpec.model_validate(spec) for spec in stored["outputs"]],
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise ModelLoadError(
                    f"model {self.name!r}: {SIGNATURE_FILE} in {self.artifact.name} is not "
                    f'{{"inputs": [...], "outputs": [...]}} of tensor specs: {exc}'
                ) from exc
        example: Any = getattr(module, "example_input", None)
        if extra[EXAMPLE_FILE]:
            example = torch.tensor(json.loads(extra[EXAMPLE_FILE]))
        if not isinstance(example, torch.Tensor):
            return [], []  # Model.bind then asks for 'inputs' in model-settings.yaml.
        with torch.inference_mode():
            result = module(example)
        return [_spec("input", example)], _output_specs(result)


def save_torchscript(
    module: torch.nn.Module,
    path: str | Path,
    example_input: torch.Tensor | tuple[torch.Tensor, ...],
) -> None:
    """Save ``module`` as TorchScript with its signature inside, ready for the torch runtime.

    A ``ScriptModule`` is saved as it is; any other module is put in eval mode and
    traced with the example. Inputs are named ``input`` (``input_0``, ``input_1``,
    ... for a tuple) with shape ``[-1, *example.shape[1:]]``; the outputs are read
    by running the example.
    """
    examples = example_input if isinstance(example_input, tuple) else (example_input,)
    if not isinstance(module, torch.jit.ScriptModule):
        module = torch.jit.trace(module.eval(), examples, strict=False)  # type: ignore[no-untyped-call]
    names = ["input"] if len(examples) == 1 else [f"input_{i}" for i in range(len(examples))]
    with torch.inference_mode():
        result = module(*examples)
    signature = {
        "inputs": [_spec(name, t).model_dump() for name, t in zip(names, examples, strict=True)],
        "outputs": [spec.model_dump() for spec in _output_specs(result)],
    }
    torch.jit.save(module, str(path), _extra_files={SIGNATURE_FILE: json.dumps(signature)})


def _tensor(array: np.ndarray[Any, Any]) -> torch.Tensor:
    # torch warns on read-only arrays (e.g. decoded from a request body); copy those.
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _spec(name: str, tensor: torch.Tensor) -> TensorSpec:
    return batch_spec(name, tensor.detach().cpu().numpy())


def _output_specs(result: Any) -> list[TensorSpec]:
    return [batch_spec(name, array) for name, array in _named_outputs(result, []).items()]


def _named_outputs(result: Any, names: list[str]) -> dict[str, np.ndarray[Any, Any]]:
    if isinstance(result, torch.Tensor):
        return {names[0] if names else "output": result.numpy()}
    if isinstance(result, dict):
        return {str(key): value.numpy() for key, value in result.items()}
    if isinstance(result, tuple | list):
        names = names or [f"output_{i}" for i in range(len(result))]
        return {name: value.numpy() for name, value in zip(names, result, strict=True)}
    raise TypeError(f"the model returned a {type(result).__name__}, not tensors")
