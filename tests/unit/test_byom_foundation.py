"""Issue 13 foundation: model references, input specs, the one .npz data format."""

from __future__ import annotations

import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtopt.backends.tensorrt.config import Profile
from trtopt.backends.tensorrt.profiles import profiles_from_specs
from trtopt.dataset import Dataset, load_npz, save_npz
from trtopt.errors import ConfigError, InputError
from trtopt.inputs import (
    check_specs_against_onnx,
    dynamic_axes,
    embedding_rows,
    parse_input_spec,
    parse_input_specs,
    random_feeds,
    specs_from_onnx,
)
from trtopt.refs import import_callable, is_import_ref


# -- input specs -------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "mn", "opt", "mx"), [
    ("input:float32:batchx3x224x224", (1, 3, 224, 224), (1, 3, 224, 224), (32, 3, 224, 224)),
    ("ids:int64:batch=1..8..32xseq=16..128", (1, 16), (8, 128), (32, 128)),
    ("x:float32:-1x16", (1, 16), (1, 16), (32, 16)),
    ("x:float16:2x3", (2, 3), (2, 3), (2, 3)),
])
def test_spec_shapes(text, mn, opt, mx):
    s = parse_input_spec(text)
    assert (s.shape("min"), s.shape("opt"), s.shape("max")) == (mn, opt, mx)
    assert parse_input_spec(str(s)) == s  # the text form round-trips


@pytest.mark.parametrize("bad", ["x", "x:int8:1", "x:float32:1xseq", "x:float32:1x0", "x:int64:4:9..2",
                                 "x:float32:batch=8..1", "x:float32:1x2..3..4..5"])
def test_bad_specs_are_one_line_config_errors(bad):
    with pytest.raises(ConfigError, match="--input"):
        parse_input_spec(bad)


def test_named_dim_must_agree_across_inputs():
    with pytest.raises(ConfigError, match="seq"):
        parse_input_specs(["a:int64:batchxseq=1..16", "b:int64:batchxseq=1..32"])


def test_dynamic_axes_and_profiles():
    specs = parse_input_specs(["ids:int64:batch=1..8..32xseq=16..64..128", "mask:int64:batch=1..8..32xseq=16..64..128"])
    assert dynamic_axes(specs) == {"ids": {0: "batch", 1: "seq"}, "mask": {0: "batch", 1: "seq"}}
    assert profiles_from_specs(specs)[0] == Profile("ids", (1, 16), (8, 64), (32, 128))


def _embedding_model(rows: int = 50, as_constant_node: bool = False) -> onnx.ModelProto:
    table = np.random.default_rng(0).standard_normal((rows, 8)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["ids"], ["ids64"], to=TensorProto.INT64),
             helper.make_node("Gather", ["table", "ids64"], ["emb"]),
             helper.make_node("ReduceMean", ["emb"], ["out"], axes=[1], keepdims=0)]
    inits = [numpy_helper.from_array(table, "table")]
    if as_constant_node:
        nodes.insert(0, helper.make_node("Constant", [], ["table"], value=inits.pop()))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT32, ["N", 6])],
                          [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("const_node", [False, True])
def test_random_token_ids_stay_below_the_embedding_rows(const_node):
    import onnxruntime as ort

    model = _embedding_model(rows=50, as_constant_node=const_node)
    assert embedding_rows(model) == {"ids": 50}
    (spec,) = specs_from_onnx(model)
    assert (spec.dtype, spec.low, spec.high) == ("int32", 0, 50)
    feeds = random_feeds([spec], 64, seed=1)
    assert feeds["ids"].shape == (64, 6) and feeds["ids"].max() < 50 and feeds["ids"].min() >= 0
    assert len(np.unique(feeds["ids"])) > 20  # really random ids, not a constant
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert sess.run(None, feeds)[0].shape == (64, 8)


def test_specs_contradicting_the_model_are_named():
    model = _embedding_model()
    with pytest.raises(InputError, match="declared int64 but the model takes int32"):
        check_specs_against_onnx([parse_input_spec("ids:int64:batchx6")], model)
    with pytest.raises(InputError, match="rank"):
        check_specs_against_onnx([parse_input_spec("ids:int32:batchx6x1")], model)
    with pytest.raises(InputError, match="fixes it to 6"):
        check_specs_against_onnx([parse_input_spec("ids:int32:batchx7")], model)
    with pytest.raises(InputError, match="not among"):
        check_specs_against_onnx([parse_input_spec("tokens:int32:batchx6")], model)
    check_specs_against_onnx([parse_input_spec("ids:int32:batchx6:0..50")], model)


# -- data format -------------------------------------------------------------------------------
def test_npz_round_trip_with_labels_and_static(tmp_path):
    ids = np.arange(12, dtype=np.int32).reshape(2, 6)
    save_npz(tmp_path / "d.npz", {"ids": ids}, labels=np.array([0, 1]), static={"state": np.zeros((1, 4), np.float32)})
    ds = load_npz(tmp_path / "d.npz")
    assert len(ds) == 2 and ds.labels.tolist() == [0, 1] and list(ds.static) == ["state"]
    np.testing.assert_array_equal(ds.inputs["ids"], ids)
    assert set(ds.take(slice(0, 1))) == {"ids", "state"}


@pytest.mark.parametrize(("arrays", "spec", "match"), [
    ({"tokens": np.zeros((2, 6), np.int32)}, "ids:int32:batchx6", r"no array for input\(s\) \['ids'\]"),
    ({"ids": np.zeros((2, 6), np.int64)}, "ids:int32:batchx6", "is int64; the model input is int32"),
    ({"ids": np.zeros((2, 7), np.int32)}, "ids:int32:batchx6", "size 7 on axis 1"),
    ({"ids": np.zeros((2, 6, 1), np.int32)}, "ids:int32:batchx6", "rank 3"),
    ({"ids": np.zeros((2, 6), np.int32), "extra": np.zeros(2)}, "ids:int32:batchx6", "not model inputs"),
])
def test_bad_data_named_in_words(tmp_path, arrays, spec, match):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(InputError, match=match):
        load_npz(tmp_path / "d.npz").check([parse_input_spec(spec)])


def test_float_data_is_cast_and_labels_required_when_asked(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((3, 2), np.float64))
    ds = load_npz(tmp_path / "d.npz").check([parse_input_spec("x:float32:batchx2")])
    assert ds.inputs["x"].dtype == np.float32
    with pytest.raises(InputError, match="no 'labels'"):
        ds.check([parse_input_spec("x:float32:batchx2")], need_labels=True)


def test_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="is a directory"):
        load_npz(tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_npz(tmp_path / "missing.npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    with pytest.raises(InputError, match="single array"):
        load_npz(tmp_path / "one.npy")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(InputError, match="pickled"):
        load_npz(tmp_path / "obj.npz")
    with pytest.raises(InputError, match="different numbers of samples"):
        Dataset({"a": np.zeros(3), "b": np.zeros(4)})


# -- references ----------------------------------------------------------------------------------
@pytest.fixture
def user_pkg(tmp_path, monkeypatch):
    pkg = tmp_path / "userpkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(textwrap.dedent("""
        import torch

        class Tiny(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = torch.nn.Embedding(50, 16)
                self.fc = torch.nn.Linear(16, 4)

            def forward(self, ids, mask):
                h = self.emb(ids) * mask.unsqueeze(-1).float()
                return self.fc(h.mean(1))

        def make():
            return Tiny()

        def broken():
            raise ValueError("no config file")

        def not_a_module():
            return 42
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_import_refs(user_pkg):
    assert is_import_ref("userpkg.nets:make") and not is_import_ref("model.pt") and not is_import_ref("resnet18")
    assert callable(import_callable("userpkg.nets:make"))
    with pytest.raises(InputError, match="cannot import module 'nopkg.nets'.*PYTHONPATH"):
        import_callable("nopkg.nets:make", "model factory")
    with pytest.raises(InputError, match="has no attribute 'nothing'"):
        import_callable("userpkg.nets:nothing")


def test_model_reference_forms_and_errors(user_pkg, tmp_path):
    torch = pytest.importorskip("torch")
    from trtopt.models.reference import ModelRef, check_forward, load_model

    assert ModelRef.parse("resnet18").value == "trtopt.models.resnet:resnet18"
    assert ModelRef.parse("m.onnx").is_onnx
    with pytest.raises(ConfigError, match="not a factory"):
        ModelRef.parse("model.bin")
    with pytest.raises(ConfigError, match="applies to a factory"):
        ModelRef.parse("m.onnx", weights="w.pt")
    model = load_model("userpkg.nets:make")
    specs = parse_input_specs(["ids:int64:batchx12:0..50", "mask:int64:batchx12"])
    (out,) = check_forward(model, specs)
    assert tuple(out.shape) == (1, 4)
    with pytest.raises(InputError, match="forward failed on the declared inputs"):
        check_forward(model, parse_input_specs(["ids:float32:batchx12", "mask:int64:batchx12"]))
    with pytest.raises(InputError, match="raised ValueError: no config file"):
        load_model("userpkg.nets:broken")
    with pytest.raises(InputError, match="returned a int, not a torch.nn.Module"):
        load_model("userpkg.nets:not_a_module")
    # weights: a state dict from the same factory loads; one from another architecture is named
    torch.save(model.state_dict(), tmp_path / "w.pt")
    again = load_model("userpkg.nets:make", weights=tmp_path / "w.pt")
    assert torch.equal(again.emb.weight, model.emb.weight)
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match="do not fit the model"):
        load_model("userpkg.nets:make", weights=tmp_path / "bad.pt")
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    with pytest.raises(InputError, match="holds a state dict, not a module"):
        load_model(str(tmp_path / "sd.pt"))


def test_saved_module_with_unimportable_class_gets_the_hint(user_pkg, tmp_path):
    torch = pytest.importorskip("torch")
    import subprocess
    import sys

    from trtopt.models.reference import load_model

    # save from a process where the class lives in a module that this process cannot import
    (tmp_path / "only_here").mkdir()
    (tmp_path / "only_here" / "gone_mod.py").write_text(
        "import torch\nclass Gone(torch.nn.Module):\n    def forward(self, x):\n        return x\n")
    code = (f"import sys, torch; sys.path.insert(0, {str(tmp_path / 'only_here')!r}); import gone_mod; "
            f"torch.save(gone_mod.Gone(), {str(tmp_path / 'gone.pt')!r})")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert torch  # imported for the subprocess's pickle format
    with pytest.raises(InputError, match="class must be importable"):
        load_model(str(tmp_path / "gone.pt"))
