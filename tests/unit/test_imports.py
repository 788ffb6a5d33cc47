"""`import trtopt` stays cheap and the CLI's help works without optional dependencies."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from trtopt.cli.main import COMMANDS


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120)


def test_import_trtopt_imports_no_tensorrt_torch_or_cuda():
    res = _run(
        """
        import sys
        import trtopt, trtopt.cli.main
        trtopt.cli.main.build_parser()
        heavy = [m for m in ("tensorrt", "torch", "pycuda", "cuda", "cupy", "polygraphy") if m in sys.modules]
        print("HEAVY", heavy)
        """
    )
    assert res.returncode == 0, res.stderr
    assert "HEAVY []" in res.stdout


def test_help_works_when_optional_modules_are_blocked():
    # A meta-path finder that refuses tensorrt/torch/onnxruntime/matplotlib: -h must still work.
    res = _run(
        f"""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorrt", "torch", "onnxruntime", "matplotlib", "sklearn"):
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        from trtopt.cli.main import main
        for cmd in {list(COMMANDS)!r}:
            try:
                main([cmd, "-h"])
            except SystemExit as e:
                assert e.code == 0, (cmd, e.code)
        print("ALL-HELP-OK")
        """
    )
    assert "ALL-HELP-OK" in res.stdout, res.stdout + res.stderr
    assert "unavailable" not in res.stdout


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_subcommand_has_help(cmd, capsys):
    from trtopt.cli.main import main

    with pytest.raises(SystemExit) as exc:
        main([cmd, "--help"])
    assert exc.value.code == 0
    assert "usage: trtopt" in capsys.readouterr().out


def test_tensorrt_backend_without_tensorrt_is_one_line_exit_2(tmp_path):
    pytest.importorskip("onnx")
    if any(__import__("importlib.util").util.find_spec(m) is not None for m in ("tensorrt", "tensorrt_rtx")):
        pytest.skip("TensorRT (or TensorRT for RTX, which --backend tensorrt falls back to) is installed here")
    res = subprocess.run(
        [sys.executable, "-m", "trtopt", "build", str(tmp_path / "m.onnx"), "--backend", "tensorrt"],
        capture_output=True, text=True, timeout=120,
    )
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "[tensorrt]" in lines[0]  # pip install -e ".[tensorrt]" in a clone
    assert "Traceback" not in res.stderr


def test_trtopt_has_no_import_circle():
    """Module- and function-level imports alike: a function-level import is no way around a circle."""
    from _helpers.import_graph import circles, import_graph

    graph = import_graph()
    assert len(graph) > 100  # the scan saw the package
    assert circles(graph) == []


def test_the_scanner_finds_a_circle_through_a_function_level_import():
    from _helpers.import_graph import circles

    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_library_module_is_over_400_lines():
    from _helpers.import_graph import modules

    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}


def test_backends_never_import_the_application_layer():
    from _helpers.import_graph import import_graph

    app = ("trtopt.pipeline", "trtopt.recipe", "trtopt.run", "trtopt.cli", "trtopt.models")
    upward = {m: sorted(t for t in ts if t.startswith(app))
              for m, ts in import_graph().items() if m.startswith("trtopt.backends")}
    assert {m: ts for m, ts in upward.items() if ts} == {}
