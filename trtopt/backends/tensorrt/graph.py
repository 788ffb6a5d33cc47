"""The ONNX model as a TensorRT build reads it: the bytes the parser gets, and :class:`GraphInfo`.

Two steps, each usable alone: :func:`prepare_for_parser` makes placeholder dim names unique (the
file on disk is not changed), and :func:`graph_info` reads what the plan and the profiles need to
know (inputs, dim names, dtypes, Q/DQ, FP16). :func:`read_model` runs both on a file.
``onnx`` is imported when a step runs, so importing this module stays cheap.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trtopt.errors import InputError
from trtopt.log import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class GraphInfo:
    """What the plan needs to know about the ONNX model.

    Attributes:
        inputs: Input name -> shape (``-1`` for a dynamic axis), initializers excluded.
        has_qdq: The graph holds QuantizeLinear/DequantizeLinear (explicit INT8).
        has_fp16: Some tensor, input or initializer is float16 (an FP16-typed graph).
        dim_names: Input name -> the ``dim_param`` of each axis (``None`` where unnamed).
        dtypes: Input name -> spec dtype name (``float32``, ``int64``, ...), for messages.
    """

    inputs: dict[str, tuple[int, ...]]
    has_qdq: bool = False
    has_fp16: bool = False
    dim_names: dict[str, tuple[str | None, ...]] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ParserInput:
    """One ONNX file read for a build (:func:`read_model`).

    Attributes:
        path: The file (the parser is given it, so external data still loads).
        file_bytes: The file as written (hashed for the cache key and the manifest).
        parser_bytes: What TensorRT parses (placeholder dims made unique, else ``file_bytes``).
        renamed: ``{"x[2]": "x_dim2", ...}`` axes renamed by :func:`prepare_for_parser`.
        info: :func:`graph_info` of ``parser_bytes``, renamed axes shown as unnamed.
    """

    path: Path
    file_bytes: bytes
    parser_bytes: bytes
    renamed: dict[str, str]
    info: GraphInfo


def graph_info(model_bytes: bytes) -> GraphInfo:
    """Read :class:`GraphInfo` from serialized ONNX bytes (external data is not needed).

    Raises:
        InputError: The bytes are not an ONNX model.
    """
    import onnx

    from trtopt.onnx.dims import graph_inputs
    from trtopt.onnx.precision import computes_fp16, has_qdq

    try:
        model = onnx.load_from_string(model_bytes)
    except Exception as exc:
        raise InputError(f"not a valid ONNX model ({type(exc).__name__})") from exc
    ins = graph_inputs(model)
    inputs = {i.name: tuple(-1 if d is None else d for d in i.dims) for i in ins}
    names = {i.name: i.dim_names for i in ins}
    dtypes = {i.name: i.dtype_name for i in ins}
    has_fp16 = computes_fp16(model)  # Constant-node weights and subgraphs count too
    return GraphInfo(inputs=inputs, has_qdq=has_qdq(model), has_fp16=has_fp16, dim_names=names, dtypes=dtypes)


def prepare_for_parser(onnx_bytes: bytes, what: str) -> tuple[bytes, dict[str, str]]:
    """The bytes TensorRT parses: placeholder dim names (``"?"``) made unique, else ``onnx_bytes`` unchanged.

    TensorRT reads equal dim names as one dimension; Paddle2ONNX names every unknown dim ``"?"``
    (see :func:`trtopt.onnx.dims.with_unique_placeholder_dims`). The file on disk is not changed, and
    external-data references stay as they are (the parser is given the file's path).

    Returns:
        ``(bytes, {"x[2]": "x_dim2", ...})``.

    Raises:
        InputError: The bytes are not an ONNX model.
    """
    import onnx

    from trtopt.onnx.dims import with_unique_placeholder_dims

    try:
        model = onnx.load_from_string(onnx_bytes)
    except Exception as exc:
        raise InputError(f"{what} is not a valid ONNX model ({type(exc).__name__})") from exc
    fixed, renamed = with_unique_placeholder_dims(model)
    if not renamed:
        return onnx_bytes, {}
    log.info("%s: placeholder dim names renamed for TensorRT (unknown dims are not one shared dim): %s", what,
             ", ".join(f"{k} -> {v}" for k, v in renamed.items()))
    return fixed.SerializeToString(), renamed


def hide_renamed_dims(info: GraphInfo, renamed: Mapping[str, str]) -> GraphInfo:
    """``info`` with the axes renamed by :func:`prepare_for_parser` shown as unnamed (``?``) in messages.

    A renamed axis is unique, so it shares its range with no other input either way.
    """
    if not renamed:
        return info
    names = {k: tuple(None if f"{k}[{ax}]" in renamed else n for ax, n in enumerate(v))
             for k, v in info.dim_names.items()}
    return dataclasses.replace(info, dim_names=names)


def read_model(onnx_path: str | os.PathLike[str]) -> ParserInput:
    """Check and read an ONNX file for a build: parser bytes and :class:`GraphInfo`.

    Raises:
        InputError: Missing, a folder, not ONNX, or an empty graph (the message every command gives).
    """
    from trtopt.onnx.io import load_graph_only

    path = Path(onnx_path)
    load_graph_only(path)
    file_bytes = path.read_bytes()
    parser_bytes, renamed = prepare_for_parser(file_bytes, path.name)
    info = hide_renamed_dims(graph_info(parser_bytes), renamed)
    return ParserInput(path=path, file_bytes=file_bytes, parser_bytes=parser_bytes, renamed=renamed, info=info)
