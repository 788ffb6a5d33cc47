"""The digits workload: scikit-learn's ``load_digits`` and a small CNN trained in seconds.

This is the embedded, fully offline workload the demo runs end to end. The split is fixed
by a seed: a training split, a calibration split (never used for training or scoring) and a
held-out test split on which every accuracy is measured.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trtopt.log import get_logger
from trtopt.torch_util import torch_threads

log = get_logger(__name__)


@dataclass(frozen=True)
class DigitsSplit:
    """The digits data, float32 NCHW ``[N, 1, 8, 8]`` in ``[0, 1]`` with int64 labels.

    Attributes:
        x_train: Training images.
        y_train: Training labels.
        x_calib: Calibration images (disjoint from train and test).
        y_calib: Calibration labels (used only by the accuracy budget's sensitivity pass).
        x_test: Held-out test images.
        y_test: Held-out test labels.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_calib: np.ndarray
    y_calib: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split(seed: int = 0, test_size: float = 0.3, calib_size: float = 0.15) -> DigitsSplit:
    """Load scikit-learn's digits and split it into train / calibration / test (stratified).

    Args:
        seed: Random seed of the split.
        test_size: Share of all samples held out for testing.
        calib_size: Share of the remaining samples kept for calibration.

    Returns:
        The split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = data.target.astype(np.int64)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=test_size, random_state=seed, stratify=y)
    x_train, x_calib, y_train, y_calib = train_test_split(
        x_rest, y_rest, test_size=calib_size, random_state=seed, stratify=y_rest
    )
    return DigitsSplit(x_train, y_train, x_calib, y_calib, x_test, y_test)


def make_digits_cnn(width: int = 16):
    """Build the digits CNN (random init).

    Layout: conv(1->w) conv(w->2w) conv(2w->4w), each 3x3 + BatchNorm + ReLU, global average
    pool, Linear(4w->4w) + ReLU, Linear(4w->10). The first conv has one input channel and is
    therefore not 2:4 eligible; every other conv/linear has a reduction length divisible by 4.

    Args:
        width: Channels of the first conv.

    Returns:
        A ``torch.nn.Module`` with ``features`` and ``classifier`` submodules.
    """
    from trtopt.models.digits_net import DigitsCNN

    return DigitsCNN(width)


def train_classifier(model, x: np.ndarray, y: np.ndarray, epochs: int, lr: float = 3e-3,
                     batch_size: int = 64, seed: int = 0):
    """Train ``model`` with Adam + cross-entropy on numpy data (CPU, deterministic order).

    Args:
        model: The ``nn.Module`` to train in place.
        x: Inputs.
        y: Integer labels.
        epochs: Passes over the data.
        lr: Adam learning rate (cosine-decayed to 0).
        batch_size: Mini-batch size.
        seed: Seed for initial shuffling order.

    Returns:
        The trained model in eval mode.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(xt) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    with torch_threads(1):
        for _ in range(epochs):
            perm = torch.randperm(len(xt), generator=gen)
            for i in range(0, len(xt), batch_size):
                idx = perm[i : i + batch_size]
                opt.zero_grad()
                loss = loss_fn(model(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
                sched.step()
    return model.eval()


def train_digits_cnn(split: DigitsSplit, epochs: int = 40, seed: int = 0, width: int = 16):
    """Build and train the digits CNN on ``split.x_train`` (a few seconds on 2 cores).

    Args:
        split: Data from :func:`load_digits_split`.
        epochs: Training epochs.
        seed: Seed for weights and data order.
        width: Channels of the first conv.

    Returns:
        The trained model in eval mode.
    """
    import torch

    torch.manual_seed(seed)
    model = make_digits_cnn(width)
    return train_classifier(model, split.x_train, split.y_train, epochs=epochs, seed=seed)


def accuracy(model, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy (percent) of a torch model on numpy data.

    Args:
        model: A classifier returning logits.
        x: Inputs.
        y: Labels.
        batch_size: Evaluation batch size.

    Returns:
        Accuracy in percent.
    """
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            logits = model(torch.from_numpy(x[i : i + batch_size]))
            correct += int((logits.argmax(1).numpy() == y[i : i + batch_size]).sum())
    return 100.0 * correct / len(x)
