"""The recipe pipeline on the user's own model (factory with two inputs, .onnx), end to end."""

from __future__ import annotations

import importlib
import json
import textwrap

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

import trtopt
from _helpers.user_project import FAST_BENCH, FAST_BENCH_TOML, make_package
from trtopt.errors import ConfigError, InputError

VOCAB, SEQ, CLASSES = 50, 12, 4
SPECS = [f"input_ids:int64:batchx{SEQ}:0..{VOCAB}", f"attention_mask:int64:batchx{SEQ}:0..2"]

MODEL_SRC = textwrap.dedent(f"""
    import torch


    class TinyEncoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding({VOCAB}, 16)
            self.fc1 = torch.nn.Linear(16, 32)
            self.fc2 = torch.nn.Linear(32, {CLASSES})

        def forward(self, input_ids, attention_mask):
            h = self.emb(input_ids)
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
            return self.fc2(torch.relu(self.fc1(pooled)))


    def make():
        torch.manual_seed(0)
        return TinyEncoder()


    def broken():
        raise RuntimeError("no such checkpoint")


    class OneInput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(8, 32)
            self.fc2 = torch.nn.Linear(32, {CLASSES})

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))


    def make_one():
        torch.manual_seed(0)
        return OneInput()
""")


@pytest.fixture()
def userpkg(tmp_path, monkeypatch):
    """A user package ``byompkg_<n>`` importable from tmp_path; returns its name."""
    return make_package(tmp_path, monkeypatch, {"mod": MODEL_SRC})


def _token_data(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, size=(n, SEQ)).astype(np.int64)
    mask = (rng.random((n, SEQ)) < 0.8).astype(np.int64)
    mask[:, 0] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _write_data(folder, n_cal=16, n_eval=24):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "calib.npz", **_token_data(n_cal, 1))
    ev = _token_data(n_eval, 2)
    np.savez(folder / "eval.npz", **ev, labels=(ev["input_ids"][:, 0] % CLASSES).astype(np.int64))
    return ev


def _recipe(pkg: str, **workload) -> dict:
    return {
        "recipe": {"name": "byom", "variants": ["fp32", "int8"]},
        "workload": {"model": f"{pkg}.mod:make", "inputs": SPECS, **workload},
        "bench": FAST_BENCH,
    }


def _variants(out):
    return {v["name"]: v for v in json.loads((out / "report.json").read_text())["variants"]}


def test_two_input_factory_recipe_runs_end_to_end(tmp_path, userpkg):
    ev = _write_data(tmp_path / "data")
    rec = _recipe(userpkg, calib_data=str(tmp_path / "data" / "calib.npz"),
                  eval_data=str(tmp_path / "data" / "eval.npz"))
    out = tmp_path / "out"
    result = trtopt.Pipeline(trtopt.recipe_from_dict(rec), out).run()
    v = _variants(out)
    assert v["fp32"]["status"] == "ok" and v["int8"]["status"] == "ok", v
    # the exported graph has both inputs, int64, with a dynamic batch axis
    fp32 = onnx.load(str(out / "models" / "dense-fp32.onnx"))
    ins = {i.name: i for i in fp32.graph.input}
    assert list(ins) == ["input_ids", "attention_mask"]
    assert ins["input_ids"].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert ins["input_ids"].type.tensor_type.shape.dim[0].dim_param == "batch"
    # the task metric is computed against eval_data's labels: recompute it with the torch model
    import importlib

    import torch

    model = importlib.import_module(f"{userpkg}.mod").make().eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(ev["input_ids"]), torch.from_numpy(ev["attention_mask"])).numpy()
    want = 100.0 * np.mean(logits.argmax(1) == ev["input_ids"][:, 0] % CLASSES)
    assert v["fp32"]["accuracy"]["value"] == pytest.approx(want, abs=1e-6)
    int8 = onnx.load(str(out / "models" / "int8.onnx"))
    assert any(n.op_type == "QuantizeLinear" for n in int8.graph.node)
    assert "random inputs" not in result.report.workload["description"]


def test_no_data_uses_random_feeds_in_range_and_says_so(tmp_path, userpkg):
    out = tmp_path / "out"
    result = trtopt.run_recipe({**_recipe(userpkg), "workload": {"model": f"{userpkg}.mod:make", "inputs": SPECS,
                                                                  "num_calib": 16, "num_eval": 8}}, out)
    v = _variants(out)
    assert v["fp32"]["status"] == "ok" and v["int8"]["status"] == "ok", v
    assert "random inputs" in result.report.workload["description"]
    assert "random inputs" in (out / "report.md").read_text()


def test_single_input_user_model_prunes_and_finetunes(tmp_path, userpkg):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype(np.float32)
    np.savez(tmp_path / "train.npz", x=x, labels=(x[:, 0] > 0).astype(np.int64))
    rec = {
        "recipe": {"name": "one", "variants": ["fp32", "sparse24-fp32"]},
        "workload": {"model": f"{userpkg}.mod:make_one", "inputs": ["x:float32:batchx8"], "train_data": "train.npz",
                     "num_calib": 16, "num_eval": 8},
        "prune": {"method": "magnitude", "min_params": 0},
        "finetune": {"epochs": 1},
        "bench": FAST_BENCH,
    }
    stages = []
    out = tmp_path / "out"
    trtopt.Pipeline(trtopt.recipe_from_dict(rec, base_dir=tmp_path), out, progress=lambda s, d: stages.append(s)).run()
    assert "prune" in stages and "finetune" in stages
    v = _variants(out)
    assert v["sparse24-fp32"]["status"] == "ok", v
    from onnx import numpy_helper

    sparse = onnx.load(str(out / "models" / "sparse-fp32.onnx"))
    w = [numpy_helper.to_array(t) for t in sparse.graph.initializer if t.name.endswith("fc1.weight")]
    assert w, [t.name for t in sparse.graph.initializer]
    groups = w[0].reshape(w[0].shape[0], -1, 4)
    assert ((groups != 0).sum(-1) <= 2).all()  # 2:4 pattern kept through fine-tuning and export


def test_two_input_user_model_finetunes(tmp_path, userpkg):
    tr = _token_data(32, 3)
    np.savez(tmp_path / "train.npz", **tr, labels=(tr["input_ids"][:, 0] % CLASSES).astype(np.int64))
    rec = {**_recipe(userpkg, train_data=str(tmp_path / "train.npz"), num_calib=16, num_eval=8),
           "prune": {"method": "magnitude"}, "finetune": {"epochs": 1}}
    rec["recipe"] = {"name": "ft", "variants": ["fp32", "sparse24-fp32"]}
    stages = []
    trtopt.Pipeline(trtopt.recipe_from_dict(rec), tmp_path / "out", progress=lambda s, d: stages.append(s)).run()
    assert "finetune" in stages
    assert _variants(tmp_path / "out")["sparse24-fp32"]["status"] == "ok"


def _export_onnx(pkg, path):
    import importlib

    from trtopt.export import export_with_specs
    from trtopt.inputs import parse_input_specs

    model = importlib.import_module(f"{pkg}.mod").make().eval()
    export_with_specs(model, parse_input_specs(SPECS), path)
    return path


def test_onnx_model_skips_sparse_variants_with_a_note(tmp_path, userpkg):
    path = _export_onnx(userpkg, tmp_path / "enc.onnx")
    rec = {"recipe": {"name": "onnx", "variants": ["fp32", "int8", "sparse24-fp32", "sparse24-int8"]},
           "workload": {"model": str(path), "num_calib": 16, "num_eval": 8},  # specs read from the graph
           "bench": FAST_BENCH}
    out = tmp_path / "out"
    stages = []
    result = trtopt.Pipeline(trtopt.recipe_from_dict(rec), out, progress=lambda s, d: stages.append(s)).run()
    v = _variants(out)
    assert v["fp32"]["status"] == "ok" and v["int8"]["status"] == "ok", v
    for name in ("sparse24-fp32", "sparse24-int8"):
        assert v[name]["status"] == "skipped"
        assert "model given as ONNX" in v[name]["reason"]
    assert "prune" not in stages and "export" not in stages
    assert "model given as ONNX" in result.report.workload["description"]


def test_relative_data_paths_resolve_against_the_recipe_folder(tmp_path, userpkg, monkeypatch):
    import importlib

    import torch

    folder = tmp_path / "project"
    _write_data(folder / "data")
    torch.save(importlib.import_module(f"{userpkg}.mod").make().state_dict(), folder / "w.pt")
    toml = folder / "recipe.toml"
    toml.write_text(textwrap.dedent(f"""
        [recipe]
        name = "rel"
        variants = ["fp32"]
        [workload]
        model = "{userpkg}.mod:make"
        inputs = {json.dumps(SPECS)}
        calib_data = "data/calib.npz"
        eval_data = "data/eval.npz"
        weights = "w.pt"
    """))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    rec = trtopt.load_recipe(toml)
    assert rec.workload.calib_data == str(folder.resolve() / "data" / "calib.npz")
    assert rec.workload.eval_data == str(folder.resolve() / "data" / "eval.npz")
    assert rec.workload.weights == str(folder.resolve() / "w.pt")
    from trtopt.models.load import load_workload

    wl = load_workload(rec.workload)  # reads the data (and weights) from the recipe's folder, not the CWD
    assert wl.count(wl.eval_x) == 24 and wl.eval_y is not None
    with pytest.raises(InputError, match="not found"):  # relative to the CWD it would not exist either way
        trtopt.recipe_from_dict({"workload": {"model": f"{userpkg}.mod:make", "inputs": SPECS,
                                              "calib_data": "data/calib.npz"}})


def _assert_fails_before_writing(rec, tmp_path, exc, match):
    out = tmp_path / "out"
    with pytest.raises(exc, match=match):
        trtopt.Pipeline(trtopt.recipe_from_dict(rec), out).run()
    assert not out.exists() or not any(out.rglob("*")), sorted(out.rglob("*"))


def test_factory_not_importable(tmp_path, userpkg):
    _assert_fails_before_writing(_recipe(userpkg.replace("byompkg", "nopkg")), tmp_path, InputError, "nopkg")


def test_factory_raising(tmp_path, userpkg):
    rec = _recipe(userpkg)
    rec["workload"]["model"] = f"{userpkg}.mod:broken"
    _assert_fails_before_writing(rec, tmp_path, InputError, "no such checkpoint")


def test_forward_fails_on_declared_inputs(tmp_path, userpkg):
    rec = _recipe(userpkg)
    rec["workload"]["inputs"] = [f"input_ids:float32:batchx{SEQ}", f"attention_mask:int64:batchx{SEQ}"]
    _assert_fails_before_writing(rec, tmp_path, InputError, "forward failed")


def test_spec_dtype_contradicting_onnx(tmp_path, userpkg):
    path = _export_onnx(userpkg, tmp_path / "enc.onnx")
    rec = {"recipe": {"variants": ["fp32"]}, "bench": FAST_BENCH,
           "workload": {"model": str(path), "inputs": [f"input_ids:int32:batchx{SEQ}",
                                                       f"attention_mask:int64:batchx{SEQ}"]}}
    _assert_fails_before_writing(rec, tmp_path, InputError, "declared int32 but the model takes int64")


def test_npz_missing_an_input(tmp_path, userpkg):
    np.savez(tmp_path / "calib.npz", input_ids=_token_data(4, 0)["input_ids"])
    rec = _recipe(userpkg, calib_data=str(tmp_path / "calib.npz"))
    _assert_fails_before_writing(rec, tmp_path, InputError, "attention_mask")


def test_missing_inputs_key_and_missing_data_file_are_config_errors(tmp_path, userpkg):
    with pytest.raises(ConfigError, match="workload.inputs is required"):
        trtopt.recipe_from_dict({"workload": {"model": f"{userpkg}.mod:make"}})
    with pytest.raises(InputError, match="not found"):
        trtopt.recipe_from_dict(_recipe(userpkg, eval_data=str(tmp_path / "nope.npz")))
    with pytest.raises(ConfigError, match="train_data"):
        trtopt.recipe_from_dict({**_recipe(userpkg), "finetune": {"epochs": 1}})


def test_sparsegpt_calibrates_a_two_input_model_from_the_calib_npz(tmp_path, userpkg):
    _write_data(tmp_path / "data")
    rec = {**_recipe(userpkg, calib_data=str(tmp_path / "data" / "calib.npz"), num_eval=8),
           "prune": {"method": "sparsegpt", "min_params": 0}}
    rec["recipe"] = {"name": "sg", "variants": ["fp32", "sparse24-fp32"]}
    out = tmp_path / "out"
    trtopt.Pipeline(trtopt.recipe_from_dict(rec), out).run()
    v = _variants(out)
    assert v["sparse24-fp32"]["status"] == "ok", v
    from onnx import numpy_helper

    sparse = onnx.load(str(out / "models" / "sparse-fp32.onnx"))
    dense = onnx.load(str(out / "models" / "dense-fp32.onnx"))
    pick = lambda m: next(numpy_helper.to_array(t) for t in m.graph.initializer if t.name == "fc1.weight")  # noqa: E731
    w = pick(sparse)
    assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all()
    # SparseGPT updates the kept weights (OBS compensation): not just a mask of the dense weights
    kept = w != 0
    assert not np.allclose(w[kept], pick(dense)[kept])


METRICS_SRC = textwrap.dedent("""
    import numpy as np


    def first_token_match(outputs, labels):
        (logits,) = outputs.values()
        return float(100.0 * np.mean(logits.argmax(1) == labels))


    def explodes(outputs, labels):
        raise KeyError("boxes")
""")


def test_recipe_metric_by_reference_is_reported(tmp_path, userpkg):
    (tmp_path / userpkg / "metrics.py").write_text(METRICS_SRC)
    _write_data(tmp_path / "data")
    rec = _recipe(userpkg, calib_data="data/calib.npz", eval_data="data/eval.npz")
    rec["bench"] = {**FAST_BENCH, "metric": f"{userpkg}.metrics:first_token_match"}
    out = tmp_path / "out"
    trtopt.Pipeline(trtopt.recipe_from_dict(rec, base_dir=tmp_path), out).run()
    v = _variants(out)
    acc = v["fp32"]["accuracy"]
    assert acc["metric"] == "first_token_match" and acc["ref"] == f"{userpkg}.metrics:first_token_match"
    # the same number as the built-in top-1 on these labels: computed by the user's function, end to end
    rec["bench"] = FAST_BENCH
    trtopt.Pipeline(trtopt.recipe_from_dict(rec, base_dir=tmp_path), tmp_path / "out2").run()
    assert acc["value"] == pytest.approx(_variants(tmp_path / "out2")["fp32"]["accuracy"]["value"])


def test_recipe_metric_raising_or_without_labels_stops_the_run(tmp_path, userpkg):
    (tmp_path / userpkg / "metrics.py").write_text(METRICS_SRC)
    _write_data(tmp_path / "data")
    rec = _recipe(userpkg, calib_data="data/calib.npz", eval_data="data/eval.npz")
    rec["recipe"]["variants"] = ["fp32"]
    rec["bench"] = {**FAST_BENCH, "metric": f"{userpkg}.metrics:explodes"}
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"metric '.*explodes' raised KeyError: 'boxes'"):
        trtopt.Pipeline(trtopt.recipe_from_dict(rec, base_dir=tmp_path), out).run()
    assert not (out / "report.json").exists() and not (out / "report.md").exists()
    assert not out.exists()  # the models and tables written before the metric ran are removed too
    rec["workload"] = {k: v for k, v in rec["workload"].items() if k != "eval_data"}
    out2 = tmp_path / "out2"
    with pytest.raises(ConfigError, match="needs labels"):
        trtopt.Pipeline(trtopt.recipe_from_dict(rec, base_dir=tmp_path), out2).run()
    assert not out2.exists() or not any(out2.rglob("*.onnx"))


def test_finetune_by_distillation_needs_no_labels_and_records_intact_masks(tmp_path, userpkg):
    tr = _token_data(32, 3)
    np.savez(tmp_path / "train.npz", **tr)  # no labels: loss "kd" distils from the dense model
    rec = {**_recipe(userpkg, train_data="train.npz", num_calib=16, num_eval=8),
           "prune": {"method": "magnitude", "min_params": 0}, "finetune": {"epochs": 1, "loss": "kd"}}
    rec["recipe"] = {"name": "kd", "variants": ["fp32", "sparse24-fp32"]}
    result = trtopt.Pipeline(trtopt.recipe_from_dict(rec, base_dir=tmp_path), tmp_path / "out").run()
    ft = result.report.workload["stages"]["finetune"]
    assert ft["loss"] == "kd" and ft["masks_intact"] is True and ft["final_loss"] >= 0
    assert _variants(tmp_path / "out")["sparse24-fp32"]["status"] == "ok"
    rec["finetune"] = {"epochs": 1, "loss": "ce"}  # cross-entropy needs the labels the file lacks: one line
    with pytest.raises(InputError, match="label"):
        trtopt.Pipeline(trtopt.recipe_from_dict(rec, base_dir=tmp_path), tmp_path / "out2").run()


TWO_OUTPUTS_SRC = textwrap.dedent("""
    import torch


    class BoxesAndLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = torch.nn.Linear(8, 32)
            self.boxes = torch.nn.Linear(32, 4)
            self.logits = torch.nn.Linear(32, 5)

        def forward(self, x):
            h = torch.nn.functional.silu(self.body(x))
            return torch.sigmoid(self.boxes(h)), self.logits(h)


    def make():
        return BoxesAndLogits()
""")


def test_every_output_of_a_multi_output_model_is_compared(tmp_path, userpkg):
    (tmp_path / userpkg / "two.py").write_text(TWO_OUTPUTS_SRC)
    rec = {"recipe": {"name": "two", "variants": ["fp32", "fp16"]},
           "workload": {"model": f"{userpkg}.two:make", "inputs": ["x:float32:batchx8"],
                        "output_names": ["boxes", "logits"], "num_calib": 16, "num_eval": 16},
           "bench": {**FAST_BENCH, "regression_outputs": ["boxes"]}}
    trtopt.Pipeline(trtopt.recipe_from_dict(rec), tmp_path / "out").run()
    fp16 = _variants(tmp_path / "out")["fp16"]
    assert set(fp16["fidelity"]) == {"boxes", "logits"}, fp16["fidelity"]
    tols = fp16["fidelity_tolerances"]  # boxes are a regression output: no argmax-agreement floor there
    assert tols["boxes"]["min_top1_agreement"] is None and tols["logits"]["min_top1_agreement"] == 99.0


def test_unwritable_out_is_reported_before_any_stage(tmp_path, userpkg):
    (tmp_path / "taken").write_text("a file where the output folder should go")
    stages = []
    with pytest.raises(InputError, match="is an existing file"):
        trtopt.Pipeline(trtopt.recipe_from_dict(_recipe(userpkg)), tmp_path / "taken",
                        progress=lambda s, d: stages.append(s)).run()
    assert stages == []


def test_inputs_in_another_order_than_forward_are_refused(tmp_path, userpkg):
    swapped = [SPECS[1], SPECS[0]]  # attention_mask first: would feed the mask into the ids and still run
    with pytest.raises(InputError, match=r"workload.inputs: inputs are declared in the order \['attention_mask', "
                                         r"'input_ids'\] but forward takes \(input_ids, attention_mask\)"):
        trtopt.Pipeline(trtopt.recipe_from_dict({**_recipe(userpkg), "workload": {
            "model": f"{userpkg}.mod:make", "inputs": swapped}}), tmp_path / "out").run()
    from trtopt.cli.main import main

    rc = main(["export", "--model", f"{userpkg}.mod:make", "--input", swapped[0], "--input", swapped[1],
               "--out", str(tmp_path / "x.onnx")])
    assert rc == 2 and not (tmp_path / "x.onnx").exists()


def test_unknown_regression_output_in_a_recipe_is_an_error_up_front(tmp_path, userpkg):
    rec = {**_recipe(userpkg), "bench": {**FAST_BENCH, "regression_outputs": ["logits"]}}  # the output is "output"
    stages = []
    with pytest.raises(ConfigError, match=r"\['logits'\] are not outputs of the model \(outputs: \['output'\]\)"):
        trtopt.Pipeline(trtopt.recipe_from_dict(rec), tmp_path / "out", progress=lambda s, d: stages.append(s)).run()
    assert stages == ["workload"] and not (tmp_path / "out").exists()


def test_cli_export_and_recipe_name_a_single_output_alike(tmp_path, userpkg):
    from trtopt.cli.main import main

    assert main(["export", "--model", f"{userpkg}.mod:make", *[a for s in SPECS for a in ("--input", s)],
                 "--out", str(tmp_path / "x.onnx")]) == 0
    assert [o.name for o in onnx.load(str(tmp_path / "x.onnx")).graph.output] == ["output"]


def test_bench_batch_sizes_outside_the_declared_batch_range(tmp_path, userpkg):
    rec = {**_recipe(userpkg), "bench": {**FAST_BENCH, "batch_sizes": [64]}}  # SPECS' batch: 1..32
    with pytest.raises(ConfigError, match=r"batch_sizes \[64\] are outside the batch range 1..32 of input 'input_ids'"):
        trtopt.Pipeline(trtopt.recipe_from_dict(rec), tmp_path / "out").run()
    # a name the user gives is kept, whatever it is (also the old default "logits")
    from trtopt.export import ExportConfig, export_with_specs
    from trtopt.inputs import parse_input_specs

    model = importlib.import_module(f"{userpkg}.mod").make()
    export_with_specs(model, parse_input_specs(SPECS), tmp_path / "y.onnx", ExportConfig(output_names=("logits",)))
    assert [o.name for o in onnx.load(str(tmp_path / "y.onnx")).graph.output] == ["logits"]


def test_run_strict_fails_when_a_requested_variant_was_skipped(tmp_path, userpkg, capsys):
    from trtopt.cli.main import main

    path = _export_onnx(userpkg, tmp_path / "enc.onnx")
    (tmp_path / "r.toml").write_text(textwrap.dedent(f"""
        [recipe]
        variants = ["fp32", "sparse24-fp32"]
        [workload]
        model = "{path.name}"
        num_calib = 8
        num_eval = 8
    """) + FAST_BENCH_TOML)
    assert main(["run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "a")]) == 0
    assert main(["run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "b"), "--strict"]) == 1
    assert "sparse24-fp32: skipped" in capsys.readouterr().err
