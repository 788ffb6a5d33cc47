"""Model references: every form ``--model`` accepts, and the errors when one does not load."""

from __future__ import annotations

import pytest

from trtopt.errors import ConfigError, InputError
from trtopt.inputs import (
    parse_input_specs,
)


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


def test_id_range_past_the_embedding_names_the_range_and_the_size():
    torch = pytest.importorskip("torch")
    from trtopt.models.reference import check_forward

    class Ids(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(100, 8)

        def forward(self, ids):
            return self.emb(ids).mean(1)

    torch.manual_seed(0)
    (out,) = check_forward(Ids(), parse_input_specs(["ids:int64:1x8:0..100"]))  # the largest valid range runs
    assert tuple(out.shape) == (1, 8)
    with pytest.raises(InputError, match=r"'ids' 0\.\.5000\) must stay below the model's embedding size\(s\) 100"):
        check_forward(Ids(), parse_input_specs(["ids:int64:1x8:0..5000"]))
