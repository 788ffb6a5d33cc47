"""What TensorRT for RTX can compile per target, known before a build (no TensorRT needed here).

The Turing limits themselves are checked against real TensorRT-RTX builds in ``test_rtx_build.py``.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from _helpers import onnx_models as G
from trtopt.backends.tensorrt.config import parse_compute_capabilities
from trtopt.backends.tensorrt.targets import (
    fp16_islands,
    normalize_cc,
    quantized_deconvs,
    target_rows,
    turing_check,
)
from trtopt.cli.main import main
from trtopt.errors import ConfigError


def test_turing_check_sorts_convs_float_gemms_and_fp32_graphs(tmp_path):
    q = turing_check(onnx.load(G.tiny_conv_net(tmp_path / "q.onnx", qdq=True)))
    assert (q.float_convs, q.islands, q.cannot, q.int8_expected()) == (["/features/0/Conv"], ["/classifier/Gemm"],
                                                                       [], 0)
    f = turing_check(onnx.load(G.tiny_conv_net(tmp_path / "f.onnx")))  # all FP32: not rewritten, refused
    assert (f.float_convs, f.islands, f.cannot) == ([], [], ["/classifier/Gemm"])
    g = turing_check(G.qdq_gemm_matmul())
    assert (g.islands, g.int8_expected()) == (["/fc1/Gemm", "/fc2/MatMul"], 2)
    assert turing_check(G.fp16_conv()).to_dict()["fp16_islands"] == []  # FP16-typed: nothing to do


def test_sm75_notes_tell_quantized_gemms_that_stay_int8_from_float_ones_computed_in_fp16(tmp_path):
    from trtopt.backends.tensorrt.targets import turing_notes

    quantized = turing_notes(turing_check(G.qdq_gemm_matmul()))
    assert len(quantized) == 1 and "2 quantized FP32-typed Gemm/MatMul" in quantized[0], quantized
    assert "still compile INT8" in quantized[0] and "compute in FP16" not in quantized[0]
    mixed = turing_notes(turing_check(onnx.load(G.tiny_conv_net(tmp_path / "q.onnx", qdq=True))))
    assert any("1 float FP32 Gemm/MatMul compute in FP16" in n and "/classifier/Gemm" in n for n in mixed), mixed
    assert not any("still compile INT8" in n for n in mixed), mixed


def test_weights_beyond_fp16_range_cannot_become_an_island():
    m = G.qdq_gemm_matmul()
    b1 = next(t for t in m.graph.initializer if t.name == "b1")
    b1.CopyFrom(onnx.numpy_helper.from_array(np.full(32, 1e6, np.float32), "b1"))
    check = turing_check(m)
    assert check.cannot == ["/fc1/Gemm"] and check.islands == ["/fc2/MatMul"] and check.int8_expected() == 1


def test_fp16_islands_pass_the_checker_and_match_the_fp32_outputs():
    import onnxruntime as ort

    model = G.qdq_gemm_matmul()
    before = model.SerializeToString()
    island = fp16_islands(model, ["/fc1/Gemm", "/fc2/MatMul"])
    assert model.SerializeToString() == before  # the input model is not touched
    onnx.checker.check_model(island, full_check=True)
    ops = [n.op_type for n in island.graph.node]
    assert ops.count("Cast") == 3 + 1 + 2 + 1 and [o.name for o in island.graph.output] == ["y"]
    x = np.random.default_rng(1).normal(size=(4, 64)).astype(np.float32)
    ref, got = (ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                for m in (model, island))
    assert got.dtype == np.float32 and got.shape == ref.shape
    assert np.abs(got - ref).max() <= 2e-3 * max(1.0, np.abs(ref).max())


def test_compute_capability_names():
    assert [normalize_cc(t) for t in ("sm87", "8.7", "SM_75", "sm120")] == ["SM87", "SM87", "SM75", "SM120"]
    assert parse_compute_capabilities("7.5,sm86") == ("SM75", "SM86")
    with pytest.raises(ConfigError, match=r"sm87 \(Jetson AGX Orin.*JetPack 6: TensorRT 10.3"):
        parse_compute_capabilities("sm87")


def test_target_rows_say_what_each_target_can_compile(tmp_path):
    rows = {r["target"]: r for r in target_rows(onnx.load(G.tiny_conv_net(tmp_path / "q.onnx", qdq=True)),
                                                ["SM75", "SM86", "SM87"])}
    assert rows["SM75"]["rtx"] and rows["SM75"]["int8_expected"] == 0
    assert any("TensorRT 10" in n for n in rows["SM75"]["notes"])
    assert rows["SM86"]["rtx"] and rows["SM86"]["int8_expected"] is None  # no known limit
    assert not rows["SM87"]["rtx"] and "JetPack" in rows["SM87"]["notes"][0]


def test_quantized_deconvolutions_are_named_for_every_rtx_target():
    model = G.qdq_deconv()
    assert quantized_deconvs(model) == ["/up/ConvTranspose"]
    rows = {r["target"]: r for r in target_rows(model, ["SM75", "SM86", "SM120", "SM87"])}
    for cc in ("SM75", "SM86", "SM120"):
        assert rows[cc]["int8_expected"] == 0 and "ConvTranspose, which compile in float" in rows[cc]["notes"][-1]
    assert rows["SM87"]["int8_expected"] is None and "JetPack" in rows["SM87"]["notes"][0]


def test_inspect_targets_cli_table_and_json(tmp_path, capsys):
    path = G.tiny_conv_net(tmp_path / "q.onnx", qdq=True)
    assert main(["inspect", "targets", str(path), "--json", "--compute-capability", "sm75,8.6,sm87"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [r["target"] for r in doc["targets"]] == ["SM75", "SM86", "SM87"]
    assert doc["targets"][0]["turing"]["fp16_islands"] == ["/classifier/Gemm"]
    assert main(["inspect", "targets", str(path)]) == 0
    out = capsys.readouterr().out
    assert "sm75" in out and "sm87" in out and "no aarch64 wheel" in out and "TensorRT 10" in out
    assert main(["inspect", "targets", str(tmp_path / "missing.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]
