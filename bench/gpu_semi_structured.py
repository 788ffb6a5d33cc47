"""Dense FP16 vs 2:4 semi-structured FP16 matmuls (``torch.sparse.to_sparse_semi_structured``).

Weights are 2:4-pruned with trtopt's magnitude masks (TensorRT layout: groups along ``in``).
Shapes: the all-MiniLM-L6-v2 Linear layers at 4096 and 32768 tokens, and 4096^3.
Needs an Ampere+ CUDA GPU; without one it prints why and exits 0 without writing anything.

Run:  python bench/gpu_semi_structured.py [--out bench/results/sparsity]
Writes OUT/gpu_semi_structured.json and .md (with the device name).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from trtopt.fileio import atomic_write_json, atomic_write_text
from trtopt.sparsity import check_2to4
from trtopt.sparsity.masks import magnitude_mask

OUT = Path(__file__).resolve().parent / "results" / "sparsity"
# (label, tokens M, out N, in K)
SHAPES = [(f"MiniLM {name} @{m} tok", m, n, k) for m in (4096, 32768)
          for name, n, k in (("QKV/O 384x384", 384, 384), ("FFN up 1536x384", 1536, 384),
                             ("FFN down 384x1536", 384, 1536))] + [("4096^3", 4096, 4096, 4096)]


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"results folder (default {OUT})")
    out = ap.parse_args().out
    if not torch.cuda.is_available():
        print("no CUDA GPU: skipped (run this on an Ampere or newer GPU)")
        return 0
    cc = torch.cuda.get_device_capability(0)
    name = torch.cuda.get_device_name(0)
    if cc < (8, 0):
        print(f"{name} is SM {cc[0]}.{cc[1]}: no sparse tensor cores (Ampere SM 8.0+ needed): skipped")
        return 0
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_env import time_ms

    backend = "cusparselt" if torch.backends.cusparselt.is_available() else "cutlass"
    SparseSemiStructuredTensor._FORCE_CUTLASS = backend == "cutlass"
    torch.manual_seed(0)
    rows = []
    for label, m, n, k in SHAPES:
        w = torch.randn(n, k, device="cuda", dtype=torch.float16)
        w = (w * magnitude_mask(w, axis=1)).contiguous()
        assert check_2to4(w, axis=1)
        ws = to_sparse_semi_structured(w)
        x = torch.randn(m, k, device="cuda", dtype=torch.float16)
        err = float((F.linear(x, ws) - F.linear(x, w)).abs().max())
        dense_ms = time_ms(lambda x=x, w=w: F.linear(x, w))
        sparse_ms = time_ms(lambda x=x, ws=ws: F.linear(x, ws))
        flops = 2.0 * m * n * k
        rows.append({"shape": label, "M": m, "N": n, "K": k, "dense_ms": round(dense_ms, 4),
                     "sparse_ms": round(sparse_ms, 4), "speedup": round(dense_ms / sparse_ms, 3),
                     "dense_tflops": round(flops / dense_ms / 1e9, 1),
                     "sparse_effective_tflops": round(flops / sparse_ms / 1e9, 1), "max_abs_err": err})
        print(f"{label:32s} dense {dense_ms:8.4f} ms  2:4 {sparse_ms:8.4f} ms  x{dense_ms / sparse_ms:5.2f}")
    result = {"benchmark": "gpu_semi_structured", "device": name, "compute_capability": f"{cc[0]}.{cc[1]}",
              "torch": torch.__version__, "cuda": torch.version.cuda, "backend": backend, "dtype": "float16",
              "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "gpu_semi_structured.json", result)
    md = [f"# Dense FP16 vs 2:4 FP16 linear on {name} (SM {cc[0]}.{cc[1]}, {backend}, torch {torch.__version__})", "",
          "| shape (M tokens x N out x K in) | dense ms | 2:4 ms | speedup | dense TFLOP/s |", "|---|---|---|---|---|"]
    md += [f"| {r['shape']} ({r['M']}x{r['N']}x{r['K']}) | {r['dense_ms']:.4f} | {r['sparse_ms']:.4f} | "
           f"{r['speedup']:.2f} | {r['dense_tflops']:.0f} |" for r in rows]
    atomic_write_text(out / "gpu_semi_structured.md", "\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
