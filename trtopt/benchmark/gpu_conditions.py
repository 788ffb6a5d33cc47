"""GPU conditions during timing: clocks, power, temperature, throttle reasons (NVML), Jetson power mode.

Why: a T4 throttles at its 70 W limit, so the variant timed last runs on a hotter,
slower GPU. Interleaving spreads that over every variant; these readings say whether it happened
at all. Before and after every interleaved block :class:`NvmlMonitor` reads the GPU through NVML
(``nvidia-ml-py``, imported lazily, extra ``gpu``; never by parsing ``nvidia-smi``);
:func:`summarize_readings` turns a variant's readings into its ``timing.gpu_conditions`` and
:func:`condition_warnings` warns when a variant ran throttled or the SM clock moved between
variants. Without NVML (no driver, no package, a CPU machine) everything records ``"unknown"``
with the reason and never raises.

The throttle-reason bits are NVML's ``nvmlClocksEventReason*`` (formerly
``nvmlClocksThrottleReason*``) constants from ``nvml.h``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from trtopt.log import get_logger

log = get_logger(__name__)

#: nvml.h clocks-event (throttle) reason bits
THROTTLE_REASONS: dict[int, str] = {
    0x1: "gpu_idle", 0x2: "applications_clocks_setting", 0x4: "sw_power_cap", 0x8: "hw_slowdown",
    0x10: "sync_boost", 0x20: "sw_thermal_slowdown", 0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown", 0x100: "display_clock_setting",
}
#: reasons that mean the GPU ran slower than it could (idle, a user clock setting and sync boost do not)
SLOWDOWN = frozenset({"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
                      "hw_power_brake_slowdown"})
#: relative spread of the median SM clock between variants above which the comparison is suspect
CLOCK_SPREAD = 0.05


def decode_throttle_reasons(mask: int) -> list[str]:
    """Names of the bits set in an NVML clocks-event mask (unknown bits as ``0x...``), lowest bit first."""
    names = [name for bit, name in THROTTLE_REASONS.items() if mask & bit]
    rest = mask & ~sum(THROTTLE_REASONS)
    return names + ([f"0x{rest:x}"] if rest else [])


def summarize_readings(readings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One variant's GPU conditions from its readings (before/after every block).

    Args:
        readings: Dicts with ``sm_clock_mhz``, ``mem_clock_mhz``, ``power_w``, ``temperature_c``,
            ``throttle_mask`` (any may be ``None``), as :class:`NvmlMonitor` records them.

    Returns:
        ``{"readings": n, "sm_clock_mhz": [min, median, max], ...same for mem_clock_mhz, power_w,
        temperature_c, "throttle_reasons": [names seen], "throttled": bool}``; ``{"nvml": "unknown"}``
        without readings.
    """
    if not readings:
        return {"nvml": "unknown"}
    out: dict[str, Any] = {"readings": len(readings)}
    for key in ("sm_clock_mhz", "mem_clock_mhz", "power_w", "temperature_c"):
        vals = [float(r[key]) for r in readings if r.get(key) is not None]
        out[key] = [min(vals), float(np.median(vals)), max(vals)] if vals else None
    reasons = sorted({n for r in readings for n in decode_throttle_reasons(int(r.get("throttle_mask") or 0))})
    out["throttle_reasons"] = reasons
    out["throttled"] = bool(SLOWDOWN.intersection(reasons))
    return out


def condition_warnings(conditions: Mapping[str, Mapping[str, Any]], spread: float = CLOCK_SPREAD) -> list[str]:
    """Warnings for one comparison: variants that ran throttled, SM clocks that moved between variants.

    Args:
        conditions: Variant label to :func:`summarize_readings` output.
        spread: Largest acceptable relative difference of the variants' median SM clocks.

    Returns:
        One line per problem (empty when the GPU held steady or nothing is known).
    """
    out = []
    for name, c in conditions.items():
        if c.get("throttled"):
            why = ", ".join(r for r in c.get("throttle_reasons", []) if r in SLOWDOWN)
            out.append(f"{name} ran throttled ({why}): lock clocks or let the GPU cool, see bench/README.md")
    clocks = {n: c["sm_clock_mhz"][1] for n, c in conditions.items() if c.get("sm_clock_mhz")}
    if len(clocks) > 1 and min(clocks.values()) > 0 and max(clocks.values()) / min(clocks.values()) - 1 > spread:
        listed = ", ".join(f"{n} {v:.0f} MHz" for n, v in clocks.items())
        out.append(f"SM clock moved between variants ({listed}): the speedups mix model and clock changes")
    return out


class NvmlMonitor:
    """``monitor(key, phase)`` for :func:`~trtopt.benchmark.interleave.measure_interleaved`: one NVML reading.

    NVML is initialised on first use; when it cannot be (package missing, no driver), every call
    returns ``None`` and :attr:`status` says why. Reads GPU ``index`` (default 0).
    """

    def __init__(self, index: int = 0) -> None:
        self.index, self.status, self._nvml, self._handle = index, "", None, None

    def _init(self) -> bool:
        if self._handle is not None or self.status:
            return self._handle is not None
        try:
            import pynvml  # nvidia-ml-py, extra "gpu"

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.index)
            self._nvml = pynvml
            self.status = "ok"
            return True
        except ImportError:
            from trtopt.optional import install_hint

            self.status = f"unknown: nvidia-ml-py is not installed ({install_hint('gpu')})"
        except Exception as exc:  # pynvml.NVMLError and driver problems: record, never crash a benchmark
            self.status = f"unknown: NVML unavailable ({exc})"
        return False

    def read(self) -> dict[str, Any] | None:
        """One reading (``None`` without NVML); a field NVML refuses is ``None``."""
        if not self._init():
            return None
        nv, h = self._nvml, self._handle

        def get(fn, *args, scale: float = 1.0):
            try:
                return float(fn(h, *args)) * scale
            except Exception:
                return None

        mask = get(getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None)
                   or nv.nvmlDeviceGetCurrentClocksThrottleReasons)
        return {"t": time.monotonic(), "sm_clock_mhz": get(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_SM),
                "mem_clock_mhz": get(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_MEM),
                "power_w": get(nv.nvmlDeviceGetPowerUsage, scale=1e-3),
                "temperature_c": get(nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU),
                "throttle_mask": None if mask is None else int(mask)}

    def __call__(self, key: Hashable, phase: str) -> dict[str, Any] | None:
        """The monitor protocol: a reading before/after a block of variant ``key``."""
        return self.read()


def parse_jetson_clocks(text: str | None) -> str:
    """Whether jetson_clocks is on, from the output of ``jetson_clocks --show``.

    Returns:
        ``"on"`` when every CPU/GPU line has MinFreq == MaxFreq (jetson_clocks pins them), ``"off"``
        when any differs, ``"unknown"`` without output (not a Jetson, no permission).
    """
    if not text:
        return "unknown"
    pairs = re.findall(r"MinFreq=(\d+)\s+MaxFreq=(\d+)", text)
    if not pairs:
        return "unknown"
    return "on" if all(a == b for a, b in pairs) else "off"


def jetson_state() -> dict[str, Any] | None:
    """Jetson power mode (``nvpmodel -q``) and jetson_clocks state; ``None`` when this is not a Jetson."""
    from pathlib import Path

    if not Path("/etc/nv_tegra_release").exists():
        return None

    def run(cmd: list[str]) -> str | None:
        if shutil.which(cmd[0]) is None:
            return None
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return res.stdout if res.returncode == 0 else None

    mode = run(["nvpmodel", "-q"])
    m = re.search(r"NV Power Mode:\s*(\S+)", mode or "")
    return {"power_mode": m.group(1) if m else "unknown",
            "jetson_clocks": parse_jetson_clocks(run(["jetson_clocks", "--show"]))}


def nvml_environment() -> dict[str, Any]:
    """The environment block's ``gpu_conditions``: one NVML reading now, or ``{"nvml": "unknown: why"}``."""
    mon = NvmlMonitor()
    got = mon.read()
    if got is None:
        return {"nvml": mon.status}
    got.pop("t", None)
    got["throttle_reasons"] = decode_throttle_reasons(int(got.pop("throttle_mask") or 0))
    return {"nvml": "ok", **got}
