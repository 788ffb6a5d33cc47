"""Optimization profiles: parsed once from text or specs, then resolved against the model.

Profiles travel as :class:`~trtopt.backends.tensorrt.config.Profile` objects from the caller to the
build: ``--shapes`` text is parsed at the CLI (:func:`parse_shapes`), ``--input`` specs and a
workload's specs become profiles through :func:`profiles_from_specs`, and text appears again only in
the manifest. :func:`resolve_profiles` is a pure decision, tested on CPU: the given profiles first,
then ranges derived from dim names shared with a given input, then the default batch range.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from trtopt.backends.tensorrt.config import BuildConfig, Profile, Shape, profile_problem
from trtopt.backends.tensorrt.graph import GraphInfo
from trtopt.errors import ConfigError

if TYPE_CHECKING:
    from trtopt.inputs import InputSpec

#: Resolved ranges: input name -> (min, opt, max).
Ranges = dict[str, tuple[Shape, Shape, Shape]]
#: Where a resolved profile came from, for a profile the caller gave.
GIVEN = "--shapes"


# -- text and specs ----------------------------------------------------------------------------
def parse_shape(text: str, what: str) -> Shape:
    """Parse ``"1x3x224x224"`` into a tuple of positive ints.

    Raises:
        ConfigError: Not ``x``-separated positive integers (``what`` starts the message).
    """
    try:
        dims = tuple(int(t) for t in text.strip().lower().split("x"))
    except ValueError:
        raise ConfigError(f"{what}: shape '{text}' must look like 1x3x224x224") from None
    if not dims or any(d <= 0 for d in dims):
        raise ConfigError(f"{what}: shape '{text}' must have positive dimensions")
    return dims


def parse_shapes(specs: Iterable[str]) -> tuple[Profile, ...]:
    """Parse ``--shapes`` entries ``name:MIN,OPT,MAX`` (or ``name:SHAPE`` for a static input).

    Raises:
        ConfigError: Malformed entry, duplicate name, rank mismatch, or not ``min <= opt <= max``.
    """
    out: dict[str, Profile] = {}
    for spec in specs:
        name, sep, rest = spec.rpartition(":")
        if not sep or not name:
            raise ConfigError(f"--shapes entry '{spec}' must be NAME:MIN,OPT,MAX (e.g. input:1x3x8x8,8x3x8x8,32x3x8x8)")
        parts = rest.split(",")
        if len(parts) not in (1, 3):
            raise ConfigError(f"--shapes entry '{spec}' needs one shape or three (min,opt,max)")
        shapes = [parse_shape(p, f"--shapes {name}") for p in parts]
        mn, opt, mx = shapes if len(shapes) == 3 else shapes * 3
        if name in out:
            raise ConfigError(f"--shapes names input '{name}' twice")
        problem = profile_problem(name, mn, opt, mx)
        if problem:
            raise ConfigError(f"--shapes {problem}")
        out[name] = Profile(name, mn, opt, mx)
    return tuple(out.values())


def profiles_from_specs(specs: Sequence[InputSpec]) -> tuple[Profile, ...]:
    """One :class:`Profile` per dynamic input spec: MIN/OPT/MAX from its dims' ranges (static specs: none)."""
    return tuple(Profile(s.name, s.shape("min"), s.shape("opt"), s.shape("max"))
                 for s in specs if any(d.dynamic for d in s.dims))


def merge_profiles(first: Sequence[Profile], rest: Sequence[Profile]) -> tuple[Profile, ...]:
    """``first`` plus every profile of ``rest`` for an input that ``first`` does not name."""
    named = {p.name for p in first}
    return (*first, *(p for p in rest if p.name not in named))


# -- resolution --------------------------------------------------------------------------------
def resolve_profiles(info: GraphInfo, config: BuildConfig) -> Ranges:
    """Profile (min, opt, max) per dynamic input: ``config.shapes`` first, else the default batch range.

    Raises:
        ConfigError: Unknown input, shape that contradicts a static dimension, a dynamic input
            (beyond the batch axis) without a profile, or varying shapes on a DLA build.
    """
    return resolve_profiles_with_sources(info, config)[0]


def resolve_profiles_with_sources(info: GraphInfo, config: BuildConfig) -> tuple[Ranges, dict[str, str]]:
    """:func:`resolve_profiles` plus where each profile came from (for the manifest and the build notes).

    An input that ``config.shapes`` does not name, with dynamic axes beyond the batch, gets its profile
    from the inputs that are named when every one of its dynamic axes carries a ``dim_param`` that a
    named input also carries: TensorRT treats equal dim names as one dimension, so ``attention_mask``
    ``[batch, seq]`` must take the range that ``input_ids`` ``[batch, seq]`` was given.

    Returns:
        ``(profiles, {input: "--shapes" | "default batch [..]" | "dims batch, seq of input_ids"})``.
    """
    given = {p.name: p.shapes() for p in config.shapes}
    unknown = sorted(set(given) - set(info.inputs))
    if unknown:
        raise ConfigError(f"--shapes names unknown input(s) {unknown}; model inputs: {sorted(info.inputs)}")
    ranges = _named_ranges(info, given)
    out: Ranges = {}
    sources: dict[str, str] = {}
    for name, dims in info.inputs.items():
        if name in given:
            for s in given[name]:
                if len(s) != len(dims) or any(d > 0 and d != v for d, v in zip(dims, s)):
                    raise ConfigError(f"--shapes {name}: {'x'.join(map(str, s))} does not fit the model's "
                                      f"shape {_fmt(dims)}")
            out[name], sources[name] = given[name], GIVEN
        elif any(d < 0 for d in dims):
            derived = _derive(name, dims, info, ranges)
            if derived is not None:
                out[name], sources[name] = derived
            elif any(d < 0 for d in dims[1:]):
                raise ConfigError(_missing_profile_message(name, dims, info, ranges))
            else:
                out[name] = tuple((b, *dims[1:]) for b in config.default_batch)  # type: ignore[assignment]
                sources[name] = f"default batch {list(config.default_batch)}"
    if config.dla_core >= 0:
        dynamic = sorted(n for n, (mn, _opt, mx) in out.items() if mn != mx)
        if dynamic:
            raise ConfigError(f"DLA needs static shapes (min = opt = max) but {dynamic} vary: pass --shapes "
                              f"{dynamic[0]}:SHAPE")
    return out, sources


def src_is_default(source: str) -> bool:
    """Whether a profile source (see :func:`resolve_profiles_with_sources`) is the default batch range."""
    return source.startswith("default batch")


def _named_ranges(info: GraphInfo, given: Mapping[str, tuple[Shape, Shape, Shape]]
                  ) -> dict[str, tuple[tuple[int, int, int], str]]:
    """``{dim name: ((min, opt, max), input it was read from)}`` from the named axes of the given profiles."""
    out: dict[str, tuple[tuple[int, int, int], str]] = {}
    for name, (mn, opt, mx) in given.items():
        for ax, dim in enumerate(info.dim_names.get(name, ())):
            if dim and ax < len(mn) and dim not in out:  # first given input wins; TensorRT checks the rest
                out[dim] = ((mn[ax], opt[ax], mx[ax]), name)
    return out


def _derive(name: str, dims: Sequence[int], info: GraphInfo,
            ranges: Mapping[str, tuple[tuple[int, int, int], str]]) -> tuple[tuple[Shape, Shape, Shape], str] | None:
    """The profile of ``name`` from named dims shared with given inputs, or None unless every dynamic axis is."""
    names = info.dim_names.get(name, ())
    if len(names) != len(dims) or not ranges:
        return None
    shapes: list[list[int]] = [[], [], []]
    used, sources = [], []
    for ax, d in enumerate(dims):
        if d > 0:
            for s in shapes:
                s.append(d)
            continue
        if names[ax] not in ranges:
            return None
        rng, src = ranges[names[ax]]
        for s, v in zip(shapes, rng):
            s.append(v)
        used.append(str(names[ax]))
        if src not in sources:
            sources.append(src)
    mn, opt, mx = (tuple(s) for s in shapes)
    return (mn, opt, mx), f"dims {', '.join(used)} of {', '.join(sources)}"


def _missing_profile_message(name: str, dims: Sequence[int], info: GraphInfo,
                             ranges: Mapping[str, tuple[tuple[int, int, int], str]]) -> str:
    """One line naming the input, its dims as the graph names them, and both ways to give a profile.

    The suggested ``--input`` spec carries the range a named dim already has from another input.
    """
    names = info.dim_names.get(name) or (None,) * len(dims)
    shown = "(" + ", ".join(str(d) if d > 0 else (n or "?") for d, n in zip(dims, names)) + ")"

    def dim(d: int, n: str | None) -> str:
        if d > 0:
            return str(d)
        rng = "..".join(map(str, ranges[n][0])) if n in ranges else "1..8..32"
        return f"{n}={rng}" if n and _SPEC_NAME.match(n) else rng

    # a spec's dims are split at "x": a graph dim name holding an x is left out of the suggestion
    spec = "x".join(dim(d, n) if n or ax else dim(d, "batch") for ax, (d, n) in enumerate(zip(dims, names)))
    dtype = info.dtypes.get(name, "float32")
    return (f"input '{name}' has dynamic dimensions {shown}: pass --input {name}:{dtype}:{spec} (your ranges) "
            f"or --shapes {name}:MIN,OPT,MAX (e.g. {name}:{_example(dims)})")


_SPEC_NAME = re.compile(r"^[A-Za-wyz_][A-Za-wyz0-9_]*$")


def _fmt(dims: Sequence[int]) -> str:
    return "(" + ", ".join("?" if d < 0 else str(d) for d in dims) + ")"


def _example(dims: Sequence[int]) -> str:
    return ",".join("x".join(str(b if d < 0 else d) for d in dims) for b in (1, 8, 32))
