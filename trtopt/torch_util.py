"""Small PyTorch context helpers shared by the stages (torch is imported when one is entered).

* :func:`torch_threads`: a temporary intra-op thread count (training, calibration on the CPU);
* :func:`transformer_fastpath_off`: PyTorch's fused Transformer fast path off, so a forward computes
  what the ONNX export records (export, forward checks, SparseGPT, fine-tuning evaluation).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Temporarily set torch's intra-op thread count (restored on exit).

    Tiny models train faster on one thread: per-op work is too small to amortise thread
    hand-offs, and on a busy machine extra threads only add contention.

    Args:
        n: Threads to use inside the block.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def transformer_fastpath_off() -> Iterator[None]:
    """Run the block with PyTorch's fused Transformer / MultiheadAttention fast path turned off.

    In eval mode without gradients, ``nn.TransformerEncoder``, ``nn.TransformerEncoderLayer`` and
    ``nn.MultiheadAttention`` dispatch to fused kernels (``aten::_transformer_encoder_layer_fwd``,
    ``aten::_native_multi_head_attention``, and nested tensors for a ``src_key_padding_mask``) that
    the ONNX exporter cannot export. With the fast path off they run their reference implementation,
    which is what the exported graph computes: the same outputs up to float rounding, except on
    padded positions, which the fused path sets to 0. This sets ``torch.backends.mha.set_fastpath_enabled``
    (a documented PyTorch switch) for the block only and restores the previous value on exit, errors
    included.
    """
    import torch

    prev = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(prev)
