"""The INT8 share of a model's compute at the shapes a stage runs it at.

:func:`trtopt.onnx.macs.mac_share` counts MACs at fixed input shapes; this module picks those shapes
the way the other stages do, first match wins:

1. ``shapes`` given by the caller (an optimization profile's opt shapes, a build's profile);
2. ``feeds``: the data the stage runs, one sample of each batched input (axis 0 set to 1) and
   per-call constants (``static``) as they are;
3. ``specs``: each :class:`~trtopt.inputs.InputSpec`'s opt shape;
4. the graph's own inputs (:func:`~trtopt.inputs.specs_from_onnx`: a dynamic batch at its opt 1, other
   dynamic axes at 1 unless named by 1-3).

MACs of every weighted op grow linearly with the batch, so the share does not depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import onnx

from trtopt.errors import InputError
from trtopt.inputs import InputSpec, specs_from_onnx
from trtopt.onnx.macs import MacShare, mac_share


def resolve_shapes(model: onnx.ModelProto, *, shapes: Mapping[str, Sequence[int]] | None = None,
                   feeds: Mapping[str, Any] | None = None, static: Sequence[str] = (),
                   specs: Sequence[InputSpec] | None = None) -> dict[str, tuple[int, ...]]:
    """``{graph input: fixed shape}`` by the rule of the module docstring."""
    out = {s.name: s.shape("opt") for s in specs_from_onnx(model)}
    if specs:
        out.update({s.name: s.shape("opt") for s in specs})
    for name, arr in (feeds or {}).items():
        shp = tuple(int(d) for d in getattr(arr, "shape", ()))
        out[name] = shp if name in static or not shp else (1, *shp[1:])
    if shapes:
        out.update({k: tuple(int(d) for d in v) for k, v in shapes.items()})
    return out


def model_mac_share(model: onnx.ModelProto, *, shapes: Mapping[str, Sequence[int]] | None = None,
                    feeds: Mapping[str, Any] | None = None, static: Sequence[str] = (),
                    specs: Sequence[InputSpec] | None = None) -> MacShare:
    """:func:`~trtopt.onnx.macs.mac_share` of ``model`` at :func:`resolve_shapes`.

    Raises:
        InputError: Shape inference refuses the graph at those shapes.
    """
    fixed = resolve_shapes(model, shapes=shapes, feeds=feeds, static=static, specs=specs)
    try:
        return mac_share(model, fixed)
    except onnx.shape_inference.InferenceError as exc:
        raise InputError(f"cannot count MACs at input shapes {fixed}: {str(exc).splitlines()[0]}") from exc
