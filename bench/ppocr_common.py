"""PP-OCR real-model harness: task-level numbers (boxes found, strings read) for trtopt variants.

Uses RapidOCR's own pre/post-processing (``rapidocr_onnxruntime`` 1.4.4: ``DetPreProcess``,
``DBPostProcess``, ``TextDetector.filter_tag_det_res``, the crop of ``RapidOCR.get_crop_img_list``,
``TextRecognizer.resize_norm_img`` and its batching, ``CTCLabelDecode``) around ONNX Runtime
sessions of any FP32 / INT8 / FP16 variant, so a variant is judged the way the application
would see it. Not part of the trtopt package (needs the ``ocr`` extra):
``pip install 'trtopt[ocr]'`` = rapidocr-onnxruntime 1.4.4 + scikit-image.

Task metrics, always against the FP32 model's own results (no human labels exist for the scans):

* det: percent of FP32's boxes that the variant finds again, greedy one-to-one matching of
  quadrilaterals at IoU >= 0.5 (``box_recall``); also the variant's box count.
* rec: percent of lines whose string equals FP32's (``lines_exact_vs_fp32``), over the rendered
  lines and the scan crops FP32 reads with confidence >= 0.5 (RapidOCR's ``text_score``: it drops
  the others, so they are not part of its output); on rendered lines
  also the percent read exactly as the rendered ground truth (``lines_exact_vs_truth``; leading/
  trailing spaces ignored, since the decoder sometimes emits a leading space).

Fidelity (raw outputs vs FP32) comes from :func:`trtopt.judge.generic`: det probability
maps (cosine), rec ``[N, T, C]`` (per-position argmax agreement, cosine), plus its default
tolerance verdict.

Data: scikit-image's scanned ``page.png`` and ``text.png`` and lines/pages rendered with PIL's
built-in font (``ImageFont.load_default(size=...)``, no font files needed). Calibration images
are rendered from a different word stream (seeded) than the evaluation ones, so they never overlap.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

DET_NAME, REC_NAME, CLS_NAME = ("ch_PP-OCRv4_det_infer.onnx", "ch_PP-OCRv4_rec_infer.onnx",
                                "ch_ppocr_mobile_v2.0_cls_infer.onnx")
#: Detector input size rule (RapidOCR's DetPreProcess): the short side is scaled up to at least
#: this (RapidOCR's default is "min" 736; smaller bounds CPU time, the small scans still get read).
DET_LIMIT = (352, "min")
#: Calibration inputs must stack: detector pages are rendered at this size (a multiple of 32).
DET_CALIB_HW = (352, 352)
REC_H, REC_W = 48, 320  # RapidOCR's rec_img_shape [3, 48, 320]
IOU_MATCH = 0.5
TEXT_SCORE = 0.5  # RapidOCR's Global.text_score: strings read with lower confidence are dropped

_WORD_TEXT = (
    "the quick brown fox jumps over lazy dog invoice total amount date number street city order "
    "customer price quantity model engine tensor optimize batch latency throughput accuracy table "
    "report page line text scan reader open source python network layer output input value range "
    "scale shift weight bias channel sample image pixel width height depth color paper letter word "
    "north south east west river mountain garden window kitchen market station airport ticket "
    "january february march april may june july august september october november december monday "
    "friday weekend morning evening summer winter coffee water bread apple orange lemon cheese"
)
WORDS = _WORD_TEXT.split()


def available() -> str | None:
    """Return why the harness cannot run (missing packages), or ``None`` when it can."""
    for mod, extra in (("rapidocr_onnxruntime", "rapidocr-onnxruntime==1.4.4"), ("skimage", "scikit-image"),
                       ("PIL", "Pillow"), ("shapely", "shapely")):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed (pip install 'trtopt[ocr]' or {extra})"
    return None


def model_paths() -> dict[str, Path]:
    """Paths of the three PP-OCR models shipped inside ``rapidocr_onnxruntime``."""
    import rapidocr_onnxruntime

    root = Path(rapidocr_onnxruntime.__file__).parent / "models"
    return {"det": root / DET_NAME, "rec": root / REC_NAME, "cls": root / CLS_NAME}


# -- images -------------------------------------------------------------------------------

def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _phrase(rng: np.random.Generator, n_words: int) -> str:
    words = [str(rng.choice(WORDS)) for _ in range(n_words)]
    if rng.random() < 0.5:
        words.insert(int(rng.integers(0, len(words) + 1)), str(int(rng.integers(10, 99999))))
    return " ".join(words)


def render_line(text: str, size: int = 32, pad: int = 6) -> np.ndarray:
    """A single text line, black on white, as an RGB ``uint8`` array (RapidOCR takes BGR/RGB alike)."""
    from PIL import Image, ImageDraw

    font = _font(size)
    x0, y0, x1, y1 = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font)
    img = Image.new("RGB", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), "white")
    ImageDraw.Draw(img).text((pad - x0, pad - y0), text, fill="black", font=font)
    return np.asarray(img)


def render_page(rng: np.random.Generator, hw: tuple[int, int] = (320, 320), lines: int = 6) -> np.ndarray:
    """A page of ``lines`` text lines at random offsets and sizes (RGB ``uint8``)."""
    from PIL import Image, ImageDraw

    h, w = hw
    img = Image.new("RGB", (w, h), "white")
    draw = ImageDraw.Draw(img)
    y = int(rng.integers(4, 16))
    for _ in range(lines):
        size = int(rng.integers(14, 26))
        draw.text((int(rng.integers(4, 40)), y), _phrase(rng, int(rng.integers(2, 5))), fill="black",
                  font=_font(size))
        y += size + int(rng.integers(8, 20))
        if y > h - 20:
            break
    return np.asarray(img)


def scans() -> dict[str, np.ndarray]:
    """scikit-image's scanned ``page`` and ``text`` images as RGB ``uint8``."""
    import skimage.data

    return {n: np.repeat(getattr(skimage.data, n)()[..., None], 3, axis=2) for n in ("page", "text")}


@dataclass
class Dataset:
    """Evaluation and calibration data.

    Attributes:
        det_images: Name to RGB page for detector evaluation.
        rec_lines: Name to RGB line for recognizer evaluation (rendered: with ground truth).
        rec_truth: Name to ground-truth string (rendered lines only).
        det_calib: ``{"x": [N, 3, H, W]}`` preprocessed like RapidOCR (calibration only).
        rec_calib: ``{"x": [N, 3, 48, 320]}`` preprocessed like RapidOCR (calibration only).
    """

    det_images: dict[str, np.ndarray]
    rec_lines: dict[str, np.ndarray]
    rec_truth: dict[str, str]
    det_calib: dict[str, np.ndarray] = field(repr=False)
    rec_calib: dict[str, np.ndarray] = field(repr=False)


def build_dataset(det_calib: int = 8, rec_calib: int = 32, eval_pages: int = 2, eval_lines: int = 24,
                  scan_lines: bool = True, fp32_det: str | os.PathLike[str] | None = None) -> Dataset:
    """Build evaluation/calibration data (deterministic).

    Args:
        det_calib: Rendered pages for detector calibration.
        rec_calib: Rendered lines for recognizer calibration.
        eval_pages: Rendered pages evaluated besides the two scans.
        eval_lines: Rendered lines (with ground truth) for recognizer evaluation.
        scan_lines: Also evaluate the recognizer on the lines the FP32 detector crops from the scans.
        fp32_det: FP32 detector (default: the shipped one), for those crops.
    """
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    cal, ev = np.random.default_rng(1234), np.random.default_rng(98765)  # disjoint word streams
    pre = DetPreProcess(*DET_LIMIT, [0.5] * 3, [0.5] * 3)
    det_cal = np.concatenate([pre(render_page(cal, DET_CALIB_HW)) for _ in range(det_calib)])
    rec_cal = np.concatenate([_rec_input([render_line(_phrase(cal, int(cal.integers(1, 4))),
                                                      size=int(cal.integers(24, 40)))], REC_W / REC_H)
                              for _ in range(rec_calib)])
    pages = dict(scans())
    for i in range(eval_pages):
        pages[f"rendered{i}"] = render_page(ev, (384, 480), lines=8)
    lines, truth = {}, {}
    for i in range(eval_lines):
        text = _phrase(ev, int(ev.integers(1, 4)))
        lines[f"line{i}"], truth[f"line{i}"] = render_line(text, size=int(ev.integers(24, 40))), text
    if scan_lines:
        det = Detector(fp32_det or model_paths()["det"])
        for name in ("page", "text"):
            for j, crop in enumerate(crop_lines(pages[name], det(pages[name])[0])):
                lines[f"{name}:{j}"] = crop
    return Dataset(pages, lines, truth, {"x": det_cal.astype(np.float32)}, {"x": rec_cal.astype(np.float32)})


# -- models -------------------------------------------------------------------------------

def _session(path: str | os.PathLike[str], threads: int = 0):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


class Detector:
    """DBNet detector with RapidOCR's pre/post-processing (``TextDetector`` with its defaults)."""

    def __init__(self, path: str | os.PathLike[str], threads: int = 0) -> None:
        from rapidocr_onnxruntime.ch_ppocr_det.text_detect import TextDetector
        from rapidocr_onnxruntime.ch_ppocr_det.utils import DBPostProcess, DetPreProcess

        self.sess = _session(path, threads)
        self.name = self.sess.get_inputs()[0].name
        self.pre = DetPreProcess(*DET_LIMIT, [0.5] * 3, [0.5] * 3)
        self.post = DBPostProcess(thresh=0.3, box_thresh=0.5, max_candidates=1000, unclip_ratio=1.6,
                                  use_dilation=True, score_mode="fast")
        self._filter = TextDetector.filter_tag_det_res.__get__(_DetHelpers())

    def __call__(self, img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (boxes ``[K, 4, 2]`` in image pixels, raw probability map ``[1, 1, H, W]``)."""
        x = self.pre(img)
        pred = self.sess.run(None, {self.name: x})[0]
        boxes, _ = self.post(pred, img.shape[:2])
        boxes = self._filter(boxes, img.shape[:2])
        return (np.asarray(boxes, np.float32).reshape(-1, 4, 2), pred)


class _DetHelpers:
    """The two helpers ``TextDetector.filter_tag_det_res`` calls on ``self``."""

    def __init__(self) -> None:
        from rapidocr_onnxruntime.ch_ppocr_det.text_detect import TextDetector

        self.order_points_clockwise = TextDetector.order_points_clockwise.__get__(self)
        self.clip_det_res = TextDetector.clip_det_res.__get__(self)


def crop_lines(img: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
    """Crops of ``boxes`` in reading order (RapidOCR's ``sorted_boxes`` + ``get_crop_img_list``)."""
    from rapidocr_onnxruntime.main import RapidOCR

    if not len(boxes):
        return []
    ordered = RapidOCR.sorted_boxes(np.asarray(boxes))
    return RapidOCR.get_crop_img_list(None, img, [copy.deepcopy(b) for b in ordered])


def _rec_input(imgs: Sequence[np.ndarray], max_wh_ratio: float) -> np.ndarray:
    from rapidocr_onnxruntime.ch_ppocr_rec.text_recognize import TextRecognizer

    fake = type("R", (), {"rec_image_shape": [3, REC_H, REC_W]})()
    return np.stack([TextRecognizer.resize_norm_img(fake, im, max_wh_ratio) for im in imgs]).astype(np.float32)


def characters(path: str | os.PathLike[str]) -> list[str]:
    """The recognizer's character list (stored in the FP32 model's metadata by Paddle2ONNX)."""
    meta = _session(path).get_modelmeta().custom_metadata_map
    if "character" not in meta:
        raise ValueError(f"{path} has no 'character' metadata: pass the FP32 recognizer")
    return meta["character"].splitlines()


class Recognizer:
    """CRNN/SVTR recognizer with RapidOCR's batching (sorted by aspect ratio, 6 per batch).

    The character list comes from the FP32 model (a variant may not keep the metadata).
    """

    def __init__(self, path: str | os.PathLike[str], chars: list[str], threads: int = 0, batch: int = 6) -> None:
        from rapidocr_onnxruntime.ch_ppocr_rec.utils import CTCLabelDecode

        self.sess = _session(path, threads)
        self.name = self.sess.get_inputs()[0].name
        self.decode = CTCLabelDecode(character=list(chars))  # it inserts 'blank' into the list it gets
        self.batch = batch

    def __call__(self, imgs: Sequence[np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
        """Return the strings (input order) and the raw ``[n, T, C]`` outputs of each batch (sorted order).

        The decoder's confidence of each string is left in :attr:`scores` (input order).
        """
        ratios = [im.shape[1] / im.shape[0] for im in imgs]
        order = np.argsort(ratios, kind="stable")
        texts, raws = [""] * len(imgs), []
        self.scores = [0.0] * len(imgs)
        for b in range(0, len(imgs), self.batch):
            idx = order[b:b + self.batch]
            max_ratio = max(REC_W / REC_H, *(ratios[i] for i in idx))
            preds = self.sess.run(None, {self.name: _rec_input([imgs[i] for i in idx], max_ratio)})[0]
            raws.append(preds)
            for i, (text, score) in zip(idx, self.decode(preds)):
                texts[i], self.scores[i] = text, float(score)
        return texts, raws


# -- metrics ------------------------------------------------------------------------------

def _iou(a: np.ndarray, b: np.ndarray) -> float:
    from shapely.geometry import Polygon

    pa, pb = Polygon(a).buffer(0), Polygon(b).buffer(0)
    union = pa.union(pb).area
    return float(pa.intersection(pb).area / union) if union > 0 else 0.0


def match_boxes(ref: np.ndarray, out: np.ndarray, thr: float = IOU_MATCH) -> int:
    """Number of ``ref`` boxes matched one-to-one by ``out`` boxes at IoU >= ``thr`` (greedy, best IoU first)."""
    pairs = sorted(((_iou(r, o), i, j) for i, r in enumerate(ref) for j, o in enumerate(out)), reverse=True)
    used_r, used_o = set(), set()
    for iou, i, j in pairs:
        if iou < thr:
            break
        if i not in used_r and j not in used_o:
            used_r.add(i)
            used_o.add(j)
    return len(used_r)


def _pct(num: float, den: float) -> float | None:
    return None if den == 0 else round(100.0 * num / den, 2)


def _fid(ref: list[np.ndarray], out: list[np.ndarray], seq: bool) -> dict[str, Any]:
    """trtopt fidelity over all outputs: maps flattened and joined; sequences joined by position."""
    from trtopt.benchmark import DEFAULT_TOLERANCE, fidelity

    if seq:  # [n, T, C] batches of different T: every position of every line, as one [1, P, C] sequence
        c = ref[0].shape[-1]
        r = np.concatenate([x.reshape(-1, c) for x in ref])[None]
        o = np.concatenate([x.reshape(-1, c) for x in out])[None]
    else:
        r = np.concatenate([x.ravel() for x in ref])[None, :, None]
        o = np.concatenate([x.ravel() for x in out])[None, :, None]
    if r.shape != o.shape:
        return {"error": f"output shapes differ: {r.shape} vs {o.shape}"}
    f = fidelity(r, o)
    keep = ("cosine", "position_agreement", "sqnr_db", "max_abs_err", "nonfinite")
    res = {k: (None if f.get(k) is None else round(float(f[k]), 6)) for k in keep}
    res["tolerance_violations"] = DEFAULT_TOLERANCE.violations(f)
    return res


@dataclass
class Reference:
    """FP32 results that variants are compared with."""

    boxes: dict[str, np.ndarray]
    det_raw: list[np.ndarray]
    texts: list[str]
    rec_raw: list[np.ndarray]


def reference(data: Dataset, det: str | os.PathLike[str], rec: str | os.PathLike[str], chars: list[str],
              threads: int = 0) -> Reference:
    """Run the FP32 detector and recognizer once.

    Scan crops that FP32 reads with confidence below :data:`TEXT_SCORE` are removed from
    ``data.rec_lines`` (RapidOCR would not report them).
    """
    d, r = Detector(det, threads), Recognizer(rec, chars, threads)
    boxes, raws = {}, []
    for name, img in data.det_images.items():
        boxes[name], raw = d(img)
        raws.append(raw)
    texts, _ = r(list(data.rec_lines.values()))
    # RapidOCR drops strings read with confidence below its text_score (0.5): those lines are not
    # part of what the application sees, and exact match on them is noise (a crop of a stray mark).
    low = [n for n, sc in zip(list(data.rec_lines), r.scores) if sc < TEXT_SCORE and n not in data.rec_truth]
    for n in low:
        del data.rec_lines[n]
    texts, rec_raw = r(list(data.rec_lines.values()))
    return Reference(boxes, raws, texts, rec_raw)


def evaluate_det(data: Dataset, ref: Reference, path: str | os.PathLike[str], threads: int = 0) -> dict[str, Any]:
    """Detector task metrics (box recall vs FP32 at IoU >= 0.5) and fidelity of the probability maps."""
    d = Detector(path, threads)
    found = total = count = 0
    raws, per = [], {}
    for name, img in data.det_images.items():
        boxes, raw = d(img)
        raws.append(raw)
        m = match_boxes(ref.boxes[name], boxes)
        per[name] = {"fp32_boxes": len(ref.boxes[name]), "boxes": len(boxes), "matched": m}
        found, total, count = found + m, total + len(ref.boxes[name]), count + len(boxes)
    return {"box_recall": _pct(found, total), "boxes": count, "fp32_boxes": total, "per_image": per,
            "fidelity": _fid(ref.det_raw, raws, seq=False)}


def evaluate_rec(data: Dataset, ref: Reference, path: str | os.PathLike[str], chars: list[str],
                 threads: int = 0) -> dict[str, Any]:
    """Recognizer task metrics (exact lines vs FP32 and vs rendered truth) and fidelity of ``[N, T, C]``."""
    texts, raws = Recognizer(path, chars, threads)(list(data.rec_lines.values()))
    names = list(data.rec_lines)
    # leading/trailing blanks carry no text (the rendered crops have margins that CTC reads as spaces)
    same = sum(a.strip() == b.strip() for a, b in zip(texts, ref.texts))
    truth = [(t.strip(), data.rec_truth[n]) for n, t in zip(names, texts) if n in data.rec_truth]
    return {"lines_exact_vs_fp32": _pct(same, len(texts)), "lines": len(texts),
            "lines_exact_vs_truth": _pct(sum(a == b for a, b in truth), len(truth)),
            "empty_lines": sum(not t for t in texts), "examples": [[f, v] for f, v in zip(ref.texts, texts)][:5],
            "fidelity": _fid(ref.rec_raw, raws, seq=True)}


def fp32_summary(data: Dataset, ref: Reference) -> dict[str, Any]:
    """FP32's own numbers: boxes found and lines read exactly as the rendered ground truth."""
    names = list(data.rec_lines)
    truth = [(t.strip(), data.rec_truth[n]) for n, t in zip(names, ref.texts) if n in data.rec_truth]
    return {"boxes": sum(len(b) for b in ref.boxes.values()), "lines": len(names),
            "lines_exact_vs_truth": _pct(sum(a == b for a, b in truth), len(truth)),
            "per_image_boxes": {k: len(v) for k, v in ref.boxes.items()}}


def compare(det: str | os.PathLike[str] | None = None, rec: str | os.PathLike[str] | None = None, *,
            fp32_det: str | os.PathLike[str] | None = None, fp32_rec: str | os.PathLike[str] | None = None,
            data: Dataset | None = None, threads: int = 0) -> dict[str, Any]:
    """One call: task metrics and fidelity of variant ``det`` / ``rec`` against the FP32 models.

    Args:
        det: Detector variant (``None`` = skip the detector).
        rec: Recognizer variant (``None`` = skip the recognizer).
        fp32_det: FP32 detector (default: the one shipped in rapidocr_onnxruntime).
        fp32_rec: FP32 recognizer (default: the shipped one; also the source of the character list).
        data: Evaluation data (default: :func:`build_dataset`).
        threads: ONNX Runtime intra-op threads (0 = its default).

    Returns:
        ``{"fp32": ..., "det": ..., "rec": ...}`` as :func:`fp32_summary`, :func:`evaluate_det`
        and :func:`evaluate_rec` return them.
    """
    paths = model_paths()
    fp32_det, fp32_rec = fp32_det or paths["det"], fp32_rec or paths["rec"]
    data = data or build_dataset(fp32_det=fp32_det)
    chars = characters(fp32_rec)
    ref = reference(data, fp32_det, fp32_rec, chars, threads)
    out: dict[str, Any] = {"fp32": fp32_summary(data, ref)}
    if det is not None:
        out["det"] = evaluate_det(data, ref, det, threads)
    if rec is not None:
        out["rec"] = evaluate_rec(data, ref, rec, chars, threads)
    return out


def isclose_pct(a: float | None, b: float, tol: float = 1e-9) -> bool:
    """``a >= b`` for percentages (``None`` never passes)."""
    return a is not None and not math.isnan(a) and a + tol >= b
