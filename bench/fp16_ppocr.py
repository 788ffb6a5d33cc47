"""FP16 conversion of the PP-OCR models shipped in rapidocr-onnxruntime: task-level check.

Converts det / cls / rec with ``trtopt.quant.convert_fp16`` (static rules, no calibration data), then
runs RapidOCR's own pre/post-processing on scikit-image's scanned page and text image with the FP32
and the FP16 models: boxes found, strings read, and how many match FP32. Also reports the file
sizes, the nodes kept in FP32 and the precision ``trtopt bench`` assigns. No timing.

Usage::

    PYTHONPATH=$PWD python bench/fp16_ppocr.py --out /tmp/ppocr16 [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np


def _ocr(models: dict[str, str], images: list[np.ndarray]) -> list[list[tuple[list, str]]]:
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR(det_model_path=models["det"], cls_model_path=models["cls"], rec_model_path=models["rec"])
    out = []
    for img in images:
        res, _ = engine(img)
        out.append([(np.asarray(r[0]).round().tolist(), r[1]) for r in (res or [])])
    return out


def _box_match(a: list, b: list, tol: float = 4.0) -> bool:
    return float(np.abs(np.asarray(a) - np.asarray(b)).max()) <= tol


def main() -> None:
    import rapidocr_onnxruntime
    from skimage import data

    from trtopt.benchmark.suite import describe_onnx
    from trtopt.onnx.io import save_onnx
    from trtopt.quant import convert_fp16

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    root = Path(rapidocr_onnxruntime.__file__).parent / "models"
    names = {"det": "ch_PP-OCRv4_det_infer.onnx", "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
             "rec": "ch_PP-OCRv4_rec_infer.onnx"}
    fp32 = {k: str(root / v) for k, v in names.items()}
    fp16, info = {}, {}
    for k, path in fp32.items():
        res = convert_fp16(path)
        model, kept = res.model, sorted(res.fp32_reasons)
        dest = save_onnx(model, args.out / names[k].replace(".onnx", "_fp16.onnx"))
        fp16[k] = str(dest)
        info[k] = {"fp32_bytes": os.path.getsize(path), "fp16_bytes": os.path.getsize(dest),
                   "kept_fp32": kept, "bench_label": describe_onnx(dest)[0]}
    gray = [data.page(), data.text()]
    images = [np.ascontiguousarray(np.stack([g] * 3, -1)) for g in gray]
    ref, got = _ocr(fp32, images), _ocr(fp16, images)
    rows = []
    for name, r, g in zip(("page.png", "text.png"), ref, got):
        boxes = sum(any(_box_match(b, gb) for gb, _ in g) for b, _ in r)
        same = sum(any(_box_match(b, gb) and s == gs for gb, gs in g) for b, s in r)
        rows.append({"image": name, "fp32_boxes": len(r), "fp16_boxes": len(g), "fp32_boxes_found_by_fp16": boxes,
                     "strings_equal": same})
    result = {"models": info, "ocr": rows}
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
