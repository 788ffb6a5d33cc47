"""Pruning and masked fine-tuning of your own model: several inputs, token ids, .npz data, losses, summary."""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from _helpers.user_project import token_net  # noqa: E402
from trtopt.cli.main import main  # noqa: E402
from trtopt.errors import ConfigError, InputError  # noqa: E402
from trtopt.sparsity import FinetuneConfig, PruneConfig, check_2to4, finetune_masked, prune_  # noqa: E402
from trtopt.sparsity.finetune import masks_intact  # noqa: E402

PROJECT = '''
import numpy as np
import torch
from torch import nn

CALLS = []


{token_net}

class SiluNet(nn.Module):
    """[N, 8, 6, 6] -> [N, 16, 6, 6] dense output (a regression head, not a classifier)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.SiLU(), nn.Conv2d(16, 16, 3, padding=1))

    def forward(self, x):
        return self.body(x)


class Tamper(TokenNet):
    """Writes into a pruned weight when put in eval mode (what a mask check must catch)."""

    def eval(self):
        super().eval()
        with torch.no_grad():
            self.fc1.weight.add_(1.0)
        return self


def silu():
    torch.manual_seed(0)
    return SiluNet()


def tamper():
    torch.manual_seed(0)
    return Tamper()


def l1(outputs, labels):
    CALLS.append(tuple(outputs.shape))
    return (outputs - torch.nn.functional.one_hot(labels, 4).float()).abs().mean()


def boom(outputs, labels):
    raise ZeroDivisionError("my loss broke")


def loader():
    rng = np.random.default_rng(3)
    for _ in range(3):  # a generator: must be replayed for every epoch
        ids = torch.from_numpy(rng.integers(0, 50, (8, 16)))
        yield {"ids": ids, "mask": torch.ones(8, 16, dtype=torch.int64)}, ids[:, 0] % 4
'''


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user project (package ``byom_prune_pkg``) on sys.path, with a two-input training .npz."""
    pkg = tmp_path / "byom_prune_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "models.py").write_text(textwrap.dedent(PROJECT).replace("{token_net}", token_net()))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 50, (96, 16)).astype(np.int64)
    mask = np.ones((96, 16), np.int64)
    mask[:, 12:] = 0
    np.savez(tmp_path / "train.npz", ids=ids, mask=mask, labels=ids[:, 0] % 4)
    yield tmp_path
    for m in [m for m in sys.modules if m.startswith("byom_prune_pkg")]:
        del sys.modules[m]


TOKEN_ARGS = ["--model", "byom_prune_pkg.models:tokens", "--input", "ids:int64:batchx16:0..50",
              "--input", "mask:int64:batchx16", "--min-params", "0"]


def _one_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def test_prune_and_finetune_two_input_model_from_npz(project, capsys):
    out = project / "out"
    rc = main(["prune", *TOKEN_ARGS, "--data", "train.npz", "--finetune-epochs", "2", "--distill-alpha", "0.5",
               "--lr", "1e-2", "--out-module", str(out / "p.pt"), "--out-masks", str(out / "m.pt"),
               "--onnx", str(out / "p.onnx"), "--report", str(out / "r.json")])
    cap = capsys.readouterr()
    assert rc == 0, cap.err
    assert "masks intact after fine-tuning: yes" in cap.out
    assert [ln.split(":")[0] for ln in cap.err.splitlines() if ln.startswith("fine-tune")] == \
        ["fine-tune epoch 1/2", "fine-tune epoch 2/2"]  # one line per epoch when stderr is not a terminal
    model = torch.load(out / "p.pt", weights_only=False)
    from trtopt.sparsity import load_masks

    masks = load_masks(out / "m.pt")
    assert sorted(masks) == ["fc1", "fc2"]
    for name, mask in masks.items():  # independently: every masked weight is exactly 0 and groups are 2:4
        w = dict(model.named_modules())[name].weight.detach()
        assert not bool(w[~mask].any()) and check_2to4(w, axis=1)
    rep = json.loads((out / "r.json").read_text())
    s = rep["summary"]
    zeroed = sum(int((~m).sum()) for m in masks.values())
    assert s["masks_intact"] is True and rep["finetune"]["masks_intact"] is True
    assert s["zeroed_weights"] == zeroed == (32 * 64 + 64 * 4) // 2
    assert s["zeroed_share_all_weights"] == pytest.approx(zeroed / sum(p.numel() for p in model.parameters()))
    assert s["zeroed_share_conv_linear"] == pytest.approx(0.5)
    assert set(s["metrics"]) == {"dense", "pruned", "fine-tuned"} and "accuracy" in s["metrics"]["pruned"]
    assert rep["finetune"]["loss"] == "ce" and len(rep["finetune"]["epochs"]) == 2
    # the ONNX is the fine-tuned model
    rng = np.random.default_rng(5)
    ids, mask = rng.integers(0, 50, (3, 16)).astype(np.int64), np.ones((3, 16), np.int64)
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    got = ort.InferenceSession(str(out / "p.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"ids": ids, "mask": mask})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert sorted(p.name for p in out.iterdir()) == ["m.pt", "p.onnx", "p.pt", "r.json"]  # no temp files


def test_summary_lists_kept_layers_with_reason(project, capsys):
    rc = main(["prune", *TOKEN_ARGS, "--exclude", "fc2", "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)["summary"]
    assert s["pruned_layers"] == ["fc1"] and s["kept_layers"] == {"excluded by prune.exclude": ["fc2"]}
    assert s["zeroed_share_conv_linear"] == pytest.approx((32 * 64 / 2) / (32 * 64 + 64 * 4))


def test_custom_loss_by_reference(project):
    from byom_prune_pkg import models

    model = models.tokens()
    report = prune_(model, PruneConfig(min_params=0))
    z = np.load(project / "train.npz")
    x = {"ids": z["ids"], "mask": z["mask"]}
    hist = finetune_masked(model, report, x, z["labels"],
                           FinetuneConfig(epochs=2, batch_size=32, loss="byom_prune_pkg.models:l1"))
    assert models.CALLS == [(32, 4)] * 6  # 96 samples / 32 per batch x 2 epochs, on the model's outputs
    assert hist.loss_name == "byom_prune_pkg.models:l1" and hist.masks_intact
    assert not masks_intact(model, report.masks)


def test_kd_without_labels_and_mse_auto(project):
    from byom_prune_pkg import models

    model, teacher = models.silu(), models.silu()
    report = prune_(model, PruneConfig(min_params=0))
    x = np.random.default_rng(0).standard_normal((16, 8, 6, 6)).astype(np.float32)
    hist = finetune_masked(model, report, x, None, FinetuneConfig(epochs=1, loss="kd"), teacher=teacher)
    assert hist.loss_name == "kd" and hist.masks_intact
    hist = finetune_masked(model, report, x, None, FinetuneConfig(epochs=1), teacher=teacher)
    assert hist.loss_name == "kd"  # auto without labels but with a teacher = pure distillation
    with torch.no_grad():
        y = teacher(torch.from_numpy(x)).numpy()  # dense float targets shaped like the output -> auto = mse
    hist = finetune_masked(model, report, x, y, FinetuneConfig(epochs=1))
    assert hist.loss_name == "mse" and "train_accuracy" not in hist[0]
    for name, mask in report.masks.items():
        assert not bool(dict(model.named_modules())[name].weight[~mask].any())


def test_dataloader_factory_replayed_every_epoch(project):
    from byom_prune_pkg import models

    model = models.tokens()
    report = prune_(model, PruneConfig(min_params=0))
    hist = finetune_masked(model, report, config=FinetuneConfig(epochs=2, data="byom_prune_pkg.models:loader"))
    assert len(hist) == 2 and all(np.isfinite(h["loss"]) for h in hist) and hist.loss_name == "ce"


def test_masks_checked_after_training(project):
    from byom_prune_pkg import models

    model = models.tamper()
    report = prune_(model, PruneConfig(min_params=0))
    z = np.load(project / "train.npz")
    with pytest.raises(InputError, match="masks not intact.*fc1"):
        finetune_masked(model, report, {"ids": z["ids"], "mask": z["mask"]}, z["labels"], FinetuneConfig(epochs=1))


def test_labels_missing_and_kd_without_teacher(project):
    from byom_prune_pkg import models

    model = models.tokens()
    report = prune_(model, PruneConfig(min_params=0))
    z = np.load(project / "train.npz")
    x = {"ids": z["ids"], "mask": z["mask"]}
    with pytest.raises(InputError, match="needs labels"):
        finetune_masked(model, report, x, None, FinetuneConfig(epochs=1, loss="ce"))
    with pytest.raises(InputError, match="no labels"):
        finetune_masked(model, report, x, None, FinetuneConfig(epochs=1))
    with pytest.raises(ConfigError, match="teacher"):
        finetune_masked(model, report, x, None, FinetuneConfig(epochs=1, loss="kd"))


@pytest.mark.parametrize("make, argv, expect", [
    (None, ["--model", "byom_prune_pkg.nosuch:tokens", "--input", "x:float32:1x3"], "cannot import module"),
    (None, ["--model", "byom_prune_pkg.models:tokens", "--input", "ids:int64:batchx16"], "forward failed"),
    ("missing", [*TOKEN_ARGS, "--data", "d.npz", "--finetune-epochs", "1"], "no array for input(s) ['mask']"),
    ("dtype", [*TOKEN_ARGS, "--data", "d.npz", "--finetune-epochs", "1"], "'ids' is float32"),
    ("nolabels", [*TOKEN_ARGS, "--data", "d.npz", "--finetune-epochs", "1", "--loss", "ce"], "needs labels"),
    (None, [*TOKEN_ARGS, "--data", "train.npz", "--finetune-epochs", "1", "--loss", "byom_prune_pkg.models:boom"],
     "loss 'byom_prune_pkg.models:boom' raised ZeroDivisionError: my loss broke"),
    ("shape", [*TOKEN_ARGS, "--method", "sparsegpt", "--calib", "d.npz"], "'ids' has size 8 on axis 1"),
])
def test_bad_input_one_line_exit_2_nothing_written(project, capsys, make, argv, expect):
    z = dict(np.load(project / "train.npz"))
    if make == "missing":
        np.savez(project / "d.npz", ids=z["ids"], labels=z["labels"])
    elif make == "dtype":
        np.savez(project / "d.npz", ids=z["ids"].astype(np.float32), mask=z["mask"], labels=z["labels"])
    elif make == "nolabels":
        np.savez(project / "d.npz", ids=z["ids"], mask=z["mask"])
    elif make == "shape":  # calibration data of the wrong sequence length (used to be a RuntimeError traceback)
        np.savez(project / "d.npz", ids=z["ids"][:, :8], mask=z["mask"][:, :8])
    out = project / "out"
    rc = main(["prune", *argv, "--out-module", str(out / "p.pt"), "--out-masks", str(out / "m.pt"),
               "--report", str(out / "r.json")])
    assert rc == 2
    assert expect in _one_line(capsys)
    assert not out.exists() or not any(out.iterdir())


def test_outputs_checked_before_work_and_written_all_or_nothing(project, capsys, monkeypatch):
    (project / "adir").mkdir()
    rc = main(["prune", *TOKEN_ARGS, "--out-module", str(project / "p.pt"), "--report", str(project / "adir")])
    assert rc == 2 and "is a directory" in _one_line(capsys)
    import trtopt.export

    def fail(*_a, **_k):
        raise InputError("ONNX export failed: simulated")

    monkeypatch.setattr(trtopt.export, "export_with_specs", fail)
    out = project / "out"
    rc = main(["prune", *TOKEN_ARGS, "--out-module", str(out / "p.pt"), "--out-masks", str(out / "m.pt"),
               "--onnx", str(out / "p.onnx"), "--report", str(out / "r.json")])
    assert rc == 2 and "simulated" in _one_line(capsys)
    assert not out.exists() or not any(out.iterdir())  # not p.pt without masks or report


def test_calib_npy_still_read_for_one_input_with_a_deprecation_note(project, capsys):
    torch.save(torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 16)), "net.pt")
    np.save("good.npy", np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32))
    np.save("bad.npy", np.zeros((16, 3, 5), np.float32))
    assert main(["prune", "--module", "net.pt", "--method", "sparsegpt", "--calib", "good.npy", "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["summary"]["pruned"] == 2 and "deprecated" in cap.err
    # wrong shape: one line naming the input and both shapes (used to be a RuntimeError traceback, exit 1)
    assert main(["prune", "--module", "net.pt", "--input-shape", "1,32", "--method", "sparsegpt",
                 "--calib", "bad.npy"]) == 2
    assert "'input' has shape [16, 3, 5]" in _one_line(capsys)
    assert main(["prune", "--module", "net.pt", "--method", "sparsegpt", "--calib", "bad.npy"]) == 2
    assert "shape [16, 3, 5]" in _one_line(capsys)


# -- --exclude: one syntax (glob over the whole name, or re:REGEX) in prune and quantize ----------------
def test_quantize_exclude_is_a_glob_with_re_prefix():
    import re

    from trtopt.quant import QuantizeConfig
    from trtopt.quant.config import exclude_to_regex

    names = ["/fc1/MatMul", "/block/fc1/MatMul", "/fc10/MatMul", "/attn/MatMul"]

    def hits(pattern):
        rx = exclude_to_regex([pattern])
        return [n for n in names if any(re.search(r, n) for r in rx)]

    assert hits("/fc1/*") == ["/fc1/MatMul"]  # whole-name glob (a regex search would also hit /block/fc1/...)
    assert hits("*/fc1/*") == ["/fc1/MatMul", "/block/fc1/MatMul"]
    assert hits("re:fc1") == ["/fc1/MatMul", "/block/fc1/MatMul", "/fc10/MatMul"]
    for regexish in ("^/fc1", "/fc1/.*", "fc\\d"):
        with pytest.raises(ConfigError, match="re:"):
            exclude_to_regex([regexish])
    cfg = QuantizeConfig(exclude=("/attn/*",))
    assert [n for n in names if any(re.search(r, n) for r in cfg.exclude_nodes)] == ["/attn/MatMul"]


def test_quantize_cli_refuses_a_regex_without_re_prefix(tmp_path, capsys):
    rc = main(["quantize", str(tmp_path / "m.onnx"), "--fp16", "--exclude", "^/classifier/",
               "--out", str(tmp_path / "q.onnx")])
    assert rc == 2 and "re:^/classifier/" in _one_line(capsys)
    assert not (tmp_path / "q.onnx").exists()
