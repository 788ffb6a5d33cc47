"""``trtopt export`` of your own model: factory references, --input specs for token-id / multi-input models."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from _helpers.user_project import token_net  # noqa: E402
from trtopt.cli.main import main  # noqa: E402

PROJECT = '''
import torch
from torch import nn


{token_net}

class SiluNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.SiLU(), nn.Conv2d(16, 32, 3, padding=1),
                                  nn.SiLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 5))

    def forward(self, x):
        return self.body(x)


def silu():
    torch.manual_seed(0)
    return SiluNet()


def not_a_module():
    return 42


def broken():
    raise ValueError("no config")
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user project: package ``byom_export_pkg`` with model factories, importable from tmp_path."""
    pkg = tmp_path / "byom_export_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(textwrap.dedent(PROJECT).replace("{token_net}", token_net()))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    for m in [m for m in sys.modules if m.startswith("byom_export_pkg")]:
        del sys.modules[m]


def _one_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_export_token_model_with_input_specs(project, capsys):
    out = project / "tok.onnx"
    rc = main(["export", "--model", "byom_export_pkg.models:tokens", "--input", "ids:int64:batchx16:0..50",
               "--input", "mask:int64:batchx16", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    ins = {i.name: i.type.tensor_type for i in m.graph.input}
    assert list(ins) == ["ids", "mask"]
    assert all(t.elem_type == onnx.TensorProto.INT64 for t in ins.values())
    assert ins["ids"].shape.dim[0].dim_param == "batch" and ins["ids"].shape.dim[1].dim_value == 16
    # the exported graph computes what the PyTorch model computes, at a batch size other than the example's
    from byom_export_pkg.models import tokens

    rng = np.random.default_rng(1)
    ids = rng.integers(0, 50, (3, 16)).astype(np.int64)
    mask = (rng.random((3, 16)) > 0.3).astype(np.int64)
    with torch.no_grad():
        want = tokens()(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"ids": ids, "mask": mask})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_export_weights_and_output_name(project, capsys):
    from byom_export_pkg.models import silu

    trained = silu()
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.5)
    torch.save(trained.state_dict(), project / "w.pt")
    out = project / "silu.onnx"
    rc = main(["export", "--model", "byom_export_pkg.models:silu", "--weights", str(project / "w.pt"),
               "--input", "image:float32:batch=1..2..8x3x8x8", "--output-name", "scores", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = trained(torch.from_numpy(x)).numpy()
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["scores"]
    np.testing.assert_allclose(sess.run(None, {"image": x})[0], want, rtol=1e-4, atol=1e-5)


def test_input_shape_still_works_for_a_float_module(project, capsys):
    from byom_export_pkg.models import silu

    torch.save(silu(), project / "silu.pt")
    rc = main(["export", "--module", str(project / "silu.pt"), "--input-shape", "1,3,8,8",
               "--out", str(project / "s.onnx")])
    assert rc == 0, capsys.readouterr().err
    m = onnx.load(str(project / "s.onnx"))
    assert m.graph.input[0].name == "input" and m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


@pytest.mark.parametrize("argv, expect", [
    (["--model", "byom_export_pkg.models:tokens", "--input-shape", "1,16"], "--input NAME:int64"),
    (["--model", "byom_export_pkg.nosuch:tokens", "--input", "x:float32:1x3"], "cannot import module"),
    (["--model", "byom_export_pkg.models:not_a_module", "--input", "x:float32:1x3"], "not a torch.nn.Module"),
    (["--model", "byom_export_pkg.models:broken", "--input", "x:float32:1x3"], "raised ValueError: no config"),
    (["--model", "byom_export_pkg.models:silu", "--input", "x:float32:batchx5x8x8"], "forward failed"),
    (["--model", "byom_export_pkg.models:tokens", "--input", "ids:float32:batchx16",
      "--input", "mask:int64:batchx16"], "forward failed"),
    (["--model", "given.onnx"], "nothing to export"),
])
def test_export_bad_input_one_line_exit_2_nothing_written(project, capsys, argv, expect):
    out = project / "o" / "x.onnx"
    assert main(["export", *argv, "--out", str(out)]) == 2
    assert expect in _one_line(capsys)
    assert not (project / "o").exists() or not any((project / "o").iterdir())


def test_export_help_lists_the_spec_syntax(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "NAME:DTYPE:SHAPE" in text and "int64" in text and "batch=1..8..32" in text
