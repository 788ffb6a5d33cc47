"""Input specs: name, dtype, shape with dynamic axes (min/opt/max) and the valid value range.

One :class:`InputSpec` per model input is declared once and used everywhere: the example
tensors and ``dynamic_axes`` of the export, random feeds when no data is given, the check of
data files, and TensorRT optimization profiles. The text form is the CLI's ``--input``::

    name:dtype:DIMS[:LOW..HIGH]

``DIMS`` are ``x``-separated; each dim is a fixed size (``128``), a named dynamic dim with its
range (``batch=1..8..32`` = min..opt..max, ``seq=16..128`` = min..max with opt = max), an unnamed
range (``1..32``) or a bare name (``batch``, axis 0 only: ``1..1..32``). ``LOW..HIGH`` is the
half-open value range random feeds draw from (token ids below the vocabulary size).

Examples: ``input:float32:batchx3x224x224``, ``input_ids:int64:batchx128:0..30522``,
``attention_mask:int64:batch=1..8..32xseq=16..128``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trtopt.errors import ConfigError, InputError

#: dtype names accepted in specs -> numpy dtype
DTYPES: dict[str, Any] = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32,
                          "bool": np.bool_}
#: default (min, opt, max) of a bare dynamic batch dim
DEFAULT_BATCH = (1, 1, 32)
_NAME = re.compile(r"^[A-Za-z_][\w.\-/]*$")


@dataclass(frozen=True)
class Dim:
    """One axis: fixed when ``min == opt == max`` and unnamed; dynamic otherwise.

    Attributes:
        min: Smallest size (optimization profile MIN).
        opt: Size of example tensors and the profile OPT.
        max: Largest size (profile MAX).
        name: Symbolic name of a dynamic axis (shared by inputs that must agree, e.g. ``batch``).
    """

    min: int
    opt: int
    max: int
    name: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.min <= self.opt <= self.max:
            raise ConfigError(f"dim range must satisfy 0 < min <= opt <= max, got {self.min}..{self.opt}..{self.max}")

    @property
    def dynamic(self) -> bool:
        """Whether the axis varies (exported as a named dim)."""
        return self.name is not None or self.min != self.max

    def __str__(self) -> str:
        if not self.dynamic:
            return str(self.opt)
        rng = f"{self.min}..{self.opt}..{self.max}"
        return f"{self.name}={rng}" if self.name else rng


@dataclass(frozen=True)
class InputSpec:
    """A model input.

    Attributes:
        name: Graph input name (= ``forward`` argument order when exporting).
        dtype: One of :data:`DTYPES`.
        dims: One :class:`Dim` per axis (samples on axis 0 for batched inputs).
        low: Inclusive lower bound of random values (integers: token ids; ``None``: default).
        high: Exclusive upper bound (e.g. the vocabulary size).
    """

    name: str
    dtype: str
    dims: tuple[Dim, ...]
    low: float | None = None
    high: float | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"input name '{self.name}' is not a valid name")
        if self.dtype not in DTYPES:
            raise ConfigError(f"input '{self.name}': dtype '{self.dtype}' is not one of {', '.join(DTYPES)}")
        if (self.low is None) != (self.high is None) or (self.low is not None and self.low >= self.high):
            raise ConfigError(f"input '{self.name}': value range must be LOW..HIGH with LOW < HIGH")

    @property
    def np_dtype(self) -> Any:
        """The numpy dtype."""
        return DTYPES[self.dtype]

    def shape(self, which: str = "opt") -> tuple[int, ...]:
        """Concrete shape at ``min``, ``opt`` or ``max``."""
        return tuple(getattr(d, which) for d in self.dims)

    def __str__(self) -> str:
        text = f"{self.name}:{self.dtype}:{'x'.join(map(str, self.dims)) or 'scalar'}"
        if self.low is not None:
            text += f":{_num(self.low)}..{_num(self.high)}"
        return text


def _num(v: float | None) -> str:
    return str(int(v)) if v is not None and float(v).is_integer() else str(v)


def _parse_dim(text: str, axis: int, where: str) -> Dim:
    name, _, rng = text.partition("=") if "=" in text else (None, "", text)
    if name is not None and not re.match(r"^[A-Za-z_]\w*$", name):
        raise ConfigError(f"{where}: bad dim name '{name}'")
    if re.fullmatch(r"[A-Za-z_]\w*", rng) and name is None:  # a bare name
        if axis != 0:
            raise ConfigError(f"{where}: dynamic dim '{rng}' needs its range, e.g. {rng}=16..128 (min..max) "
                              f"or {rng}=16..64..128 (min..opt..max)")
        return Dim(*DEFAULT_BATCH, name=rng)
    try:
        vals = [int(v) for v in rng.split("..")]
    except ValueError:
        raise ConfigError(f"{where}: cannot read dim '{text}' (write 128, batch, batch=1..8..32 or seq=16..128)") \
            from None
    if len(vals) == 1:
        if name is not None:
            return Dim(vals[0], vals[0], vals[0], name=name)
        if vals[0] == -1 and axis == 0:
            return Dim(*DEFAULT_BATCH, name="batch")
        if vals[0] <= 0:
            raise ConfigError(f"{where}: dim {vals[0]} must be positive (dynamic dims: batch=1..8..32)")
        return Dim(vals[0], vals[0], vals[0])
    if len(vals) == 2:
        vals = [vals[0], vals[1], vals[1]]
    if len(vals) != 3:
        raise ConfigError(f"{where}: dim '{text}' has too many '..' parts (min..opt..max)")
    try:
        return Dim(*vals, name=name or ("batch" if axis == 0 else None))
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_input_spec(text: str) -> InputSpec:
    """Parse ``name:dtype:DIMS[:LOW..HIGH]`` (see the module docstring).

    Raises:
        ConfigError: With the expected form.
    """
    where = f"--input '{text}'"
    parts = str(text).split(":")
    if len(parts) not in (3, 4):
        raise ConfigError(f"{where}: write NAME:DTYPE:SHAPE[:LOW..HIGH], e.g. input_ids:int64:batchx128:0..30522")
    name, dtype, shape = parts[:3]
    dims = () if shape in ("", "scalar") else tuple(_parse_dim(t, ax, where) for ax, t in enumerate(shape.split("x")))
    low = high = None
    if len(parts) == 4:
        try:
            low, high = (float(v) for v in parts[3].split(".."))
        except ValueError:
            raise ConfigError(f"{where}: value range must be LOW..HIGH, got '{parts[3]}'") from None
    try:
        return InputSpec(name, dtype, dims, low, high)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_input_specs(texts: Iterable[str]) -> tuple[InputSpec, ...]:
    """Parse several specs; names must be unique and a named dim must have one range everywhere."""
    specs = tuple(s if isinstance(s, InputSpec) else parse_input_spec(s) for s in texts)
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"input(s) {dup} declared twice")
    ranges: dict[str, tuple[int, int, int]] = {}
    for s in specs:
        for d in s.dims:
            if d.name and ranges.setdefault(d.name, (d.min, d.opt, d.max)) != (d.min, d.opt, d.max):
                raise ConfigError(f"dim '{d.name}' has two different ranges: {ranges[d.name]} and "
                                  f"{(d.min, d.opt, d.max)} (a named dim must be the same wherever it appears)")
    return specs


# -- from and against ONNX ------------------------------------------------------------------
_ONNX_DTYPE = {1: "float32", 10: "float16", 7: "int64", 6: "int32", 9: "bool"}


def specs_from_onnx(model: Any, batch: tuple[int, int, int] = DEFAULT_BATCH) -> tuple[InputSpec, ...]:
    """Specs of an ONNX model's real inputs, as the graph declares them.

    Dynamic axis 0 gets ``batch``; other dynamic axes keep their name with range ``1..1..1`` (unknown:
    data or ``--input`` must say). Integer inputs that index a constant table (an embedding ``Gather``)
    get ``0..rows``; inputs whose name says mask get ``0..2``.

    Raises:
        InputError: An input of a dtype trtopt does not feed (string, complex).
    """
    from trtopt.onnx.dims import graph_inputs

    rows = embedding_rows(model)
    out = []
    for gi in graph_inputs(model):
        if gi.elem_type not in _ONNX_DTYPE:
            raise InputError(f"input '{gi.name}' has ONNX element type {gi.elem_type}, which trtopt cannot feed")
        dims = []
        for ax, (v, nm) in enumerate(zip(gi.dims, gi.dim_names)):
            if v is not None:
                dims.append(Dim(v, v, v))
            else:
                dims.append(Dim(*batch, name="batch") if ax == 0 else Dim(1, 1, 1, name=nm or f"{gi.name}_{ax}"))
        dtype = _ONNX_DTYPE[gi.elem_type]
        low = high = None
        if dtype in ("int64", "int32"):
            if gi.name in rows:
                low, high = 0, rows[gi.name]
            elif "mask" in gi.name.lower():
                low, high = 0, 2
        out.append(InputSpec(gi.name, dtype, tuple(dims), low, high))
    return tuple(out)


def embedding_rows(model: Any) -> dict[str, int]:
    """``{input name: rows}`` for integer graph inputs used as indices of a ``Gather`` on a constant table.

    Looks through Cast/Reshape/Unsqueeze-style value-preserving ops between the input and the Gather
    (:func:`trtopt.onnx.graph.source_producer`); the table may be an initializer or a ``Constant`` node.
    """
    from trtopt.onnx.graph import constant_names
    from trtopt.onnx.walk import iter_nodes

    g = model.graph
    inputs = {vi.name for vi in g.input}
    consts = constant_names(g)
    shapes = {t.name: tuple(t.dims) for t in g.initializer}
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    shapes[node.output[0]] = tuple(a.t.dims)
    out: dict[str, int] = {}
    for _path, node in iter_nodes(g):
        if node.op_type != "Gather" or len(node.input) < 2 or node.input[0] not in consts:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        table = shapes.get(node.input[0])
        if not table or axis != 0:
            continue
        src = _graph_input_of(g, node.input[1])
        if src in inputs:
            out[src] = min(out.get(src, int(table[0])), int(table[0]))
    return out


#: ops that pass index values through unchanged (only their first input carries the values)
_INDEX_PRESERVING = frozenset({"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Slice", "Expand",
                               "Transpose"})


def _graph_input_of(graph: Any, tensor: str) -> str | None:
    """The tensor reached by following input 0 of index-preserving ops back from ``tensor``."""
    from trtopt.onnx.graph import producers

    prod = producers(graph)
    seen = set()
    while tensor in prod and tensor not in seen:
        seen.add(tensor)
        node = prod[tensor]
        if node.op_type not in _INDEX_PRESERVING or not node.input:
            return None
        tensor = node.input[0]
    return tensor


def guessed_mask_range(spec: InputSpec) -> bool:
    """Whether a spec's value range is the ``0..2`` that :func:`specs_from_onnx` guesses for a mask-named input."""
    return (spec.low, spec.high) == (0, 2) and "mask" in spec.name.lower()


def check_specs_against_onnx(specs: Sequence[InputSpec], model: Any, where: str = "--input") -> None:
    """Check declared specs against the graph's inputs: names, rank, dtype, fixed dims and index ranges.

    Raises:
        InputError: Naming the input and what contradicts the model (a value range past an
            embedding table's rows: random token ids from it would fail in the runtime).
    """
    rows = embedding_rows(model)
    graph = {s.name: s for s in specs_from_onnx(model)}
    unknown = sorted({s.name for s in specs} - set(graph))
    if unknown:
        raise InputError(f"{where}: {unknown} not among the model's inputs {sorted(graph)}")
    for s in specs:
        g = graph[s.name]
        if s.dtype != g.dtype:
            raise InputError(f"{where}: input '{s.name}' is declared {s.dtype} but the model takes {g.dtype}")
        if len(s.dims) != len(g.dims):
            raise InputError(f"{where}: input '{s.name}' is declared with rank {len(s.dims)} "
                             f"({'x'.join(map(str, s.dims))}) but the model's has rank {len(g.dims)}")
        for ax, (d, gd) in enumerate(zip(s.dims, g.dims)):
            if not gd.dynamic and (d.min != gd.opt or d.max != gd.opt):
                raise InputError(f"{where}: input '{s.name}' axis {ax} is {d} but the model fixes it to {gd.opt}")
        if s.name in rows and s.low is not None and (s.low < 0 or s.high > rows[s.name]):
            raise InputError(f"{where}: input '{s.name}' declares values {_num(s.low)}..{_num(s.high)}, but it indexes "
                             f"an embedding table of {rows[s.name]} rows: declare {s.name}:{s.dtype}:"
                             f"{'x'.join(map(str, s.dims))}:0..{rows[s.name]}")


def check_batch_sizes(specs: Sequence[InputSpec], batch_sizes: Sequence[int], what: str = "--batch",
                      where: str = "--input") -> None:
    """Every batch size inside each spec's declared batch range (axis 0): ``bench --batch`` and ``[bench]``.

    An engine's optimization profile is built from these ranges: a size outside them would not run there.

    Args:
        specs: Declared input specs (a fixed or range-less axis 0 accepts any size).
        batch_sizes: Batch sizes to be timed.
        what: The option or key holding ``batch_sizes``, for the message.
        where: The option or key holding ``specs``, for the message.

    Raises:
        ConfigError: A batch size outside a declared range, with the range that would hold them.
    """
    bs = list(batch_sizes)
    for s in specs:
        d = s.dims[0] if s.dims else None
        if d is not None and d.dynamic and bs and not all(d.min <= b <= d.max for b in bs):
            raise ConfigError(f"{what} {bs} are outside the batch range {d.min}..{d.max} of input '{s.name}' ({where}: "
                              f"{s}); widen the range, e.g. batch=1..{min(bs)}..{max(bs)}, or time other batch sizes")


# -- feeds ------------------------------------------------------------------------------------
def random_feeds(specs: Sequence[InputSpec], n: int, seed: int = 0,
                 sizes: Mapping[str, int] | None = None) -> dict[str, np.ndarray]:
    """Random inputs: ``n`` samples on axis 0 of batched inputs, other axes at their OPT size.

    Floats are standard normal (or uniform in ``[low, high)`` when given); integers are uniform in
    ``[low, high)``; bools are random 0/1. Integer inputs with no known range, and mask-like ones
    (``0..2`` on an input whose name says mask), are all ones: 1 is a valid index of any table with
    two rows, and a fully masked row would make mean pooling divide by zero.

    Args:
        specs: Input specs.
        n: Samples (axis-0 size of every input whose axis 0 is dynamic).
        seed: RNG seed.
        sizes: Size override per dim name (e.g. ``{"seq": 64}``).

    Returns:
        Input name -> array.
    """
    rng = np.random.default_rng(seed)
    sizes = dict(sizes or {})
    feeds = {}
    for s in specs:
        shape = tuple(n if ax == 0 and d.dynamic else sizes.get(d.name, d.opt) if d.name else d.opt
                      for ax, d in enumerate(s.dims))
        dt = s.np_dtype
        if s.dtype == "bool":
            feeds[s.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif np.issubdtype(dt, np.floating):
            arr = rng.standard_normal(shape) if s.low is None else rng.uniform(s.low, s.high, size=shape)
            feeds[s.name] = arr.astype(dt)
        elif s.low is None or guessed_mask_range(s):
            feeds[s.name] = np.ones(shape, dtype=dt)
        else:
            feeds[s.name] = rng.integers(int(s.low), int(s.high), size=shape).astype(dt)
    return feeds


def example_tensors(specs: Sequence[InputSpec]) -> tuple[Any, ...]:
    """Torch example tensors at OPT shape (batch of 1 on a dynamic axis 0) for export and forward checks.

    Integer inputs are filled with ``low`` (a valid token id), masks with ones.
    """
    import torch

    feeds = random_feeds(specs, 1, seed=0)
    return tuple(torch.from_numpy(np.ascontiguousarray(feeds[s.name])) for s in specs)


def dynamic_axes(specs: Sequence[InputSpec]) -> dict[str, dict[int, str]]:
    """``torch.onnx.export`` ``dynamic_axes`` for the inputs: ``{input: {axis: dim name}}``."""
    out: dict[str, dict[int, str]] = {}
    for s in specs:
        axes = {ax: d.name or f"{s.name}_{ax}" for ax, d in enumerate(s.dims) if d.dynamic}
        if axes:
            out[s.name] = axes
    return out
