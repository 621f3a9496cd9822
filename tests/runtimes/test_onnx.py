"""OnnxModel: signature read from the graph, predictions equal onnxruntime's own."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from inferline.errors import InvalidInput, ModelLoadError
from inferline.runtimes.onnx import _bound_run
from inferline.settings import TensorSpec


def _classifier_onnx(x: np.ndarray, y: np.ndarray, zipmap: bool = False) -> bytes:
    clf = LogisticRegression(max_iter=1000).fit(x, y)
    options = None if zipmap else {id(clf): {"zipmap": False}}
    return to_onnx(clf, x[:1].astype(np.float32), options=options).SerializeToString()


def _reference(model_bytes: bytes, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _typed_graph() -> bytes:
    """Two inputs with a symbolic and an unknown batch dim; FP64, BOOL and INT32 outputs."""
    graph = helper.make_graph(
        [
            helper.make_node("Neg", ["a"], ["neg_a"]),
            helper.make_node("Not", ["b"], ["not_b"]),
            helper.make_node("Cast", ["a"], ["a_int"], to=TensorProto.INT32),
        ],
        "typed",
        [
            helper.make_tensor_value_info("a", TensorProto.DOUBLE, ["batch", 3]),
            helper.make_tensor_value_info("b", TensorProto.BOOL, [None, 2]),
        ],
        [
            helper.make_tensor_value_info("neg_a", TensorProto.DOUBLE, ["batch", 3]),
            helper.make_tensor_value_info("not_b", TensorProto.BOOL, [None, 2]),
            helper.make_tensor_value_info("a_int", TensorProto.INT32, ["batch", 3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


async def test_classifier_signature_and_predictions(classification, version_dir, load):
    x, y = classification
    model_bytes = _classifier_onnx(x, y)
    (version_dir / "model.onnx").write_bytes(model_bytes)

    model = await load("onnx")

    assert model.inputs == [TensorSpec(name="X", datatype="FP32", shape=[-1, 6])]
    assert model.outputs == [
        TensorSpec(name="label", datatype="INT64", shape=[-1]),
        TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3]),
    ]
    feed = {"X": x.astype(np.float32)}
    outputs = await model.infer(feed)
    label, probabilities = _reference(model_bytes, feed)
    assert list(outputs) == ["label", "probabilities"]
    np.testing.assert_array_equal(outputs["label"], label)
    np.testing.assert_array_equal(outputs["probabilities"], probabilities)
    assert (outputs["label"] == y).mean() > 0.8  # the model itself is sane, not just echoed


async def test_element_types_and_symbolic_dims(version_dir, load):
    (version_dir / "typed.onnx").write_bytes(_typed_graph())

    model = await load("onnx")

    assert model.inputs == [
        TensorSpec(name="a", datatype="FP64", shape=[-1, 3]),
        TensorSpec(name="b", datatype="BOOL", shape=[-1, 2]),
    ]
    assert model.outputs == [
        TensorSpec(name="neg_a", datatype="FP64", shape=[-1, 3]),
        TensorSpec(name="not_b", datatype="BOOL", shape=[-1, 2]),
        TensorSpec(name="a_int", datatype="INT32", shape=[-1, 3]),
    ]
    a = np.array([[1.5, -2.0, 3.0], [0.0, 4.0, -5.5]])
    b = np.array([[True, False], [False, False]])
    outputs = await model.infer({"a": a, "b": b})
    np.testing.assert_array_equal(outputs["neg_a"], -a)
    np.testing.assert_array_equal(outputs["not_b"], ~b)
    np.testing.assert_array_equal(outputs["a_int"], a.astype(np.int32))
    assert outputs["a_int"].dtype == np.int32


async def test_zipmap_output_is_refused_with_the_fix(classification, version_dir, load):
    x, y = classification
    (version_dir / "model.onnx").write_bytes(_classifier_onnx(x, y, zipmap=True))

    with pytest.raises(ModelLoadError, match=r"output_probability.*not a tensor.*zipmap"):
        await load("onnx")


async def test_zipmap_model_serves_when_settings_leave_the_zipmap_out(
    classification, version_dir, load
):
    x, y = classification
    model_bytes = _classifier_onnx(x, y, zipmap=True)
    (version_dir / "model.onnx").write_bytes(model_bytes)
    label_only = [TensorSpec(name="output_label", datatype="INT64", shape=[-1])]

    model = await load("onnx", outputs=label_only)

    feed = {"X": x[:5].astype(np.float32)}
    outputs = await model.infer(feed)
    assert list(outputs) == ["output_label"]
    np.testing.assert_array_equal(outputs["output_label"], _reference(model_bytes, feed)[0])


async def test_settings_signature_overrides_the_graph(classification, version_dir, load):
    x, y = classification
    (version_dir / "model.onnx").write_bytes(_classifier_onnx(x, y))
    inputs = [TensorSpec(name="X", datatype="FP32", shape=[-1, 6], min=-10.0, max=10.0)]
    outputs = [TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3])]

    model = await load("onnx", inputs=inputs, outputs=outputs, parameters={"intra_op_threads": 2})

    assert model.inputs == inputs
    assert model.outputs == outputs
    result = await model.infer({"X": x[:4].astype(np.float32)})
    assert list(result) == ["probabilities"]  # only what the signature names is fetched
    np.testing.assert_allclose(result["probabilities"].sum(axis=1), 1.0, rtol=1e-5)
    assert model.session.get_session_options().intra_op_num_threads == 2


def test_the_bound_run_answers_as_the_session_does_and_falls_back_without_its_binding(
    classification, tmp_path
):
    """The hot path calls onnxruntime's C++ run directly; where a release keeps it
    elsewhere, the public ``run`` is used. Both answer as the session does."""
    x, y = classification
    path = tmp_path / "model.onnx"
    path.write_bytes(_classifier_onnx(x, y))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [arg.name for arg in session.get_outputs()]
    feed = {session.get_inputs()[0].name: x[:5].astype(np.float32)}
    expected = session.run(names, feed)

    class WithoutBinding:  # an onnxruntime that keeps its binding elsewhere
        run = session.run

    direct, public = _bound_run(session), _bound_run(WithoutBinding())
    assert direct == session._sess.run  # the binding, not the wrapper
    assert public == session.run
    for run in (direct, public):
        got = run(names, feed, None)
        for want, have in zip(expected, got, strict=True):
            np.testing.assert_array_equal(want, have)


async def test_settings_naming_an_unknown_output_are_refused(classification, version_dir, load):
    x, y = classification
    (version_dir / "model.onnx").write_bytes(_classifier_onnx(x, y))
    wrong = [TensorSpec(name="proba", datatype="FP32", shape=[-1, 3])]

    with pytest.raises(ModelLoadError, match=r"proba.*label, probabilities"):
        await load("onnx", outputs=wrong)


async def test_truncated_file_is_a_load_error(classification, version_dir, load):
    x, y = classification
    model_bytes = _classifier_onnx(x, y)
    (version_dir / "model.onnx").write_bytes(model_bytes[: len(model_bytes) // 2])

    with pytest.raises(ModelLoadError, match="failed to load"):
        await load("onnx")


def _gather_graph() -> bytes:
    """``idx`` (int64 [N]) picks from three constants: an index out of range is the input's fault."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["picked"], axis=0)],
        "gather",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, [None])],
        [helper.make_tensor_value_info("picked", TensorProto.FLOAT, [None])],
        initializer=[table],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


async def test_an_input_onnxruntime_refuses_is_invalid_input(version_dir, load):
    model_bytes = _gather_graph()
    (version_dir / "model.onnx").write_bytes(model_bytes)
    model = await load("onnx", executor="thread")
    good = np.array([2, 0], dtype=np.int64)
    np.testing.assert_array_equal(
        (await model.infer({"idx": good}))["picked"], _reference(model_bytes, {"idx": good})[0]
    )
    bad = np.array([5], dtype=np.int64)
    with pytest.raises(Exception) as reference:  # what onnxruntime says, in process
        _reference(model_bytes, {"idx": bad})
    assert "INVALID_ARGUMENT" in str(reference.value)
    with pytest.raises(InvalidInput) as info:
        await model.infer({"idx": bad})
    assert info.value.message.startswith("model 'm' refused the input: ")
    assert "out of data bounds" in info.value.message
    assert "ONNXRuntimeError" not in info.value.message


def _reshape_graph() -> bytes:
    """``x`` (float [N]) reshaped to rows of three: N not a multiple of 3 fails the kernel."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 3])
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["rows"])],
        "reshape",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, [None, 3])],
        initializer=[shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


async def test_a_kernel_failing_on_the_input_is_invalid_input_without_internals(version_dir, load):
    model_bytes = _reshape_graph()
    (version_dir / "model.onnx").write_bytes(model_bytes)
    model = await load("onnx", executor="thread")
    bad = np.zeros(4, dtype=np.float32)
    with pytest.raises(Exception) as reference:  # onnxruntime's own answer, in process
        _reference(model_bytes, {"x": bad})
    assert " FAIL " in str(reference.value) and "onnxruntime_src" in str(reference.value)
    with pytest.raises(InvalidInput) as info:
        await model.infer({"x": bad})
    assert info.value.message == (
        "model 'm' refused the input: onnxruntime could not run the graph on it "
        "(see the server log)"
    )
