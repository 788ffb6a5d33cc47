"""``trtopt bench --reference VARIANT=REF``: a pruned model's variants judged against the pruned FP32."""

from __future__ import annotations

import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtopt.cli.main import main
from trtopt.onnx.io import save_onnx


def _linear(path, w):
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "lin",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
                          [numpy_helper.from_array(w.astype(np.float32), "w")])
    return save_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_pruned_variants_judged_against_the_pruned_model(tmp_path, capsys):
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((16, 10))
    pruned = dense.copy()
    pruned[::2] = 0.0  # half the weights gone: a different model
    near = pruned + rng.normal(0, 1e-4, pruned.shape)  # its "INT8" twin: faithful to the pruned model
    paths = [_linear(tmp_path / "fp32.onnx", dense), _linear(tmp_path / "sparse24-fp32.onnx", pruned),
             _linear(tmp_path / "sparse24-int8.onnx", near)]
    x = rng.standard_normal((64, 16)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x)
    common = [*map(str, paths), "--data", str(tmp_path / "eval.npz"), "--batch", "8", "--warmup", "1",
              "--iterations", "5", "--rounds", "5", "--no-plots", "--strict"]

    # default: everything is judged against the dense first model: both pruned variants fail (exit 1)
    assert main(["bench", *common, "--out", str(tmp_path / "a")]) == 1
    rows = {v["name"]: v for v in json.loads((tmp_path / "a" / "report.json").read_text())["variants"]}
    assert rows["sparse24-int8"]["fidelity"]["y"]["cosine"] < 0.99

    rc = main(["bench", *common, "--out", str(tmp_path / "b"),
               "--reference", "sparse24-fp32=none", "--reference", "sparse24-int8=sparse24-fp32"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    rows = {v["name"]: v for v in report["variants"]}
    want = float(np.dot((x @ pruned).ravel(), (x @ near).ravel())
                 / np.linalg.norm(x @ pruned) / np.linalg.norm(x @ near))
    assert rows["sparse24-int8"]["fidelity"]["y"]["cosine"] == pytest_approx(want)
    assert rows["sparse24-fp32"]["fidelity"]["y"]["cosine"] < 0.99  # reported ...
    assert rows["sparse24-fp32"]["status"] == "ok" and not rows["sparse24-fp32"].get("violations")  # ... not judged
    assert report["workload"]["references"] == {"sparse24-fp32": "none", "sparse24-int8": "sparse24-fp32"}


def test_each_variant_says_what_it_is_compared_with_and_a_reported_one_is_not_judged(tmp_path, capsys):
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((16, 10))
    pruned = dense.copy()
    pruned[::2] = 0.0
    paths = [_linear(tmp_path / "fp32.onnx", dense), _linear(tmp_path / "sparse24-fp32.onnx", pruned),
             _linear(tmp_path / "sparse24-int8.onnx", pruned + rng.normal(0, 1e-4, pruned.shape)),
             _linear(tmp_path / "int8.onnx", dense + rng.normal(0, 1e-4, dense.shape))]
    np.savez(tmp_path / "eval.npz", x=rng.standard_normal((64, 16)).astype(np.float32))
    assert main(["bench", *map(str, paths), "--data", str(tmp_path / "eval.npz"), "--batch", "8", "--warmup", "1",
                 "--iterations", "5", "--rounds", "5", "--no-plots", "--out", str(tmp_path / "o"),
                 "--reference", "sparse24-fp32=none", "--reference", "sparse24-int8=sparse24-fp32"]) == 0
    rows = {v["name"]: v for v in json.loads((tmp_path / "o" / "report.json").read_text())["variants"]}
    got = {k: (v["fidelity_reference"], v["fidelity_judged"], v["fidelity_ok"]) for k, v in rows.items()}
    assert got == {"fp32": (None, None, None), "sparse24-fp32": ("fp32", False, None),
                   "sparse24-int8": ("sparse24-fp32", True, True), "int8": ("fp32", True, True)}
    md = (tmp_path / "o" / "report.md").read_text()
    fid = [line for line in md.splitlines() if line.startswith("| sparse24-") or line.startswith("| int8 | 8 | fp32")]
    assert any(r.startswith("| sparse24-fp32 | 8 | fp32 | y |") and r.endswith("| — not judged |") for r in fid), fid
    assert any(r.startswith("| sparse24-int8 | 8 | sparse24-fp32 | y |") and r.endswith("| ok |") for r in fid)
    assert any(r.startswith("| int8 | 8 | fp32 | y |") and r.endswith("| ok |") for r in fid)
    assert "Tolerance(s) applied: cosine" in md and "none;" not in md.split("Tolerance(s) applied:")[1][:200]
    table = next(line for line in md.splitlines() if line.startswith("| sparse24-fp32 | onnxruntime"))
    assert "(not judged)" in table  # the results table's fidelity cell (no labels) says so too


def pytest_approx(v):
    import pytest

    return pytest.approx(v, rel=1e-5)


def test_reference_must_be_an_earlier_model(tmp_path, capsys):
    w = np.eye(16, 10)
    a, b = _linear(tmp_path / "a.onnx", w), _linear(tmp_path / "b.onnx", w)
    for ref, msg in (("b=c", "must be a model given before"), ("a=b", "must be a model given before"),
                     ("z=a", "no model named 'z'"), ("b", "must be VARIANT=REF")):
        rc = main(["bench", str(a), str(b), "--out", str(tmp_path / "o"), "--reference", ref, "--no-plots"])
        err = capsys.readouterr().err
        assert rc == 2 and msg in err and "Traceback" not in err


def test_models_with_other_output_names_are_refused_before_any_work(tmp_path, capsys):
    w = np.eye(16, 10)
    a = _linear(tmp_path / "a.onnx", w)
    m = onnx.load(str(a))
    m.graph.output[0].name = "logits"
    m.graph.node[0].output[0] = "logits"
    b = save_onnx(m, tmp_path / "b.onnx")
    rc = main(["bench", str(a), str(b), "--out", str(tmp_path / "o"), "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 2 and "has outputs ['logits'] but the first model" in err and "--output-name" in err
    assert "bench: a on" not in err  # refused before evaluating anything
