"""Which layers the fidelity guard keeps in float under each sensitivity ranking, and what it costs.

For each model the guard (:func:`trtopt.quant.guard.guard_fidelity`, default tolerance) runs twice on
the same calibration table and samples: with ``QuantizeConfig(sensitivity="model")`` (each layer
quantized alone and the whole model run: one session per layer) and with ``sensitivity="local"``
(each layer's own output error under its Q/DQ inputs, all layers in one run). Recorded per
ranking: seconds, layers kept in float (count and names), the result's fidelity against FP32 on the
samples (cosine and worst-channel cosine of the first output) and the all-INT8 violations.

Models: PP-OCRv4 rec and det (``bench/ppocr_common.py``), the digits CNN (trained here) and
MobileNetV2 (torchvision layout, random weights and inputs, as ``trtopt.models`` builds it).

Run:  python bench/guard_ranking.py [--models rec,det,digits,mobilenet_v2]
Writes bench/results/guard_cost/ranking.json and ranking.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import guard_cost as G
import ppocr_common as P

OUT = Path(__file__).resolve().parent / "results" / "guard_cost"


def mobilenet(work: Path) -> tuple[Path, dict[str, np.ndarray]]:
    import torch

    from trtopt.export import ExportConfig, export_onnx
    from trtopt.models.mobilenet import mobilenet_v2

    torch.manual_seed(0)
    model = mobilenet_v2().eval()
    path = work / "mobilenet_v2.onnx"
    export_onnx(model, torch.zeros(1, 3, 224, 224), path, ExportConfig())
    x = np.random.default_rng(0).standard_normal((32, 3, 224, 224), dtype=np.float32)
    return path, {"input": x}


def run(path: Path, feeds: dict[str, np.ndarray], rankings: list[str]) -> dict[str, Any]:
    from trtopt.calib.collect import calibrate
    from trtopt.calib.config import CalibrationConfig
    from trtopt.calib.source import NumpySource
    from trtopt.errors import InputError
    from trtopt.quant.config import QuantizeConfig
    from trtopt.quant.guard import guard_fidelity

    table = calibrate(str(path), NumpySource(feeds, batch_size=8, seed=0), CalibrationConfig())
    out: dict[str, Any] = {}
    for ranking in rankings:
        t0 = time.perf_counter()
        try:
            res = guard_fidelity(str(path), table, feeds, QuantizeConfig(sensitivity=ranking), batch_size=8)
        except InputError as exc:
            out[ranking] = {"seconds": round(time.perf_counter() - t0, 2), "error": str(exc)}
            continue
        secs = time.perf_counter() - t0
        f0 = res.fidelity[0]
        out[ranking] = {"seconds": round(secs, 2), "kept_float": len(res.kept_nodes), "kept_nodes": res.kept_nodes,
                        "cosine": f0.get("cosine"), "min_channel_cosine": f0.get("min_channel_cosine"),
                        "top1_agreement": f0.get("top1_agreement"), "violations_all_int8": res.violations_all,
                        "layers": len(res.sensitivity)}
        print(f"{path.stem}: {ranking}: {secs:.1f} s, kept {len(res.kept_nodes)} of {len(res.sensitivity) or '-'}, "
              f"cosine {f0.get('cosine')}, worst-channel cosine {f0.get('min_channel_cosine')}", flush=True)
    return out


def render(res: dict[str, Any]) -> str:
    lines = ["# Fidelity guard: layers kept in float per sensitivity ranking", "",
             f"{res['created']}, {res['machine']}", "",
             "| model | ranking | s | kept in float | of layers | cosine | worst-channel cosine |",
             "|---|---|---|---|---|---|---|"]
    for name, r in res["models"].items():
        for k, v in r.items():
            if "error" in v:
                lines.append(f"| {name} | {k} | {v['seconds']} | error: {v['error'][:80]} | | | |")
                continue
            cos = "" if v["cosine"] is None else f"{v['cosine']:.4f}"
            ch = "" if v["min_channel_cosine"] is None else f"{v['min_channel_cosine']:.4f}"
            lines.append(f"| {name} | {k} | {v['seconds']} | {v['kept_float']} | {v['layers'] or '-'} | {cos} | {ch} |")
    return "\n".join([*lines, ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="rec,det,digits,mobilenet_v2")
    ap.add_argument("--rankings", default="model,local", help="rankings to run, in this order")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    res: dict[str, Any] = {"created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "machine": f"{platform.processor() or platform.machine()}, "
                                      f"{len(os.sched_getaffinity(0))} cores (shared)", "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = P.build_dataset(scan_lines=False) if {"rec", "det"} & set(names) else None
        for name in names:
            if name == "digits":
                path, feeds = G.digits(work)
            elif name == "mobilenet_v2":
                path, feeds = mobilenet(work)
            else:
                path = Path(P.model_paths()[name])
                feeds = data.rec_calib if name == "rec" else data.det_calib
            res["models"][name] = run(path, feeds, args.rankings.split(","))
            save(args.out, res)  # after every model: a long run leaves what it measured
    print(render(res))


def save(out: Path, res: dict[str, Any]) -> None:
    from trtopt.benchmark.report import jsonable
    from trtopt.fileio import atomic_write_json, atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "ranking.json", jsonable(res))
    atomic_write_text(out / "ranking.md", render(res))


if __name__ == "__main__":
    main()
