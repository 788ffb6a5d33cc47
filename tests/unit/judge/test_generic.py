"""Fidelity: the summary must not look healthy while the task fails.

Each test re-creates one way a broken variant used to be reported ``ok``: a small-scale score
channel hidden under pixel coordinates (whole-tensor cosine 0.998), a sequence output
``[N, T, C]`` with no agreement at all, no explicit tolerances (``ok`` at cosine 0), and NaN
outputs. Expected values are computed independently with numpy.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from _helpers.onnx_models import detector_head
from trtopt.backends.base import Runner, TensorSpec
from trtopt.benchmark import (
    DEFAULT_TOLERANCE,
    AccuracyResult,
    BenchConfig,
    ChannelSplit,
    Report,
    Tolerance,
    VariantResult,
    evaluate,
    fidelity,
    render_markdown,
    render_table,
    summarize,
)
from trtopt.benchmark.gate import gate
from trtopt.cli.main import main
from trtopt.errors import ConfigError, InputError

RNG = np.random.default_rng(7)


def _np_cos(a, b):
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _detections(n=15):
    """[1, n, 5] detector output: x1, y1, x2, y2 in pixels (0..640) and a 0-1 score."""
    boxes = RNG.uniform(0, 640, size=(1, n, 4))
    scores = RNG.uniform(0.55, 0.95, size=(1, n, 1))
    return np.concatenate([boxes, scores], axis=-1)


def _broken_scores(ref):
    """Same boxes, but 9 of 15 scores fall under a 0.5 threshold (9 detections lost)."""
    out = ref.copy()
    out[0, :9, 4] = 0.1
    return out


def test_small_scale_score_channel_is_caught_by_the_worst_channel_cosine():
    ref = _detections()
    out = _broken_scores(ref)
    assert _np_cos(ref, out) > 0.998  # the whole-tensor cosine is blind to it (the reported fault)
    f = fidelity(ref, out)
    assert f["cosine"] == pytest.approx(_np_cos(ref, out))
    assert f["channel_axis"] == 2 and f["worst_channel"] == "4"
    assert f["worst_channel_cosine"] == pytest.approx(_np_cos(ref[..., 4], out[..., 4]))
    assert f["worst_channel_cosine"] < 0.99
    bad = DEFAULT_TOLERANCE.violations(f)
    assert bad and bad[0].startswith("worst_channel_cosine") and "(channel 4)" in bad[0]
    # declared groups: the boxes group is intact, the scores group is what fails
    g = fidelity(ref, out, ChannelSplit(axis=-1, groups={"boxes": [0, 1, 2, 3], "scores": [4]}))
    assert g["worst_channel"] == "scores"
    assert g["worst_channel_cosine"] == pytest.approx(_np_cos(ref[..., 4], out[..., 4]))
    # a variant that only adds small noise everywhere passes the default
    fine = ref + RNG.normal(scale=1e-3, size=ref.shape)
    assert DEFAULT_TOLERANCE.violations(fidelity(ref, fine)) == []


def test_channel_split_bad_input_is_one_clear_error():
    ref = _detections()
    with pytest.raises(InputError, match="channel axis 5"):
        fidelity(ref, ref, ChannelSplit(axis=5))
    with pytest.raises(InputError, match="indexes past"):
        fidelity(ref, ref, ChannelSplit(groups={"x": [9]}))
    with pytest.raises(ConfigError, match="non-empty"):
        ChannelSplit(groups={"x": []})


def test_sequence_outputs_get_per_position_and_per_sequence_agreement():
    n, t, c = 4, 10, 30
    ref = RNG.normal(size=(n, t, c))
    out = ref.copy()
    flips = [(0, 3), (0, 7), (2, 1)]  # three positions whose argmax changes
    for i, j in flips:
        k = int(ref[i, j].argmax())
        out[i, j, (k + 1) % c] = ref[i, j, k] + 1.0
    f = fidelity(ref, out)
    assert f["top1_agreement"] is None  # per-sample agreement does not apply to [N, T, C]
    same = ref.argmax(-1) == out.argmax(-1)
    assert f["position_agreement"] == pytest.approx(100.0 * same.mean()) == pytest.approx(100 * (1 - 3 / 40))
    assert f["sequence_agreement"] == pytest.approx(100.0 * same.all(1).mean()) == pytest.approx(50.0)
    assert any(v.startswith("position_agreement 92.5 < 99") for v in DEFAULT_TOLERANCE.violations(f))
    assert fidelity(ref, ref.copy())["position_agreement"] == 100.0
    # wide class axes (vocabularies) are not split per channel automatically
    assert fidelity(RNG.normal(size=(2, 5, 100)), RNG.normal(size=(2, 5, 100)))["worst_channel_cosine"] is None


class _Fixed(Runner):
    """Returns a fixed output per call (the rows of ``y`` selected by the batch)."""

    backend = "fake"

    def __init__(self, y, name="out") -> None:
        super().__init__()
        self.y, self.name = y, name

    def _activate(self):
        pass

    def input_specs(self):
        return [TensorSpec("idx", (None,), np.dtype(np.int64))]

    def output_specs(self):
        return [TensorSpec(self.name, (None, *self.y.shape[1:]), np.dtype(np.float32))]

    def _infer(self, feeds):
        return {self.name: self.y[feeds["idx"]].astype(np.float32)}


def test_no_explicit_tolerance_still_fails_a_zero_output():
    ref = RNG.normal(size=(8, 6)).astype(np.float32)
    idx = np.arange(8)
    with _Fixed(np.zeros_like(ref)) as r:
        acc = evaluate(r, idx, reference={"out": ref}, batch_size=4)
    assert acc.fidelity["out"]["cosine"] == 0.0
    assert acc.fidelity_ok is False and acc.violations["out"][0] == "cosine 0 < 0.99"
    assert acc.tolerances["out"] == DEFAULT_TOLERANCE.to_dict()
    with _Fixed(ref) as r:  # the reference itself is within tolerance
        same = evaluate(r, idx, reference={"out": ref}, batch_size=4)
    assert same.fidelity_ok is True and same.violations == {}
    with _Fixed(np.zeros_like(ref)) as r:  # Tolerance() checks nothing: an explicit opt-out
        assert evaluate(r, idx, reference={"out": ref}, tolerances=Tolerance()).violations == {}
    with _Fixed(ref) as r:
        assert evaluate(r, idx).fidelity_ok is None  # no reference: nothing compared


def test_nan_outputs_fail_every_tolerance():
    ref = RNG.normal(size=(4, 3))
    out = ref.copy()
    out[1, 2] = np.nan
    f = fidelity(ref, out)
    assert f["nonfinite"] == 1
    bad = Tolerance(min_cosine=0.5).violations(f)
    assert bad[0] == "1 non-finite value(s) in the output" and bad[1].startswith("cosine nan")


def test_tolerance_validation_and_overrides():
    with pytest.raises(ConfigError, match="min_top1_agreement"):
        Tolerance(min_top1_agreement=150)
    with pytest.raises(ConfigError, match="min_cosine"):
        Tolerance(min_cosine=2.0)
    t = DEFAULT_TOLERANCE.merged(min_cosine=0.5, min_top1_agreement=None)
    assert t.min_cosine == 0.5 and t.min_top1_agreement == 99.0 and t.min_channel_cosine == 0.99
    assert BenchConfig().tolerance() == DEFAULT_TOLERANCE  # unset bench tolerances keep the defaults
    assert BenchConfig(min_sqnr_db=20).tolerance() == DEFAULT_TOLERANCE.merged(min_sqnr_db=20)
    with pytest.raises(ConfigError):
        BenchConfig(min_top1_agreement=-1).tolerance()


def _report(fid_bad: bool):
    t = summarize(np.full(5, 2.0), 1)
    ref_fid = {"det": {"cosine": 1.0, "sqnr_db": float("inf")}}
    det = _detections()
    f = fidelity(det, _broken_scores(det) if fid_bad else det)
    bad = {"det": DEFAULT_TOLERANCE.violations(f)} if fid_bad else {}
    tol = {"det": DEFAULT_TOLERANCE.to_dict()}
    fp32 = AccuracyResult("none", None, fidelity=ref_fid, tolerances=tol)
    int8 = AccuracyResult("none", None, fidelity={"det": f}, violations=bad, tolerances=tol)
    vs = [VariantResult("fp32", "onnxruntime", "fp32", "dense", 1, t, fp32, "a.onnx"),
          VariantResult("int8", "onnxruntime", "int8", "dense", 1, t, int8, "b.onnx")]
    return Report(environment={}, workload={"name": "det"}, variants=vs).finalize().to_dict()


def test_failing_variant_is_marked_in_json_markdown_table_and_gate():
    good, bad = _report(False), _report(True)
    row = bad["variants"][1]
    assert row["fidelity_ok"] is False and row["status"] == "ok"
    assert row["fidelity_tolerances"]["det"]["min_cosine"] == 0.99
    assert good["variants"][1]["fidelity_ok"] is True
    md = render_markdown(bad)
    assert "✗ FAIL: worst_channel_cosine" in md and "int8 ✗ fidelity" in md
    assert "cosine ≥ 0.99, top-1 agreement ≥ 99 %, worst channel cosine ≥ 0.99" in md
    assert "✗" not in render_markdown(good).split("## Environment")[0].replace("✗ marks", "")
    console = Console(width=250, record=True, file=io.StringIO())
    console.print(render_table(bad))
    text = console.export_text()
    assert "int8 ✗" in text and "int8: FAILS fidelity tolerance: det: worst_channel_cosine" in text
    res = gate(bad, good)
    assert not res.passed and "fidelity outside tolerance" in res.regressions[0].problems[0]
    assert gate(good, good).passed and gate(bad, bad).passed  # already failing in the baseline: no regression


def test_bench_cli_marks_a_detector_with_broken_scores(tmp_path):
    fp32 = detector_head(tmp_path / "fp32.onnx", 1.0, np.random.default_rng(3))
    broken = detector_head(tmp_path / "broken.onnx", 0.3, np.random.default_rng(3))  # same weights, clipped scores
    np.savez(tmp_path / "eval.npz", x=np.abs(np.random.default_rng(1).normal(size=(6, 8))).astype(np.float32))
    out = tmp_path / "out"
    assert main(["bench", fp32, broken, "--data", str(tmp_path / "eval.npz"), "--out", str(out),
                 "--warmup", "1", "--iterations", "5", "--no-plots"]) == 0
    rep = json.loads((out / "report.json").read_text())
    by = {v["name"]: v for v in rep["variants"]}
    f = by["broken"]["fidelity"]["det"]
    assert f["cosine"] > 0.99  # healthy-looking whole-tensor cosine ...
    assert by["broken"]["fidelity_ok"] is False  # ... but the variant is not ok
    assert by["broken"]["fidelity_violations"]["det"][0].startswith("worst_channel_cosine")
    assert by["fp32"]["fidelity_ok"] is None  # the reference itself: nothing compared
    assert "broken ✗ fidelity" in (out / "report.md").read_text()


def test_a_violation_shows_enough_digits_to_tell_the_value_from_its_limit():
    from trtopt.judge.generic import Tolerance

    assert Tolerance(min_cosine=0.99999).violations({"cosine": 0.999964}) == ["cosine 0.99996 < 0.99999"]
    assert Tolerance(min_cosine=0.99).violations({"cosine": 0.5}) == ["cosine 0.5 < 0.99"]
