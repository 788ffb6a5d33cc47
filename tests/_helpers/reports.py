"""A small benchmark report (two batch sizes, an FP32 baseline, an INT8 variant, a skipped TensorRT row)."""

from __future__ import annotations

import numpy as np

from trtopt.benchmark import AccuracyResult, Report, VariantResult, summarize


def variant(name, precision, tput, acc, batch=8, sparsity="dense", backend="onnxruntime", fid=None):
    lat = np.full(10, 1e3 * batch / tput)
    t = summarize(lat, batch)
    a = AccuracyResult(metric="top1", value=acc, top5=None, fidelity=fid or {}, outputs=None)
    return VariantResult(name, backend, precision, sparsity, batch, t, a, f"{name}.onnx", "ok", "", extra={})


def make_report():
    fid = {"logits": {"top1_agreement": 99.0, "cosine": 0.999, "max_abs_err": 0.1, "mean_abs_err": 0.01,
                      "sqnr_db": float("inf")}}
    vs = [variant("fp32", "fp32", 1000.0, 97.0), variant("int8", "int8", 2000.0, 96.5, fid=fid),
          variant("fp32", "fp32", 4000.0, 97.0, batch=32), variant("int8", "int8", 6000.0, 96.5, batch=32),
          VariantResult("trt-int8", "tensorrt", "int8", "2:4", 8, None, None, None, "skipped",
                        "tensorrt is not installed")]
    return Report(environment={"cpu": {"model": "TestCPU"}, "gpus": []}, workload={"name": "digits_cnn"},
                  variants=vs)
