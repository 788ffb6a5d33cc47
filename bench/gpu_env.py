"""The device record every GPU result carries: GPU name, driver, CUDA, torch, clocks (NVML when installed).

``python bench/gpu_env.py [OUT.json]`` prints it (and writes it). Used by the GPU bench scripts.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from typing import Any


def _smi(query: str) -> str:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else ""


def device_record() -> dict[str, Any]:
    """GPU name, driver, memory, compute capability, clocks; ``gpu: none`` on a machine without CUDA."""
    import torch

    rec: dict[str, Any] = {"host": platform.node(), "platform": platform.platform(),
                           "python": platform.python_version(), "torch": torch.__version__,
                           "cuda": torch.version.cuda}
    if not torch.cuda.is_available():
        return {**rec, "gpu": "none (torch.cuda.is_available() is False)", "driver": _smi("driver_version") or None}
    p = torch.cuda.get_device_properties(0)
    rec.update(gpu=p.name, compute_capability=f"{p.major}.{p.minor}", memory_gib=round(p.total_memory / 2**30, 1),
               multiprocessors=p.multi_processor_count, driver=_smi("driver_version") or None,
               clocks_mhz=_smi("clocks.sm,clocks.max.sm,clocks.mem") or None,
               power_w=_smi("power.draw,power.limit") or None)
    return rec


def time_ms(fn: Any, warmup: int = 10, reps: int = 7, iters: int = 20) -> float:
    """Median over ``reps`` of the mean CUDA-event time (ms) per call of ``iters`` calls of ``fn``."""
    import statistics

    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        out.append(start.elapsed_time(end) / iters)
    return statistics.median(out)


def device_line(env: dict[str, Any]) -> str:
    """``Device: NAME, driver D, torch T (CUDA C).`` for a result's markdown."""
    return f"Device: {env['gpu']}, driver {env['driver']}, torch {env['torch']} (CUDA {env['cuda']})."


def save_results(out: Any, stem: str, data: dict[str, Any], lines: list[str]) -> None:
    """Write ``OUT/STEM.json`` (``data``) and ``OUT/STEM.md`` (``lines``) atomically, and print the markdown."""
    from pathlib import Path

    from trtopt.fileio import atomic_write_json, atomic_write_text

    atomic_write_json(Path(out) / f"{stem}.json", data)
    atomic_write_text(Path(out) / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    data = device_record()
    print(json.dumps(data, indent=2))
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(data, f, indent=2)
