"""A valid ONNX graph that ONNX Runtime's CPU session crashes on (SIGSEGV) under full optimization.

``x[N, 8, 32] -> Transpose[1, 0, 2] -> MatMul(2-D weight) -> Transpose[1, 0, 2] -> y``: the
sequence-first projection of PyTorch's ``nn.MultiheadAttention``. In FP32 it opens fine. With the
Transpose and MatMul in float16, ONNX Runtime puts a Cast between them (no float16 MatMul on the
CPU) and its ``MatmulTransposeFusion`` leaves a stale graph for ``NchwcTransformer``, which crashes.
Tests open it only in child processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .paths import REPO_ROOT


def seq_first_projection(fp16: bool) -> onnx.ModelProto:
    """The projection with FP32 graph I/O; ``fp16``: Transposes and MatMul computed in float16."""
    dt, npdt = (TensorProto.FLOAT16, np.float16) if fp16 else (TensorProto.FLOAT, np.float32)
    w = numpy_helper.from_array((np.random.default_rng(0).standard_normal((32, 16)) * 0.2).astype(npdt), "w")
    nodes = [helper.make_node("Transpose", ["xin"], ["t"], perm=[1, 0, 2], name="seq_first"),
             helper.make_node("MatMul", ["t", "w"], ["mm"], name="proj"),
             helper.make_node("Transpose", ["mm"], ["yout"], perm=[1, 0, 2], name="batch_first")]
    if fp16:
        nodes = [helper.make_node("Cast", ["x"], ["xin"], to=dt, name="to_fp16"), *nodes,
                 helper.make_node("Cast", ["yout"], ["y"], to=TensorProto.FLOAT, name="to_fp32")]
    else:
        nodes[0].input[0], nodes[-1].output[0] = "x", "y"
    g = helper.make_graph(nodes, "seq_first_projection", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                          ["N", 8, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 16])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def opens_in_child(path: str | Path) -> int:
    """Exit status of a child process opening ``path`` with trtopt's default ONNX Runtime session (negative: signal)."""
    code = "import sys; from trtopt.onnx.exec import make_session; make_session(sys.argv[1])"
    return subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, env=child_env()).returncode


def child_env() -> dict[str, str]:
    """The environment with this checkout's trtopt first on ``PYTHONPATH``."""
    root = str(REPO_ROOT)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
