"""The "bring your own model" example (examples/byom) as a user runs it.

The example is copied into a temporary folder (so nothing is written into the clone), its own
scripts make the data and train both models (small sizes), and trtopt's commands run on the
result. The whole documented chain runs in CI through ``examples/byom/run_all.sh`` (``.ci/run``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _helpers.paths import REPO_ROOT as ROOT

EXAMPLE = ROOT / "examples" / "byom"
DET_SPEC = "image:float32:batchx1x32x32"
ENC_SPECS = ("input_ids:int64:batchx32", "attention_mask:int64:batchx32")


def _env(project: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(project)]))


def _run(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=project, env=_env(project), capture_output=True, text=True,
                          check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> rc {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def _trtopt(project: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return _run(project, "-m", "trtopt.cli.main", *args, check=check)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the example with small data and briefly trained weights (the user's steps 1-2)."""
    dest = tmp_path_factory.mktemp("byom") / "byom"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("data", "weights", "runs", "__pycache__"))
    _run(dest, "make_data.py", "--out", "data", "--train", "256", "--calib", "64", "--eval", "128")
    _run(dest, "train.py", "--data", "data", "--out", "weights", "--epochs-det", "2", "--epochs-enc", "2")
    (dest / "runs").mkdir()
    return dest


@pytest.fixture(scope="module")
def dense_onnx(project: Path) -> dict[str, Path]:
    """Both dense models exported with the Python API (what `trtopt export --model` will do)."""
    with pytest.MonkeyPatch.context() as mp:  # the project is importable only inside this block
        mp.syspath_prepend(str(project))
        from trtopt.export import ExportConfig, export_with_specs
        from trtopt.inputs import parse_input_specs
        from trtopt.models.reference import load_model

        out = {}
        for key, ref, specs, names in (("det", "byom_models.detector:make_detector", (DET_SPEC,), ("boxes", "logits")),
                                       ("enc", "byom_models.encoder:make_encoder", ENC_SPECS, ("logits",))):
            model = load_model(ref, project / "weights" / ("detector.pt" if key == "det" else "encoder.pt"))
            out[key] = export_with_specs(model, parse_input_specs(specs), project / "runs" / f"{key}.onnx",
                                         ExportConfig(output_names=names))
        return out


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


def _metrics_module(project: Path):
    spec = importlib.util.spec_from_file_location("byom_metrics_under_test", project / "byom_models" / "metrics.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- the project's own pieces -------------------------------------------------------------------


def test_data_files_follow_trtopt_format(project: Path) -> None:
    """make_data.py writes .npz files trtopt's loader accepts for the declared input specs."""
    from trtopt.dataset import load_npz
    from trtopt.inputs import parse_input_specs

    det = load_npz(project / "data" / "det_eval.npz").check(parse_input_specs([DET_SPEC]), need_labels=True)
    assert det.inputs["image"].shape == (128, 1, 32, 32)
    labels = det.labels
    assert labels.shape == (128, 5) and set(np.unique(labels[:, 0])) <= set(range(10))
    cx, cy, w, h = labels[:, 1:].T
    assert np.all(cx - w / 2 >= -1e-6) and np.all(cx + w / 2 <= 1 + 1e-6)  # boxes inside the canvas
    assert np.all(cy - h / 2 >= -1e-6) and np.all(cy + h / 2 <= 1 + 1e-6)
    # the digit is inside its box: the brightest pixel of every image lies within the labelled box
    img = det.inputs["image"][:, 0]
    yy, xx = np.unravel_index(img.reshape(len(img), -1).argmax(1), (32, 32))
    assert np.all(np.abs((xx + 0.5) / 32 - cx) <= w / 2) and np.all(np.abs((yy + 0.5) / 32 - cy) <= h / 2)

    enc = load_npz(project / "data" / "enc_eval.npz").check(parse_input_specs(ENC_SPECS), need_labels=True)
    ids, mask = enc.inputs["input_ids"], enc.inputs["attention_mask"]
    assert ids.dtype == np.int64 and ids.shape[1] == 32 and ids.max() < 2048 and ids.min() >= 0
    np.testing.assert_array_equal(mask, (ids > 0).astype(np.int64))
    assert set(np.unique(enc.labels)) == {0, 1, 2, 3}
    vocab = json.loads((project / "data" / "vocab.json").read_text())
    assert vocab["<pad>"] == 0 and vocab["<unk>"] == 1 and len(vocab) <= 2048


def test_hit_rate_metric(project: Path) -> None:
    """hit = right class AND IoU >= 0.5; IoU of a half-width shift of a 0.5 box is 1/3 (a miss)."""
    hit_rate = _metrics_module(project).hit_rate
    labels = np.array([[3, 0.5, 0.5, 0.5, 0.5]] * 4, np.float32)
    boxes = np.array([[0.5, 0.5, 0.5, 0.5],      # exact: hit
                      [0.75, 0.5, 0.5, 0.5],     # IoU = 0.125 / 0.375 = 1/3: miss
                      [0.55, 0.5, 0.5, 0.5],     # IoU = 0.225 / 0.275 = 0.818: hit
                      [0.5, 0.5, 0.5, 0.5]], np.float32)
    logits = np.eye(10, dtype=np.float32)[[3, 3, 3, 7]]  # last one: wrong class
    assert hit_rate({"boxes": boxes, "logits": logits}, labels) == pytest.approx(50.0)
    # unnamed outputs (output_0/output_1, either order) are told apart by shape
    assert hit_rate({"output_1": logits, "output_0": boxes}, labels) == pytest.approx(50.0)
    with pytest.raises(ValueError, match="labels"):
        hit_rate({"boxes": boxes, "logits": logits}, labels[:, :4])


def test_factories_load_trained_weights(project: Path) -> None:
    """The factories are trtopt model references; train.py's state dicts load into them."""
    with pytest.MonkeyPatch.context() as mp:  # the project is importable only inside this block
        mp.syspath_prepend(str(project))
        from trtopt.inputs import parse_input_specs
        from trtopt.models.reference import check_forward, load_model

        det = load_model("byom_models.detector:make_detector", project / "weights" / "detector.pt")
        boxes, logits = check_forward(det, parse_input_specs([DET_SPEC]))
        assert tuple(boxes.shape) == (1, 4) and tuple(logits.shape) == (1, 10)
        enc = load_model("byom_models.encoder:make_encoder", project / "weights" / "encoder.pt")
        (out,) = check_forward(enc, parse_input_specs(ENC_SPECS))
        assert tuple(out.shape) == (1, 4)


# --- stages that work with today's CLI ----------------------------------------------------------


def test_exported_detector_matches_torch_hit_rate(project: Path, dense_onnx: dict[str, Path]) -> None:
    """The ONNX detector scores the same hit rate as the trained torch model (same outputs)."""
    import torch

    with pytest.MonkeyPatch.context() as mp:  # the project is importable only inside this block
        mp.syspath_prepend(str(project))
        from trtopt.models.reference import load_model

        model = load_model("byom_models.detector:make_detector", project / "weights" / "detector.pt")
    with np.load(project / "data" / "det_eval.npz") as z:
        x, labels = z["image"], z["labels"]
    with torch.no_grad():
        tb, tl = (t.numpy() for t in model(torch.from_numpy(x)))
    outs = _ort(dense_onnx["det"], {"image": x})
    np.testing.assert_allclose(outs["boxes"], tb, atol=1e-4)
    np.testing.assert_allclose(outs["logits"], tl, atol=1e-3)
    hit_rate = _metrics_module(project).hit_rate
    assert hit_rate(outs, labels) == pytest.approx(hit_rate({"boxes": tb, "logits": tl}, labels))


def test_calibrate_quantize_bench_encoder(project: Path, dense_onnx: dict[str, Path]) -> None:
    """Two int64 inputs through calibrate -> quantize (INT8 Q/DQ) -> bench with the eval labels."""
    import onnx

    r = project / "runs"
    _trtopt(project, "calibrate", str(dense_onnx["enc"]), "--data", "data/enc_calib.npz", "--out", "runs/calib")
    _trtopt(project, "quantize", str(dense_onnx["enc"]), "--calib", "runs/calib/enc.calib.json",
            "--out", "runs/enc_int8.onnx")
    q = onnx.load(r / "enc_int8.onnx")
    onnx.checker.check_model(q, full_check=True)
    assert sum(n.op_type == "QuantizeLinear" for n in q.graph.node) > 0
    with np.load(project / "data" / "enc_eval.npz") as z:
        feeds = {"input_ids": z["input_ids"], "attention_mask": z["attention_mask"]}
        labels = z["labels"]
    ref = _ort(dense_onnx["enc"], feeds)["logits"]
    _trtopt(project, "bench", str(dense_onnx["enc"]), "runs/enc_int8.onnx", "--data", "data/enc_eval.npz",
            "--batch", "64", "--warmup", "1", "--min-duration", "0.1", "--no-plots",
            "--out", "runs/bench_enc")
    report = json.loads((r / "bench_enc" / "report.json").read_text())
    fp32 = next(v for v in report["variants"] if v["name"] == "enc")
    assert fp32["accuracy"]["metric"] == "top1"
    assert fp32["accuracy"]["value"] == pytest.approx(100.0 * np.mean(ref.argmax(1) == labels))


def test_calibrate_quantize_detector(project: Path, dense_onnx: dict[str, Path]) -> None:
    """The SiLU detector through calibrate -> INT8 and FP16; both stay close to FP32 on eval images."""
    import onnx

    _trtopt(project, "calibrate", str(dense_onnx["det"]), "--data", "data/det_calib.npz", "--out", "runs/calib")
    _trtopt(project, "quantize", str(dense_onnx["det"]), "--calib", "runs/calib/det.calib.json",
            "--out", "runs/det_int8.onnx")
    _trtopt(project, "quantize", str(dense_onnx["det"]), "--fp16", "--out", "runs/det_fp16.onnx")
    with np.load(project / "data" / "det_eval.npz") as z:
        x = z["image"]
    ref = _ort(dense_onnx["det"], {"image": x})
    for name in ("det_int8", "det_fp16"):
        path = project / "runs" / f"{name}.onnx"
        onnx.checker.check_model(onnx.load(path), full_check=True)
        got = _ort(path, {"image": x})
        for out in ("boxes", "logits"):
            a, b = ref[out].ravel().astype(np.float64), got[out].ravel().astype(np.float64)
            assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) > 0.99, (name, out)


@pytest.mark.tensorrt_rtx
def test_build_tensorrt_rtx(project: Path, dense_onnx: dict[str, Path]) -> None:
    """The INT8 encoder builds ahead of time with TensorRT-RTX (no GPU), every quantized layer in INT8."""
    if importlib.util.find_spec("tensorrt_rtx") is None:
        pytest.skip("TensorRT-RTX is not installed (pip install -e \".[tensorrt-rtx]\")")
    if not (project / "runs" / "enc_int8.onnx").is_file():
        _trtopt(project, "calibrate", str(dense_onnx["enc"]), "--data", "data/enc_calib.npz", "--out", "runs/calib")
        _trtopt(project, "quantize", str(dense_onnx["enc"]), "--calib", "runs/calib/enc.calib.json",
                "--out", "runs/enc_int8.onnx")
    proc = _trtopt(project, "build", "--backend", "tensorrt-rtx", "--precision", "int8", "runs/enc_int8.onnx",
                   "--shapes", "input_ids:1x32,64x32,64x32", "attention_mask:1x32,64x32,64x32",
                   "--engine-dir", "runs/engines")
    m = re.search(r"quantized in ONNX: (\d+), compiled INT8: (\d+), fell back to float: (\d+)", proc.stdout)
    assert m and int(m.group(1)) > 0 and m.group(1) == m.group(2) and m.group(3) == "0", proc.stdout


# --- the documented commands --------------------------------------------------------------------


def _normalise(cmd: str) -> str:
    cmd = cmd.replace('"${BYOM_BASELINE:-$R/bench/report.json}"', "$R/bench/report.json")
    cmd = re.sub(r'\s*"\$\{(DATA|TRAIN)_ARGS\[@\]\}"', "", cmd).replace('"$PY"', "python")
    return " ".join(cmd.replace('"', "").split())


def _commands(text: str) -> list[str]:
    """Commands (continuation lines joined, comments dropped) that start with trtopt or python."""
    joined = re.sub(r"\\\n\s*", " ", text)
    cmds = [re.sub(r"\s+#.*$", "", ln).strip() for ln in joined.splitlines()]
    return [_normalise(c) for c in cmds if re.match(r'(trtopt|python|"\$PY") ', c)]


def test_run_all_runs_the_readme_commands_in_order() -> None:
    """run_all.sh is the README's commands, in order (CI runs what the user reads)."""
    readme = (EXAMPLE / "README.md").read_text(encoding="utf-8")
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", readme, flags=re.S))
    documented = _commands(blocks)
    script = _commands((EXAMPLE / "run_all.sh").read_text(encoding="utf-8"))
    assert len(documented) >= 15
    assert script == documented
    assert subprocess.run(["bash", "-n", str(EXAMPLE / "run_all.sh")], check=False).returncode == 0


def test_bench_script_reads_the_stages_of_run_all() -> None:
    """bench/byom_e2e.py times exactly run_all.sh's '# N. title' blocks."""
    spec = importlib.util.spec_from_file_location("byom_e2e_under_test", ROOT / "bench" / "byom_e2e.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    preamble, stages = mod.split_script((EXAMPLE / "run_all.sh").read_text(encoding="utf-8"))
    assert "set -euo pipefail" in preamble and "trtopt()" in preamble
    assert [s.key for s in stages][:3] == ["1", "2", "3"]
    body = "".join(s.commands for s in stages)
    assert _commands(body) == _commands((EXAMPLE / "run_all.sh").read_text(encoding="utf-8"))


# --- stages that need the new options (other branches) ------------------------------------------


def test_cli_export_two_inputs(project: Path) -> None:
    """`trtopt export --model REF --weights W --input ... --input ...` writes a two-input ONNX model."""
    import onnx

    _trtopt(project, "export", "--model", "byom_models.encoder:make_encoder", "--weights", "weights/encoder.pt",
            "--input", ENC_SPECS[0], "--input", ENC_SPECS[1], "--out", "runs/cli_enc.onnx")
    m = onnx.load(project / "runs" / "cli_enc.onnx")
    assert [i.name for i in m.graph.input] == ["input_ids", "attention_mask"]
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.INT64 for i in m.graph.input)


def test_cli_prune_finetune_custom_loss(project: Path) -> None:
    """`trtopt prune --model ... --data ... --loss pkg.mod:fn` leaves an exact 2:4 sparse ONNX model."""
    import onnx
    from onnx import numpy_helper

    _trtopt(project, "prune", "--model", "byom_models.detector:make_detector", "--weights", "weights/detector.pt",
            "--input", DET_SPEC, "--data", "data/det_train.npz",
            "--finetune-epochs", "1", "--loss", "byom_models.losses:detection_loss",
            "--out-masks", "runs/masks.pt", "--onnx", "runs/sparse24-fp32.onnx", "--report", "runs/prune.json")
    m = onnx.load(project / "runs" / "sparse24-fp32.onnx")
    sparse = 0
    for init in m.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim == 4 and w.shape[1] >= 16:  # the convs after the stem: groups of 4 along input channels
            groups = np.moveaxis(w, 1, -1).reshape(-1, 4)
            sparse += int(np.all((groups != 0).sum(1) <= 2))
    assert sparse >= 3


def test_cli_bench_custom_metric(project: Path, dense_onnx: dict[str, Path]) -> None:
    """`trtopt bench --metric byom_models.metrics:hit_rate` reports the hit rate computed from ONNX Runtime."""
    _trtopt(project, "bench", str(dense_onnx["det"]), "--data", "data/det_eval.npz",
            "--metric", "byom_models.metrics:hit_rate", "--batch", "64", "--warmup", "1", "--min-duration", "0.1",
            "--no-plots", "--out", "runs/bench_det")
    with np.load(project / "data" / "det_eval.npz") as z:
        x, labels = z["image"], z["labels"]
    expected = _metrics_module(project).hit_rate(_ort(dense_onnx["det"], {"image": x}), labels)
    v = json.loads((project / "runs" / "bench_det" / "report.json").read_text())["variants"][0]
    assert v["accuracy"]["value"] == pytest.approx(expected)


def test_recipe_run_encoder(project: Path) -> None:
    """`trtopt run recipes/encoder.toml` (factory, two int64 inputs, data paths relative to the recipe)."""
    _trtopt(project, "run", "recipes/encoder.toml", "--variants", "fp32,sparse24-int8", "--min-duration", "0.05",
            "--out", "runs/encoder-recipe")
    report = json.loads((project / "runs" / "encoder-recipe" / "report.json").read_text())
    names = {v["name"]: v for v in report["variants"]}
    assert {"fp32", "sparse24-int8"} <= set(names)
    assert all(v["status"] == "ok" and v["accuracy"]["metric"] == "top1" for v in names.values())


def test_run_all_sh_end_to_end(tmp_path: Path) -> None:
    """The documented chain, exactly as run_all.sh runs it (full-size data; about 1.5 min on 2 cores)."""
    dest = tmp_path / "byom"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("data", "weights", "runs", "__pycache__"))
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    proc = subprocess.run(["bash", "run_all.sh"], cwd=dest, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    prune = json.loads((dest / "runs/detector/prune.json").read_text())
    assert prune["summary"]["masks_intact"] is True, prune["summary"]
    bench = {v["name"]: v for v in json.loads((dest / "runs/detector/bench/report.json").read_text())["variants"]}
    recipe = {v["name"]: v for v in json.loads((dest / "runs/detector-recipe/report.json").read_text())["variants"]}
    for rows in (bench, recipe):
        assert set(rows) == {"fp32", "fp16", "int8", "sparse24-fp32", "sparse24-int8"}
        assert all(r["status"] == "ok" for r in rows.values()), {k: r["reason"] for k, r in rows.items()}
        assert rows["fp32"]["accuracy"]["metric"] == "hit_rate" and rows["fp32"]["accuracy"]["value"] > 50
        # the pruned + fine-tuned model keeps the task: within 5 points of the dense hit rate
        assert rows["sparse24-int8"]["accuracy"]["value"] > rows["fp32"]["accuracy"]["value"] - 5
    assert "within budget" in proc.stdout + proc.stderr  # step 10: the gate passed
    enc = {v["name"]: v for v in json.loads((dest / "runs/encoder-recipe/report.json").read_text())["variants"]}
    assert enc["fp32"]["accuracy"]["metric"] == "top1" and enc["fp32"]["accuracy"]["value"] > 50
