"""Clear one-line errors from the real TensorRT-for-RTX parser and builder, one small graph per error kind.

Each graph runs in ONNX Runtime or is valid ONNX, yet TensorRT rejects it; trtopt must name the ONNX node,
operator and reason on one line (no "Invalid Node" echo, no CUDA lines from the CPU-only build), exit 2.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from _helpers import onnx_models as G

pytest.importorskip("tensorrt_rtx")
pytestmark = pytest.mark.tensorrt_rtx

from trtopt.cli.main import main  # noqa: E402

CASES = {
    "scale_count": (lambda: G.qdq_conv(n_scales=8), "int8",
                    ["node 2 'wd_Q' (QuantizeLinear)", "number of scales is not equal to the number of output channels",
                     "[INVALID_NODE]"]),
    "zero_scale": (lambda: G.qdq_conv(act_scale=0.0), "int8",
                   ["'xd_Q' (QuantizeLinear)", "Scale coefficients must all be positive"]),
    "nonzero_zero_point": (lambda: G.qdq_conv(zp=3), "int8",
                           ["'xd_Q' (QuantizeLinear)", "Non-zero zero point is not supported", "symmetric INT8"]),
    "uint8_asymmetric": (lambda: G.qdq_conv(zp_dtype=np.uint8, zp=128), "int8",
                         ["'xd_Q' (QuantizeLinear)", "Non-zero zero point is not supported"]),
    "int32_bias_dq": (G.int32_bias_dq, "int8",
                      ["'bias_DQ' (DequantizeLinear)", "input has type Int32 but must have type"]),
    "fp16_fp32_add": (G.mixed_add, "fp16",
                      ["'/mix/Add' (Add)", "must have same input types. But they are of types Half and Float"]),
    "custom_domain_op": (G.custom_op, "fp32",
                         ["'/head/Fancy' (FancyOp)", "Plugin not found", "[INVALID_NODE]"]),
    "unsupported_op": (G.unsupported_op, "fp32", ["'/solve/Det' (Det)", "[UNSUPPORTED_NODE]"]),
    "dynamic_without_profile": (G.dynamic_spatial, "fp32", ["input 'x' has dynamic dimensions", "--shapes x:"]),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_error_kind_is_one_clear_line(kind, tmp_path, capsys):
    make, precision, expected = CASES[kind]
    path = tmp_path / f"{kind}.onnx"
    onnx.save(make(), str(path))
    rc = main(["build", str(path), "--backend", "tensorrt-rtx", "--precision", precision,
               "--engine-dir", str(tmp_path / "e")])
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1, err
    for text in expected:
        assert text in err[0], (text, err[0])
    for noise in ("cudaError", "Invalid Node -", "Error Code", "/_src/", "Please set kENABLE"):
        assert noise not in err[0] and noise not in captured.out
    assert not (tmp_path / "e").exists() or not list((tmp_path / "e").glob("*.engine"))


def test_batch_only_dynamic_input_gets_a_profile_from_the_default_batch(tmp_path, capsys):
    path = tmp_path / "m.onnx"
    onnx.save(G.qdq_conv(), str(path))
    assert main(["build", str(path), "--backend", "tensorrt-rtx", "--precision", "int8",
                 "--engine-dir", str(tmp_path / "e")]) == 0
    rc = main(["build", str(path), "--backend", "tensorrt-rtx", "--precision", "int8", "--shapes",
               "x:1x16x8x8,2x16x8x8,4x16x8x8", "--engine-dir", str(tmp_path / "e")])
    assert rc == 0
    import json

    sources = sorted(json.loads(p.read_text())["profiles"]["x"]["source"] for p in (tmp_path / "e").glob("*.json"))
    assert sources == ["--shapes", "default batch [1, 32, 64]"]
