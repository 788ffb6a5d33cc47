"""Capture the machine a report was measured on.

Nothing here imports tensorrt or initializes CUDA: package versions come from
``importlib.metadata`` and GPU facts from ``nvidia-smi`` when it is on PATH.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

#: distribution names whose versions are recorded (first installed name of each group wins)
PACKAGES: dict[str, tuple[str, ...]] = {
    "trtopt": ("trtopt",),
    "numpy": ("numpy",),
    "torch": ("torch",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-libs"),
    "torchvision": ("torchvision",),
    "cuda-python": ("cuda-python", "cuda-bindings"),
}

#: CPU flags that matter for inference kernels (the full list is hundreds long)
_CPU_FLAGS = re.compile(r"^(avx.*|fma|f16c|amx.*|sse4_2|asimd.*|sve.*|neon|.*vnni.*|bf16|fp16|i8mm|dotprod|asimddp)$")


def _version(dists: tuple[str, ...]) -> str | None:
    for d in dists:
        try:
            return md.version(d)
        except md.PackageNotFoundError:
            continue
    return None


def _cpu() -> dict[str, Any]:
    info: dict[str, Any] = {"model": platform.processor() or platform.machine(), "arch": platform.machine(),
                            "logical_cores": os.cpu_count(), "flags": []}
    try:
        info["available_cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        info["available_cores"] = os.cpu_count()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return info
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key, val = key.strip(), val.strip()
        if key in ("model name", "Model", "Hardware") and val:
            info["model"] = val
        elif key in ("flags", "Features") and not info["flags"]:
            info["flags"] = sorted(f for f in val.split() if _CPU_FLAGS.match(f))
    return info


def _run(cmd: list[str], timeout: float = 10.0) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout if res.returncode == 0 else None


_GPU_FIELDS = ("name", "driver_version", "compute_cap", "memory.total", "clocks.sm", "clocks.mem", "clocks.max.sm",
               "clocks.max.mem", "power.limit", "persistence_mode")


def _gpus() -> list[dict[str, Any]]:
    out = _run(["nvidia-smi", f"--query-gpu={','.join(_GPU_FIELDS)}", "--format=csv,noheader,nounits"])
    if not out:
        return []
    cuda = None
    header = _run(["nvidia-smi"]) or ""
    m = re.search(r"CUDA Version:\s*([0-9.]+)", header)
    if m:
        cuda = m.group(1)
    gpus = []
    for line in out.strip().splitlines():
        vals = [v.strip() for v in line.split(",")]
        if len(vals) != len(_GPU_FIELDS):
            continue
        g = dict(zip(_GPU_FIELDS, vals))
        gpus.append({
            "name": g["name"], "driver": g["driver_version"], "cuda_driver_version": cuda,
            "compute_capability": g["compute_cap"], "memory_mib": g["memory.total"],
            "clocks_mhz": {"sm": g["clocks.sm"], "mem": g["clocks.mem"], "max_sm": g["clocks.max.sm"],
                           "max_mem": g["clocks.max.mem"]},
            "power_limit_w": g["power.limit"], "persistence_mode": g["persistence_mode"],
        })
    return gpus


def _jetson() -> dict[str, Any] | None:
    release = Path("/etc/nv_tegra_release")
    if not release.exists():
        return None
    from trtopt.benchmark.gpu_conditions import jetson_state

    info: dict[str, Any] = {"l4t": release.read_text(errors="replace").splitlines()[0].strip()}
    info.update(jetson_state() or {})  # power_mode (nvpmodel -q), jetson_clocks on/off/unknown
    return info


def _torch_cuda() -> str | None:
    # torch.version.cuda is a constant; read it only when torch is already imported (no CUDA init either way)
    torch = sys.modules.get("torch")
    return getattr(getattr(torch, "version", None), "cuda", None) if torch else None


def _gpu_conditions() -> dict[str, Any]:
    from trtopt.benchmark.gpu_conditions import nvml_environment

    return nvml_environment()


def capture_environment() -> dict[str, Any]:
    """Return the report's ``environment`` block.

    Returns:
        CPU (model, flags, cores), OS, Python, package versions, GPUs (via ``nvidia-smi``:
        name, driver, CUDA driver version, compute capability, clocks) and the Jetson power
        mode when on a Jetson. Fields that cannot be read are ``None`` or empty.
    """
    env: dict[str, Any] = {
        "os": platform.platform(),
        "python": platform.python_version(),
        "cpu": _cpu(),
        "packages": {k: _version(v) for k, v in PACKAGES.items()},
        "gpus": _gpus(),
        "torch_cuda": _torch_cuda(),
        "jetson": _jetson(),
        "gpu_conditions": _gpu_conditions(),
        "env_vars": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "MKL_NUM_THREADS")
                     if k in os.environ},
    }
    return env
