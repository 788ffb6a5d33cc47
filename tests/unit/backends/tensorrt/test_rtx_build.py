"""Real TensorRT-for-RTX builds on the CPU (no GPU): flavour, targets, manifest, compiled-precision report.

Each test builds a tiny graph from ``rtx_graphs`` with the real parser and builder (0.1-0.5 s each).
Skips cleanly without ``trtopt[tensorrt-rtx]``.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from _helpers import onnx_models as G

trt = pytest.importorskip("tensorrt_rtx")
pytestmark = pytest.mark.tensorrt_rtx

from trtopt.backends.tensorrt import BuildConfig, build_engine  # noqa: E402
from trtopt.cli.main import main  # noqa: E402
from trtopt.errors import BackendUnavailableError, BuildError, ConfigError, IncompatibleArtifactError  # noqa: E402


def _save(model, tmp_path, name="m.onnx"):
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _build(model, tmp_path, name="m.onnx", **options):
    options.setdefault("backend", "tensorrt-rtx")
    return build_engine(_save(model, tmp_path, name), BuildConfig(**options), engine_dir=tmp_path / "engines")


# -- flavour, targets, manifest ---------------------------------------------------------------
def test_rtx_build_writes_engine_and_manifest_with_version_and_default_targets(tmp_path):
    res = _build(G.qdq_conv(), tmp_path, precision="int8")
    assert res.engine.is_file() and res.engine.stat().st_size > 1000 and not res.reused
    m = json.loads(res.manifest.read_text())
    assert m["tensorrt"]["flavour"] == "tensorrt-rtx"
    assert m["tensorrt"]["version"] == trt.__version__  # the RTX version string, not a mangled integer
    assert m["tensorrt"]["nv_tensorrt_version"] is None
    assert m["gpu"]["targets"] == ["SM80", "SM86", "SM89", "SM120"] and m["gpu"]["default_targets"] is True
    assert m["gpu"]["name"] is None  # no GPU is needed or recorded
    assert m["profiles"]["x"]["source"].startswith("default batch")
    assert not any("unsupported in TensorRT-RTX" in w for w in m["log_warnings"])  # nothing unsupported was set


def test_targets_change_the_store_key_and_are_recorded(tmp_path):
    model = G.qdq_conv()
    a = _build(model, tmp_path, precision="int8", compute_capabilities=("sm86", "sm89"))
    b = _build(model, tmp_path, precision="int8", compute_capabilities=("SM86", "SM89"))
    c = _build(model, tmp_path, precision="int8")
    assert b.reused and b.engine == a.engine
    assert c.engine != a.engine
    assert a.data["gpu"]["targets"] == ["SM86", "SM89"] and a.data["gpu"]["default_targets"] is False
    assert a.data["build"]["plan"]["compute_capabilities"] == ["SM86", "SM89"]


def test_rtx_skips_unsupported_settings_and_rejects_impossible_ones(tmp_path):
    cache = tmp_path / "timing.cache"
    res = _build(G.fp16_conv(), tmp_path, precision="fp16", timing_cache=str(cache))
    assert not cache.exists()  # a no-op in RTX: not created, no warning
    assert any("timing cache skipped" in n for n in res.data["build"]["plan"]["notes"])
    with pytest.raises(ConfigError, match="hardware_compat ampere_plus is not supported by TensorRT for RTX"):
        _build(G.fp16_conv(), tmp_path, precision="fp16", hardware_compat="ampere_plus")
    with pytest.raises(ConfigError, match="exclude_lean_runtime"):
        _build(G.fp16_conv(), tmp_path, precision="fp16", version_compatible=True)
    vc = _build(G.fp16_conv(), tmp_path, precision="fp16", version_compatible=True, exclude_lean_runtime=True)
    assert "VERSION_COMPATIBLE" in vc.data["build"]["plan"]["builder_flags"]


def test_wrong_compute_capability_is_one_line_exit_2(tmp_path, capsys):
    path = _save(G.qdq_conv(), tmp_path)
    rc = main(["build", str(path), "--backend", "tensorrt-rtx", "--compute-capability", "sm99",
               "--engine-dir", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "unknown compute capability 'sm99'" in err[0]
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize(("target", "says"), [("sm87", ["Jetson AGX Orin", "no aarch64 wheel", "JetPack 6",
                                                         "--backend tensorrt"]),
                                               ("sm90", ["Hopper: H100", "TensorRT 10/11", "--backend tensorrt"])])
def test_jetson_and_hopper_targets_name_the_runtime_to_build_with(tmp_path, capsys, target, says):
    path = _save(G.qdq_conv(), tmp_path)
    rc = main(["build", str(path), "--backend", "tensorrt-rtx", "--compute-capability", target,
               "--engine-dir", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and f"{target} (" in err[0] and "is not a TensorRT for RTX target" in err[0]
    assert all(s in err[0] for s in says), err[0]
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("content", [None, b"", b"\x08\x07garbage-not-onnx" * 20])
def test_missing_or_garbage_onnx_is_one_line_exit_2(tmp_path, capsys, content):
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    rc = main(["build", str(path), "--backend", "tensorrt-rtx", "--engine-dir", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1, err
    assert not list((tmp_path / "e").glob("*.engine")) if (tmp_path / "e").exists() else True


def test_running_an_rtx_engine_without_a_gpu_says_so(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from trtopt.backends import open_runner

    res = _build(G.qdq_conv(), tmp_path, precision="int8")
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU"), open_runner("tensorrt", res.engine):
        pass


def test_engine_of_the_other_flavour_is_refused_before_deserializing(tmp_path):
    from trtopt.backends.tensorrt.runner import TensorRTRunner

    res = _build(G.qdq_conv(), tmp_path, precision="int8")
    m = json.loads(res.manifest.read_text())
    m["tensorrt"] = {"version": "10.3.0.26", "flavour": "tensorrt", "nv_tensorrt_version": 100300}
    res.manifest.write_text(json.dumps(m))
    with pytest.raises(IncompatibleArtifactError, match=r"built by TensorRT 10\.3\.0\.26 .*TensorRT for RTX"), \
            TensorRTRunner(res.engine):
        pass


def test_build_killed_while_writing_leaves_no_engine_or_manifest(tmp_path, monkeypatch):
    import trtopt.backends.tensorrt.store as store

    def interrupted(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "atomic_write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _build(G.qdq_conv(), tmp_path, precision="int8")
    assert not list((tmp_path / "engines").glob("*.engine")) and not list((tmp_path / "engines").glob("*.json"))


# -- what compiled to INT8 / FP16 ---------------------------------------------------------------
def test_qdq_gemm_and_matmul_compile_int8(tmp_path):
    res = _build(G.qdq_gemm_matmul(), tmp_path, precision="int8")
    c = res.data["compiled"]
    assert (c["quantized"], c["int8"], c["fallbacks"]) == (2, 2, [])
    assert {n["node"]: n["compiled"] for n in c["nodes"]} == {"/fc1/Gemm": "INT8", "/fc2/MatMul": "INT8"}
    assert c["summary"] == "quantized in ONNX: 2, compiled INT8: 2, fell back to float: 0"


def test_wrong_axis_weight_scales_fall_back_to_float_and_strict_fails(tmp_path, capsys):
    # 16x16 weights: axis=1 scales have the right count, so the graph parses and builds, but the conv
    # is not fused with its Q/DQ and runs in float.
    res = _build(G.qdq_conv(weight_axis=1), tmp_path, precision="int8")
    c = res.data["compiled"]
    assert (c["quantized"], c["int8"]) == (1, 0)
    assert [(f["node"], f["module"], f["compiled"]) for f in c["fallbacks"]] == [("/features/0/Conv", "features.0",
                                                                                  "FP32")]
    path = _save(G.qdq_conv(weight_axis=1), tmp_path, "wrong.onnx")
    rc = main(["build", str(path), "--backend", "tensorrt-rtx", "--precision", "int8", "--engine-dir",
               str(tmp_path / "e1")])
    out = capsys.readouterr().out
    assert rc == 0 and "quantized in ONNX: 1, compiled INT8: 0, fell back to float: 1" in out
    assert "/features/0/Conv (Conv, module features.0) compiled FP32" in out
    rc = main(["build", str(path), "--backend", "tensorrt-rtx", "--precision", "int8", "--strict", "--engine-dir",
               str(tmp_path / "e2")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "1 of 1 quantized layers compiled in float" in err[0]
    assert not list((tmp_path / "e2").glob("*.engine"))
    with pytest.raises(BuildError, match="/features/0/Conv"):
        _build(G.qdq_conv(weight_axis=1), tmp_path, precision="int8", strict=True)


def test_cli_prints_the_int8_summary(tmp_path, capsys):
    path = _save(G.qdq_conv(), tmp_path)
    rc = main(["build", str(path), "--backend", "tensorrt-rtx", "--precision", "int8", "--strict",
               "--engine-dir", str(tmp_path / "e")])
    out = capsys.readouterr().out
    assert rc == 0 and "quantized in ONNX: 1, compiled INT8: 1, fell back to float: 0" in out


def test_fp16_graph_compute_layers_compile_half(tmp_path):
    c = _build(G.fp16_conv(), tmp_path, precision="fp16").data["compiled"]
    assert c["quantized"] == 0 and c["compute_precisions"] == {"FP16": 1}


def test_fp32_graph_compute_layers_compile_float(tmp_path):
    x = G.fp16_conv()
    w = onnx.numpy_helper.to_array(x.graph.initializer[0]).astype(np.float32)
    nodes = [n for n in x.graph.node if n.op_type in ("Conv", "Relu")]
    nodes[0].input[0] = "x"
    nodes[1].output[0] = "y"
    g = onnx.helper.make_graph(nodes, "g", list(x.graph.input), list(x.graph.output),
                               [onnx.numpy_helper.from_array(w, "w")])
    c = _build(onnx.helper.make_model(g, opset_imports=x.opset_import), tmp_path, precision="fp32").data["compiled"]
    assert c["compute_precisions"] == {"FP32": 1}


def test_recipe_backend_tensorrt_rtx_builds_then_needs_a_gpu_to_run(tmp_path):
    import torch

    from trtopt.backends import open_runner
    from trtopt.run.engines import runner_options

    opts = runner_options("tensorrt-rtx", "int8", None, tmp_path / "engines")
    assert opts["config"].backend == "tensorrt-rtx" and opts["config"].precision == "int8"
    path = _save(G.qdq_conv(), tmp_path)
    runner = open_runner("tensorrt-rtx", path, engine_dir=tmp_path / "engines", precision="int8")
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU"), runner:
        pass
    assert len(list((tmp_path / "engines").glob("*.engine"))) == 1  # built ahead of time before the GPU check


# -- the demo's engine column ---------------------------------------------------------------------
def test_engine_summary_text_and_install_hint(tmp_path, monkeypatch):
    import importlib.util

    from trtopt.benchmark import EngineCell
    from trtopt.optional import install_hint
    from trtopt.run.engines import engine_summary

    q = _save(G.qdq_conv(), tmp_path, "int8.onnx")
    info = engine_summary("t", "int8", q, tmp_path / "engines")
    mb = round(info.details["engine_mb"], 1)
    assert info.status == "ok" and info.text == f"{mb:.1f} MB · 1/1 INT8 (100% of MACs)"
    bad = engine_summary("t", "int8", _save(G.qdq_conv(weight_axis=1), tmp_path, "bad.onnx"), tmp_path / "engines")
    assert bad.text.endswith("· 0/1 INT8 (0% of MACs)") and bad.details["int8_mac_share"] == 0.0
    h = _save(G.fp16_conv(), tmp_path, "fp16.onnx")
    assert engine_summary("t", "fp16", h, tmp_path / "engines").text.endswith("· 1/1 FP16")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "tensorrt_rtx" else real(n, *a))
    missing = engine_summary("t", "int8", q, tmp_path / "e2")
    assert missing == EngineCell(text=install_hint("tensorrt-rtx"), status="not installed")
    assert missing.to_dict() == {"text": install_hint("tensorrt-rtx"), "status": "not installed"}


def test_report_table_and_markdown_gain_the_engine_column():
    from _helpers.reports import make_report
    from trtopt.benchmark import EngineCell
    from trtopt.benchmark.render import ENGINE_COLUMN, render_markdown, render_table

    report = make_report()
    assert ENGINE_COLUMN not in [c.header for c in render_table(report.finalize()).columns]
    for v in report.variants:
        v.engine = EngineCell("0.9 MB · 5/5 INT8" if v.precision == "int8" else "0.6 MB · 5/5 FP32", "ok")
    report.finalize()
    t = render_table(report)
    assert [c.header for c in t.columns][-1] == ENGINE_COLUMN
    md = render_markdown(report)
    assert ENGINE_COLUMN in md and "| 0.9 MB · 5/5 INT8 |" in md


# -- precision from the graph ------------------------------------------------------------------
@pytest.mark.parametrize(("model", "precision", "holds", "compiled"), [
    (G.qdq_conv, "int8", "Q/DQ INT8, FP32 elsewhere", {"INT8": 1}),
    (G.fp16_conv, "fp16", "FP16 tensors", {"FP16": 1})])
def test_default_flags_build_what_the_graph_holds_and_say_so(tmp_path, capsys, model, precision, holds, compiled):
    path = _save(model(), tmp_path)
    rc = main(["build", str(path), "--backend", "tensorrt-rtx", "--engine-dir", str(tmp_path / "e")])
    out = capsys.readouterr().out
    assert rc == 0 and f"precision: {precision} (from the graph: {holds})" in out
    manifest = json.loads(next((tmp_path / "e").glob("*.json")).read_text())
    assert manifest["build"]["options"]["precision"] == precision
    assert manifest["build"]["precision"] == {"requested": "auto", "built": precision, "graph": holds}
    assert manifest["compiled"]["compute_precisions"] == compiled
    # asking for the same precision by name gives the same engine: the stored one is reused
    named = build_engine(path, BuildConfig(backend="tensorrt-rtx", precision=precision), engine_dir=tmp_path / "e")
    assert named.reused and named.engine.name == next((tmp_path / "e").glob("*.engine")).name


# -- targets: Turing (sm75) ----------------------------------------------------------------------
def test_sm75_builds_fp32_typed_qdq_gemm_and_matmul_in_int8(tmp_path):
    res = _build(G.qdq_gemm_matmul(), tmp_path, compute_capabilities=("sm75",))
    c = res.data["compiled"]
    assert {n["node"]: n["compiled"] for n in c["nodes"]} == {"/fc1/Gemm": "INT8", "/fc2/MatMul": "INT8"}
    assert res.data["targets"]["SM75"]["fp16_islands"] == ["/fc1/Gemm", "/fc2/MatMul"]


def test_sm75_builds_the_float_classifier_in_fp16_and_says_up_front_that_convs_stay_float(tmp_path, caplog):
    path = G.tiny_conv_net(tmp_path / "q.onnx", qdq=True)  # Q/DQ conv, classifier Gemm kept in float
    with caplog.at_level("WARNING", logger="trtopt"):
        res = build_engine(path, BuildConfig(backend="tensorrt-rtx", compute_capabilities=("sm75",)),
                           engine_dir=tmp_path / "engines")
    nodes = {n["node"]: n["compiled"] for n in res.data["compiled"]["nodes"]}
    assert nodes == {"/features/0/Conv": "FP32", "/classifier/Gemm": "FP16"}
    first = [r.getMessage() for r in caplog.records]
    assert any("1 of 1 quantized layers are convolutions, which compile in float" in m and "TensorRT 10" in m
               for m in first), first


def test_sm75_refuses_up_front_what_cannot_compile(tmp_path):
    fp32 = G.tiny_conv_net(tmp_path / "f.onnx")  # an FP32 model: its Gemm cannot be FP32 on Turing
    with pytest.raises(ConfigError, match=r"FP32 Gemm/MatMul cannot compile .*trtopt quantize MODEL.onnx --fp16.*"
                                          r"/classifier/Gemm"):
        build_engine(fp32, BuildConfig(backend="tensorrt-rtx", compute_capabilities=("sm75",)),
                     engine_dir=tmp_path / "e1")
    q = G.tiny_conv_net(tmp_path / "q.onnx", qdq=True)
    with pytest.raises(ConfigError, match=r"--strict: sm75: .*convolutions.*TensorRT 10"):
        build_engine(q, BuildConfig(backend="tensorrt-rtx", compute_capabilities=("sm75",), strict=True),
                     engine_dir=tmp_path / "e2")
    assert not list(tmp_path.glob("e*/*.engine"))


def test_sm75_among_other_targets_warns_that_every_target_gets_its_limits(tmp_path, caplog):
    with caplog.at_level("WARNING", logger="trtopt"):
        res = _build(G.qdq_conv(), tmp_path, compute_capabilities=("sm75", "sm86"))
    assert res.data["compiled"]["int8"] == 0  # one layer list for both targets: the conv is float
    assert any("build sm75 as an engine of its own" in r.getMessage() for r in caplog.records)


def test_a_runner_opened_on_a_qdq_model_builds_it_with_its_own_types(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    from trtopt.backends import open_runner

    path = _save(G.qdq_conv(), tmp_path)  # what `trtopt bench int8.onnx --backend tensorrt-rtx` opens
    with pytest.raises(BackendUnavailableError, match="needs an NVIDIA GPU"), \
            open_runner("tensorrt-rtx", path, engine_dir=tmp_path / "e"):
        pass
    manifest = json.loads(next((tmp_path / "e").glob("*.json")).read_text())
    assert manifest["build"]["options"]["precision"] == "int8" and manifest["compiled"]["int8"] == 1


def test_quantized_deconvolution_is_said_up_front_to_compile_float_on_every_target(tmp_path, caplog):
    path = _save(G.qdq_deconv(), tmp_path)
    with caplog.at_level("WARNING", logger="trtopt"):
        res = build_engine(path, BuildConfig(backend="tensorrt-rtx"), engine_dir=tmp_path / "e")
    assert [(n["node"], n["compiled"]) for n in res.data["compiled"]["nodes"]] == [("/up/ConvTranspose", "FP32")]
    assert res.data["targets"]["float_deconvs"] == ["/up/ConvTranspose"]
    assert any("no INT8 deconvolution in TensorRT-RTX" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match=r"--strict: 1 of 1 quantized layers are ConvTranspose"):
        build_engine(path, BuildConfig(backend="tensorrt-rtx", strict=True), engine_dir=tmp_path / "strict")
    assert not (tmp_path / "strict").exists() or not list((tmp_path / "strict").glob("*.engine"))


def test_the_compiled_int8_share_weighs_layers_by_their_macs_at_the_opt_shapes(tmp_path, capsys):
    from trtopt.onnx.macs import mac_share

    model = G.qdq_conv(weight_axis=1)  # builds, but the conv compiles in float
    good = _build(G.qdq_conv(), tmp_path, "good.onnx", precision="int8").data
    bad = _build(model, tmp_path, "bad.onnx", precision="int8").data
    opt = {k: v["opt"] for k, v in good["profiles"].items()}
    macs = mac_share(G.qdq_conv(), opt)
    assert good["compiled"]["total_macs"] == macs.total_macs > 0
    assert good["compiled"]["int8_macs"] == macs.int8_macs and good["compiled"]["int8_mac_share"] == macs.share
    assert (bad["compiled"]["int8_macs"], bad["compiled"]["int8_mac_share"]) == (0, 0.0)
    assert [n["macs"] for n in good["compiled"]["nodes"]] == [n.macs for n in macs.nodes]
    rc = main(["build", str(tmp_path / "good.onnx"), "--backend", "tensorrt-rtx", "--precision", "int8",
               "--engine-dir", str(tmp_path / "e")])
    assert rc == 0 and "MACs compiled INT8: 100.0% of" in capsys.readouterr().out
