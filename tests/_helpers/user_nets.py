"""A user's package ``userpkg.nets`` (a token model factory, a failing one, a non-module one) on ``sys.path``."""

from __future__ import annotations

import textwrap

import pytest


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
