"""2:4 sparsity on the digits CNN: dense vs one-shot (magnitude / permutation / SparseGPT) vs
masked fine-tuning with and without distillation, over several seeds.

Run:  python bench/sparsity_digits.py [--seeds 0,1,2] [--epochs 10]
Writes bench/results/sparsity/digits.json and digits.md.
"""

from __future__ import annotations

import argparse
import copy
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trtopt.export import export_onnx
from trtopt.fileio import atomic_write_json, atomic_write_text
from trtopt.models.digits import accuracy, load_digits_split, train_digits_cnn
from trtopt.sparsity import FinetuneConfig, PruneConfig, check_2to4, finetune_masked, inspect_sparsity, prune_

OUT = Path(__file__).resolve().parent / "results" / "sparsity"


def logits(model, x):
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


def fidelity(model, dense_logits, x, y):
    z = logits(model, x)
    return {
        "accuracy": round(accuracy(model, x, y), 3),
        "rel_logit_mse": round(float(((z - dense_logits) ** 2).sum() / (dense_logits**2).sum()), 5),
        "top1_agreement": round(100.0 * float((z.argmax(1) == dense_logits.argmax(1)).mean()), 3),
    }


def kept(report):
    vals = [r.kept_magnitude_share for r in report.layers if r.pruned]
    return round(float(np.mean(vals)), 4)


def onnx_check(model, split, tmp):
    """Export the pruned model, confirm the 2:4 pattern survives and ONNX Runtime gives the same accuracy."""
    import onnxruntime as ort

    path = export_onnx(model, torch.from_numpy(split.x_test[:1]), Path(tmp) / "sparse.onnx")
    summary = inspect_sparsity(path, gpu="a100").summary
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    z = sess.run(None, {"input": split.x_test})[0]
    return {"compliant_layers": summary["compliant"], "eligible_layers": summary["eligible"],
            "sparse_flop_share": summary["sparse_flop_share"],
            "onnxruntime_accuracy": round(100.0 * float((z.argmax(1) == split.y_test).mean()), 3)}


def run_seed(seed: int, epochs: int, tmp: str) -> dict:
    split = load_digits_split(seed=seed)
    dense = train_digits_cnn(split, epochs=40, seed=seed)
    x, y = split.x_test, split.y_test
    dz = logits(dense, x)
    res = {"dense": {"accuracy": round(accuracy(dense, x, y), 3)}}
    pruned = {}
    for method in ("magnitude", "permutation", "sparsegpt"):
        m = copy.deepcopy(dense)
        t0 = time.perf_counter()
        rep = prune_(m, PruneConfig(method=method), calib_inputs=split.x_calib if method == "sparsegpt" else None)
        res[f"oneshot_{method}"] = {**fidelity(m, dz, x, y), "mean_kept_magnitude": kept(rep),
                                    "seconds": round(time.perf_counter() - t0, 2)}
        pruned[method] = (m, rep)
    runs = {"ft_magnitude": ("magnitude", None), "ft_kd_magnitude": ("magnitude", 0.5),
            "ft_kd_sparsegpt": ("sparsegpt", 0.5)}
    for name, (start, alpha) in runs.items():
        m, rep = copy.deepcopy(pruned[start][0]), pruned[start][1]
        cfg = FinetuneConfig(epochs=epochs, lr=1e-3, batch_size=64, seed=seed, distill_alpha=alpha, temperature=4.0)
        t0 = time.perf_counter()
        finetune_masked(m, rep, split.x_train, split.y_train, cfg, teacher=dense if alpha is not None else None)
        assert all(check_2to4(dict(m.named_modules())[n].weight) for n in rep.masks)
        res[name] = {**fidelity(m, dz, x, y), "seconds": round(time.perf_counter() - t0, 2)}
        if name == "ft_kd_magnitude":
            res[name]["onnx"] = onnx_check(m, split, tmp)
    return res


ROWS = [("dense", "dense FP32"), ("oneshot_magnitude", "one-shot magnitude"),
        ("oneshot_permutation", "one-shot magnitude + channel permutation"),
        ("oneshot_sparsegpt", "one-shot SparseGPT (calib 15% split)"),
        ("ft_magnitude", "magnitude + masked fine-tune"),
        ("ft_kd_magnitude", "magnitude + masked fine-tune + KD (a=0.5, T=4)"),
        ("ft_kd_sparsegpt", "SparseGPT + masked fine-tune + KD (a=0.5, T=4)")]


def markdown(result: dict) -> str:
    seeds = result["seeds"]
    lines = [f"# 2:4 sparsity on the digits CNN ({len(seeds)} seeds: {', '.join(map(str, seeds))})", "",
             f"Fine-tune: {result['finetune_epochs']} epochs, Adam 1e-3 cosine. Test split: "
             f"{result['test_images']} held-out images. Pruned layers: {result['pruned_layers']}.", "",
             "| variant | test acc % (mean) | per seed | top-1 agree w/ dense % | rel. logit MSE | kept abs(w) |",
             "|---|---|---|---|---|---|"]
    for key, label in ROWS:
        per = [result["per_seed"][str(s)][key] for s in seeds]
        acc = [p["accuracy"] for p in per]
        agree = "" if key == "dense" else f"{np.mean([p['top1_agreement'] for p in per]):.2f}"
        mse = "" if key == "dense" else f"{np.mean([p['rel_logit_mse'] for p in per]):.4f}"
        kept_ = f"{np.mean([p['mean_kept_magnitude'] for p in per]):.3f}" if "mean_kept_magnitude" in per[0] else ""
        lines.append(f"| {label} | {np.mean(acc):.2f} | {' / '.join(f'{a:.2f}' for a in acc)} | {agree} | {mse} "
                     f"| {kept_} |")
    o = result["per_seed"][str(seeds[0])]["ft_kd_magnitude"]["onnx"]
    lines += ["", f"ONNX export of the fine-tuned model (seed {seeds[0]}): {o['compliant_layers']}/"
              f"{o['eligible_layers']} eligible layers 2:4-compliant, {100 * o['sparse_flop_share']:.1f}% of weight "
              f"FLOPs sparse-capable, ONNX Runtime accuracy {o['onnxruntime_accuracy']:.2f}%.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = {}
    with tempfile.TemporaryDirectory() as tmp:
        for s in seeds:
            per_seed[str(s)] = run_seed(s, args.epochs, tmp)
            print(f"seed {s}: " + ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in per_seed[str(s)].items()))
    split = load_digits_split(seed=seeds[0])
    result = {"benchmark": "sparsity_digits", "seeds": seeds, "finetune_epochs": args.epochs,
              "test_images": len(split.x_test), "pruned_layers": "features.3, features.6, classifier.1, classifier.3",
              "torch": torch.__version__, "machine": platform.machine(), "per_seed": per_seed,
              "mean": {k: round(float(np.mean([per_seed[str(s)][k]["accuracy"] for s in seeds])), 3)
                       for k, _ in ROWS}}
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_json(OUT / "digits.json", result)
    md = markdown(result)
    atomic_write_text(OUT / "digits.md", md)
    print(md)


if __name__ == "__main__":
    main()
