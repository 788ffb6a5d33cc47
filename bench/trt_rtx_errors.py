"""The one line `trtopt build --backend tensorrt-rtx` prints for each TensorRT error kind a user can hit.

Builds the small graphs of tests/_helpers/onnx_models.py (one per kind) with the real TensorRT-for-RTX parser
and builder through the CLI, and records exit code and stderr:

    nice -n 10 python bench/trt_rtx_errors.py      # writes bench/results/trt-rtx/errors.{json,md}
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _helpers import onnx_models as G  # noqa: E402
from trtopt.cli.main import main as cli  # noqa: E402
from trtopt.fileio import atomic_write_json, atomic_write_text  # noqa: E402

CASES = [
    ("per-channel scale count != output channels", lambda: G.qdq_conv(n_scales=8), "int8"),
    ("a zero activation scale", lambda: G.qdq_conv(act_scale=0.0), "int8"),
    ("non-zero INT8 zero point", lambda: G.qdq_conv(zp=3), "int8"),
    ("UINT8 asymmetric (ONNX Runtime's default)", lambda: G.qdq_conv(zp_dtype=np.uint8, zp=128), "int8"),
    ("INT32 bias behind a DequantizeLinear", G.int32_bias_dq, "int8"),
    ("FP16 and FP32 inputs to one Add", G.mixed_add, "fp16"),
    ("custom-domain op (no plugin)", G.custom_op, "fp32"),
    ("unsupported op (Det)", G.unsupported_op, "fp32"),
    ("dynamic H/W, no --shapes", G.dynamic_spatial, "fp32"),
    ("per-channel weight scales on the wrong axis (builds; --strict)", lambda: G.qdq_conv(weight_axis=1), "int8"),
]


def main() -> int:
    import tensorrt_rtx

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (kind, make, precision) in enumerate(CASES):
            path = Path(tmp) / f"case{i}.onnx"
            onnx.save(make(), str(path))
            err = io.StringIO()
            argv = ["build", str(path), "--backend", "tensorrt-rtx", "--precision", precision, "--strict",
                    "--engine-dir", str(Path(tmp) / "e")]
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                rc = cli(argv)
            lines = err.getvalue().strip().splitlines()
            rows.append({"kind": kind, "exit": rc, "lines": len(lines), "message": "\n".join(lines)})
            print(f"{kind}: exit {rc}: {err.getvalue().strip()}", flush=True)
    out = ROOT / "bench/results/trt-rtx"
    doc = {"tensorrt_rtx": tensorrt_rtx.__version__, "command": "nice -n 10 python bench/trt_rtx_errors.py",
           "rows": rows}
    atomic_write_json(out / "errors.json", doc)
    md = [f"# What `trtopt build --backend tensorrt-rtx --strict` prints per error kind (TensorRT for RTX "
          f"{doc['tensorrt_rtx']})", "", f"Command: `{doc['command']}` (graphs: tests/_helpers/onnx_models.py)", "",
          "| graph | exit | stderr (one line) |", "|---|---|---|"]
    md += [f"| {r['kind']} | {r['exit']} | `{r['message'].replace('|', '/')}` |" for r in rows]
    atomic_write_text(out / "errors.md", "\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
