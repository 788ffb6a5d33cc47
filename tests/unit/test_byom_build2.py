"""Issue 13, a new user's trial of ``trtopt build`` / ``run`` (second pass).

1. Paddle2ONNX's ``"?"`` dims (every unknown dim has the same name) build once renamed; doctor says so.
2. ``trtopt run --strict`` exits 1 when an engine-column build failed; without it, one line per failure.
3. TensorRT-RTX ``--sparsity``: the count is "unknown", not "0 layers eligible".
4. A partial ``--input`` on a multi-input model: the graph's dim names in the message, and a profile
   derived from dims shared by name.
5. No ``.lock`` left behind, no empty ``--engine-dir`` after a failed build.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.cli.main import main
from trtopt.onnx.dims import placeholder_dims, with_unique_placeholder_dims
from trtopt.onnx.io import save_onnx

_OCR = importlib.util.find_spec("rapidocr_onnxruntime")
CLS = (Path(_OCR.origin).parent / "models" / "ch_ppocr_mobile_v2.0_cls_infer.onnx") if _OCR and _OCR.origin else Path(
    "/nonexistent")


def _rtx():
    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("TensorRT for RTX is not installed")


def _qmark_model(path: Path) -> Path:
    """Paddle-style input ``x [-1, 3, "?", "?"]`` (H and W unknown, both named "?") -> mean over H, W."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, "?", "?"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3])
    g = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)], "qmark", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)])
    m.ir_version = 7
    return save_onnx(m, path)


def _two_input_model(path: Path, mask_dims=("batch", "seq")) -> Path:
    """``input_ids [batch, seq]`` and ``attention_mask`` (dims ``mask_dims``) -> masked mean embedding [batch, 4]."""
    table = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["emb"]),
             helper.make_node("Cast", ["attention_mask"], ["m"], to=TensorProto.FLOAT),
             helper.make_node("Unsqueeze", ["m", "ax"], ["m3"]),
             helper.make_node("Mul", ["emb", "m3"], ["e"]),
             helper.make_node("ReduceSum", ["e", "ax1"], ["y"], keepdims=0)]
    g = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
                       helper.make_tensor_value_info("attention_mask", TensorProto.INT64, list(mask_dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(np.array([2], np.int64), "ax"),
         numpy_helper.from_array(np.array([1], np.int64), "ax1")])
    return save_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def _manifest(engine_dir: Path) -> dict:
    return json.loads(next(engine_dir.glob("*.json")).read_text())


# -- 1. placeholder dims ------------------------------------------------------------------------------

def test_placeholder_dims_get_unique_names_and_the_model_still_runs(tmp_path):
    path = _qmark_model(tmp_path / "q.onnx")
    model = onnx.load(str(path))
    assert placeholder_dims(model) == [("x", 2, "?"), ("x", 3, "?")]
    fixed, renamed = with_unique_placeholder_dims(model)
    names = [d.dim_param for d in fixed.graph.input[0].type.tensor_type.shape.dim[2:]]
    assert renamed == {"x[2]": names[0], "x[3]": names[1]} and len(set(names)) == 2 and "?" not in names
    assert placeholder_dims(fixed) == [] and placeholder_dims(model)  # a copy: the input is not changed
    assert with_unique_placeholder_dims(fixed) == (fixed, {})  # nothing to do: the same object
    onnx.checker.check_model(fixed, full_check=True)
    import onnxruntime as ort

    x = np.random.default_rng(0).random((2, 3, 4, 6), dtype=np.float32)
    got = ort.InferenceSession(fixed.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, x.mean(axis=(2, 3)), rtol=1e-5)


def test_build_of_a_graph_with_two_question_mark_dims_of_different_sizes(tmp_path, capsys):
    _rtx()
    path = _qmark_model(tmp_path / "q.onnx")
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


def test_doctor_reports_placeholder_dims(tmp_path):
    from trtopt.doctor import diagnose

    found = {f.code: f for f in diagnose(_qmark_model(tmp_path / "q.onnx")).findings}
    f = found["placeholder-dims"]
    assert f.severity == "info" and "renamed for TensorRT" in f.message and f.detail["dims"] == ["x[2]='?'",
                                                                                                "x[3]='?'"]


# -- 2. run --strict and engine-column build failures -------------------------------------------------

def _fake_run(monkeypatch, tmp_path, engine_extra):
    """``trtopt run`` on a stub pipeline whose report has one variant with ``engine_extra`` in its engine cell."""
    import trtopt.pipeline
    import trtopt.recipe
    from trtopt.benchmark import EngineCell, Report, VariantResult

    report = Report(environment={}, workload={"name": "w"}, variants=[
        VariantResult("int8", "onnxruntime", "int8", batch_size=b, engine=EngineCell(**engine_extra)) for b in (1, 8)])

    class FakePipeline:
        def __init__(self, *a, **k):
            pass

        def run(self):
            return SimpleNamespace(report=report, paths={}, stage_seconds={"bench": 0.1})

    recipe = SimpleNamespace(run=SimpleNamespace(backend="onnxruntime", name="w", out=None))
    monkeypatch.setattr(trtopt.pipeline, "Pipeline", FakePipeline)
    monkeypatch.setattr(trtopt.recipe, "load_recipe", lambda *a, **k: recipe)
    monkeypatch.setattr("trtopt.benchmark.render_table", lambda rep: "table")
    (tmp_path / "r.toml").write_text("")


def test_run_strict_exits_1_when_an_engine_build_failed(tmp_path, monkeypatch, capsys):
    bad = {"text": "build failed: TensorRT engine build failed: ?: Input dimensions ...", "status": "failed",
           "reason": "TensorRT engine build failed: ?: Input dimensions with this name differ\nsecond line"}
    _fake_run(monkeypatch, tmp_path, bad)
    assert main(["run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "o")]) == 0  # not strict: exit 0 ...
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "engine build failed" in ln]
    assert len(lines) == 1 and "int8: TensorRT engine build failed: ?: Input dimensions" in lines[0]  # ... but said
    assert "second line" not in out
    assert main(["run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "o"), "--strict"]) == 1
    assert "--strict: 1 variant(s) not ok: engine build failed: int8" in capsys.readouterr().err


def test_run_strict_exits_0_when_engines_built(tmp_path, monkeypatch, capsys):
    _fake_run(monkeypatch, tmp_path, {"text": "0.9 MB · 5/5 INT8", "status": "ok"})
    assert main(["run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "o"), "--strict"]) == 0
    assert "engine build failed" not in capsys.readouterr().out


# -- 3. sparsity on TensorRT-RTX -------------------------------------------------------------------------

def test_sparsity_summary_without_log_lines_is_unknown_not_zero():
    from trtopt.backends.tensorrt.logparse import parse_sparsity_log

    rep = parse_sparsity_log(["INFO: nothing about sparsity"])
    assert rep.summary() == "0 layers eligible, 0 picked" and not rep.reported  # TensorRT 10 wording kept
    rep.unknown_reason = "no log"
    assert rep.summary() == "unknown (no log)" and rep.to_dict()["reported"] is False
    seen = parse_sparsity_log(["[TRT] (Sparsity) Layers eligible for sparse math: conv1"])
    seen.unknown_reason = "no log"
    assert seen.reported and seen.summary() == "1 layers eligible, 0 picked"


def test_rtx_build_with_sparsity_says_unknown(tmp_path, capsys):
    _rtx()
    path = _qmark_model(tmp_path / "q.onnx")
    rc = main(["build", str(path), "--backend", "tensorrt-rtx", "--sparsity", "--engine-dir", str(tmp_path / "e"),
               "--input", "x:float32:batch=1..2..4x3x8x8"])
    out = capsys.readouterr().out.replace("\n", " ")
    assert rc == 0 and "sparsity: unknown (TensorRT-RTX does not report sparse tactic choices" in out
    assert "0 layers eligible" not in out


# -- 4. partial --input on a multi-input model ----------------------------------------------------------

def test_missing_input_profile_derived_from_shared_dim_names(tmp_path, capsys):
    _rtx()
    path = _two_input_model(tmp_path / "two.onnx")
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


def test_missing_input_message_names_graph_dims_and_the_input_spec_form(tmp_path, capsys):
    from trtopt.backends.tensorrt.config import BuildConfig
    from trtopt.backends.tensorrt.graph import graph_info
    from trtopt.backends.tensorrt.profiles import parse_shapes, resolve_profiles
    from trtopt.errors import ConfigError

    path = _two_input_model(tmp_path / "two.onnx", mask_dims=("batch", "mask_len"))
    info = graph_info(path.read_bytes())
    with pytest.raises(ConfigError) as e:  # mask_len is not shared with input_ids: no derivation
        resolve_profiles(info, BuildConfig(shapes=parse_shapes(["input_ids:1x8,4x16,8x32"])))
    msg = str(e.value)
    assert "input 'attention_mask' has dynamic dimensions (batch, mask_len)" in msg
    assert "--input attention_mask:int64:batch=1..4..8xmask_len=1..8..32" in msg and "--shapes attention_mask:" in msg


# -- 5. lock files and empty engine dirs ------------------------------------------------------------------

def test_failed_build_leaves_no_engine_dir_and_success_leaves_no_lock(tmp_path, capsys):
    _rtx()
    path = _qmark_model(tmp_path / "q.onnx")
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


def test_missing_profile_message_shows_placeholder_dims_as_unknown_and_a_spec_that_parses(tmp_path):
    from trtopt.backends.tensorrt.config import BuildConfig
    from trtopt.backends.tensorrt.graph import graph_info, hide_renamed_dims, prepare_for_parser
    from trtopt.backends.tensorrt.profiles import resolve_profiles
    from trtopt.errors import ConfigError
    from trtopt.inputs import parse_input_spec

    path = _qmark_model(tmp_path / "q.onnx")
    data, renamed = prepare_for_parser(path.read_bytes(), "q.onnx")
    assert set(renamed) == {"x[2]", "x[3]"}
    with pytest.raises(ConfigError) as e:
        resolve_profiles(hide_renamed_dims(graph_info(data), renamed), BuildConfig())
    msg = str(e.value)
    assert "input 'x' has dynamic dimensions (?, 3, ?, ?)" in msg
    spec = msg.split("--input ", 1)[1].split(" ", 1)[0]
    assert parse_input_spec(spec).shape("max") == (32, 3, 32, 32)
