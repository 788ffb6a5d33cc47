"""Bias correction: each INT8 layer's mean output on the calibration data equals FP32's."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from _helpers.onnx_models import fragile_mlp, tiny_conv_net
from trtopt.calib import CalibrationConfig, NumpySource, calibrate
from trtopt.errors import ConfigError
from trtopt.onnx.exec import make_session
from trtopt.quant import QuantizeConfig, quantize_qdq
from trtopt.quant.api import CalibData, quantize
from trtopt.quant.qdq import prepare_for_qdq
from trtopt.quant.repair import repair_qdq

LAYERS = {"c": 1, "logits": 1}  # tiny_conv_net: Conv output [N, 16, 8, 8], Gemm output [N, 10]


def _net(tmp_path):
    path = tiny_conv_net(tmp_path / "net.onnx")
    x = np.random.default_rng(1).uniform(0, 1, (48, 1, 8, 8)).astype(np.float32)
    table = calibrate(str(path), NumpySource({"input": x}), CalibrationConfig(method="minmax"))
    return path, x, table


def _means(model: onnx.ModelProto, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel means of the layer outputs, computed here with plain graph outputs (not trtopt's helper)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(onnx.ValueInfoProto(name=t) for t in LAYERS if t not in have)
    sess = make_session(m.SerializeToString())
    outs = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))
    return {t: outs[t].mean(axis=tuple(i for i in range(outs[t].ndim) if i != ax)) for t, ax in LAYERS.items()}


def test_bias_correction_zeroes_the_mean_output_error_of_every_int8_layer(tmp_path):
    path, x, table = _net(tmp_path)
    prep = prepare_for_qdq(str(path))
    qdq = quantize_qdq(prep, table).model
    ref, before = _means(prep.model, x), _means(qdq, x)
    assert max(np.abs(ref[t] - before[t]).max() for t in LAYERS) > 1e-3  # INT8 shifts the means
    res = repair_qdq(qdq, prep.model, {"input": x}, ("bias",))
    after = _means(qdq, x)
    for t in LAYERS:
        assert np.abs(ref[t] - after[t]).max() < 1e-5 * max(1.0, np.abs(ref[t]).max())
    assert set(res.bias.corrected) == {"/features/0/Conv", "/classifier/Gemm"}
    assert res.summary()["bias"]["corrected_layers"] == 2
    onnx.checker.check_model(qdq, full_check=True)  # the Conv without a bias got a valid one


def test_bias_correction_is_deterministic_and_the_model_loads(tmp_path):
    path, x, table = _net(tmp_path)
    prep = prepare_for_qdq(str(path))
    outs = []
    for _ in range(2):
        qdq = quantize_qdq(prep, table).model
        repair_qdq(qdq, prep.model, {"input": x}, ("bias",))
        outs.append(qdq.SerializeToString())
    assert outs[0] == outs[1]
    make_session(outs[0])


def test_quantize_applies_the_repair_before_the_guard_judges(tmp_path):
    path, x = fragile_mlp(tmp_path / "mlp.onnx", heavy=400.0)
    table = calibrate(str(path), NumpySource({"x": x}), CalibrationConfig(method="minmax"))
    res = quantize(str(path), table, QuantizeConfig(repair=("bias",)), CalibData({"x": x}))
    assert res.repair is not None and res.repair is res.guard.repair
    assert res.repair.bias.corrected
    kept = set(res.guard.kept_nodes)
    gemms = [n for n in res.model.graph.node if n.op_type == "Gemm"]
    assert all(n.input[2].endswith("_bias_corrected") for n in gemms if n.name not in kept)
    plain = quantize(str(path), table, QuantizeConfig(), CalibData({"x": x}))
    assert plain.repair is None and all(len(n.input) == 2 for n in plain.model.graph.node if n.op_type == "Gemm")


@pytest.mark.parametrize("bad", [("bogus",), ("bias", "cle!")])
def test_unknown_repair_is_refused(bad):
    with pytest.raises(ConfigError, match="quantize.repair"):
        QuantizeConfig(repair=bad)


def test_repair_with_fp16_rest_is_refused():
    with pytest.raises(ConfigError, match="fp16_rest"):
        QuantizeConfig(repair=("bias",), fp16_rest=True)


def test_repair_names_are_a_tuple():
    assert QuantizeConfig(repair="bias").repair == ("bias",)
    assert QuantizeConfig().repair == ()


def test_recipe_quantize_table_takes_the_repair_list():
    from trtopt.recipe import recipe_from_dict

    assert recipe_from_dict({"recipe": {"name": "r"}, "quantize": {"repair": ["bias"]}}).quantize.repair == ("bias",)
    with pytest.raises(ConfigError, match="quantize.repair"):
        recipe_from_dict({"recipe": {"name": "r"}, "quantize": {"repair": ["adaround"]}})
