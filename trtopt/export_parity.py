"""Output parity of an exported ONNX graph with its PyTorch model (ONNX Runtime vs PyTorch).

The TorchScript exporter records one trace. Sizes that the model reads in a way the tracer does
not follow become constants of the graph (``nn.MultiheadAttention``, and so ``nn.TransformerEncoder``,
does this with the sequence length), and value-dependent branches are fixed to the example's. Such
a graph loads and runs at the example shapes, then fails or computes something else at other sizes.

:func:`check_parity` runs the exported file in ONNX Runtime on new random inputs at the traced
shapes and at another declared size of every dynamic axis, one axis at a time (so a failure names
the axis), and compares every output with the PyTorch model's.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from trtopt.errors import InputError
from trtopt.log import get_logger

log = get_logger(__name__)

#: allowed max |ONNX Runtime - PyTorch| per output, relative to 1 + max |PyTorch output| (float32 / float16)
TOLERANCE = {np.dtype(np.float32): 1e-3, np.dtype(np.float64): 1e-3, np.dtype(np.float16): 1e-2}


@dataclass(frozen=True)
class ParityCase:
    """One set of inputs to compare at.

    Attributes:
        axis: The varied axis' name (``"seq"``, ``"batch"``), or ``""`` for the traced shapes.
        traced: The size the export traced on that axis (0 for the traced shapes).
        size: The size used instead.
        specs: The specs with that size as OPT.
        batch: Axis-0 size of batched inputs.
    """

    axis: str
    traced: int
    size: int
    specs: tuple[Any, ...]
    batch: int


def parity_cases(specs: Sequence[Any]) -> list[ParityCase]:
    """The traced shapes (batch 1, other axes at OPT), then each dynamic axis at another declared size.

    Axes sharing a dim name vary together; all dynamic axes 0 are the batch. The other size is, for
    the batch, 2 (else MIN or MAX); for other axes MIN, else MAX. An axis whose range holds no
    other size is not varied.
    """
    from trtopt.inputs import Dim

    groups: dict[str, list[tuple[int, int]]] = {}
    for i, s in enumerate(specs):
        for ax, key in enumerate(_axis_keys(s)):
            if key:
                groups.setdefault(key, []).append((i, ax))
    cases = [ParityCase("", 0, 0, tuple(specs), 1)]
    for key, members in groups.items():
        dims = [specs[i].dims[ax] for i, ax in members]
        lo, hi = max(d.min for d in dims), min(d.max for d in dims)
        batch = all(ax == 0 for _, ax in members)
        traced = 1 if batch else dims[0].opt
        choices = (2, lo, hi) if batch else (lo, hi)
        size = next((c for c in choices if lo <= c <= hi and c != traced), None)
        if size is None:
            continue
        new = [list(s.dims) for s in specs]
        for i, ax in members:
            d = specs[i].dims[ax]
            new[i][ax] = Dim(min(d.min, size), size, max(d.max, size), d.name)
        varied = tuple(replace(s, dims=tuple(dims_)) for s, dims_ in zip(specs, new))
        cases.append(ParityCase(key, traced, size, varied, size if batch else 1))
    return cases


def _axis_keys(spec) -> list[str]:
    """Per axis: the name its size varies under (``""`` for a fixed axis); every dynamic axis 0 is the batch."""
    return [("" if not d.dynamic else (d.name or "batch") if ax == 0 else (d.name or f"{spec.name}_{ax}"))
            for ax, d in enumerate(spec.dims)]


def _torch_outputs(model, specs, feeds) -> list[np.ndarray]:
    import torch

    args = tuple(torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in specs)
    with torch.no_grad():
        out = model(*args)
    outs = out if isinstance(out, tuple | list) else (out,)
    return [(o.float() if o.dtype == torch.bfloat16 else o).detach().cpu().numpy() for o in outs]


def _ort_reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    m = re.search(r"running (\w+) node\. Name:'([^']*)'", text)
    if m:
        tail = re.search(r"(Input shape:\{[^}]*\}, requested shape:\{[^}]*\})", text)
        return f"its {m.group(1)} node '{m.group(2)}' fails" + (f" ({tail.group(1)})" if tail else "")
    return text[:300]


def _shapes(feeds: dict[str, np.ndarray]) -> str:
    return ", ".join(f"{k} {'x'.join(map(str, v.shape)) or 'scalar'}" for k, v in feeds.items())


def _differs(got: np.ndarray, want: np.ndarray) -> tuple[float, float] | None:
    """``(max |diff|, allowed)`` when a float output is outside the tolerance, else None."""
    if not np.issubdtype(want.dtype, np.floating):
        return None  # integer / bool outputs (argmax, masks): shapes are compared, not ties
    g, w = got.astype(np.float64), want.astype(np.float64)
    both_nan = np.isnan(g) & np.isnan(w)
    diff = np.where(both_nan, 0.0, np.abs(g - w))
    finite = np.abs(w[np.isfinite(w)])
    allowed = TOLERANCE.get(want.dtype, 1e-2) * (1.0 + (float(finite.max()) if finite.size else 0.0))
    err = float(np.nanmax(np.where(np.isnan(diff), np.inf, diff))) if diff.size else 0.0
    return (err, allowed) if err > allowed else None


def check_parity(model, specs: Sequence[Any], path: str | os.PathLike[str], output_names: Sequence[str],
                 seed: int = 1) -> None:
    """Compare the exported graph at ``path`` with ``model`` in ONNX Runtime (CPU) on :func:`parity_cases`.

    Args:
        model: The exported ``torch.nn.Module`` (eval mode).
        specs: Its input specs (as exported).
        path: The written ``.onnx`` file.
        output_names: Graph output names, in ``forward``'s output order.
        seed: Seed of the random inputs (values other than the export's example).

    Raises:
        InputError: The graph fails or differs at a declared shape (names the axis, the size and the
            fix), or gives outputs of another shape.
    """
    import onnxruntime as ort

    from trtopt.inputs import random_feeds

    so = ort.SessionOptions()
    so.log_severity_level = 4  # failures are reported below, not logged to the console
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    for case in parity_cases(specs):
        feeds = random_feeds(case.specs, case.batch, seed=seed)
        try:
            want = _torch_outputs(model, case.specs, feeds)
        except Exception as exc:  # the declared range is wider than the model: not the export's fault
            log.warning("export check at %s skipped: the model itself fails there (%s: %s)", _shapes(feeds),
                        type(exc).__name__, str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "")
            continue
        try:
            got = sess.run(list(output_names), feeds)
        except Exception as exc:
            raise InputError(_failure(model, case, specs, _ort_reason(exc))) from None
        for name, g, w in zip(output_names, got, want):
            if tuple(g.shape) != tuple(w.shape):
                raise InputError(_failure(model, case, specs, f"output '{name}' has shape {list(g.shape)}, "
                                                              f"PyTorch's {list(w.shape)}"))
            bad = _differs(g, w)
            if bad:
                raise InputError(_failure(model, case, specs, f"output '{name}' differs from PyTorch by up to "
                                                              f"{bad[0]:.3g} (allowed {bad[1]:.3g})"))
        log.debug("export check at %s: ONNX Runtime matches PyTorch", _shapes(feeds))


def _failure(model, case: ParityCase, specs, what: str) -> str:
    if not case.axis:
        return (f"the exported graph does not compute the model on new inputs at the traced shapes: {what}; "
                "forward() takes a branch or a size from the example's values, which the trace fixed")
    import torch

    attention = case.axis != "batch" and any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
    known = (" (nn.MultiheadAttention, also inside nn.TransformerEncoder, fixes the sequence length in a "
             "TorchScript export)") if attention else ""
    return (f"the exported graph does not run the model when {case.axis} is {case.size} (it was traced at "
            f"{case.traced}): {what}. The exporter fixed that size in the graph{known}: declare {case.axis} "
            f"with one size in the input specs (e.g. {_fixed_example(specs, case)}) and export one model per size")


def _fixed_example(specs, case: ParityCase) -> str:
    """The first spec holding the varied axis, with that axis fixed to the traced size (CLI syntax)."""
    from trtopt.inputs import Dim

    for s in specs:
        keys = _axis_keys(s)
        if case.axis in keys:
            dims = tuple(Dim(case.traced, case.traced, case.traced) if k == case.axis else d
                         for k, d in zip(keys, s.dims))
            return str(replace(s, dims=dims))
    return case.axis
