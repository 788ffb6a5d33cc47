"""Accuracy: FP32 vs trtopt INT8 (auto / entropy / minmax / percentile / mse) vs ONNX Runtime's own INT8.

Digits CNN (trained in seconds), top-1 on the held-out split, over several training seeds.
Every INT8 model is a Q/DQ ONNX graph run in ONNX Runtime on CPU; trtopt's models use the
calibration split only; ONNX Runtime's use the same samples through ``quantize_static``.

With ``--minilm`` (needs the ``minilm`` extra) also all-MiniLM-L6-v2 sentence embeddings:
mean cosine of INT8 (trtopt auto/entropy/minmax/percentile, each plain and with SmoothQuant;
ONNX Runtime Entropy/MinMax) to FP32 on held-out standard-library docstring sentences.

Run:  python bench/calib_accuracy.py [--seeds 0,1,2] [--minilm]
Writes bench/results/calib/accuracy.json and accuracy.md (+ minilm.json / minilm.md).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from trtopt.calib import CalibrationConfig, NumpySource, calibrate
from trtopt.export import export_onnx
from trtopt.fileio import atomic_write_json, atomic_write_text
from trtopt.models.digits import load_digits_split, train_digits_cnn
from trtopt.onnx.io import save_onnx
from trtopt.quant import QuantizeConfig, apply_accuracy_budget, quantize_qdq

OUT = Path(__file__).resolve().parent / "results" / "calib"


_REF: dict[str, np.ndarray] = {}
ERR: dict[str, float] = {}


def top1(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 %; also records the logits' relative squared error vs FP32 in ``ERR[path.stem]``."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    z = sess.run(None, {"input": x})[0]
    if path.stem.startswith("fp32"):
        _REF["fp32"] = z
    ref = _REF["fp32"]
    ERR[path.stem] = round(float(((z - ref) ** 2).sum() / (ref**2).sum()), 6)
    return round(100.0 * float((z.argmax(1) == y).mean()), 3)


def ort_int8(fp32: Path, x_calib: np.ndarray, method: str, dest: Path) -> Path:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    # ORT's histogram calibrators np.asarray() the list of per-batch outputs, which fails on a
    # short last batch: use the largest batch size <= 32 that divides the sample count
    bs = max(b for b in range(1, 33) if len(x_calib) % b == 0)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(range(0, len(x_calib), bs))

        def get_next(self):
            s = next(self.it, None)
            return None if s is None else {"input": x_calib[s : s + bs]}

    quantize_static(str(fp32), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    calibrate_method=getattr(CalibrationMethod, method), extra_options={"ActivationSymmetric": True})
    return dest


def run_seed(seed: int, tmp: Path) -> dict:
    split = load_digits_split(seed=0)
    model = train_digits_cnn(split, seed=seed)
    fp32 = export_onnx(model, torch.from_numpy(split.x_test[:1]), tmp / f"fp32_{seed}.onnx")
    x, y = split.x_test, split.y_test
    row = {"seed": seed, "fp32": top1(fp32, x, y)}
    for method in ("auto", "entropy", "minmax", "percentile", "mse"):
        table = calibrate(fp32, NumpySource({"input": split.x_calib}, batch_size=32, seed=0),
                          CalibrationConfig(method=method))
        q = save_onnx(quantize_qdq(fp32, table, QuantizeConfig()).model, tmp / f"trtopt-{method}_{seed}.onnx")
        row[f"trtopt_{method}"] = top1(q, x, y)
        if method == "entropy":
            q16 = save_onnx(quantize_qdq(fp32, table, QuantizeConfig(fp16_rest=True)).model,
                            tmp / f"trtopt-entropy-fp16rest_{seed}.onnx")
            row["trtopt_entropy_fp16_rest"] = top1(q16, x, y)
    for method in ("Entropy", "MinMax", "Percentile"):
        dest = tmp / f"ort-{method.lower()}_{seed}.onnx"
        row[f"ort_{method.lower()}"] = top1(ort_int8(fp32, split.x_calib, method, dest), x, y)
    row["rel_logit_err"] = {k.rsplit("_", 1)[0]: v for k, v in ERR.items() if not k.startswith("fp32")}
    ERR.clear()
    return row


def minilm_bench(n_calib: int = 256, n_eval: int = 300, seq: int = 64) -> dict:
    """Sentence-embedding cosine to FP32 of INT8 MiniLM variants (ONNX Runtime CPU)."""
    import os

    import onnxruntime as ort

    from trtopt.models.minilm import load_minilm, stdlib_sentences

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    mini = load_minilm()
    sents = stdlib_sentences(n_calib + n_eval, seed=0)

    def tok(texts):
        t = mini.tokenizer(texts, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
        return {"input_ids": t["input_ids"].astype(np.int64), "attention_mask": t["attention_mask"].astype(np.int64)}

    calib, ev = tok(sents[:n_calib]), tok(sents[n_calib:])

    class Embed(torch.nn.Module):
        def __init__(self, bert) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp_min(1e-9), dim=-1)

    def run(path):
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return np.concatenate([s.run(None, {k: v[i : i + 64] for k, v in ev.items()})[0]
                               for i in range(0, n_eval, 64)])

    out: dict = {"model": "all-MiniLM-L6-v2", "calib_sentences": n_calib, "eval_sentences": n_eval, "seq_len": seq}
    with tempfile.TemporaryDirectory() as td:
        fp32 = Path(td) / "minilm.onnx"
        args = (torch.from_numpy(calib["input_ids"][:2]), torch.from_numpy(calib["attention_mask"][:2]))
        with torch.no_grad():
            torch.onnx.export(Embed(mini.model).eval(), args, str(fp32), dynamo=False, opset_version=17,
                              input_names=["input_ids", "attention_mask"], output_names=["embedding"],
                              dynamic_axes={"input_ids": {0: "N"}, "attention_mask": {0: "N"}})
        ref = run(fp32)
        half = n_eval // 2

        def cos(path, rows=slice(None)):
            c = (run(path) * ref).sum(1)[rows]
            return round(float(c.mean()), 5), round(float(c.min()), 5)

        for method in ("auto", "entropy", "minmax", "percentile"):
            table = calibrate(fp32, NumpySource(calib, batch_size=32, seed=0), CalibrationConfig(method=method))
            q = save_onnx(quantize_qdq(fp32, table).model, Path(td) / f"{method}.onnx")
            out[f"trtopt_{method}_cos_mean"], out[f"trtopt_{method}_cos_min"] = cos(q)
            q = save_onnx(quantize_qdq(fp32, table, QuantizeConfig(smoothquant_alpha=0.8)).model, Path(td) / "sq.onnx")
            out[f"trtopt_{method}_smoothquant0.8_cos_mean"], out[f"trtopt_{method}_smoothquant0.8_cos_min"] = cos(q)
            if method == "entropy":
                # alpha chosen on the first half of the eval sentences, reported on the held-out second half
                sweep = {}
                for alpha in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
                    q = save_onnx(quantize_qdq(fp32, table, QuantizeConfig(smoothquant_alpha=alpha)).model,
                                  Path(td) / "sq.onnx")
                    sweep[alpha] = (cos(q, slice(0, half))[0], cos(q, slice(half, None))[0])
                best = max(sweep, key=lambda a: sweep[a][0])
                out["smoothquant_alpha_sweep_entropy_{alpha: [cos first half, cos second half]}"] = {
                    str(a): list(v) for a, v in sweep.items()}
                out["smoothquant_alpha_chosen_on_first_half"] = best
                out["trtopt_entropy_smoothquant_chosen_cos_mean_heldout"] = sweep[best][1]
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter(range(0, n_calib, 32))

            def get_next(self):
                s = next(self.it, None)
                return None if s is None else {k: v[s : s + 32] for k, v in calib.items()}

        # accuracy budget: cosine >= 0.99 (drop <= 1 point) chosen on the first half of the eval
        # sentences, reported on the second half (held out from the choice)
        table = calibrate(fp32, NumpySource(calib, batch_size=32, seed=0), CalibrationConfig(method="entropy"))
        res = apply_accuracy_budget(fp32, table, {k: v[:half] for k, v in ev.items()}, None, max_drop=1.0,
                                    batch_size=64)
        q = save_onnx(res.model, Path(td) / "budget.onnx")
        out["trtopt_entropy_budget_cos_mean_heldout"] = round(float((run(q)[half:] * ref[half:]).sum(1).mean()), 5)
        out["budget_kept_nodes"] = res.kept_nodes
        out["budget_kept_modules"] = res.kept_modules
        for method in ("Entropy", "MinMax"):
            dest = Path(td) / f"ort-{method}.onnx"
            try:
                quantize_static(str(fp32), str(dest), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                                calibrate_method=getattr(CalibrationMethod, method),
                                extra_options={"ActivationSymmetric": True})
                out[f"ort_{method.lower()}_cos_mean"] = round(float((run(dest) * ref).sum(1).mean()), 5)
            except Exception as exc:  # a baseline failing is a result to report
                out[f"ort_{method.lower()}_cos_mean"] = f"failed: {type(exc).__name__}: {str(exc)[:120]}"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--minilm", action="store_true", help="also measure all-MiniLM-L6-v2 (minilm extra)")
    ap.add_argument("--minilm-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.minilm or args.minilm_only:
        res = minilm_bench()
        print(res)
        atomic_write_json(OUT / "minilm.json", res)
        atomic_write_text(OUT / "minilm.md", "# INT8 all-MiniLM-L6-v2: mean embedding cosine to FP32\n\n"
                          + "\n".join(f"- {k}: {v}" for k, v in res.items()) + "\n")
        if args.minilm_only:
            return
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory() as td:
        rows = [run_seed(s, Path(td)) for s in seeds]
    for r in rows:
        print(r)
    cols = [k for k in rows[0] if k not in ("seed", "rel_logit_err")]
    mean = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in cols}
    err_keys = list(rows[0]["rel_logit_err"])
    mean_err = {k: round(float(np.mean([r["rel_logit_err"][k] for r in rows])), 6) for k in err_keys}
    split = load_digits_split(seed=0)
    meta = {"workload": f"digits CNN, {len(split.x_calib)} calibration / {len(split.x_test)} held-out test images",
            "seeds": seeds, "machine": f"{platform.machine()}, ONNX Runtime CPU",
            "ort_call": "quantize_static(QDQ, per_channel, QInt8, ActivationSymmetric, CalibrationMethod.X)",
            "trtopt": "calibrate(method) + quantize_qdq (per-channel weights, per-tensor activations)"}
    atomic_write_json(OUT / "accuracy.json", {"meta": meta, "rows": rows, "mean": mean,
                                              "mean_rel_logit_err": mean_err})
    lines = ["# INT8 accuracy on the digits CNN (top-1 %, held-out split)", "", meta["workload"] + ".", "",
             "| seed | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    lines += ["| " + " | ".join(str(r[k]) for k in ["seed", *cols]) + " |" for r in rows]
    lines.append("| mean | " + " | ".join(str(mean[k]) for k in cols) + " |")
    lines += ["", "Relative squared logit error vs FP32 (mean over seeds; lower is closer to FP32):", "",
              "| " + " | ".join(err_keys) + " |", "|---" * len(err_keys) + "|",
              "| " + " | ".join(str(mean_err[k]) for k in err_keys) + " |"]
    atomic_write_text(OUT / "accuracy.md", "\n".join(lines) + "\n")
    print(mean)
    print(mean_err)


if __name__ == "__main__":
    main()
