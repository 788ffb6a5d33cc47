"""Train the example's dense models on the CPU in seconds; write their state dicts.

Writes ``weights/detector.pt`` and ``weights/encoder.pt`` (``torch.save(model.state_dict())``:
trtopt reads them with ``--weights`` / ``weights =`` via ``torch.load(weights_only=True)``) and
prints the held-out metric of each: detector hit rate (class right AND IoU >= 0.5), encoder top-1.

Usage: ``python train.py [--data data] [--out weights] [--epochs-det 12] [--epochs-enc 20]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # byom_models without `pip install -e .`

from byom_models.detector import make_detector  # noqa: E402
from byom_models.encoder import make_encoder  # noqa: E402
from byom_models.losses import detection_loss  # noqa: E402
from byom_models.metrics import hit_rate  # noqa: E402


def _fit(model: torch.nn.Module, inputs: list[torch.Tensor], labels: torch.Tensor, loss_fn, epochs: int,
         lr: float, batch: int, seed: int) -> None:
    """Adam + cosine decay over ``epochs`` passes of shuffled mini-batches."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(labels) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=g)
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            loss = loss_fn(model(*(x[idx] for x in inputs)), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()


def _load(path: Path, *names: str) -> list[np.ndarray]:
    with np.load(path) as z:
        return [z[n] for n in names]


def train_detector(data: Path, out: Path, epochs: int, seed: int) -> float:
    """Train the detector; save ``out/detector.pt``; return the eval hit rate (%)."""
    torch.manual_seed(seed)
    x, y = _load(data / "det_train.npz", "image", "labels")
    model = make_detector()
    _fit(model, [torch.from_numpy(x)], torch.from_numpy(y), detection_loss, epochs, 3e-3, 64, seed)
    torch.save(model.state_dict(), out / "detector.pt")
    xe, ye = _load(data / "det_eval.npz", "image", "labels")
    with torch.no_grad():
        boxes, logits = model(torch.from_numpy(xe))
    return hit_rate({"boxes": boxes.numpy(), "logits": logits.numpy()}, ye)


def train_encoder(data: Path, out: Path, epochs: int, seed: int) -> float:
    """Train the encoder; save ``out/encoder.pt``; return the eval top-1 (%)."""
    torch.manual_seed(seed)
    ids, mask, y = _load(data / "enc_train.npz", "input_ids", "attention_mask", "labels")
    model = make_encoder()
    _fit(model, [torch.from_numpy(ids), torch.from_numpy(mask)], torch.from_numpy(y),
         lambda o, t: F.cross_entropy(o, t, label_smoothing=0.05), epochs, 2e-3, 32, seed)
    torch.save(model.state_dict(), out / "encoder.pt")
    ids, mask, y = _load(data / "enc_eval.npz", "input_ids", "attention_mask", "labels")
    with torch.no_grad():
        pred = model(torch.from_numpy(ids), torch.from_numpy(mask)).argmax(1).numpy()
    return float(100.0 * np.mean(pred == y))


def main(argv: list[str] | None = None) -> None:
    """Command-line entry (see the module docstring)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(HERE / "data"), help="folder written by make_data.py (default: data/)")
    ap.add_argument("--out", default=str(HERE / "weights"), help="output folder (default: weights/)")
    ap.add_argument("--epochs-det", type=int, default=12)
    ap.add_argument("--epochs-enc", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    if not (data / "det_train.npz").is_file():
        raise SystemExit(f"train.py: no {data / 'det_train.npz'}: run make_data.py first (or pass --data)")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    det = train_detector(data, out, args.epochs_det, args.seed)
    t1 = time.perf_counter()
    enc = train_encoder(data, out, args.epochs_enc, args.seed)
    t2 = time.perf_counter()
    print(f"detector: hit rate {det:.1f}% on det_eval ({t1 - t0:.1f} s) -> {out / 'detector.pt'}")
    print(f"encoder:  top-1 {enc:.1f}% on enc_eval ({t2 - t1:.1f} s) -> {out / 'encoder.pt'}")


if __name__ == "__main__":
    main()
