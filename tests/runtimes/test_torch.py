"""TorchModel: signature from the archive or an example, predictions equal torch's own."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from inferline.errors import ModelLoadError  # noqa: E402 - after the importorskip
from inferline.runtimes.torch import save_torchscript  # noqa: E402
from inferline.settings import TensorSpec  # noqa: E402

pytestmark = [
    pytest.mark.torch,
    # PyTorch 2.13 deprecates TorchScript: every torch.jit call warns, including the
    # runtime's torch.jit.load. Silenced here only; the runtime still lets it through.
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"),
]


class Classifier(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=1)


class TwoInTwoOut(torch.nn.Module):
    def forward(self, x: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x * 2.0, counts.sum(dim=1)


class DictOut(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"score": x.sum(dim=1), "label": x.argmax(dim=1)}


class WithExampleAttribute(Classifier):
    def __init__(self) -> None:
        super().__init__()
        self.example_input = torch.zeros(1, 6)


def _expected(module: torch.nn.Module, *arrays: np.ndarray):
    with torch.no_grad():
        return module(*(torch.from_numpy(a) for a in arrays))


async def test_signature_saved_in_the_archive(classification, version_dir, load):
    x, _ = classification
    x32 = x.astype(np.float32)
    module = Classifier()
    save_torchscript(module, version_dir / "model.pt", torch.from_numpy(x32[:2]))

    model = await load("torch")

    assert model.inputs == [TensorSpec(name="input", datatype="FP32", shape=[-1, 6])]
    assert model.outputs == [TensorSpec(name="output", datatype="FP32", shape=[-1, 3])]
    outputs = await model.infer({"input": x32})
    np.testing.assert_allclose(outputs["output"], _expected(module, x32).numpy(), rtol=1e-6)


async def test_several_inputs_positionally_and_a_tuple_of_outputs(version_dir, load):
    module = TwoInTwoOut()
    example = (torch.ones(2, 3), torch.ones(2, 4, dtype=torch.int64))
    save_torchscript(module, version_dir / "model.pt", example)

    model = await load("torch")

    assert model.inputs == [
        TensorSpec(name="input_0", datatype="FP32", shape=[-1, 3]),
        TensorSpec(name="input_1", datatype="INT64", shape=[-1, 4]),
    ]
    assert model.outputs == [
        TensorSpec(name="output_0", datatype="FP32", shape=[-1, 3]),
        TensorSpec(name="output_1", datatype="INT64", shape=[-1]),
    ]
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    counts = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    outputs = await model.infer({"input_1": counts, "input_0": x})  # order from the signature
    np.testing.assert_array_equal(outputs["output_0"], x * 2)
    np.testing.assert_array_equal(outputs["output_1"], [10, 26])


async def test_dict_outputs_keep_their_keys(version_dir, load):
    save_torchscript(DictOut(), version_dir / "model.pt", torch.ones(2, 3))

    model = await load("torch")

    assert {spec.name for spec in model.outputs} == {"score", "label"}
    x = np.array([[1.0, 5.0, 2.0], [3.0, 0.0, -1.0]], dtype=np.float32)
    outputs = await model.infer({"input": x})
    np.testing.assert_array_equal(outputs["score"], [8.0, 2.0])
    np.testing.assert_array_equal(outputs["label"], [1, 0])


async def test_signature_from_example_input_json(classification, version_dir, load):
    x, _ = classification
    x32 = x.astype(np.float32)
    module = Classifier()
    traced = torch.jit.trace(module.eval(), torch.from_numpy(x32[:2]))
    example = json.dumps(x[:1].tolist())
    torch.jit.save(traced, version_dir / "model.pt", _extra_files={"example_input.json": example})

    model = await load("torch")

    assert model.inputs == [TensorSpec(name="input", datatype="FP32", shape=[-1, 6])]
    assert model.outputs == [TensorSpec(name="output", datatype="FP32", shape=[-1, 3])]
    outputs = await model.infer({"input": x32[:5]})
    np.testing.assert_allclose(outputs["output"], _expected(module, x32[:5]).numpy(), rtol=1e-6)


async def test_signature_from_example_input_attribute(version_dir, load):
    torch.jit.save(torch.jit.script(WithExampleAttribute()), version_dir / "model.pt")

    model = await load("torch")

    assert model.inputs == [TensorSpec(name="input", datatype="FP32", shape=[-1, 6])]
    assert model.outputs == [TensorSpec(name="output", datatype="FP32", shape=[-1, 3])]


async def test_no_signature_anywhere_asks_for_settings(version_dir, load):
    torch.jit.save(torch.jit.script(Classifier()), version_dir / "model.pt")

    with pytest.raises(ModelLoadError, match="declare 'inputs'"):
        await load("torch")


async def test_settings_signature_overrides_the_archive(classification, version_dir, load):
    x, _ = classification
    x32 = x.astype(np.float32)
    module = Classifier()
    save_torchscript(module, version_dir / "model.pt", torch.from_numpy(x32[:2]))
    inputs = [TensorSpec(name="features", datatype="FP32", shape=[-1, 6])]
    outputs = [TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3])]

    model = await load("torch", inputs=inputs, outputs=outputs, parameters={"num_threads": 2})

    assert model.inputs == inputs
    assert model.outputs == outputs
    result = await model.infer({"features": x32})
    np.testing.assert_allclose(result["probabilities"], _expected(module, x32).numpy(), rtol=1e-6)
    assert torch.get_num_threads() == 2


async def test_read_only_input_is_accepted_without_a_warning(version_dir, load):
    # A request body decoded with np.frombuffer is read-only; torch warns on those.
    save_torchscript(DictOut(), version_dir / "model.pt", torch.ones(2, 3))
    model = await load("torch")
    x = np.frombuffer(np.array([1.0, 2.0, 3.0], dtype=np.float32).tobytes(), dtype=np.float32)

    outputs = await model.infer({"input": x.reshape(1, 3)})

    np.testing.assert_array_equal(outputs["score"], [6.0])


async def test_truncated_archive_is_a_load_error(version_dir, load):
    path = version_dir / "model.pt"
    save_torchscript(Classifier(), path, torch.ones(2, 6))
    path.write_bytes(path.read_bytes()[:200])

    with pytest.raises(ModelLoadError, match="failed to load"):
        await load("torch")


async def test_malformed_stored_signature_is_a_clear_load_error(version_dir, load):
    traced = torch.jit.trace(Classifier().eval(), torch.ones(2, 6))
    bad = json.dumps({"inputs": [{"name": "input", "datatype": "FLOAT", "shape": [-1, 6]}]})
    torch.jit.save(traced, version_dir / "model.pt", _extra_files={"inferline-signature.json": bad})

    with pytest.raises(ModelLoadError, match=r"inferline-signature\.json"):
        await load("torch")
