"""``trtopt build`` on third-party graphs: placeholder dims, partial ``--input``, sparsity on RTX, no leftovers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from _helpers.dim_graphs import qmark_model, two_input_model
from trtopt.cli.main import main

_OCR = importlib.util.find_spec("rapidocr_onnxruntime")


CLS = (Path(_OCR.origin).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx") if _OCR and _OCR.origin else Path(
    "/nonexistent")


def _rtx():
    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("TensorRT for RTX is not installed")


def _manifest(engine_dir: Path) -> dict:
    return json.loads(next(engine_dir.glob("*.json")).read_text())


def test_build_of_a_graph_with_two_question_mark_dims_of_different_sizes(tmp_path, capsys):
    _rtx()
    path = qmark_model(tmp_path / "q.onnx")
    rc = main(["build", str(path), "--backend", "tensorrt-rtx", "--engine-dir", str(tmp_path / "e"),
               "--input", "x:float32:batch=1..2..4x3x48x192"])
    assert rc == 0, capsys.readouterr().err
    prof = _manifest(tmp_path / "e")["profiles"]["x"]
    assert (prof["min"], prof["opt"], prof["max"]) == ([1, 3, 48, 192], [2, 3, 48, 192], [4, 3, 48, 192])
    assert [d.dim_param for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[2:]] == ["?", "?"]


@pytest.mark.skipif(not CLS.is_file(), reason="rapidocr-onnxruntime (PP-OCR classifier) is not installed")
def test_real_ppocr_classifier_builds_with_its_profile(tmp_path, capsys):
    _rtx()
    rc = main(["build", str(CLS), "--backend", "tensorrt-rtx", "--engine-dir", str(tmp_path / "e"),
               "--input", "x:float32:batch=1..8..16x3x48x192"])
    assert rc == 0, capsys.readouterr().err
    assert _manifest(tmp_path / "e")["profiles"]["x"]["max"] == [16, 3, 48, 192]


def test_rtx_build_with_sparsity_says_unknown(tmp_path, capsys):
    _rtx()
    path = qmark_model(tmp_path / "q.onnx")
    rc = main(["build", str(path), "--backend", "tensorrt-rtx", "--sparsity", "--engine-dir", str(tmp_path / "e"),
               "--input", "x:float32:batch=1..2..4x3x8x8"])
    out = capsys.readouterr().out.replace("\n", " ")
    assert rc == 0 and "sparsity: unknown (TensorRT-RTX does not report sparse tactic choices" in out
    assert "0 layers eligible" not in out


def test_missing_input_profile_derived_from_shared_dim_names(tmp_path, capsys):
    _rtx()
    path = two_input_model(tmp_path / "two.onnx")
    rc = main(["build", str(path), "--backend", "tensorrt-rtx", "--engine-dir", str(tmp_path / "e"),
               "--input", "input_ids:int64:batch=1..4..8xseq=8..16..32:0..50"])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    profiles = _manifest(tmp_path / "e")["profiles"]
    ids, mask = profiles["input_ids"], profiles["attention_mask"]
    assert (mask["min"], mask["opt"], mask["max"]) == (ids["min"], ids["opt"], ids["max"]) == ([1, 8], [4, 16],
                                                                                              [8, 32])
    assert mask["source"] == "dims batch, seq of input_ids"
    assert "profile attention_mask: 1x8, 4x16, 8x32 (from dims batch, seq of input_ids)" in cap.out.replace("\n", " ")


def test_failed_build_leaves_no_engine_dir_and_success_leaves_no_lock(tmp_path, capsys):
    _rtx()
    path = qmark_model(tmp_path / "q.onnx")
    bad = tmp_path / "bad"
    bad_model = tmp_path / "broken.onnx"  # an operator TensorRT has no importer for: fails inside the build
    g = helper.make_graph([helper.make_node("Foo", ["x"], ["y"], domain="no.such")], "b",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("no.such", 1)])
    bad_model.write_bytes(m.SerializeToString())
    assert main(["build", str(bad_model), "--backend", "tensorrt-rtx", "--engine-dir", str(bad)]) == 2
    assert not bad.exists(), list(bad.iterdir())
    good = tmp_path / "good"
    assert main(["build", str(path), "--backend", "tensorrt-rtx", "--engine-dir", str(good),
                 "--input", "x:float32:batch=1..2..4x3x8x8"]) == 0
    assert sorted(p.suffix for p in good.iterdir()) == [".engine", ".json"]  # no .lock
    pre = tmp_path / "pre"
    pre.mkdir()
    assert main(["build", str(bad_model), "--backend", "tensorrt-rtx", "--engine-dir", str(pre)]) == 2
    assert pre.is_dir() and not any(pre.iterdir())  # a folder the user made stays, without a lock


def test_placeholder_rename_keeps_external_data_working(tmp_path, capsys):
    """The parser gets the renamed bytes with the file's path: weights in a separate file still load."""
    _rtx()
    w = np.random.default_rng(0).standard_normal((3, 5)).astype(np.float32)
    g = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["p"], axes=[2, 3], keepdims=0),
                           helper.make_node("MatMul", ["p", "w"], ["y"])], "ext",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["?", 3, "?", "?"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["?", 5])],
                          [numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "ext.onnx"
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
              size_threshold=0)
    assert (tmp_path / "ext.data").is_file() and not onnx.load(str(path), load_external_data=False).graph.initializer[
        0].raw_data
    rc = main(["build", str(path), "--backend", "tensorrt-rtx", "--engine-dir", str(tmp_path / "e"),
               "--input", "x:float32:batch=1..2..4x3x16x40"])
    assert rc == 0, capsys.readouterr().err
    assert _manifest(tmp_path / "e")["profiles"]["x"]["opt"] == [2, 3, 16, 40]
