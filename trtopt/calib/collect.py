"""Run the model in ONNX Runtime batch by batch and reduce activations to histograms.

The tensors to calibrate are added as extra graph outputs of a copy of the model, which
runs with ONNX Runtime's graph optimizations disabled so every tensor keeps its exported
name. Each batch's activations are folded into one :class:`AbsHistogram` per tensor and
dropped, so peak memory is one batch of activations plus ``O(bins)`` per tensor (ONNX
Runtime's own calibrator concatenates every batch's activations before histogramming).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from trtopt.calib.batches import iter_batches, run_session
from trtopt.calib.config import CalibrationConfig, ProgressFn
from trtopt.calib.histogram import AbsHistogram, ChannelAbsMax
from trtopt.calib.ranges import finish_ranges
from trtopt.calib.source import model_input_specs
from trtopt.calib.table import CalibrationTable
from trtopt.errors import InputError
from trtopt.log import get_logger
from trtopt.onnx.dims import with_symbolic_dims
from trtopt.onnx.exec import exposed_outputs, make_session
from trtopt.onnx.external import model_hash_on_disk
from trtopt.onnx.graph import as_model, float_tensor_types
from trtopt.onnx.io import fits_protobuf, load_graph_over_limit, model_hash, save_onnx
from trtopt.placement import calibration_targets, smoothable_inputs
from trtopt.prepare import prepare_model

log = get_logger(__name__)



class _ScratchDir:
    """A temporary folder made on the first call (removed when this object is collected)."""

    def __init__(self) -> None:
        self._tmp: tempfile.TemporaryDirectory | None = None

    def __call__(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="trtopt-calib-", ignore_cleanup_errors=True)
        return self._tmp.name


def _augmented(model: onnx.ModelProto, targets: list[str], types: dict[str, int], raw: bytes | None = None,
               workdir: Callable[[], str] | None = None, graph_only: bool = False) -> bytes | str:
    """``model`` with ``targets`` added as graph outputs: serialized bytes, or a file path for large models.

    Below the limit this is :func:`trtopt.onnx.exec.exposed_bytes` (no copy of the weights), and so
    it is for a ``graph_only`` model whose tensors still point at their external data files.

    A model over protobuf's 2 GB limit cannot be serialized at all: the extra outputs are added to
    ``model`` in place, it is written with external data into the folder ``workdir()`` returns (which
    must outlive the ONNX Runtime session opened from the returned path), and ``model`` is restored.
    """
    inputs = {i.name for i in model.graph.input}  # graph inputs are read from the feeds, not exposed
    exposed = [t for t in targets if t not in inputs]
    extra = exposed_outputs(model, exposed, {t: types.get(t) or onnx.TensorProto.FLOAT for t in exposed})
    if raw is not None or workdir is None or graph_only or fits_protobuf(model, extra.ByteSize()):
        return (model.SerializeToString() if raw is None else raw) + extra.SerializeToString()
    n_out = len(model.graph.output)
    model.graph.output.extend(extra.graph.output)
    try:
        # not verified here: the ONNX Runtime session the caller opens from this path is the check
        path = save_onnx(model, os.path.join(workdir(), "augmented.onnx"), check=False, ort_load=False,
                         external_data=True)
    finally:
        del model.graph.output[n_out:]
    return str(path)


def collect_histograms(model: onnx.ModelProto, source: Iterable[dict[str, np.ndarray]], targets: list[str],
                       config: CalibrationConfig, progress: ProgressFn | None = None,
                       total: int = 0, types: dict[str, int] | None = None,
                       channel: ChannelAbsMax | None = None, serialized: bytes | None = None,
                       external_dir: str | os.PathLike[str] | None = None
                       ) -> tuple[dict[str, AbsHistogram], str, int]:
    """Stream ``source`` through ONNX Runtime and histogram ``targets``.

    ``channel`` (optional) also receives every batch of the tensors it tracks (per-channel maxima).
    ``serialized`` is ``model.SerializeToString()`` when the caller already has it. ``external_dir``:
    ``model`` is a graph-only proto (:func:`trtopt.onnx.io.load_graph_over_limit`) whose external
    data lie there; ONNX Runtime memory-maps them from that folder.

    Returns:
        ``(histograms, data sha256, samples seen)``.
    """
    specs = model_input_specs(model)
    # Requested tensors become graph outputs, which ONNX Runtime's optimizers never rename or
    # fuse away, so full optimization keeps every name while running ~2x faster than none.
    types = float_tensor_types(model) if types is None else types
    fixed = with_symbolic_dims(model)  # dims stored as 0 / -1: ONNX Runtime would take a 0 literally
    if fixed is not model:
        model, serialized = fixed, None
    # a model over 2 GB is opened by path from external data in this folder, kept until we return;
    # made only then, so that a process that dies (an ONNX Runtime crash) leaves no folder behind
    workdir = _ScratchDir()
    augmented = _augmented(model, targets, types, serialized, workdir=workdir, graph_only=external_dir is not None)
    # a model over 2 GB: no pre-packed second copy of its weights in ONNX Runtime
    large = isinstance(augmented, str) or external_dir is not None
    sess = make_session(augmented, intra_op_threads=config.intra_op_threads, optimize=config.ort_optimize,
                        prepack=not large, external_dir=external_dir)
    out_names = [o.name for o in sess.get_outputs()]
    wanted = [t for t in targets if t in out_names]
    from_feed = [t for t in targets if t in specs and t not in out_names]
    scratch: dict = {}  # one index buffer for all histograms (only the worker thread updates them)
    hists = {t: AbsHistogram(config.num_bins, config.skip_zeros, scratch) for t in targets}
    digest = hashlib.sha256()
    seen = 0

    def fold(outs: list[np.ndarray], sub: dict[str, np.ndarray]) -> None:
        for name, val in zip(wanted, outs):
            if np.issubdtype(val.dtype, np.floating):
                if channel is not None:
                    channel.update(name, val)  # before the histogram overwrites val in place
                hists[name].update(val, owned=True)
        for name in from_feed:
            if channel is not None:
                channel.update(name, sub[name])
            hists[name].update(sub[name])

    # Histograms of batch i are built on a worker thread while ONNX Runtime (which releases the
    # GIL) computes batch i+1: the histogram work hides behind inference. At most one batch is in
    # flight, so peak memory is two calls' activations (run_batch_size is sized for that).
    pending: Future | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="trtopt-histogram") as pool:
        for n, subs in iter_batches(source, specs, config, digest, model):
            for sub in subs:
                outs = run_session(sess, wanted, sub)
                if pending is not None:
                    pending.result()  # re-raises a worker error here
                pending = pool.submit(fold, outs, sub)
                del outs
            seen += n
            if progress:
                progress(seen, total)
        if pending is not None:
            pending.result()
    if seen == 0:
        raise InputError("calibration data source yielded no batches")
    return {k: h for k, h in hists.items() if h.counts is not None}, digest.hexdigest(), seen


def _cuda_driver_present() -> bool:
    """An NVIDIA driver is loaded (cheap check that avoids importing torch on CPU-only machines)."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0") or \
        os.path.exists("/dev/nvhost-ctrl")  # the last one: Jetson (Orin) integrated GPUs


def choose_collector(config: CalibrationConfig) -> tuple[str, str]:
    """Resolve ``config.collector`` / ``config.device`` to ``(collector, device)``.

    ``auto`` picks the torch collector on a CUDA GPU (activations then never leave the GPU)
    and ONNX Runtime on the CPU otherwise; torch is only imported when a GPU driver is present.
    """
    from trtopt.optional import is_installed

    auto = config.collector == "auto"
    if config.collector == "onnxruntime" or (auto and config.device == "cpu"):
        return "onnxruntime", "cpu"
    if auto and config.device == "auto" and not (_cuda_driver_present() and is_installed("torch")):
        return "onnxruntime", "cpu"
    from trtopt.calib.torch_hist import resolve_device

    device = resolve_device(config.device)
    if auto and device == "cpu":
        return "onnxruntime", "cpu"
    return "torch", device


def calibrate(model: str | os.PathLike[str] | onnx.ModelProto, source: Iterable[dict[str, np.ndarray]],
              config: CalibrationConfig | None = None, progress: ProgressFn | None = None) -> CalibrationTable:
    """Calibrate activation ranges of an FP32 ONNX model.

    Args:
        model: ``.onnx`` path or ModelProto.
        source: Rewindable iterable of ``{input name: ndarray}`` batches (e.g. :class:`NumpySource`).
        config: Method and options (``auto`` by default).
        progress: Optional ``callback(samples_done, samples_total)`` after every batch.

    Returns:
        Tensor name -> amax, with method, data hash and model hash.

    Raises:
        InputError: Unreadable model, data not matching the model's inputs, NaN/Inf in data.
    """
    config = config or CalibrationConfig()
    # a path to a model over 2 GB: its weights stay on disk (graph and ONNX Runtime's memory map only)
    m = None if isinstance(model, onnx.ModelProto) else load_graph_over_limit(model)
    data_dir = None if m is None else Path(model).parent.resolve()
    if m is not None:
        try:
            prepared, _ = prepare_model(m, strict=config.scope == "quantizable")
        except InputError:
            raise
        except Exception:  # a rewrite reading the weights (BN folding, constant chains): load them below
            prepared = None
        if prepared is not m:  # a rewrite of the weights: they are needed in memory
            m, data_dir = None, None
    if m is None:
        m, _ = prepare_model(as_model(model), strict=config.scope == "quantizable")
    types = float_tensor_types(m)
    targets = calibration_targets(m, config.op_types, config.scope, types)
    if not targets:
        raise InputError(f"the model has no tensors to calibrate (no {'/'.join(config.op_types)} nodes)")
    total = int(getattr(source, "num_samples", 0) or 0)
    if config.max_samples and total:
        total = min(total, config.max_samples)
    channel = ChannelAbsMax(set(smoothable_inputs(m, config.op_types)) & set(targets)) if config.channel_stats \
        else None
    # once: for the model hash and the ONNX Runtime session (None above protobuf's 2 GB limit)
    raw = m.SerializeToString() if data_dir is None and fits_protobuf(m) else None
    collector, device = choose_collector(config)
    if collector == "torch" and data_dir is not None:  # the torch collector reads the weights into torch
        m, data_dir = prepare_model(as_model(model), strict=config.scope == "quantizable")[0], None
    if collector == "torch" and config.collector == "auto":
        from trtopt.calib.torch_exec import node_supported

        missing = sorted({n.op_type for n in m.graph.node if not node_supported(n)})
        if missing:  # auto never fails where ONNX Runtime can do the job
            log.warning("the torch collector has no kernel for %s: collecting in ONNX Runtime on the CPU",
                        ", ".join(missing))
            collector, device = "onnxruntime", "cpu"
    if collector == "torch":
        from trtopt.calib.torch_hist import collect_histograms_torch

        hists, data_hash, seen = collect_histograms_torch(m, source, targets, config, progress, total, types,
                                                          channel=channel, device=device)
    else:
        hists, data_hash, seen = collect_histograms(m, source, targets, config, progress, total, types, channel,
                                                    serialized=raw, external_dir=data_dir)
    amax, info = finish_ranges(m, targets, hists, channel, config, seen)
    meta: dict[str, Any] = {"num_bins": config.num_bins, "scope": config.scope, "op_types": list(config.op_types),
                            "collector": collector if collector == "onnxruntime" else f"torch:{device}"}
    if config.method == "percentile":
        meta["percentile"] = config.percentile
    return CalibrationTable(amax=amax, method=config.method, data_hash=data_hash,
                            model_hash=model_hash(m, raw) if data_dir is None else model_hash_on_disk(m, data_dir),
                            num_samples=seen,
                            meta=meta, channel_amax={k: [float(x) for x in v] for k, v in
                                                     (channel.values.items() if channel else ())}, info=info)
