"""Parsing messages per the model's signature and encoding results (no broker needed)."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from inferline.errors import BadRequest, InvalidInput
from inferline.settings import TensorSpec
from inferline.streaming.messages import (
    Parsed,
    Scored,
    encode_result,
    parse_document,
    parse_fields,
    split_outputs,
)

SPECS = [
    TensorSpec(name="x", datatype="FP32", shape=[-1, 3]),
    TensorSpec(name="text", datatype="BYTES", shape=[-1]),
]


def fields(**values: str) -> Parsed:
    return parse_fields(
        values, SPECS, id_field="id", payload_field=None, fallback_id="1-0", max_elements=100
    )


def test_entry_fields_are_parsed_per_signature() -> None:
    parsed = fields(id="a", x="[1, 2, 3.5]", text="hello")
    assert parsed.id == "a" and parsed.single and parsed.rows == 1
    assert parsed.inputs["x"].dtype == np.float32
    np.testing.assert_array_equal(parsed.inputs["x"], np.array([[1, 2, 3.5]], np.float32))
    assert parsed.inputs["text"].tolist() == [b"hello"]


def test_batched_fields_keep_their_rows() -> None:
    parsed = fields(x="[[1, 2, 3], [4, 5, 6]]", text='["a", "b"]')
    assert parsed.rows == 2 and not parsed.single and parsed.id == "1-0"


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"x": "[1, 2, 3]"}, BadRequest),  # no field for 'text'
        ({"x": "not json", "text": "a"}, BadRequest),
        ({"x": '["a", 1, 2]', "text": "a"}, InvalidInput),
        ({"x": "[[1, 2, 3], [4, 5, 6]]", "text": "a"}, InvalidInput),  # batch and one row
        ({"x": "[" + ",".join(["1"] * 300) + "]", "text": "a"}, InvalidInput),  # > max_elements
    ],
)
def test_malformed_fields_are_refused_with_a_reason(values: dict[str, str], error: type) -> None:
    with pytest.raises(error):
        fields(**values)


def test_payload_field_holds_a_json_object_or_a_v2_request() -> None:
    doc = orjson.dumps({"id": 7, "x": [1, 2, 3], "text": "t"}).decode()
    parsed = parse_fields(
        {"data": doc}, SPECS, id_field="id", payload_field="data", fallback_id="1-0",
        max_elements=100,
    )  # fmt: skip
    assert parsed.id == "7" and parsed.single
    v2 = {
        "id": "r1",
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]},
            {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["t"]},
        ],
    }
    parsed = parse_document(
        orjson.dumps(v2), SPECS, id_field="id", fallback_id="x", max_elements=100
    )
    assert parsed.id == "r1" and not parsed.single and parsed.rows == 1


def test_results_carry_id_model_version_and_each_output() -> None:
    parsed = fields(id="a", x="[1, 2, 3]", text="t")
    out = {"p": np.array([[0.25, 0.75]], np.float32), "label": np.array([1], np.int64)}
    result = encode_result("m", parsed, Scored(out, "3", "canary"))
    assert result["id"] == "a" and result["model"] == "m" and result["version"] == "3"
    assert result["variant"] == "canary"
    assert orjson.loads(result["p"]) == [0.25, 0.75] and orjson.loads(result["label"]) == 1


def test_split_outputs_checks_the_row_count() -> None:
    items = [fields(x="[1, 2, 3]", text="a"), fields(x="[[1, 2, 3], [4, 5, 6]]", text='["b","c"]')]
    pieces = split_outputs({"y": np.arange(3)}, items)
    assert [p["y"].tolist() for p in pieces] == [[0], [1, 2]]
    with pytest.raises(InvalidInput):
        split_outputs({"y": np.arange(2)}, items)
