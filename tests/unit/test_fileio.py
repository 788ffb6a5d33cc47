"""Every command that writes refuses an output path that is one of its inputs, before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.cli.main import main
from trtopt.errors import (
    ConfigError,
    InputError,
)
from trtopt.fileio import atomic_path, atomic_write_text, check_not_input, check_writable, same_file


def _mlp(path):
    w = numpy_helper.from_array(np.eye(8, dtype=np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="fc")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _torch_module(path):
    torch = pytest.importorskip("torch")
    torch.save(torch.nn.Sequential(torch.nn.Linear(8, 8)), str(path))
    return path


def _onnx_cases(tmp_path):
    m = _mlp(tmp_path / "m.onnx")
    np.savez(tmp_path / "d.npz", x=np.ones((4, 8), np.float32))
    (tmp_path / "t.json").write_text(json.dumps({"amax": {}}))
    same = str(tmp_path / "sub" / ".." / "m.onnx")  # another spelling of the same file
    (tmp_path / "sub").mkdir()
    return m, {
        "quantize int8": ["quantize", str(m), "--calib", str(tmp_path / "t.json"), "--out", same],
        "quantize fp16": ["quantize", str(m), "--fp16", "--out", str(m)],
        "quantize --report over --calib": ["quantize", str(m), "--calib", str(tmp_path / "t.json"),
                                           "--max-accuracy-drop", "1", "--eval", str(tmp_path / "d.npz"),
                                           "--out", str(tmp_path / "o.onnx"), "--report", str(tmp_path / "t.json")],
        "inspect sparsity --out": ["inspect", "sparsity", str(m), "--out", str(m)],
        "calibrate": ["calibrate", str(m), "--data", str(tmp_path / "m.calib.json"), "--out", str(tmp_path)],
    }


@pytest.mark.parametrize("case", ["quantize int8", "quantize fp16", "quantize --report over --calib",
                                  "inspect sparsity --out", "calibrate"])
def test_onnx_commands_refuse_to_write_over_their_input(tmp_path, capsys, case):
    _, cases = _onnx_cases(tmp_path)
    (tmp_path / "m.calib.json").write_bytes(b"data")
    before = {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert main(cases[case]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is the input file" in err[0], err
    assert {p: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("command", ["export", "prune"])
def test_torch_commands_refuse_to_write_over_the_module(tmp_path, capsys, command):
    pt = _torch_module(tmp_path / "m.pt")
    before = pt.read_bytes()
    out = ["--out", str(pt)] if command == "export" else ["--out-module", str(pt)]
    assert main([command, "--model", str(pt), "--input", "x:float32:batchx8", *out]) == 2
    err = capsys.readouterr().err
    assert "is the input file" in err and pt.read_bytes() == before


def test_same_file_sees_through_spellings_and_links(tmp_path):
    a = tmp_path / "a.onnx"
    a.write_text("x")
    (tmp_path / "link.onnx").symlink_to(a)
    assert same_file(a, tmp_path / "link.onnx") and same_file(a, tmp_path / "." / "a.onnx")
    assert not same_file(a, tmp_path / "b.onnx")
    check_not_input([tmp_path / "b.onnx", None], [a, None])  # different files: fine
    with pytest.raises(ConfigError, match="--out .* is the input file"):
        check_not_input([tmp_path / "link.onnx"], [a])


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("folder", [False, True])
def test_check_writable_names_the_requested_path_and_the_refusing_folder(folder):
    with pytest.raises(InputError) as exc:
        check_writable("/proc/nope/x.onnx", folder=folder)
    msg = str(exc.value)
    assert msg.startswith("cannot write /proc/nope/x.onnx: /proc does not accept new files (")


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    dest = tmp_path / "out" / "model.onnx"
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "new" / "sub" / "model.onnx") as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert not (tmp_path / "new").exists()  # nor the folders created for it
    dest.parent.mkdir()
    with pytest.raises(RuntimeError), atomic_path(dest) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []  # a folder that was there stays
    atomic_write_text(dest, "ok")
    assert dest.read_text() == "ok"
    assert [p.name for p in dest.parent.iterdir()] == ["model.onnx"]


def test_unwritable_destinations_are_input_errors(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        atomic_write_text(afile / "report.json", "{}")  # parent is a file
    with pytest.raises(InputError, match="directory"):
        atomic_write_text(tmp_path, "{}")
