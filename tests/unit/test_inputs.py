"""Input specs: shapes and ranges, one-line errors, dynamic axes and profiles, checks against a model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.backends.tensorrt.config import Profile
from trtopt.backends.tensorrt.profiles import profiles_from_specs
from trtopt.errors import ConfigError, InputError
from trtopt.inputs import (
    check_specs_against_onnx,
    dynamic_axes,
    embedding_rows,
    parse_input_spec,
    parse_input_specs,
    random_feeds,
    specs_from_onnx,
)


# -- input specs -------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "mn", "opt", "mx"), [
    ("input:float32:batchx3x224x224", (1, 3, 224, 224), (1, 3, 224, 224), (32, 3, 224, 224)),
    ("ids:int64:batch=1..8..32xseq=16..128", (1, 16), (8, 128), (32, 128)),
    ("x:float32:-1x16", (1, 16), (1, 16), (32, 16)),
    ("x:float16:2x3", (2, 3), (2, 3), (2, 3)),
])
def test_spec_shapes(text, mn, opt, mx):
    s = parse_input_spec(text)
    assert (s.shape("min"), s.shape("opt"), s.shape("max")) == (mn, opt, mx)
    assert parse_input_spec(str(s)) == s  # the text form round-trips


@pytest.mark.parametrize("bad", ["x", "x:int8:1", "x:float32:1xseq", "x:float32:1x0", "x:int64:4:9..2",
                                 "x:float32:batch=8..1", "x:float32:1x2..3..4..5"])
def test_bad_specs_are_one_line_config_errors(bad):
    with pytest.raises(ConfigError, match="--input"):
        parse_input_spec(bad)


def test_named_dim_must_agree_across_inputs():
    with pytest.raises(ConfigError, match="seq"):
        parse_input_specs(["a:int64:batchxseq=1..16", "b:int64:batchxseq=1..32"])


def test_dynamic_axes_and_profiles():
    specs = parse_input_specs(["ids:int64:batch=1..8..32xseq=16..64..128", "mask:int64:batch=1..8..32xseq=16..64..128"])
    assert dynamic_axes(specs) == {"ids": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"}}
    assert profiles_from_specs(specs)[0] == Profile("ids", (1, 16), (8, 64), (32, 128))


def _embedding_model(rows: int = 50, as_constant_node: bool = False) -> onnx.ModelProto:
    table = np.random.default_rng(0).standard_normal((rows, 8)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
             helper.make_node("Gather", ["table", "ids64"], ["emb"]),
             helper.make_node("ReduceMean", ["emb"], ["out"], axes=[1], keepdims=0)]
    inits = [numpy_helper.from_array(table, "table")]
    if as_constant_node:
        nodes.insert(0, helper.make_node("Constant", [], ["table"], value=inits.pop()))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT32, ["N", 6])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("const_node", [False, True])
def test_random_token_ids_stay_below_the_embedding_rows(const_node):
    import onnxruntime as ort

    model = _embedding_model(rows=50, as_constant_node=const_node)
    assert embedding_rows(model) == {"ids": 50}
    (spec,) = specs_from_onnx(model)
    assert (spec.dtype, spec.low, spec.high) == ("int32", 0, 50)
    feeds = random_feeds([spec], 64, seed=1)
    assert feeds["ids"].shape == (64, 6) and feeds["ids"].max() < 50 and feeds["ids"].min() >= 0
    assert len(np.unique(feeds["ids"])) > 20  # really random ids, not a constant
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, feeds)[0].shape == (64, 8)


def test_specs_contradicting_the_model_are_named():
    model = _embedding_model()
    with pytest.raises(InputError, match="declared int64 but the model takes int32"):
        check_specs_against_onnx([parse_input_spec("ids:int64:batchx6")], model)
    with pytest.raises(InputError, match="rank"):
        check_specs_against_onnx([parse_input_spec("ids:int32:batchx6x1")], model)
    with pytest.raises(InputError, match="fixes it to 6"):
        check_specs_against_onnx([parse_input_spec("ids:int32:batchx7")], model)
    with pytest.raises(InputError, match="not among"):
        check_specs_against_onnx([parse_input_spec("tokens:int32:batchx6")], model)
    check_specs_against_onnx([parse_input_spec("ids:int32:batchx6:0..50")], model)
