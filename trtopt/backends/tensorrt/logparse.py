"""Read what TensorRT says about a build: sparse layers, layer precisions, parser and load errors.

TensorRT reports failures only through its logger (the Python calls return ``None``/``False``), and
reports sparse-kernel choices only as INFO lines at the end of a build::

    [TRT] (Sparsity) Layers eligible for sparse math: conv1, conv2 + relu2
    [TRT] (Sparsity) TRT inference plan picked sparse implementation for layers: conv2 + relu2

These functions parse such text and the engine inspector's JSON; they never import TensorRT.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trtopt.errors import BuildError, IncompatibleArtifactError, InputError

_ELIGIBLE = re.compile(r"\(Sparsity\)\s*Layers eligible for sparse math:\s*(.*)$")
_PICKED = re.compile(r"\(Sparsity\)\s*TRT inference plan picked sparse implementation for layers:\s*(.*)$")
_PRECISIONS = (("int8", "INT8"), ("fp8", "FP8"), ("half", "FP16"), ("fp16", "FP16"), ("bf16", "BF16"),
               ("float", "FP32"), ("fp32", "FP32"), ("int32", "INT32"), ("int64", "INT64"), ("bool", "BOOL"))


@dataclass
class SparsityReport:
    """Layers TensorRT found eligible for 2:4 sparse math and those it picked a sparse kernel for.

    Attributes:
        eligible: Layer names from the "eligible" log line (in log order, unique).
        picked: Layer names from the "picked sparse implementation" line, plus inspector layers whose
            tactic or sparsity key says sparse.
        reported: Some ``(Sparsity)`` log line was seen (False: TensorRT said nothing either way).
        unknown_reason: Set by the caller when an unreported build cannot count (e.g. a TensorRT-RTX
            ahead-of-time build, which prints no sparse tactic choices); the summary then says
            "unknown (...)" instead of a misleading "0 layers eligible".
    """

    eligible: list[str] = field(default_factory=list)
    picked: list[str] = field(default_factory=list)
    reported: bool = False
    unknown_reason: str = ""

    def summary(self) -> str:
        """E.g. ``"12 layers eligible, 3 picked"``, or ``"unknown (<reason>)"`` when nothing could be counted."""
        if self.unknown_reason and not self.reported and not self.picked:
            return f"unknown ({self.unknown_reason})"
        return f"{len(self.eligible)} layers eligible, {len(self.picked)} picked"

    def to_dict(self) -> dict[str, Any]:
        """JSON form for manifests."""
        return {"eligible": self.eligible, "picked": self.picked, "reported": self.reported,
                "summary": self.summary()}


def _split_layers(text: str) -> list[str]:
    # Layer lists are ", "-separated; fused names keep their " + " joins.
    return [t.strip() for t in text.split(", ") if t.strip()]


def parse_sparsity_log(lines: Iterable[str]) -> SparsityReport:
    """Parse the ``(Sparsity)`` lines of a build log (either line may be absent or repeated).

    Args:
        lines: Log lines, with or without ``[TRT]``/severity prefixes.

    Returns:
        Eligible and picked layer names.
    """
    rep = SparsityReport()
    for line in lines:
        for pattern, dest in ((_ELIGIBLE, rep.eligible), (_PICKED, rep.picked)):
            m = pattern.search(line.rstrip())
            if m:
                rep.reported = True
                dest.extend(n for n in _split_layers(m.group(1)) if n not in dest)
    return rep


def parse_inspector(info: str | Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-layer name, type, output precision and sparse flag from the engine inspector's JSON.

    Handles ``ProfilingVerbosity.LAYER_NAMES_ONLY`` (layers are bare strings), 10.x keys
    (``"Format/Datatype"``) and 11.x keys (``"Datatype"`` split from ``"Format"``); any key containing
    ``Sparse`` or a tactic name containing ``sparse`` marks the layer sparse (names vary by version).

    Raises:
        InputError: Not inspector JSON.
    """
    try:
        doc = json.loads(info) if isinstance(info, str) else dict(info)
    except json.JSONDecodeError as exc:
        raise InputError(f"engine inspector output is not JSON ({exc})") from exc
    layers = doc.get("Layers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        raise InputError("engine inspector JSON has no 'Layers' list")
    out = []
    for layer in layers:
        if isinstance(layer, str):
            out.append({"name": layer, "type": None, "precision": None, "sparse": None})
            continue
        outs = layer.get("Outputs") or []
        first = outs[0] if outs and isinstance(outs[0], dict) else {}
        dtype = str(first.get("Datatype") or first.get("Format/Datatype") or "")
        sparse_keys = [v for k, v in layer.items() if "sparse" in k.lower()]
        sparse = any(bool(v) and str(v).lower() not in ("0", "false", "no") for v in sparse_keys) or (
            "sparse" in str(layer.get("TacticName", "")).lower())
        out.append({"name": layer.get("Name"), "type": layer.get("LayerType"), "precision": _precision(dtype),
                    "sparse": sparse})
    return out


def _precision(text: str) -> str | None:
    low = text.lower()
    return next((p for key, p in _PRECISIONS if key in low), None) if low else None


def precision_counts(layers: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """Number of layers per output precision (``None`` precisions counted as ``"unknown"``)."""
    counts: dict[str, int] = {}
    for layer in layers:
        key = layer.get("precision") or "unknown"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def merge_inspector_sparsity(report: SparsityReport, layers: Sequence[Mapping[str, Any]]) -> SparsityReport:
    """Add inspector layers flagged sparse to ``report.picked`` (the log may be missing at WARNING level)."""
    for layer in layers:
        if layer.get("sparse") and layer.get("name") and layer["name"] not in report.picked:
            report.picked.append(str(layer["name"]))
    return report


# -- errors ----------------------------------------------------------------------------------
_NOISE = re.compile(r"^(Invalid Node - |Node name:)|cudaError|catchCudaError|checkMacros\.cpp")
_WRAPPED = re.compile(r"Error Code \d+: [^(]*\((.*)\)\s*$")
_SOURCE = re.compile(r"\.?\s*In \w+ at /\S+:\d+\)?\s*$")
_QUOTED = re.compile(r'^\w+\s*&&\s*"(.*)"$')
_ASSERT = re.compile(r"^Assertion failed: .*?: (?=[A-Z])")
_DLA_HINT = re.compile(r"\s*Please set kENABLE_UINT8_AND_ASYMMETRIC_QUANTIZATION_DLA.*$")
#: (pattern in the cleaned message, hint appended) for the error kinds a user can produce by mistake.
_HINTS = (
    ("Non-zero zero point", "TensorRT needs symmetric INT8 with zero point 0, not ONNX Runtime's default UINT8 "
                            "asymmetric quantization: quantize with `trtopt quantize`"),
    ("number of scales is not equal", "per-channel weight scales must run along the output-channel axis"),
    ("must all be positive", "a zero or negative scale, e.g. a constant or dead tensor was calibrated: recalibrate"),
    ("has type Int32 but must have type", "TensorRT dequantizes only 8-bit or smaller integers: keep the bias FP32"),
    ("must have same input types", "FP16 and FP32 tensors meet here: insert a Cast or convert the whole graph"),
    ("Plugin not found", "custom-domain operator with no TensorRT plugin"),
)


def clean_trt_message(desc: str, node_name: str = "") -> str:
    """One readable line from a TensorRT parser/builder message.

    Drops the parser's "Invalid Node" echo, CUDA-runtime lines (a CPU-only build logs cudaError 35
    after every failure), ``Error Code N: ... (...)`` wrappers, source locations, assertion expressions
    and the DLA-only flag hint, and appends a hint for known error kinds.
    """
    lines = [ln.strip() for ln in str(desc).splitlines() if ln.strip() and not _NOISE.search(ln.strip())]
    text = lines[0] if lines else str(desc).strip().splitlines()[0] if str(desc).strip() else ""
    m = _WRAPPED.search(text)
    if m:
        text = m.group(1)
    text = _SOURCE.sub("", text).strip()
    if node_name and text.startswith(node_name + ": "):
        text = text[len(node_name) + 2:]
    q = _QUOTED.match(text)
    if q:
        text = q.group(1)
    text = _DLA_HINT.sub("", _ASSERT.sub("", text)).strip()
    if text in ("", "false", "0"):
        text = "not supported by this TensorRT"
    hint = next((h for key, h in _HINTS if key in text), "")
    return f"{text} (hint: {hint})" if hint else text


def format_parser_errors(errors: Sequence[Mapping[str, Any]], log_errors: Sequence[str] = ()) -> str:
    """One line naming the failing ONNX node(s), operator(s), reason and error code.

    Args:
        errors: Dicts with ``node`` (index), ``node_name``, ``node_operator``, ``desc``, ``code``.
        log_errors: ERROR lines from the logger, used when the parser gave no errors.
    """
    parts: list[str] = []
    for e in errors:
        where = f"node {e.get('node')}" if e.get("node", -1) not in (-1, None) else "model"
        name = f" '{e['node_name']}'" if e.get("node_name") else ""
        op = f" ({e['node_operator']})" if e.get("node_operator") else ""
        code = str(e.get("code", "")).split(".")[-1]
        tag = f" [{code}]" if code in ("UNSUPPORTED_NODE", "UNSUPPORTED_GRAPH", "INVALID_GRAPH", "INVALID_NODE",
                                      "UNSUPPORTED_NODE_ATTR", "UNSUPPORTED_NODE_INPUT",
                                      "UNSUPPORTED_NODE_DATATYPE", "UNSUPPORTED_NODE_DYNAMIC") else ""
        part = f"{where}{name}{op}: {clean_trt_message(str(e.get('desc', '')), str(e.get('node_name') or ''))}{tag}"
        if part not in parts:
            parts.append(part)
    if not parts:
        cleaned = [clean_trt_message(ln.split(":", 1)[-1]) for ln in log_errors if not _NOISE.search(ln)]
        parts = [c for c in dict.fromkeys(cleaned) if c][-3:] or ["no details in the parser or log"]
    return "; ".join(parts)


def build_failure(log_lines: Sequence[str]) -> BuildError:
    """A :class:`BuildError` for ``build_serialized_network`` returning ``None``, quoting the log."""
    errs = [ln for ln in log_lines if ln.startswith(("ERROR", "INTERNAL_ERROR")) and not _NOISE.search(ln)]
    cleaned = [c for c in dict.fromkeys(clean_trt_message(ln.split(":", 1)[-1]) for ln in errs) if c]
    detail = " | ".join(cleaned[-3:]) or "TensorRT logged no error"
    return BuildError(f"TensorRT engine build failed: {detail}")


def deserialize_failure(path: str, log_lines: Sequence[str]) -> Exception:
    """The error for ``deserialize_cuda_engine`` returning ``None``.

    No GPU / CUDA driver becomes :class:`~trtopt.errors.BackendUnavailableError`; a version/platform
    mismatch :class:`IncompatibleArtifactError`; anything else means the file is not a (valid) engine
    for this TensorRT.
    """
    text = " ".join(log_lines)
    if re.search(r"cudaError (35|100)|CUDA driver version is insufficient|no CUDA-capable device", text):
        from trtopt.errors import BackendUnavailableError

        return BackendUnavailableError(f"loading {path} needs an NVIDIA GPU with a CUDA driver and none is usable "
                                       "here (TensorRT builds without one; running does not)")
    mismatch = re.search(r"(not compatible with this version of TensorRT[^|]*|expecting library version[^|]*"
                         r"|serialization assertion[^|]*|platform[^|]*incompatible[^|]*)", text, re.IGNORECASE)
    if mismatch:
        return IncompatibleArtifactError(f"{path} was built by another TensorRT version or for another "
                                         f"platform ({mismatch.group(1).strip()}); rebuild it with `trtopt build`")
    tail = " | ".join(ln.split(":", 1)[-1].strip() for ln in log_lines[-2:]) if log_lines else ""
    return InputError(f"{path} is not a TensorRT engine this TensorRT can load" + (f" ({tail})" if tail else ""))
