"""Spine: recipe validation, export, ONNX Runtime runner, atomic writes and CLI exit codes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from _helpers.paths import REPO_ROOT
from trtopt.backends import open_runner
from trtopt.backends.onnxrt import OnnxRuntimeRunner
from trtopt.cli.main import main
from trtopt.errors import ConfigError, InputError
from trtopt.fileio import atomic_path, atomic_write_text


@pytest.fixture
def matmul_onnx(tmp_path):
    """y = x @ W with x: [batch, 4], W: [4, 3]."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        [onnx.numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "mm.onnx"
    onnx.save(model, str(path))
    return path, w


def test_onnxruntime_runner_computes_and_validates(matmul_onnx):
    path, w = matmul_onnx
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with open_runner("onnxruntime", path) as r:
        assert isinstance(r, OnnxRuntimeRunner)
        np.testing.assert_allclose(r.infer({"x": x})["y"], x @ w, rtol=1e-5)
        fn = r.prepare({"x": x})
        np.testing.assert_allclose(fn()[0], x @ w, rtol=1e-5)
        with pytest.raises(InputError, match="shape"):
            r.infer({"x": x[:, :3]})
        with pytest.raises(InputError, match="dtype"):
            r.infer({"x": x.astype(np.float64)})
        with pytest.raises(InputError, match="missing"):
            r.infer({"z": x})


def test_corrupt_and_missing_models_are_input_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf")
    with pytest.raises(InputError, match="cannot load"), OnnxRuntimeRunner(bad):
        pass
    with pytest.raises(InputError, match="not found"), OnnxRuntimeRunner(tmp_path / "nope.onnx"):
        pass
    with pytest.raises(ConfigError, match="unknown backend"):
        open_runner("tflite", bad)


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


def test_export_keeps_module_names_and_matches_torch(tmp_path):
    torch = pytest.importorskip("torch")
    from trtopt.export import ExportConfig, export_onnx
    from trtopt.models.digits import make_digits_cnn

    torch.manual_seed(0)
    model = make_digits_cnn(width=8).eval()
    x = torch.rand(3, 1, 8, 8)
    path = export_onnx(model, x, tmp_path / "d.onnx", ExportConfig())
    m = onnx.load(str(path))
    names = [n.name for n in m.graph.node]
    assert any("features.3" in n and n.endswith("Conv") for n in names)
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    with OnnxRuntimeRunner(path) as r:
        out = r.infer({"input": np.random.default_rng(1).random((7, 1, 8, 8), dtype=np.float32)})["logits"]
        assert out.shape == (7, 10)
        np.testing.assert_allclose(r.infer({"input": x.numpy()})["logits"], model(x).detach().numpy(), atol=1e-5)
    with pytest.raises(ConfigError):
        ExportConfig(opset=9)


def test_digits_split_is_disjoint_and_seeded():
    from trtopt.models.digits import load_digits_split

    a, b = load_digits_split(seed=0), load_digits_split(seed=0)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert len(a.x_train) + len(a.x_calib) + len(a.x_test) == 1797
    train = {x.tobytes() for x in a.x_train}
    overlap = sum(x.tobytes() in train for x in a.x_test)
    # load_digits has a few exact duplicate images; the split itself must not share indices
    assert overlap < 5
    assert a.x_test.dtype == np.float32 and a.x_test.shape[1:] == (1, 8, 8)
    assert a.x_test.min() >= 0.0 and a.x_test.max() <= 1.0


def test_recipe_rejects_unknown_keys_and_tables(tmp_path):
    from trtopt.recipe import load_recipe

    good = tmp_path / "r.toml"
    good.write_text('[recipe]\nname = "x"\nvariants = ["int8"]\n[workload]\nmodel = "digits_cnn"\n')
    r = load_recipe(good)
    assert r.run.variants == ("fp32", "int8")  # the FP32 baseline is always included
    bad_key = tmp_path / "k.toml"
    bad_key.write_text('[workload]\nmodle = "digits_cnn"\n')
    with pytest.raises(ConfigError, match="unknown key.*modle.*workload"):
        load_recipe(bad_key)
    bad_table = tmp_path / "t.toml"
    bad_table.write_text("[bogus]\na = 1\n")
    with pytest.raises(ConfigError, match="unknown table.*bogus"):
        load_recipe(bad_table)
    bad_variant = tmp_path / "v.toml"
    bad_variant.write_text('[recipe]\nvariants = ["int4"]\n')
    with pytest.raises(ConfigError, match="unknown variant"):
        load_recipe(bad_variant)
    with pytest.raises(InputError, match="not found"):
        load_recipe(tmp_path / "missing.toml")


def test_shipped_recipes_parse():

    from trtopt.cli.cmd_demo import demo_recipe_path
    from trtopt.recipe import load_recipe

    recipes = sorted(REPO_ROOT.joinpath("bench", "recipes").glob("*.toml"))
    assert recipes, "bench/recipes/ holds the shipped recipes"
    for path in recipes:
        load_recipe(path)
    assert demo_recipe_path().read_text() == (recipes[0].parent / "digits_demo.toml").read_text()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "missing.toml"], "recipe not found"),
        (["bench", "missing.onnx"], "missing.onnx"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_cli_unknown_recipe_key_exit_2(tmp_path, capsys):
    bad = tmp_path / "r.toml"
    bad.write_text('[bench]\nwarmpu = 3\n')
    assert main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "warmpu" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_ci_runs_the_readme_test_command():

    root = REPO_ROOT
    readme = (root / "README.md").read_text()
    ci = (root / ".ci" / "run").read_text()
    blocks = [b.split("```", 1)[0].strip() for b in readme.split("```bash")[1:]]
    test_cmd = next(b for b in blocks if "pytest" in b)
    assert test_cmd in ci.replace("pip install -q torch", "pip install -q torch"), (test_cmd, ci)
    demo_cmd = next(b for b in blocks if b.endswith("trtopt demo"))
    assert "torch==2.13.0" in demo_cmd


def test_unwritable_destinations_are_input_errors(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(InputError, match="cannot write"):
        atomic_write_text(afile / "report.json", "{}")  # parent is a file
    with pytest.raises(InputError, match="directory"):
        atomic_write_text(tmp_path, "{}")


def test_digits_model_can_be_saved_whole(tmp_path):
    torch = pytest.importorskip("torch")
    from trtopt.models.digits import make_digits_cnn

    model = make_digits_cnn(width=4)
    torch.save(model, tmp_path / "m.pt")
    loaded = torch.load(tmp_path / "m.pt", weights_only=False)
    x = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
