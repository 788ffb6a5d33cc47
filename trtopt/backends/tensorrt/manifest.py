"""Engine manifests: the JSON written beside every engine, and the compatibility check on load.

Engines are tied to the exact TensorRT version and to the GPU architecture unless built version- or
hardware-compatible, so the manifest records both (enum **names**, never integers: enum
values shifted between 10 and 11) and :func:`check_manifest` compares them with the running system.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from pathlib import Path
from typing import Any

from trtopt import __version__
from trtopt.backends.tensorrt.features import nv_tensorrt_version
from trtopt.backends.tensorrt.flavour import label
from trtopt.errors import BackendUnavailableError, IncompatibleArtifactError, InputError
from trtopt.optional import install_hint

SCHEMA = "trtopt.engine/1"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:4])


def runtime_environment(trt: Any) -> dict[str, Any]:
    """TensorRT, CUDA, GPU and platform facts of this process (imports torch; call on the GPU host).

    Args:
        trt: The imported ``tensorrt`` module.
    """
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailableError("TensorRT is installed but no CUDA GPU is visible to PyTorch")
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    gpu = {"name": props.name, "compute_capability": f"{props.major}.{props.minor}",
           "sm_count": props.multi_processor_count, "total_memory_mib": props.total_memory // (1 << 20),
           "uuid": str(getattr(props, "uuid", "") or "")}
    env = {"tensorrt": {"version": trt.__version__, "nv_tensorrt_version": nv_tensorrt_version(trt.__version__),
                        "module": getattr(trt, "__file__", None)},
           "cuda": {"torch_cuda": torch.version.cuda, "torch": torch.__version__},
           "gpu": gpu, "platform": {"os": platform.system(), "arch": platform.machine()}}
    tegra = Path("/etc/nv_tegra_release")
    if tegra.is_file():  # Jetson: L4T release matters for throughput and compatibility
        env["jetson"] = {"l4t": tegra.read_text(errors="replace").splitlines()[0][:120]}
    return env


def make_manifest(key: str, env: dict[str, Any], build: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """Assemble a manifest dict.

    Args:
        key: The engine's cache key.
        env: :func:`runtime_environment` output (tensorrt, cuda, gpu, platform[, jetson]).
        build: ``{"options": BuildConfig.to_dict(), "plan": BuildPlan.to_dict(), ...}``.
        **sections: Further top-level sections: ``engine``, ``onnx``, ``profiles``, ``io``,
            ``calibration``, ``timing_cache``, ``sparsity``, ``layers``, ``build_seconds``.

    Returns:
        The manifest (JSON-serialisable).
    """
    doc = {"schema": SCHEMA, "key": key, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "trtopt_version": __version__, **env, "build": build}
    doc.update(sections)
    return doc


def load_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a manifest with one-line errors.

    Raises:
        InputError: Missing file, invalid JSON or not a trtopt engine manifest.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"engine manifest {p} is a directory" if p.is_dir() else f"engine manifest not found: {p}")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p} is not a valid engine manifest ({type(exc).__name__})") from exc
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise InputError(f"{p} is not a trtopt engine manifest (schema {SCHEMA})")
    return doc


def manifest_flavour(manifest: dict[str, Any]) -> str:
    """``tensorrt-rtx`` or ``tensorrt``: which TensorRT built the engine (older manifests: ``tensorrt``)."""
    return str(manifest.get("tensorrt", {}).get("flavour") or "tensorrt")


def flavour_mismatch(manifest: dict[str, Any], flavour: str, version: str, what: str
                     ) -> IncompatibleArtifactError | None:
    """The error for an engine built by the other TensorRT flavour (RTX vs 10/11), before deserializing it."""
    built = manifest_flavour(manifest)
    if built == flavour:
        return None
    extra = "tensorrt-rtx" if built == "tensorrt-rtx" else "tensorrt"
    return IncompatibleArtifactError(
        f"{what} was built by {label(built, str(manifest.get('tensorrt', {}).get('version') or '?'))} and cannot be "
        f"loaded by {label(flavour, version)}: load it with {install_hint(extra)} or rebuild it")


def check_manifest(manifest: dict[str, Any], trt_version: str, gpu: dict[str, Any], arch: str | None = None
                   ) -> list[str]:
    """Why an engine described by ``manifest`` cannot run here (empty list = compatible).

    Honours the build's ``VERSION_COMPATIBLE`` flag (newer runtime of the same or next major) and
    hardware-compatibility level (``AMPERE_PLUS``: any SM >= 8.0; ``SAME_COMPUTE_CAPABILITY``: same SM).

    Args:
        manifest: A loaded manifest.
        trt_version: Running ``tensorrt.__version__``.
        gpu: Running GPU ``{"name", "compute_capability"}``.
        arch: Running CPU architecture (``platform.machine()`` by default).
    """
    problems = []
    plan = manifest.get("build", {}).get("plan", {})
    built_trt = str(manifest.get("tensorrt", {}).get("version", ""))
    if built_trt != trt_version:
        b, r = _version_tuple(built_trt), _version_tuple(trt_version)
        vc = "VERSION_COMPATIBLE" in plan.get("builder_flags", [])
        if not (vc and b and r and r >= b and r[0] - b[0] <= 1):
            problems.append(f"built with TensorRT {built_trt or '?'}, running {trt_version}")
    built_gpu = manifest.get("gpu", {})
    level = plan.get("hardware_compatibility_level", "NONE")
    targets = built_gpu.get("targets")
    if targets:  # TensorRT for RTX: compiled for target architectures, not for the build machine's GPU
        cc = "SM" + str(gpu.get("compute_capability", "")).replace(".", "")
        if cc not in targets:
            problems.append(f"built for {', '.join(targets)}, this GPU is {cc}")
        level = "RTX_TARGETS"
    cc_b, cc_r = str(built_gpu.get("compute_capability", "")), str(gpu.get("compute_capability", ""))
    if level == "AMPERE_PLUS":
        if _version_tuple(cc_r) < (8, 0):
            problems.append(f"built Ampere-plus compatible, this GPU is SM {cc_r}")
    elif level == "SAME_COMPUTE_CAPABILITY":
        if cc_b != cc_r:
            problems.append(f"built for SM {cc_b}, this GPU is SM {cc_r}")
    elif level != "RTX_TARGETS" and (cc_b != cc_r or built_gpu.get("name") != gpu.get("name")):
        problems.append(f"built on {built_gpu.get('name')} (SM {cc_b}), this GPU is {gpu.get('name')} (SM {cc_r})")
    built_arch = manifest.get("platform", {}).get("arch")
    here = arch or platform.machine()
    if built_arch and built_arch != here:
        problems.append(f"built on {built_arch}, this machine is {here}")
    return problems


def require_compatible(manifest: dict[str, Any], trt_version: str, gpu: dict[str, Any], what: str,
                       arch: str | None = None) -> None:
    """Raise :class:`IncompatibleArtifactError` (one line) if :func:`check_manifest` finds problems."""
    problems = check_manifest(manifest, trt_version, gpu, arch)
    if problems:
        raise IncompatibleArtifactError(f"{what} cannot run here: {'; '.join(problems)} "
                                        "(rebuild with `trtopt build`, or pass rebuild=True / --rebuild)")
