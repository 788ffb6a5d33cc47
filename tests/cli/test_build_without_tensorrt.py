"""CPU tests of ``trtopt build`` and the TensorRT backend entry points without TensorRT installed."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from trtopt.cli.main import main
from trtopt.optional import install_hint


@pytest.fixture(autouse=True)
def _no_tensorrt(monkeypatch):
    """Hide TensorRT 10/11 and TensorRT for RTX (installed or not): ``import`` raises ImportError."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)


def test_build_without_tensorrt_exits_2_with_one_line(tmp_path, capsys):
    rc = main(["build", str(tmp_path / "m.onnx"), "--backend", "tensorrt", "--precision", "int8", "--sparsity",
               "--shapes", "input:1x1x8x8,8x1x8x8,32x1x8x8", "--engine-dir", str(tmp_path / "engines")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and install_hint("tensorrt") in err[0]
    assert not (tmp_path / "engines").exists()  # nothing half-written


def test_build_rtx_without_the_extra_names_it(tmp_path, capsys):
    rc = main(["build", str(tmp_path / "m.onnx"), "--backend", "tensorrt-rtx", "--engine-dir", str(tmp_path / "e")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and install_hint("tensorrt-rtx") in err[0]
    assert not (tmp_path / "e").exists()


def test_build_help_works_without_tensorrt(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["build", "-h"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--precision", "--calib", "--sparsity", "--shapes", "--engine-dir"):
        assert flag in out
    assert sys.modules.get("tensorrt") is None


def test_open_runner_and_build_engine_raise_missing_dependency(tmp_path):
    from trtopt.backends import open_runner
    from trtopt.backends.tensorrt import build_engine
    from trtopt.errors import MissingDependencyError

    with pytest.raises(MissingDependencyError, match=re.escape(install_hint("tensorrt"))):
        open_runner("tensorrt", tmp_path / "m.engine")
    with pytest.raises(MissingDependencyError, match="tensorrt"):
        build_engine(tmp_path / "m.onnx")


def test_importing_the_backend_imports_nothing_heavy():
    import subprocess

    code = ("import sys, trtopt.backends.tensorrt, tools.trt_apicheck, trtopt.cli.cmd_build; "
            "print(sorted(m for m in ('tensorrt', 'torch', 'onnx', 'cuda') if m in sys.modules))")
    root = Path(__file__).resolve().parents[2]  # tools/ imports from the repository root
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=root)
    assert res.stdout.strip() == "[]", res.stderr
