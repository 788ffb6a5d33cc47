"""A user's model package written into ``tmp_path`` and made importable.

Not a test module (no ``test_`` prefix). The token model is the shape most user transformers share:
token ids and a 0/1 mask, an embedding, a masked mean and two Linear layers.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

#: ``TokenNet``: ids [N, T] (< 50) and mask [N, T] -> [N, 4]; paste into a module source with ``{ids}, {mask}``
TOKEN_NET = '''
class TokenNet(torch.nn.Module):
    """Token ids [N, T] and a 0/1 mask [N, T] -> [N, 4] (masked mean of embeddings, two Linear layers)."""

    def __init__(self):
        super().__init__()
        self.emb = torch.nn.Embedding(50, 32)
        self.fc1 = torch.nn.Linear(32, 64)
        self.fc2 = torch.nn.Linear(64, 4)

    def forward(self, {ids}, {mask}):
        m = {mask}.unsqueeze(-1).to(torch.float32)
        h = (self.emb({ids}) * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.fc2(torch.relu(self.fc1(h)))


def tokens():
    torch.manual_seed(0)
    return TokenNet()
'''


#: a bench table that times in a fraction of a second (5 rounds of 1 iteration, batch 4)
FAST_BENCH = {"batch_sizes": [4], "warmup": 1, "iterations": 5, "rounds": 5, "min_rounds": 5}
#: the same as TOML lines of a ``[bench]`` table
FAST_BENCH_TOML = "\n".join(["[bench]", *(f"{k} = {v}" for k, v in FAST_BENCH.items())])


def token_net(ids: str = "ids", mask: str = "mask") -> str:
    """The ``TokenNet`` source with ``forward``'s two parameters named ``ids`` and ``mask``."""
    return TOKEN_NET.format(ids=ids, mask=mask)


def make_package(tmp_path: Path, monkeypatch, modules: dict[str, str], name: str | None = None) -> str:
    """Write package ``name`` (default: unique per test) with ``modules`` (module name -> source) and put
    ``tmp_path`` on ``sys.path`` for the test; returns the package name.
    """
    name = name or f"byompkg_{abs(hash(str(tmp_path))) % 10**8}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "__init__.py").write_text("")
    for mod, src in modules.items():
        (tmp_path / name / f"{mod}.py").write_text(textwrap.dedent(src))
    monkeypatch.syspath_prepend(str(tmp_path))
    for m in [m for m in sys.modules if m == name or m.startswith(f"{name}.")]:
        del sys.modules[m]
    return name
