"""Output kinds on real heads: what the fidelity guard writes by default, before and after judging by task.

Three targets, each run through trtopt's CLI as a user would (``trtopt calibrate`` then ``trtopt
quantize``, fidelity guard on), once with the code of a reference tree (``--before``, e.g. the
commit before output kinds) and once with this tree:

(a) a YOLOv8-style detector: the SiLU backbone of ``examples/byom`` (its ``_block``) with a dense
    anchor-free head ``[N, 4+C, A]`` (pixel xywh of 64 cells, then 10 Sigmoid class scores, no
    objectness), trained here on ``examples/byom/make_data.py``'s digits for a few CPU seconds;
    reported: layers kept in float, and FP32 detections kept (held-out images) by the written model;
(b) PP-OCRv4 det and rec (``bench/ppocr_common.py``): the kind recognized for each output and the
    task agreement of the default INT8 model (map IoU, CTC sequences identical) on held-out data;
(c) a small classifier whose calibration data holds a padding-only sample (FP32 NaN) or a 1e6 pixel:
    refused / layers kept before, and the verdict's case after.

Run:  python bench/judge_kinds.py [--before /path/to/reference/tree] [--skip-ppocr]
Writes bench/results/judge/results.json and results.md (machine recorded). About 3-6 min on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BYOM = ROOT / "examples" / "byom"
OUT = ROOT / "bench" / "results" / "judge"
STRIDE, GRID, CLASSES, EPOCHS = 4, 8, 10, 4


def _cli(tree: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([sys.executable, "-m", "trtopt", *argv], capture_output=True, text=True, env=env,
                          cwd=tempfile.gettempdir(), timeout=1800)


def _quantize(tree: Path, model: Path, calib: Path, out: Path, *extra: str) -> dict:
    """``trtopt calibrate`` (default method) + ``trtopt quantize`` (guard on); what it wrote or why not."""
    cdir = out.parent / (out.stem + "_calib")
    c = _cli(tree, "calibrate", str(model), "--data", str(calib), "--out", str(cdir))
    if c.returncode:
        return {"written": False, "reason": c.stderr.strip().splitlines()[-1]}
    table = next(cdir.glob("*.calib.json"))
    t0 = time.perf_counter()
    q = _cli(tree, "quantize", str(model), "--calib", str(table), "--out", str(out), *extra)
    res = {"written": q.returncode == 0, "quantize_s": round(time.perf_counter() - t0, 1),
           "guard_lines": [ln for ln in q.stderr.splitlines() if ln.startswith("fidelity guard")]}
    if q.returncode:
        res["reason"] = q.stderr.strip().splitlines()[-1]
        return res
    import onnx

    from trtopt.quant.summary import read_summary

    summ = read_summary(onnx.load(out))
    kept = summ.get("kept_float", {})
    res.update(int8_layers=summ["int8_nodes"], kept_by_guard=sorted(n for n, why in kept.items()
                                                                    if why.startswith("fidelity guard")))
    return res


# -- (a) YOLOv8-style detector ------------------------------------------------------------------

def _train_yolo(work: Path) -> tuple[Path, dict[str, np.ndarray]]:
    import torch
    from torch import nn

    sys.path.insert(0, str(BYOM))
    from byom_models.detector import _block
    from make_data import detector_split

    class Yolo(nn.Module):
        """Backbone 32 -> 8 px (stride 4), then 1x1 box and class branches: [N, 4 + C, 64]."""

        def __init__(self) -> None:
            super().__init__()
            self.backbone = nn.Sequential(_block(1, 16, 1), _block(16, 32, 2), _block(32, 32, 1),
                                          _block(32, 64, 2), _block(64, 64, 1))
            self.box, self.cls = nn.Conv2d(64, 4, 1), nn.Conv2d(64, CLASSES, 1)
            gy, gx = torch.meshgrid(torch.arange(GRID), torch.arange(GRID), indexing="ij")
            self.register_buffer("grid", torch.stack([gx, gy]).reshape(1, 2, -1).float() + 0.5)

        def raw(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Boxes in pixels [N, 4, 64] and class logits [N, C, 64]."""
            f = self.backbone(image)
            b = self.box(f).flatten(2)
            xy = (self.grid + b[:, :2]) * STRIDE            # centre in pixels
            wh = torch.exp(b[:, 2:].clamp(-4, 4)) * 8.0      # size in pixels
            return torch.cat([xy, wh], 1), self.cls(f).flatten(2)

        def forward(self, image: torch.Tensor) -> torch.Tensor:
            boxes, logits = self.raw(image)
            return torch.cat([boxes, torch.sigmoid(logits)], 1)

    rng = np.random.default_rng(0)
    x, y = detector_split(1500, rng)
    xc, _ = detector_split(128, rng)
    xe, _ = detector_split(256, rng)
    torch.manual_seed(0)
    model = Yolo()
    opt = torch.optim.AdamW(model.parameters(), 3e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    cell = ((yt[:, 2] * 32 // STRIDE).clamp(0, GRID - 1) * GRID + (yt[:, 1] * 32 // STRIDE).clamp(0, GRID - 1)).long()
    pos_weight = torch.full((CLASSES, 1), float(GRID * GRID))  # one positive cell of 64 per image
    for _ in range(EPOCHS):
        for i in torch.randperm(len(xt)).split(64):
            boxes, logits = model.raw(xt[i])
            target = torch.zeros_like(logits)
            target[torch.arange(len(i)), yt[i, 0].long(), cell[i]] = 1.0
            score = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
            pos = boxes[torch.arange(len(i)), :, cell[i]]
            loss = score + 0.2 * torch.nn.functional.smooth_l1_loss(pos, yt[i, 1:] * 32)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    path = work / "yolo.onnx"
    torch.onnx.export(model, (xt[:1],), str(path), input_names=["image"], output_names=["output0"],
                      dynamic_axes={"image": {0: "N"}, "output0": {0: "N"}}, opset_version=17, dynamo=False)
    np.savez(work / "yolo_calib.npz", image=xc)
    return path, {"image": xe}


def _run(model: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


def detector(before: Path, work: Path) -> dict:
    from trtopt.judge.detection import detection_agreement

    path, ev = _train_yolo(work)
    ref = _run(path, ev)
    res: dict = {"model": "YOLOv8-style [N, 14, 64] (SiLU, xywh px + 10 Sigmoid scores)", "eval_images": 256,
                 "fp32_confident_detections": detection_agreement(ref, ref)["fp32_detections"]}
    for tag, tree in (("before", before), ("after", ROOT)):
        q = _quantize(tree, path, work / "yolo_calib.npz", work / f"yolo_{tag}.onnx")
        if q["written"]:
            q["task_on_eval"] = detection_agreement(ref, _run(work / f"yolo_{tag}.onnx", ev))
        res[tag] = q
    q = _quantize(ROOT, path, work / "yolo_calib.npz", work / "yolo_all.onnx", "--no-fidelity-guard")
    res["all_int8_task_on_eval"] = detection_agreement(ref, _run(work / "yolo_all.onnx", ev))
    return res


# -- (b) PP-OCRv4 det and rec -------------------------------------------------------------------

def ppocr(work: Path, guard: bool) -> dict:
    import onnx

    sys.path.insert(0, str(ROOT / "bench"))
    import ppocr_common as P
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    from trtopt.judge.recognize import recognize
    from trtopt.judge.verdict import Judge

    data = P.build_dataset(det_calib=8, rec_calib=32, eval_pages=0, eval_lines=0, scan_lines=False)
    ev = np.random.default_rng(4321)
    pre = DetPreProcess(*P.DET_LIMIT, [0.5] * 3, [0.5] * 3)
    lines = [P.render_line(P._phrase(ev, int(ev.integers(1, 4))), size=int(ev.integers(24, 40))) for _ in range(48)]
    held = {"det": {"x": np.concatenate([pre(P.render_page(ev, P.DET_CALIB_HW)) for _ in range(4)])},
            "rec": {"x": np.concatenate([P._rec_input([ln], P.REC_W / P.REC_H) for ln in lines]).astype(np.float32)}}
    calib = {"det": data.det_calib, "rec": data.rec_calib}
    res = {}
    for name, path in P.model_paths().items():
        if name not in ("det", "rec"):
            continue
        np.savez(work / f"{name}_calib.npz", **calib[name])
        np.savez(work / f"{name}_eval.npz", **held[name])
        ref = _run(path, held[name])
        m = onnx.load(path)
        out_name = m.graph.output[0].name
        kinds = recognize(m, {out_name: ref.shape})
        row = {"output": out_name, "shape": list(ref.shape), "kind": kinds[out_name].describe()}
        q = _quantize(ROOT, Path(path), work / f"{name}_calib.npz", work / f"{name}_int8.onnx", "--no-fidelity-guard")
        v = Judge(kinds, in_sample=False)([out_name], [ref], [_run(work / f"{name}_int8.onnx", held[name])])
        row["all_int8_held_out"] = v.to_dict()["outputs"][0] | {"case": v.case}
        row["all_int8_held_out"].pop("kind_reason")
        if guard:
            row["guard_with_eval"] = _quantize(ROOT, Path(path), work / f"{name}_calib.npz", work / f"{name}_g.onnx",
                                               "--eval", str(work / f"{name}_eval.npz"))
        res[name] = row | {"int8_layers": q.get("int8_layers")}
    return res


# -- (c) FP32 NaN on padding, a 1e6 outlier pixel ----------------------------------------------

def robust(before: Path, work: Path) -> dict:
    import onnx

    sys.path.insert(0, str(ROOT / "tests"))
    from _helpers.judge_graphs import l2_normalized, wide_classifier

    onnx.save(l2_normalized(), work / "l2.onnx")
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    x[5] = 0.0  # padding only: FP32 divides 0 by its norm 0
    np.savez(work / "nan_calib.npz", x=x)
    path, xw = wide_classifier(work / "wide.onnx")
    xw[7, 3] = 1e6
    np.savez(work / "outlier_calib.npz", x=xw)
    res = {}
    for case, model, calib in (("fp32_nan_on_padding", work / "l2.onnx", work / "nan_calib.npz"),
                               ("outlier_pixel_1e6", Path(path), work / "outlier_calib.npz")):
        res[case] = {tag: _quantize(tree, model, calib, work / f"{case}_{tag}.onnx")
                     for tag, tree in (("before", before), ("after", ROOT))}
    return res


def _machine() -> dict:
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": platform.processor(),
            "cores": os.cpu_count(), "gpu": None}


def _md(r: dict) -> str:
    lines = ["# Output kinds: what the default path writes", "", f"Machine: {r['machine']}", ""]
    a = r.get("detector")
    if a:
        lines += ["## (a) YOLOv8-style detector", "", "| tree | written | layers kept by the guard | FP32 detections "
                  "kept (held out) | precision |", "|---|---|---|---|---|"]
        for tag in ("before", "after"):
            q = a[tag]
            t = q.get("task_on_eval", {})
            lines.append(f"| {tag} | {q['written']} | {len(q.get('kept_by_guard', [])) if q['written'] else '-'} | "
                         f"{t.get('kept', float('nan')):.1f} % | {t.get('precision', float('nan')):.1f} % |")
        lines += ["", f"All-INT8 (no guard): {a['all_int8_task_on_eval']}", ""]
    for name, row in (r.get("ppocr") or {}).items():
        lines += [f"## (b) PP-OCRv4 {name}", "", f"- output {row['output']} {row['shape']}: {row['kind']}",
                  f"- all-INT8, held out: {row['all_int8_held_out']['metrics']} ({row['all_int8_held_out']['case']})"]
        if "guard_with_eval" in row:
            lines.append(f"- guard with --eval: {row['guard_with_eval'].get('guard_lines')}")
        lines.append("")
    for case, tags in (r.get("robust") or {}).items():
        lines += [f"## (c) {case}", ""]
        for tag, q in tags.items():
            lines.append(f"- {tag}: " + ("written, kept by guard: " + str(q.get("kept_by_guard")) if q["written"]
                                         else "refused: " + q.get("reason", "")))
            lines += [f"  - {ln}" for ln in q.get("guard_lines", [])]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="reference tree (the code before output kinds)")
    ap.add_argument("--skip-ppocr", action="store_true")
    ap.add_argument("--ppocr-guard", action="store_true", help="also run the guard with --eval on PP-OCRv4")
    args = ap.parse_args(argv)
    res: dict = {"machine": _machine()}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        res["robust"] = robust(args.before, work)
        res["detector"] = detector(args.before, work)
        if not args.skip_ppocr:
            res["ppocr"] = ppocr(work, args.ppocr_guard)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "results.json").write_text(json.dumps(res, indent=1, default=str))
    (OUT / "results.md").write_text(_md(res))
    print(_md(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
