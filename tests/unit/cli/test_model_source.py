"""The torch runner takes modules and .pt files; names go to the caller's loader (the backend knows no workloads)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trtopt.backends.torch_runner import TorchModel, TorchRunner  # noqa: E402
from trtopt.errors import InputError  # noqa: E402


def _net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))


def test_a_name_goes_to_the_loader_with_its_input_name_and_shape():
    asked = []

    def loader(name):
        asked.append(name)
        return TorchModel(_net(), "image", (None, 1, 4, 4))

    with TorchRunner("tiny", device="cpu", loader=loader) as r:
        assert r.input_names == ("image",) and r.input_shape == (None, 1, 4, 4)
        out = r.infer({"image": np.zeros((2, 1, 4, 4), np.float32)})
    assert asked == ["tiny"] and out["logits"].shape == (2, 3)


def test_without_a_loader_a_name_is_an_input_error_that_says_who_resolves_names():
    with pytest.raises(InputError, match="unknown torch model 'digits_cnn'.*resolved by `trtopt bench`"):
        TorchRunner("digits_cnn", device="cpu").__enter__()


def test_the_bench_loader_resolves_built_in_workloads_only():
    from trtopt.cli.model_source import load_torch_workload

    with pytest.raises(InputError, match="unknown torch model 'nope': not a workload .*digits_cnn"):
        load_torch_workload("nope")
    got = load_torch_workload("digits_cnn")
    assert isinstance(got.module, torch.nn.Module) and got.input_shape[0] is None
