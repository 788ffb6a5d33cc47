"""The recipe: its [workload] for the user's own model: forms, paths, profiles, Python API, CLI."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper

import trtopt
from _helpers.paths import REPO_ROOT
from _helpers.user_project import FAST_BENCH, FAST_BENCH_TOML, make_package
from trtopt.cli.main import main
from trtopt.errors import ConfigError, InputError

SPECS = ["input_ids:int64:batchxseq=4..12..16:0..50", "attention_mask:int64:batchxseq=4..12..16:0..2"]

MODEL_SRC = textwrap.dedent("""
    import torch


    class Enc(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(50, 8)
            self.fc = torch.nn.Linear(8, 3)

        def forward(self, input_ids, attention_mask):
            h = self.emb(input_ids)
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return self.fc((h * m).sum(1) / m.sum(1).clamp(min=1.0))


    def make():
        torch.manual_seed(0)
        return Enc()
""")


@pytest.fixture()
def userpkg(tmp_path, monkeypatch):
    return make_package(tmp_path, monkeypatch, {"mod": MODEL_SRC}, name=f"byomrec_{abs(hash(str(tmp_path))) % 10**8}")


def test_import_trtopt_exports_the_recipe_api_lazily():
    code = ("import sys, trtopt\n"
            "assert 'torch' not in sys.modules and 'trtopt.pipeline' not in sys.modules\n"
            "assert {'Pipeline', 'run_recipe', 'recipe_from_dict', 'load_recipe'} <= set(dir(trtopt))\n"
            "from trtopt.pipeline import Pipeline, run_recipe\n"
            "assert trtopt.Pipeline is Pipeline and trtopt.run_recipe is run_recipe\n"
            "print('LAZY-OK')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "LAZY-OK" in res.stdout, res.stderr
    with pytest.raises(AttributeError):
        trtopt.no_such_name  # noqa: B018


def test_tensorrt_profile_comes_from_the_specs(userpkg):
    from trtopt.inputs import parse_input_specs
    from trtopt.run.engines import runner_options

    cfg = runner_options("tensorrt-rtx", "int8", parse_input_specs(SPECS), "unused")["config"]
    # batch: bare name = 1..1..32; seq = 4..12..16 (min..opt..max)
    assert [str(p) for p in cfg.shapes] == ["input_ids:1x4,1x12,32x16", "attention_mask:1x4,1x12,32x16"]
    assert cfg.precision == "int8"


def test_dynamic_sequence_axis_is_exported_and_built(tmp_path, userpkg):
    out = tmp_path / "out"
    res = trtopt.run_recipe({"recipe": {"name": "seq", "variants": ["fp32"]},
                             "workload": {"model": f"{userpkg}.mod:make", "inputs": SPECS, "num_calib": 8,
                                          "num_eval": 8},
                             "bench": FAST_BENCH}, out)
    m = onnx.load(str(out / "models" / "dense-fp32.onnx"))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    assert dims == {"input_ids": ["batch", "seq"], "attention_mask": ["batch", "seq"]}
    # a sequence length other than the export's runs in ONNX Runtime (the axis really is dynamic)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out / "models" / "dense-fp32.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": np.ones((2, 16), np.int64), "attention_mask": np.ones((2, 16), np.int64)})
    assert got[0].shape == (2, 3)
    row = res.report.variants[0]
    assert row.status == "ok"
    if importlib.util.find_spec("tensorrt_rtx") is not None:  # the RTX engine column gets the profile too
        assert row.engine.status == "ok", row.engine


def test_builtin_workloads_refuse_user_model_keys():
    with pytest.raises(ConfigError, match="not to the built-in workload 'digits_cnn'"):
        trtopt.recipe_from_dict({"workload": {"model": "digits_cnn", "inputs": ["x:float32:batchx64"]}})
    assert trtopt.recipe_from_dict({"workload": {"model": "resnet18"}}).workload.is_builtin


def test_unknown_model_form_lists_forms_and_builtins():
    with pytest.raises(ConfigError, match="package.module:function.*digits_cnn"):
        trtopt.recipe_from_dict({"workload": {"model": "resnet1000"}})


def test_torch_backend_with_an_onnx_model_is_refused(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    with pytest.raises(ConfigError, match="backend 'torch'"):
        trtopt.recipe_from_dict({"recipe": {"backend": "torch"}, "workload": {"model": str(tmp_path / "m.onnx")}})


def test_saved_module_and_onnx_paths_resolve_against_the_recipe_folder(tmp_path, userpkg, monkeypatch):
    import importlib

    import torch

    proj = tmp_path / "proj"
    proj.mkdir()
    torch.save(importlib.import_module(f"{userpkg}.mod").make(), proj / "enc.pt")
    (proj / "r.toml").write_text(textwrap.dedent(f"""
        [recipe]
        variants = ["fp32"]
        [workload]
        model = "enc.pt"
        inputs = {json.dumps(SPECS)}
        output_names = ["scores"]
        num_calib = 8
        num_eval = 8
    """) + FAST_BENCH_TOML)
    monkeypatch.chdir(tmp_path)
    rec = trtopt.load_recipe(proj / "r.toml")
    assert rec.workload.model == str(proj.resolve() / "enc.pt")
    out = tmp_path / "out"
    trtopt.Pipeline(rec, out).run()
    m = onnx.load(str(out / "models" / "dense-fp32.onnx"))
    assert [o.name for o in m.graph.output] == ["scores"]


def test_output_names_count_must_match_the_model(tmp_path, userpkg):
    rec = trtopt.recipe_from_dict({"recipe": {"variants": ["fp32"]},
                                   "workload": {"model": f"{userpkg}.mod:make", "inputs": SPECS,
                                                "output_names": ["a", "b"]}})
    with pytest.raises(InputError, match="output_names has 2"):
        trtopt.Pipeline(rec, tmp_path / "out").run()
    assert not (tmp_path / "out").exists()


def test_cli_run_bad_factory_is_one_line_exit_2(tmp_path, userpkg, capsys):

    (tmp_path / "r.toml").write_text(textwrap.dedent(f"""
        [recipe]
        variants = ["fp32"]
        [workload]
        model = "{userpkg}.mod:nope"
        inputs = {json.dumps(SPECS)}
    """))
    code = main(["run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "nope" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def _dynamic_width_onnx(path):

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "W"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])
    g = helper.make_graph([helper.make_node("ReduceMean", ["x"], ["y"], axes=[2], keepdims=0)], "g", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_onnx_with_an_unsized_dynamic_axis_needs_specs_or_data(tmp_path):
    path = _dynamic_width_onnx(tmp_path / "w.onnx")
    base = {"recipe": {"variants": ["fp32"]}, "bench": FAST_BENCH}
    rec = trtopt.recipe_from_dict({**base, "workload": {"model": str(path)}})
    with pytest.raises(InputError, match=r"'x' axis 2 \('W'\) is dynamic.*x:float32:batchx3xW=16..64..128"):
        trtopt.Pipeline(rec, tmp_path / "out").run()
    assert not (tmp_path / "out").exists()
    # declared: runs, and random inputs use the declared OPT width; the FP32 output is the graph's own
    out = tmp_path / "ok"
    res = trtopt.run_recipe({**base, "workload": {"model": str(path), "inputs": ["x:float32:batchx3xW=4..8..16"],
                                                  "num_eval": 4, "num_calib": 4}}, out)
    assert res.report.variants[0].status == "ok", res.report.variants[0].reason


def test_onnx_with_a_dynamic_sequence_takes_its_size_from_the_data(tmp_path, userpkg):
    """No workload.inputs: the graph gives names and dtypes, calib_data/eval_data the sequence length."""
    from trtopt.export import export_with_specs
    from trtopt.inputs import parse_input_specs

    model = importlib.import_module(f"{userpkg}.mod").make()
    path = export_with_specs(model, parse_input_specs(SPECS), tmp_path / "enc.onnx")  # [batch, seq] inputs
    rng = np.random.default_rng(0)
    for name, n in (("calib", 16), ("eval", 8)):
        np.savez(tmp_path / f"{name}.npz", input_ids=rng.integers(0, 50, (n, 10)).astype(np.int64),
                 attention_mask=np.ones((n, 10), np.int64))
    res = trtopt.run_recipe({"recipe": {"name": "seq", "variants": ["fp32", "int8"]},
                             "workload": {"model": str(path), "calib_data": str(tmp_path / "calib.npz"),
                                          "eval_data": str(tmp_path / "eval.npz")},
                             "bench": FAST_BENCH}, tmp_path / "out")
    rows = {v.name: v for v in res.report.variants}
    assert rows["fp32"].status == "ok" and rows["int8"].status == "ok", {k: v.reason for k, v in rows.items()}
    assert "input_ids:int64:batch=1..1..32xseq=10" in " ".join(res.report.workload["input_specs"])
    if importlib.util.find_spec("tensorrt_rtx") is not None:  # the engine column's profile has seq = 10
        assert rows["int8"].engine.status == "ok", rows["int8"].engine


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
