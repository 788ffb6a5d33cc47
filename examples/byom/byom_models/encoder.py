"""A two-input sentence encoder: token ids + attention mask -> topic logits.

Inputs ``input_ids [N, 32]`` int64 (0 = padding, 1 = unknown word, < ``VOCAB_SIZE``) and
``attention_mask [N, 32]`` int64 (1 = real token, 0 = padding); output ``logits [N, 4]``.
One self-attention block written with ``nn.Linear`` layers (so 2:4 sparsity applies to them)
and mean pooling over the real tokens.
"""

from __future__ import annotations

import math

import torch
from torch import nn

VOCAB_SIZE = 2048  #: fixed by the factory; make_data.py builds a vocab of at most this many words
SEQ_LEN = 32
NUM_TOPICS = 4


class Encoder(nn.Module):
    """Embedding + one pre-norm attention block + FFN, mean-pooled, linear classifier."""

    def __init__(self, vocab_size: int = VOCAB_SIZE, dim: int = 64, heads: int = 4, num_classes: int = NUM_TOPICS):
        super().__init__()
        self.heads, self.dim = heads, dim
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.pos = nn.Parameter(torch.zeros(1, SEQ_LEN, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.cls = nn.Linear(dim, num_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``input_ids, attention_mask [N,T]`` (int64, T <= 32) -> ``logits [N,4]``."""
        n, t = input_ids.shape
        x = self.embed(input_ids) + self.pos[:, :t]
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, self.dim // self.heads).permute(2, 0, 3, 1, 4)
        mask = attention_mask.to(x.dtype)
        # additive mask: padded keys get -1e4 (not -inf: a row of padding stays finite, also in FP16)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dim // self.heads) + (mask[:, None, None, :] - 1.0) * 1e4
        att = torch.softmax(scores, dim=-1) @ v
        x = x + self.proj(att.transpose(1, 2).reshape(n, t, self.dim))
        x = x + self.ffn(self.norm2(x))
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
        return self.cls(pooled)


def make_encoder() -> nn.Module:
    """Factory for trtopt (``byom_models.encoder:make_encoder``): random init, load weights after."""
    return Encoder()
