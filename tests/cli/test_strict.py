"""``bench --strict`` and ``run --strict`` fail on the same problems of the same models (one rule)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

from _helpers.onnx_models import linear_model
from trtopt.benchmark import EngineCell
from trtopt.cli.main import main
from trtopt.pipeline import Pipeline

FAST = ["--warmup", "1", "--iterations", "5", "--rounds", "5", "--batch", "4", "--no-plots"]
FAST_TOML = "[bench]\nbatch_sizes = [4]\nwarmup = 1\niterations = 5\nrounds = 5\nmin_rounds = 5\n"


def _strict_line(err: str) -> str:
    return next(line for line in err.splitlines() if "--strict:" in line).split("--strict:", 1)[1].strip()


def _run_strict(tmp_path, monkeypatch, files, engine_column) -> int:
    """``trtopt run --strict`` of a recipe whose variants are ``files`` (fp32, int8), on ``eval.npz``."""

    def prepare(self, workload):
        self.workload = workload
        return {v: Path(p) for v, p in files.items()}

    monkeypatch.setattr(Pipeline, "prepare", prepare)
    monkeypatch.setattr("trtopt.pipeline.engine_column", engine_column)
    (tmp_path / "r.toml").write_text(textwrap.dedent(f"""
        [recipe]
        name = "t"
        variants = ["fp32", "int8"]
        [workload]
        model = "{files['fp32']}"
        eval_data = "{tmp_path / 'eval.npz'}"
        calib_data = "{tmp_path / 'eval.npz'}"
    """) + FAST_TOML)
    return main(["run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "r"), "--strict"])


def test_bench_and_run_strict_name_the_same_problems(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    files = {"fp32": linear_model(tmp_path / "fp32.onnx", rng.normal(size=(8, 4))),
             "int8": linear_model(tmp_path / "int8.onnx", rng.normal(size=(8, 4)))}  # outside any tolerance
    np.savez(tmp_path / "eval.npz", x=rng.normal(size=(16, 8)).astype(np.float32))
    assert main(["bench", files["fp32"], files["int8"], "--data", str(tmp_path / "eval.npz"),
                 "--out", str(tmp_path / "b"), "--strict", *FAST]) == 1
    bench = _strict_line(capsys.readouterr().err)
    assert _run_strict(tmp_path, monkeypatch, files, lambda *a, **k: EngineCell("0.1 MB", "ok")) == 1
    run = _strict_line(capsys.readouterr().err)
    assert run == bench and run.startswith("1 variant(s) not ok: int8@4 (onnxruntime): fidelity outside tolerance")


def test_a_failed_engine_build_fails_run_strict_like_a_failed_variant(tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(8, 4))
    files = {"fp32": linear_model(tmp_path / "fp32.onnx", w), "int8": linear_model(tmp_path / "int8.onnx", w)}
    np.savez(tmp_path / "eval.npz", x=rng.normal(size=(16, 8)).astype(np.float32))

    def engines(recipe, variant, *a, **k):
        return EngineCell("0.1 MB", "ok") if variant == "fp32" else \
            EngineCell("build failed: boom", "failed", reason="boom\nmore")

    assert _run_strict(tmp_path, monkeypatch, files, engines) == 1
    assert _strict_line(capsys.readouterr().err) == "1 variant(s) not ok: engine build failed: int8: boom"
