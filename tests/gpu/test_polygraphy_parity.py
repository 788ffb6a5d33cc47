"""trtopt's TensorRT runner against Polygraphy's ``TrtRunner`` on the same engine (GPU; skipped without one).

Every case builds one engine with trtopt and runs the same inputs through three paths:

- trtopt's runner: ``infer`` (numpy in/out), and ``prepare`` — the tight loop ``trtopt bench`` times
  (inputs bound on the device once, each step only enqueues), plain and as a CUDA-graph replay;
- Polygraphy's ``TrtRunner`` (NVIDIA's reference runner, its own buffers and output allocator) on the
  same engine bytes, in a child process because Polygraphy picks ``tensorrt`` or ``tensorrt_rtx`` at
  import time (``POLYGRAPHY_USE_TENSORRT_RTX``);
- ONNX Runtime on CPU on the ONNX model that was built.

On a mismatch, ``verdict`` (tests/_helpers/runner_parity.py, checked on the CPU) names which of the two
is wrong, so the first GPU run answers it: Polygraphy agrees with ONNX Runtime and trtopt does not ->
trtopt's runner; both runners agree with each other but not with ONNX Runtime -> the engine (build),
not a runner.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from _helpers import onnx_models as rtx_graphs
from _helpers.runner_parity import verdict
from trtopt.errors import ConfigError

POLYGRAPHY_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    engine, feeds_path, out_path = sys.argv[1:4]
    feeds = np.load(feeds_path)
    out = {}
    with open(engine, "rb") as f, TrtRunner(EngineFromBytes(f.read())) as runner:
        for i in sorted({k.split("/")[0] for k in feeds.files}, key=int):
            feed = {k.split("/", 1)[1]: feeds[k] for k in feeds.files if k.split("/")[0] == i}
            for name, value in runner.infer(feed).items():
                out[f"{i}/{name}"] = np.array(value)
    np.savez(out_path, **out)
""")


def polygraphy_outputs(engine: Path, feeds: list[dict[str, np.ndarray]], rtx: bool, tmp: Path
                       ) -> list[dict[str, np.ndarray]]:
    """Outputs of Polygraphy's ``TrtRunner`` for each feed, run in a child process."""
    pytest.importorskip("polygraphy", reason="pip install 'trtopt[dev]' (Polygraphy is the reference runner)")
    np.savez(tmp / "feeds.npz", **{f"{i}/{k}": v for i, f in enumerate(feeds) for k, v in f.items()})
    env = {**os.environ, "POLYGRAPHY_USE_TENSORRT_RTX": "1" if rtx else "0"}
    res = subprocess.run([sys.executable, "-c", POLYGRAPHY_SCRIPT, str(engine), str(tmp / "feeds.npz"),
                          str(tmp / "poly.npz")], capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, f"Polygraphy's TrtRunner failed on {engine.name}:\n{res.stderr[-3000:]}"
    with np.load(tmp / "poly.npz") as z:
        return [{k.split("/", 1)[1]: z[k] for k in z.files if k.split("/")[0] == str(i)} for i in range(len(feeds))]


def ort_outputs(model: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feed)))


def _save(tmp: Path, name: str, model) -> Path:
    path = tmp / f"{name}.onnx"
    path.write_bytes(model.SerializeToString())
    return path


# name -> (make ONNX at path, precision, input name, per-sample shape, atol vs ONNX Runtime)
CASES = {
    "fp32": (lambda p: rtx_graphs.tiny_conv_net(p), "fp32", "input", (1, 8, 8), 1e-4),
    "int8-qdq": (lambda p: rtx_graphs.tiny_conv_net(p, qdq=True), "int8", "input", (1, 8, 8), 0.05),
    "int8-gemm-matmul": (lambda p: _save(p.parent, p.stem, rtx_graphs.qdq_gemm_matmul()), "int8", "x", (64,), 0.5),
    "fp16": (lambda p: _save(p.parent, p.stem, rtx_graphs.fp16_conv()), "fp16", "x", (16, 8, 8), 0.05),
}
BATCHES = (4, 1, 16, 3)  # OPT first, then both ends of the profile and an odd size


def _flavour_or_skip(backend: str) -> None:
    module = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}[backend]
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed")
    if backend == "tensorrt-rtx":
        import torch

        major, minor = torch.cuda.get_device_capability()
        if f"SM{major}{minor}" not in {"SM75", "SM80", "SM86", "SM89", "SM120", "SM121"}:
            pytest.skip(f"TensorRT for RTX has no target for this GPU (sm{major}{minor})")


BACKENDS = [pytest.param("tensorrt", marks=pytest.mark.tensorrt),
            pytest.param("tensorrt-rtx", marks=pytest.mark.tensorrt_rtx)]


@pytest.mark.gpu
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_trtopt_runner_matches_polygraphy_trtrunner_on_the_same_engine(tmp_path, backend, case):
    import torch

    from trtopt.backends.tensorrt import BuildConfig, Profile, build_engine, open_tensorrt_runner

    _flavour_or_skip(backend)
    make, precision, name, sample, atol = CASES[case]
    model = make(tmp_path / f"{case}.onnx")
    shapes = Profile(name, *((b, *sample) for b in (1, 4, 16)))
    major, minor = torch.cuda.get_device_capability()
    targets = (f"sm{major}{minor}",) if backend == "tensorrt-rtx" else ()  # RTX: build for this GPU
    cfg = BuildConfig(backend=backend, precision=precision, shapes=(shapes,), compute_capabilities=targets)
    try:
        res = build_engine(model, cfg, engine_dir=tmp_path / "engines")
    except ConfigError as exc:  # e.g. an FP32 Gemm for a T4 with TensorRT-RTX (no FP32 GEMM on Turing there)
        if "Turing has no FP32 GEMM" not in str(exc):
            raise
        pytest.skip(str(exc))
    rng = np.random.default_rng(7)
    feeds = [{name: rng.random((b, *sample), dtype=np.float32)} for b in BATCHES]
    theirs = polygraphy_outputs(res.engine, feeds, backend == "tensorrt-rtx", tmp_path)
    problems = []
    with open_tensorrt_runner(res.engine) as r:
        for feed, poly in zip(feeds, theirs):
            ref = ort_outputs(model, feed)
            ours = r.infer(feed)
            assert set(ours) == set(poly) == set(ref), (set(ours), set(poly), set(ref))
            problems += [verdict(f"{case} infer batch {len(feed[name])} '{k}'", ours[k], poly[k], ref[k], atol)
                         for k in ref]
    for cuda_graph in (False, True):  # the tight timing loop: bind once, enqueue (or replay) only
        with open_tensorrt_runner(res.engine, cuda_graph=cuda_graph) as r:
            step = r.prepare(feeds[0])
            for _ in range(3):
                step()
            torch.cuda.synchronize()
            bound = {k: v.cpu().numpy() for k, v in r._state["bound"][1].items()}
        ref = ort_outputs(model, feeds[0])
        problems += [verdict(f"{case} prepare(cuda_graph={cuda_graph}) '{k}'", bound[k], theirs[0][k], ref[k], atol)
                     for k in ref]
    problems = [p for p in problems if p]
    assert not problems, "\n".join(problems)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_implicit_int8_calibrates_through_polygraphy_and_the_cache_rebuilds_it_on_10x(tmp_path):
    """TensorRT 10 only: the first real run of the calibrator callbacks (trtopt source -> Polygraphy -> TensorRT)."""
    import tensorrt as trt

    from trtopt.backends.tensorrt import BuildConfig, Profile, build_engine, open_tensorrt_runner
    from trtopt.calib.source import NumpySource
    from trtopt.calib.table import CalibrationTable

    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        pytest.skip("strongly typed TensorRT (11.x): no implicit INT8")
    model = rtx_graphs.tiny_conv_net(tmp_path / "tiny.onnx")
    rng = np.random.default_rng(3)
    source = NumpySource({"input": rng.random((32, 1, 8, 8), dtype=np.float32)}, batch_size=4)
    cfg = BuildConfig(precision="int8", shapes=(Profile("input", (1, 1, 8, 8), (4, 1, 8, 8), (16, 1, 8, 8)),))
    res = build_engine(model, cfg, engine_dir=tmp_path / "a", calib_source=source)
    calib = res.data["calibration"]
    assert calib["batches"] == 8 and "IInt8EntropyCalibrator2" in calib["calibrator"]
    cache = CalibrationTable.read_trt_cache(calib["cache_out"])
    assert {"input", "logits"} <= set(cache.amax) and all(v > 0 for v in cache.amax.values())
    assert cache.meta["trt_version"] == int(json.loads(res.manifest.read_text())["tensorrt"]["nv_tensorrt_version"])
    again = build_engine(model, cfg, engine_dir=tmp_path / "b", calibration=calib["cache_out"])
    assert again.data["calibration"]["batches"] == 0  # scales from the cache: no data read
    feed = {"input": rng.random((4, 1, 8, 8), dtype=np.float32)}
    ref = ort_outputs(model, feed)["logits"]
    theirs = polygraphy_outputs(res.engine, [feed], False, tmp_path)[0]["logits"]
    with open_tensorrt_runner(res.engine) as r:
        ours = r.infer(feed)["logits"]
    with open_tensorrt_runner(again.engine) as r:
        from_cache = r.infer(feed)["logits"]
    atol = 0.05 * float(np.abs(ref).max())  # INT8 against FP32
    assert verdict("implicit int8", ours, theirs, ref, atol) is None
    np.testing.assert_allclose(from_cache, ours, atol=atol)
