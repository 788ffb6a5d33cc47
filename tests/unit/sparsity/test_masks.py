"""2:4 mask layout, the checker and mask files."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trtopt.errors import ConfigError, InputError  # noqa: E402
from trtopt.sparsity import PruneConfig, check_2to4  # noqa: E402
from trtopt.sparsity.masks import (  # noqa: E402
    group_zero_counts,
    kept_magnitude_share,
    load_masks,
    magnitude_mask,
    save_masks,
    validate_masks,
)


def test_check_2to4_uses_the_given_axis():
    w = np.zeros((2, 8), np.float32)
    w[:, [0, 1, 4, 5]] = 1.0  # groups along axis 1: 2 non-zeros each
    assert check_2to4(w, axis=1)
    assert not check_2to4(w.T.copy(), axis=1)  # along axis 1 of the transpose: rows of 2 -> not divisible
    assert check_2to4(w.T.copy(), axis=0)
    w[0, 2] = 3.0  # third non-zero in group 0 of row 0
    assert not check_2to4(w, axis=1)


def test_check_2to4_accepts_torch_and_rejects_bad_axis_lengths():
    assert check_2to4(torch.zeros(4, 8, 3, 3), axis=1)
    assert not check_2to4(torch.zeros(4, 6), axis=1)  # 6 is not a multiple of 4
    assert not check_2to4(torch.ones(4, 8), axis=1)


def test_magnitude_mask_conv_layout_groups_input_channels_per_kernel_position():
    torch.manual_seed(0)
    w = torch.randn(3, 8, 2, 2)
    mask = magnitude_mask(w, axis=1)
    assert mask.shape == w.shape
    # exactly 2 kept in every (k, group, r, s)
    assert (mask.reshape(3, 2, 4, 2, 2).sum(2) == 2).all()
    kept = (w.abs() * mask).reshape(3, 2, 4, 2, 2)
    top2 = w.abs().reshape(3, 2, 4, 2, 2).topk(2, dim=2).values.sum(2)
    assert torch.allclose(kept.sum(2), top2)
    assert check_2to4(w * mask, axis=1)


def test_magnitude_mask_keeps_two_even_in_all_zero_groups():
    mask = magnitude_mask(torch.zeros(2, 8), axis=1)
    assert int(mask.sum()) == 8


def test_group_zero_counts_and_kept_share():
    w = torch.tensor([[1.0, 0.0, 0.0, 3.0, 1.0, 1.0, 1.0, 1.0]])
    assert group_zero_counts(w, 1).tolist() == [[2, 0]]
    m = magnitude_mask(w, 1)
    assert kept_magnitude_share(w, m) == pytest.approx(6.0 / 8.0)
    with pytest.raises(InputError):
        group_zero_counts(torch.zeros(2, 6), 1)


def test_mask_file_roundtrip_and_mismatch_errors(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    masks = {"0": magnitude_mask(model[0].weight, 1)}
    path = tmp_path / "m.pt"
    save_masks(masks, path)
    loaded = load_masks(path)
    assert torch.equal(loaded["0"], masks["0"])
    validate_masks(model, loaded)
    with pytest.raises(InputError, match="no layer named 'nope'"):
        validate_masks(model, {"nope": masks["0"]})
    with pytest.raises(InputError, match="shape"):
        validate_masks(model, {"0": torch.ones(4, 4, dtype=torch.bool)})
    with pytest.raises(InputError, match="not a 2:4 pattern"):
        validate_masks(model, {"0": torch.ones(4, 8, dtype=torch.bool)})
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(InputError, match="not a readable mask file"):
        load_masks(tmp_path / "junk.pt")
    with pytest.raises(InputError, match="not found"):
        load_masks(tmp_path / "missing.pt")


@pytest.mark.parametrize("pattern", ["1:4", "4:8", "2:8", "50%"])
def test_only_2to4_pattern_is_accepted(pattern):
    with pytest.raises(ConfigError, match="only 2:4"):
        PruneConfig(pattern=pattern)


def test_prune_config_validation():
    assert PruneConfig(include=["features.*"]).include == ("features.*",)
    with pytest.raises(ConfigError, match="method"):
        PruneConfig(method="random")
    with pytest.raises(ConfigError, match="regular expression"):
        PruneConfig(exclude=("re:[",))
    with pytest.raises(ConfigError, match="multiple of 4"):
        PruneConfig(sparsegpt_blocksize=6)
