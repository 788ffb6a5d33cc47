"""Real-model regression: PP-OCRv4 det + rec through trtopt's default path.

The models are RapidOCR's (``rapidocr-onnxruntime==1.4.4``, Paddle2ONNX opset-12 exports, as
shipped); each variant is built with the trtopt CLI exactly as a user would and judged with
RapidOCR's own pre/post-processing (``bench/ppocr_common.py``) against the FP32 model's results:

* default INT8 and INT8+FP16 detectors find >= 99 % of FP32's boxes (IoU >= 0.5);
* the default INT8 recognizer reads >= 90 % of lines exactly as FP32 does;
* FP16 detector / recognizer match FP32's boxes / strings >= 99 %.

A variant trtopt refuses to build fails its test with trtopt's one-line reason. Skipped (module
level) when the ``ocr`` extra is missing. Data and variants are built once per session; the
whole module takes about a minute on 2 CPU cores.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _helpers.paths import load_bench_module

P = load_bench_module("ppocr_common")

if (_why := P.available()) is not None:
    pytest.skip(f"PP-OCR regression tests need the ocr extra: {_why}", allow_module_level=True)

pytestmark = pytest.mark.slow


def _trtopt(*args: str) -> str | None:
    """Run the trtopt CLI; return ``None`` on success, else its last output line."""
    p = subprocess.run([sys.executable, "-m", "trtopt.cli.main", *args], capture_output=True, text=True, timeout=600)
    if p.returncode == 0:
        return None
    lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.strip()]
    return f"exit {p.returncode}: {lines[-1] if lines else ''}"


@pytest.fixture(scope="session")
def ocr(tmp_path_factory):
    """Data, FP32 reference results and a lazily built, cached variant per (model, kind)."""
    work = tmp_path_factory.mktemp("ppocr")
    data = P.build_dataset(det_calib=6, rec_calib=48, eval_pages=2, eval_lines=40)
    paths = P.model_paths()
    chars = P.characters(paths["rec"])
    ref = P.reference(data, paths["det"], paths["rec"], chars)
    assert sum(len(b) for b in ref.boxes.values()) >= 15 and len(ref.texts) >= 20, "too little FP32 output"
    cache: dict[tuple[str, str], Path | str] = {}

    def variant(model: str, kind: str) -> Path:
        key = (model, kind)
        if key not in cache:
            src, stem = paths[model], paths[model].stem
            dest = work / f"{stem}.{kind}.onnx"
            why = None
            if kind in ("int8", "int8-fp16"):
                table = work / f"calib-{model}" / f"{stem}.calib.json"
                if not table.is_file():
                    npz = work / f"{model}_calib.npz"
                    np.savez(npz, **(data.det_calib if model == "det" else data.rec_calib))
                    why = _trtopt("calibrate", str(src), "--data", str(npz), "--out", str(table.parent))
                    why = why and f"trtopt calibrate {model}: {why}"
                if why is None:
                    extra = ["--fp16-rest"] if kind == "int8-fp16" else []
                    why = _trtopt("quantize", str(src), "--calib", str(table), *extra, "--out", str(dest))
                    why = why and f"trtopt quantize --calib{''.join(' ' + e for e in extra)} {model}: {why}"
            else:
                why = _trtopt("quantize", str(src), "--fp16", "--out", str(dest))
                why = why and f"trtopt quantize --fp16 {model}: {why}"
            cache[key] = dest if why is None else why
        got = cache[key]
        if isinstance(got, str):
            pytest.fail(got)
        return got

    return data, ref, chars, variant


def _det(ocr, kind):
    data, ref, _, variant = ocr
    return P.evaluate_det(data, ref, variant("det", kind))


def _rec(ocr, kind):
    data, ref, chars, variant = ocr
    return P.evaluate_rec(data, ref, variant("rec", kind), chars)


@pytest.mark.parametrize("kind", ["int8", "int8-fp16"])
def test_int8_detector_finds_99pct_of_fp32_boxes(ocr, kind):
    res = _det(ocr, kind)
    assert P.isclose_pct(res["box_recall"], 99.0), \
        f"{kind} det found {res['box_recall']}% of FP32's {res['fp32_boxes']} boxes ({res['boxes']} boxes)"


def test_default_int8_recognizer_reads_90pct_of_lines_as_fp32(ocr):
    res = _rec(ocr, "int8")
    assert P.isclose_pct(res["lines_exact_vs_fp32"], 90.0), \
        f"int8 rec read {res['lines_exact_vs_fp32']}% of {res['lines']} lines as FP32 ({res['empty_lines']} empty)"


def test_fp16_detector_matches_fp32_boxes(ocr):
    res = _det(ocr, "fp16")
    assert P.isclose_pct(res["box_recall"], 99.0), \
        f"fp16 det found {res['box_recall']}% of FP32's {res['fp32_boxes']} boxes ({res['boxes']} boxes)"


def test_fp16_recognizer_matches_fp32_strings(ocr):
    res = _rec(ocr, "fp16")
    assert P.isclose_pct(res["lines_exact_vs_fp32"], 99.0), \
        f"fp16 rec read {res['lines_exact_vs_fp32']}% of {res['lines']} lines as FP32"


def test_harness_metrics_are_right_on_known_boxes():
    """The box matcher itself: IoU computed independently for axis-aligned squares."""
    sq = lambda x, y, s: np.array([[x, y], [x + s, y], [x + s, y + s], [x, y + s]], np.float32)  # noqa: E731
    ref = np.stack([sq(0, 0, 10), sq(100, 100, 10), sq(200, 0, 10)])
    # IoU(sq(0,0,10), sq(2,0,10)) = 80 / 120 = 0.667 -> match; shift 6 -> 40/160 = 0.25 -> no match
    out = np.stack([sq(2, 0, 10), sq(106, 100, 10)])
    assert P.match_boxes(ref, out) == 1
    assert P.match_boxes(ref, ref) == 3 and P.match_boxes(ref, ref[:0]) == 0
    assert P.match_boxes(ref[:1], np.stack([sq(0, 0, 10), sq(0, 0, 10)])) == 1  # one-to-one
