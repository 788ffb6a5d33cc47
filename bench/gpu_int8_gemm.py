"""INT8 GEMM (``torch._int_mm``, int8 x int8 -> int32) against dense FP16 ``torch.matmul`` on large shapes.

What INT8 can give a GEMM-bound layer on this GPU before any TensorRT kernel selection: both
operands resident on the device, timed with CUDA events (median over repeats of the mean time of
a block of calls), TFLOP/s = 2*M*N*K / time (TOP/s for INT8). Each INT8 result is checked exactly
against an int64 CPU product on a 256 x 256 corner (``_int_mm`` accumulates in int32: no rounding).
Needs a CUDA GPU; without one it prints why and exits 0 without writing anything.

Shapes (M tokens/pixels, N out, K in): the MiniLM Linear layers at 32768 tokens, a ResNet-50-like
1x1 conv as a GEMM (batch 64 at 56x56), and 4096^3 / 8192^3.

Run:  python bench/gpu_int8_gemm.py [--out bench/results/gpu]
Writes OUT/int8_gemm.json and OUT/int8_gemm.md (device and driver recorded).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "gpu"
# (label, M, N, K); _int_mm needs M > 16 and N, K multiples of 8
SHAPES = [("MiniLM QKV/O 384x384 @32768 tok", 32768, 384, 384), ("MiniLM FFN up 1536x384 @32768 tok", 32768, 1536, 384),
          ("MiniLM FFN down 384x1536 @32768 tok", 32768, 384, 1536), ("1x1 conv 256->64 @64x56x56", 200704, 64, 256),
          ("4096^3", 4096, 4096, 4096), ("8192^3", 8192, 8192, 8192)]


def run_shape(label: str, m: int, n: int, k: int) -> dict:
    """One shape: FP16 and INT8 times, throughput, speedup and the exactness check."""
    import torch
    from gpu_env import time_ms

    g = torch.Generator(device="cuda").manual_seed(0)
    a8 = torch.randint(-127, 128, (m, k), dtype=torch.int8, device="cuda", generator=g)
    b8 = torch.randint(-127, 128, (k, n), dtype=torch.int8, device="cuda", generator=g)
    a16, b16 = a8.half() / 127, b8.half() / 127
    c = torch._int_mm(a8, b8)
    exact = bool(torch.equal(c[:256, :256].cpu().long(), a8[:256].cpu().long() @ b8[:, :256].cpu().long()))
    t16 = time_ms(lambda: torch.matmul(a16, b16))
    t8 = time_ms(lambda: torch._int_mm(a8, b8))
    flop = 2.0 * m * n * k
    return {"shape": label, "M": m, "N": n, "K": k, "fp16_ms": round(t16, 4), "int8_ms": round(t8, 4),
            "fp16_tflops": round(flop / t16 / 1e9, 1), "int8_tops": round(flop / t8 / 1e9, 1),
            "int8_speedup": round(t16 / t8, 3), "int8_exact": exact}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT, help=f"results folder (default {OUT})")
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("skipped: no CUDA GPU (torch.cuda.is_available() is False); nothing written")
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_env import device_line, device_record, save_results

    rows = []
    for shape in SHAPES:
        try:
            rows.append(run_shape(*shape))
        except RuntimeError as exc:  # a shape the GPU's INT8 path refuses: a row with the reason
            rows.append({"shape": shape[0], "error": " ".join(str(exc).split())[:300]})
        print(rows[-1], flush=True)
        torch.cuda.empty_cache()
    env = device_record()
    lines = ["# INT8 GEMM (torch._int_mm) vs FP16 matmul", "", device_line(env), "",
             "| shape | FP16 ms | INT8 ms | FP16 TFLOP/s | INT8 TOP/s | INT8 speedup | INT8 exact |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['shape']} | | | | | | {r['error']} |")
        else:
            lines.append(f"| {r['shape']} | {r['fp16_ms']} | {r['int8_ms']} | {r['fp16_tflops']} | {r['int8_tops']} "
                         f"| {r['int8_speedup']} | {r['int8_exact']} |")
    save_results(args.out, "int8_gemm", {"device": env, "rows": rows}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
