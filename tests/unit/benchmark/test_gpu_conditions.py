"""GPU conditions: throttle-reason decoding, per-variant summaries and warnings as pure
functions over recorded readings; without NVML everything is "unknown", never a crash."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from _helpers.fake_runners import FEEDS, Clock, DriftRunner
from trtopt.benchmark import BenchConfig, capture_environment
from trtopt.benchmark.gpu_conditions import (
    NvmlMonitor,
    condition_warnings,
    decode_throttle_reasons,
    parse_jetson_clocks,
    summarize_readings,
)
from trtopt.benchmark.interleave import TimedVariant, measure_interleaved


def _r(sm, mask=0, power=65.0, temp=70.0):
    return {"sm_clock_mhz": sm, "mem_clock_mhz": 5000.0, "power_w": power, "temperature_c": temp,
            "throttle_mask": mask}


def test_throttle_reasons_decode_nvml_bits():
    assert decode_throttle_reasons(0) == []
    assert decode_throttle_reasons(0x1 | 0x4 | 0x40) == ["gpu_idle", "sw_power_cap", "hw_thermal_slowdown"]
    assert decode_throttle_reasons(0x800 | 0x8) == ["hw_slowdown", "0x800"]


def test_summary_flags_a_power_capped_variant_but_not_an_idle_one():
    t4 = summarize_readings([_r(1590), _r(1410, mask=0x4, power=70.0), _r(1350, mask=0x4 | 0x20, temp=84.0)])
    assert t4["throttled"] and t4["throttle_reasons"] == ["sw_power_cap", "sw_thermal_slowdown"]
    assert t4["sm_clock_mhz"] == [1350.0, 1410.0, 1590.0] and t4["temperature_c"][2] == 84.0
    idle = summarize_readings([_r(300, mask=0x1), _r(1590)])
    assert not idle["throttled"] and idle["throttle_reasons"] == ["gpu_idle"]
    assert summarize_readings([]) == {"nvml": "unknown"}


def test_warnings_for_throttling_and_clocks_that_moved_between_variants():
    steady = {"fp32": summarize_readings([_r(1590)] * 4), "int8": summarize_readings([_r(1575)] * 4)}
    assert condition_warnings(steady) == []
    moved = {"fp32": summarize_readings([_r(1590)] * 4), "int8": summarize_readings([_r(1410, mask=0x4)] * 4)}
    w = condition_warnings(moved)
    assert any(x.startswith("int8 ran throttled (sw_power_cap)") for x in w)
    assert any("SM clock moved between variants (fp32 1590 MHz, int8 1410 MHz)" in x for x in w)


def test_recorded_readings_reach_every_variant_of_an_interleaved_run():
    replay = {"a": iter([_r(1590)] * 100), "b": iter([_r(1300, mask=0x4)] * 100)}
    clock = Clock()
    with DriftRunner(clock, 1.0) as a, DriftRunner(clock, 1.0) as b:
        res = measure_interleaved([TimedVariant("a", a, FEEDS, 4), TimedVariant("b", b, FEEDS, 4)],
                                  BenchConfig(warmup=0, iterations=10, rounds=5), clock=clock,
                                  monitor=lambda key, phase: next(replay[key]))
    ca, cb = res["a"].conditions, res["b"].conditions
    assert ca["readings"] == 10 and not ca["throttled"] and cb["throttled"]  # before + after each of 5 blocks
    assert ca["warnings"] == cb["warnings"] and len(cb["warnings"]) == 2
    assert res["b"].to_dict()["gpu_conditions"]["sm_clock_mhz"] == [1300.0, 1300.0, 1300.0]
    assert np.isfinite(res["a"].throughput_sps)


def test_jetson_clocks_state_from_its_show_output():
    on = ("cpu0: Online=1 Governor=schedutil MinFreq=2265600 MaxFreq=2265600 CurrentFreq=2265600\n"
          "GPU MinFreq=1377000000 MaxFreq=1377000000 CurrentFreq=1377000000\n")
    off = on.replace("GPU MinFreq=1377000000", "GPU MinFreq=318750000")
    assert parse_jetson_clocks(on) == "on" and parse_jetson_clocks(off) == "off"
    assert parse_jetson_clocks(None) == "unknown" and parse_jetson_clocks("no freq here") == "unknown"


def test_without_nvml_everything_is_unknown_not_a_crash():
    if importlib.util.find_spec("pynvml") is not None:
        pytest.skip("nvidia-ml-py is installed here")
    mon = NvmlMonitor()
    assert mon("x", "before") is None and mon.status.startswith("unknown: nvidia-ml-py is not installed")
    env = capture_environment()
    assert env["gpu_conditions"]["nvml"].startswith("unknown")
    assert env["jetson"] is None  # not a Jetson: no nvpmodel / jetson_clocks
