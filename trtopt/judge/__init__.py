"""Judging a variant by the task of each output: kinds, task metrics and the verdict.

* :mod:`trtopt.judge.kinds`: what each output can be, declared with ``--output-kind NAME=KIND[:options]``;
  :mod:`trtopt.judge.recognize`: recognized from shapes and the graph;
* :mod:`trtopt.judge.detection`, :mod:`~trtopt.judge.dense`, :mod:`~trtopt.judge.sequence`,
  :mod:`~trtopt.judge.vectors`: the task agreement of each family of kinds;
* :mod:`trtopt.judge.generic`: the ``generic`` kind (cosine, worst channel, argmax agreement, SQNR) and
  its :class:`~trtopt.judge.generic.Tolerance` (``trtopt.judge.generic`` re-exports them);
* :mod:`trtopt.judge.verdict`: :class:`~trtopt.judge.verdict.Judge`, the one judge of the fidelity guard,
  the benchmark and the gate (non-finite FP32, outlier samples, held-out data).
"""

from trtopt.judge.kinds import KINDS, OutputKind, parse_declarations, parse_kind
from trtopt.judge.recognize import recognize
from trtopt.judge.verdict import Judge, OutputVerdict, Verdict

__all__ = ["KINDS", "Judge", "OutputKind", "OutputVerdict", "Verdict", "parse_declarations", "parse_kind",
           "recognize"]
