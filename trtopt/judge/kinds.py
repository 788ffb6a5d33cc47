"""What each model output is, so that it is judged by its task: recognition from shapes and the graph.

An output's *kind* decides which task-level agreement judges a variant against FP32
(:mod:`trtopt.judge.verdict`): detections kept, map IoU, decoded sequences, active frames, pitch,
embedding neighbours, top-1 classes; or ``generic`` (the cosine / argmax heuristics of
:func:`trtopt.judge.generic.fidelity`). A kind is recognized from the output's shape and the op
that computes it (a Sigmoid / Softmax tail, a Concat of a 4-channel box branch and a score branch);
where shape and graph do not settle it the output is *not recognized*: it is judged generically and
the report says so and how to declare it (``--output-kind NAME=KIND[:options]``), never a silent guess.
Recognition is :mod:`trtopt.judge.recognize`; this module holds the kinds and their parsing (numpy-free).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from trtopt.errors import ConfigError

#: Every kind and what it judges.
KINDS: dict[str, str] = {
    "generic": "cosine, worst-channel cosine, argmax agreement (no task known)",
    "detection": "YOLO-style head [N, 4+C(+1), A] or [N, A, 4+C(+1)]: FP32 detections kept after NMS",
    "prob_map": "probability map [N, 1, H, W]: regions of the thresholded maps kept (IoU >= 0.5) and precise",
    "segmentation": "segmentation logits [N, C, H, W]: mean IoU of the argmax maps",
    "ctc": "CTC logits [N, T, C] (or [T, N, C] with layout=tnc): greedy-decoded sequences identical",
    "tokens": "token logits [N, T, C]: per-token top-1 agreement",
    "frames": "frame posteriors [N, T, F]: agreement on frames active in either model",
    "pitch": "pitch bins [N, T, F]: voicing and weighted-average pitch within 50 cents",
    "embedding": "embeddings [N, D]: cosine and nearest-neighbour agreement within the batch",
    "classes": "class logits [N, C]: top-1 agreement (Wilson bound on small samples)",
}
#: Default floor of each kind's judged agreement (percent; embeddings also need mean cosine >= 0.99).
DEFAULT_FLOOR: dict[str, float] = {"detection": 90.0, "prob_map": 99.0, "segmentation": 90.0, "ctc": 95.0,
                                   "tokens": 99.0, "frames": 95.0, "pitch": 95.0, "embedding": 95.0,
                                   "classes": 99.0}
_LAYOUTS = {"detection": ("cfirst", "clast"), "ctc": ("ntc", "tnc")}


@dataclass(frozen=True)
class OutputKind:
    """How one output is judged.

    Attributes:
        kind: A key of :data:`KINDS`.
        reason: Why (the shape and graph evidence, or "declared").
        recognized: ``False``: the kind is ``generic`` because nothing settled it (the report asks to declare).
        layout: ``detection``: ``cfirst`` ([N, 4+C, A]) or ``clast`` ([N, A, 4+C]); ``ctc``: ``ntc`` / ``tnc``.
        box: ``detection`` box format, ``xywh`` (centre, size) or ``xyxy`` (corners), in pixels.
        objectness: ``detection``: channel 4 is an objectness score multiplied into the class scores.
        threshold: Confidence (detection, default 0.25), map (0.3), activity (frames 0.5), voicing (pitch 0.5).
        blank: ``ctc`` blank class index (default 0).
        cents: ``pitch`` cents between adjacent bins (default 20, CREPE's 360 bins).
        floor: Lowest acceptable agreement (percent); ``None`` = :data:`DEFAULT_FLOOR`.

    Raises:
        ConfigError: Unknown kind, layout, box format, or a value out of range.
    """

    kind: str
    reason: str = "declared"
    recognized: bool = True
    layout: str | None = None
    box: str = "xywh"
    objectness: bool = False
    threshold: float | None = None
    blank: int = 0
    cents: float = 20.0
    floor: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"unknown output kind '{self.kind}' (kinds: {', '.join(KINDS)})")
        if self.layout is not None and self.layout not in _LAYOUTS.get(self.kind, ()):
            raise ConfigError(f"output kind {self.kind} has no layout '{self.layout}' "
                              f"(layouts: {', '.join(_LAYOUTS.get(self.kind, ())) or 'none'})")
        if self.box not in ("xywh", "xyxy"):
            raise ConfigError(f"box format must be xywh or xyxy, got '{self.box}'")
        if self.floor is not None and not 0 <= self.floor <= 100:
            raise ConfigError(f"output kind floor must be a percentage in [0, 100], got {self.floor}")
        if self.cents <= 0 or self.blank < 0:
            raise ConfigError("output kind cents must be > 0 and blank >= 0")

    @property
    def min_agreement(self) -> float:
        """The floor in force (percent)."""
        return DEFAULT_FLOOR.get(self.kind, 0.0) if self.floor is None else self.floor

    def describe(self) -> str:
        """One line for reports: ``kind (reason)`` or the not-recognized notice."""
        if not self.recognized:
            return f"not recognized, judged generically; declare with --output-kind ({self.reason})"
        return f"{self.kind} ({self.reason})"


_OPTIONS = {"layout": str, "box": str, "objectness": bool, "threshold": float, "blank": int, "cents": float,
            "floor": float}


def parse_kind(text: str) -> OutputKind:
    """Parse ``KIND[:key=value,...]`` (e.g. ``detection:layout=cfirst,box=xywh,threshold=0.25``).

    Raises:
        ConfigError: Unknown kind or option, or a value of the wrong type (one line).
    """
    kind, _, opts = text.partition(":")
    values: dict[str, object] = {}
    for item in (o for o in opts.split(",") if o.strip()):
        key, eq, val = item.partition("=")
        key = key.strip()
        if key not in _OPTIONS or not eq:
            raise ConfigError(f"output kind option '{item}' must be one of "
                              f"{', '.join(k + '=VALUE' for k in _OPTIONS)}")
        conv = _OPTIONS[key]
        try:
            values[key] = val.strip().lower() in ("1", "true", "yes") if conv is bool else conv(val.strip())
        except ValueError:
            raise ConfigError(f"output kind option {key} must be a {conv.__name__}, got '{val}'") from None
    return OutputKind(kind.strip(), **values)


def parse_declarations(items: Sequence[str] | Mapping[str, str]) -> dict[str, OutputKind]:
    """Parse ``NAME=KIND[:options]`` items (CLI) or a ``{NAME: "KIND[:options]"}`` table (recipe).

    Raises:
        ConfigError: An item without ``=``, or a bad kind (one line naming the item).
    """
    pairs = list(items.items()) if isinstance(items, Mapping) else []
    if not isinstance(items, Mapping):
        for item in items:
            name, eq, spec = item.partition("=")
            if not eq or not name.strip() or not spec.strip():
                raise ConfigError(f"--output-kind must be NAME=KIND[:options], got '{item}'")
            pairs.append((name.strip(), spec.strip()))
    out = {}
    for name, spec in pairs:
        if not isinstance(spec, str):
            raise ConfigError(f"output_kinds.{name} must be a string KIND[:options], got {spec!r}")
        out[name] = parse_kind(spec)
    return out


def check_declared(declared: Mapping[str, OutputKind], outputs: Sequence[str]) -> None:
    """Refuse a declaration naming no output of the model (a typo would be ignored).

    Raises:
        ConfigError: Naming the unknown output(s) and the model's outputs.
    """
    unknown = sorted(set(declared) - set(outputs))
    if unknown:
        raise ConfigError(f"--output-kind names {unknown}, not outputs of the model (outputs: {list(outputs)})")


#: Kind -> (rank of the output it judges, the shape in words); ``generic`` takes any shape.
SHAPES: dict[str, tuple[int, str]] = {
    "detection": (3, "[N, 4+C(+1), A] or [N, A, 4+C(+1)]"), "prob_map": (4, "[N, 1, H, W]"),
    "segmentation": (4, "[N, C, H, W]"), "ctc": (3, "[N, T, C] or [T, N, C]"), "tokens": (3, "[N, T, C]"),
    "frames": (3, "[N, T, F]"), "pitch": (3, "[N, T, F]"), "embedding": (2, "[N, D]"), "classes": (2, "[N, C]")}


def check_declared_shape(name: str, kind: OutputKind, shape: Sequence[int]) -> None:
    """Refuse a declared kind the output's shape cannot have (judging it would fail or mean nothing).

    Raises:
        ConfigError: Naming the output, its shape and the shape the kind needs.
    """
    need = SHAPES.get(kind.kind)
    if need is None:
        return
    rank, words = need
    ok = len(shape) == rank
    if ok and kind.kind == "detection":
        ok = max(shape[1], shape[2]) >= 5  # 4 box values and at least one class score
    if ok and kind.kind == "prob_map":
        ok = shape[1] == 1
    if not ok:
        raise ConfigError(f"--output-kind {name}={kind.kind}: output '{name}' has shape {list(shape)}, "
                          f"but {kind.kind} judges {words}; declare another kind (or none: it is then recognized)")
