"""Output kinds are recognized from shapes and the graph; where unsure the report asks to declare."""

from __future__ import annotations

import pytest

from _helpers.judge_graphs import l2_normalized, tail, yolo_head
from trtopt.errors import ConfigError
from trtopt.judge.kinds import OutputKind, parse_declarations, parse_kind
from trtopt.judge.recognize import recognize


def _kind(model, shape):
    return recognize(model, {"y": shape})["y"]


def test_a_concat_of_boxes_and_sigmoid_scores_is_a_detection_head_in_either_layout():
    first = _kind(yolo_head(axis=1), (1, 7, 2100))
    last = _kind(yolo_head(axis=2), (1, 2100, 7))
    assert (first.kind, first.layout, first.recognized) == ("detection", "cfirst", True)
    assert (last.kind, last.layout) == ("detection", "clast")
    assert "Sigmoid" in first.reason


@pytest.mark.parametrize("op, attrs, shape, kind", [
    ("Sigmoid", {}, (2, 1, 32, 32), "prob_map"),
    ("Softmax", {"axis": 1}, (2, 5, 16, 16), "segmentation"),
    ("Softmax", {"axis": -1}, (2, 40, 97), "ctc"),
    ("Sigmoid", {}, (2, 100, 88), "frames"),
    ("Sigmoid", {}, (2, 100, 360), "pitch"),
    ("Softmax", {"axis": -1}, (8, 10), "classes"),
])
def test_tails_and_shapes_name_the_kind(op, attrs, shape, kind):
    k = _kind(tail(op, **attrs), shape)
    assert k.kind == kind and k.recognized


def test_an_l2_normalized_vector_is_an_embedding():
    assert _kind(l2_normalized(), (8, 8)).kind == "embedding"


@pytest.mark.parametrize("op, shape", [("Relu", (8, 10)), ("Relu", (1, 7, 2100)), ("Relu", (2, 3, 16, 16)),
                                       ("Sigmoid", (8, 10))])
def test_an_output_no_rule_settles_is_judged_generically_and_the_report_asks(op, shape):
    k = _kind(tail(op), shape)
    assert k.kind == "generic" and not k.recognized
    assert "not recognized, judged generically; declare with --output-kind" in k.describe()


def test_a_declaration_wins_over_recognition_and_carries_its_options():
    declared = parse_declarations(["y=detection:layout=clast,box=xyxy,objectness=1,threshold=0.4,floor=80"])
    k = recognize(tail("Relu"), {"y": (1, 100, 9)}, declared)["y"]
    assert k == OutputKind("detection", layout="clast", box="xyxy", objectness=True, threshold=0.4, floor=80.0)
    assert k.min_agreement == 80.0 and k.reason == "declared"
    assert parse_declarations({"y": "ctc:layout=tnc,blank=5"})["y"].blank == 5  # the recipe's table


@pytest.mark.parametrize("text, message", [
    ("y", "NAME=KIND"), ("y=boxes", "unknown output kind 'boxes'"), ("y=ctc:layout=cfirst", "no layout"),
    ("y=detection:conf=0.2", "must be one of"), ("y=detection:threshold=high", "must be a float"),
    ("y=classes:floor=120", "floor"),
])
def test_bad_declarations_are_one_clear_error(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_declarations([text])


def test_a_declaration_naming_no_output_is_refused():
    with pytest.raises(ConfigError, match="not outputs of the model"):
        recognize(tail("Relu"), {"y": (2, 3)}, {"logits": parse_kind("classes")})


@pytest.mark.parametrize("kind, shape", [("detection", (8, 10)), ("ctc", (8, 10)), ("prob_map", (2, 3, 16, 16)),
                                         ("segmentation", (8, 10)), ("frames", (8, 10)), ("embedding", (1, 7, 9)),
                                         ("detection", (1, 3, 4))])
def test_a_declared_kind_the_shape_cannot_have_is_one_clear_error(kind, shape):
    with pytest.raises(ConfigError, match=rf"--output-kind y={kind}: output 'y' has shape \[.*\], but {kind} judges"):
        recognize(tail("Relu"), {"y": shape}, {"y": parse_kind(kind)})
