"""Write the example's data in trtopt's one data format (docs/data-format.md).

One ``.npz`` per split, one array per model input name (samples on axis 0) plus ``labels``:

- detector: ``det_{train,calib,eval}.npz`` with ``image [N,1,32,32]`` float32 and
  ``labels [N,5]`` float32 (class, cx, cy, w, h): scikit-learn's 8x8 digits, scaled x1..x2 and
  pasted at a random position into a noisy 32x32 canvas, one digit per image;
- encoder: ``enc_{train,calib,eval}.npz`` with ``input_ids [N,32]`` and ``attention_mask [N,32]``
  int64 and ``labels [N]`` int64 (topic 0-3): sentences of the docstrings of four standard-library
  packages, label = which package; plus ``vocab.json`` (word -> id; 0 = padding, 1 = unknown).

Usage: ``python make_data.py [--out data] [--seed 0] [--train 2000 --calib 256 --eval 512]``
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
import sysconfig
from collections import Counter
from pathlib import Path

import numpy as np

CANVAS = 32
SEQ_LEN = 32
VOCAB_SIZE = 2048  # = byom_models.encoder.VOCAB_SIZE (kept literal: the data script needs no torch)
TOPICS = ("asyncio", "email", "logging", "tkinter")


def detector_split(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``[n,1,32,32]`` in [0,1] and labels ``[n,5]`` (class, cx, cy, w, h normalised)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pick = rng.integers(0, len(digits.images), n)
    images = rng.uniform(0.0, 0.15, (n, 1, CANVAS, CANVAS)).astype(np.float32)  # background noise
    labels = np.zeros((n, 5), np.float32)
    for i, j in enumerate(pick):
        side = int(rng.integers(8, 17))  # digit side 8..16 px: box sizes vary
        idx = (np.arange(side) * 8 // side)  # nearest-neighbour resize of the 8x8 glyph
        glyph = digits.images[j][np.ix_(idx, idx)] / 16.0
        y, x = rng.integers(0, CANVAS - side + 1, 2)
        images[i, 0, y:y + side, x:x + side] = np.maximum(images[i, 0, y:y + side, x:x + side], glyph)
        labels[i] = (digits.target[j], (x + side / 2) / CANVAS, (y + side / 2) / CANVAS, side / CANVAS, side / CANVAS)
    return images, labels


def _sentences(package: str) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"]) / package
    out: dict[str, None] = {}
    for path in sorted(root.rglob("*.py")):
        if "test" in path.relative_to(root).parts[:-1]:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                for sent in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                    if 5 <= len(sent.split()) <= 40 and not re.search(r">>>|https?:", sent):
                        out.setdefault(sent, None)
    return list(out)


def _words(sentence: str) -> list[str]:
    return re.findall(r"[a-z]+", sentence.lower())


def encoder_corpus(seed: int) -> list[tuple[str, int]]:
    """Balanced, shuffled (sentence, topic) pairs from the standard library's docstrings."""
    per_topic = [_sentences(t) for t in TOPICS]
    n = min(len(s) for s in per_topic)
    if n < 100:
        raise SystemExit(f"make_data.py: only {n} docstring sentences found for one of {TOPICS}: "
                         "this Python has no standard-library sources")
    rnd = random.Random(seed)
    pairs = [(s, k) for k, sents in enumerate(per_topic) for s in rnd.sample(sents, n)]
    rnd.shuffle(pairs)
    return pairs


def encode(sentences: list[str], vocab: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """Word ids ``[n, 32]`` (0-padded, 1 = unknown) and mask ``[n, 32]`` (1 = token), both int64."""
    ids = np.zeros((len(sentences), SEQ_LEN), np.int64)
    for i, s in enumerate(sentences):
        toks = [vocab.get(w, 1) for w in _words(s)][:SEQ_LEN] or [1]
        ids[i, :len(toks)] = toks
    return ids, (ids > 0).astype(np.int64)


def main(argv: list[str] | None = None) -> None:
    """Command-line entry (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "data"), help="output folder (default: data/)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train", type=int, default=2000, help="detector training images")
    ap.add_argument("--calib", type=int, default=256, help="calibration samples (both models)")
    ap.add_argument("--eval", type=int, default=512, help="evaluation samples (both models)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)

    sizes = {"train": args.train, "calib": args.calib, "eval": args.eval}
    for split, n in sizes.items():
        images, labels = detector_split(n, rng)
        np.savez(out / f"det_{split}.npz", image=images, labels=labels)

    pairs = encoder_corpus(args.seed)
    n_eval, n_calib = min(args.eval, len(pairs) // 4), min(args.calib, len(pairs) // 8)
    splits = {"eval": pairs[:n_eval], "calib": pairs[n_eval:n_eval + n_calib], "train": pairs[n_eval + n_calib:]}
    counts = Counter(w for s, _ in splits["train"] for w in _words(s))  # vocab from training text only
    vocab = {"<pad>": 0, "<unk>": 1}
    for word, _ in counts.most_common(VOCAB_SIZE - 2):
        vocab[word] = len(vocab)
    (out / "vocab.json").write_text(json.dumps(vocab, indent=0) + "\n", encoding="utf-8")
    for split, items in splits.items():
        ids, mask = encode([s for s, _ in items], vocab)
        np.savez(out / f"enc_{split}.npz", input_ids=ids, attention_mask=mask,
                 labels=np.array([k for _, k in items], np.int64))
    print(f"wrote {out}: det_train/calib/eval = {args.train}/{args.calib}/{args.eval} images, "
          f"enc_train/calib/eval = {len(splits['train'])}/{n_calib}/{n_eval} sentences, vocab {len(vocab)} words")


if __name__ == "__main__":
    main()
