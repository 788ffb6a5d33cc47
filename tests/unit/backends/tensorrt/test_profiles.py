"""Optimization profiles: a missing input's message names the graph's dims and a spec that parses."""

from __future__ import annotations

import pytest

from _helpers.dim_graphs import qmark_model, two_input_model


def test_missing_input_message_names_graph_dims_and_the_input_spec_form(tmp_path, capsys):
    from trtopt.backends.tensorrt.config import BuildConfig
    from trtopt.backends.tensorrt.graph import graph_info
    from trtopt.backends.tensorrt.profiles import parse_shapes, resolve_profiles
    from trtopt.errors import ConfigError

    path = two_input_model(tmp_path / "two.onnx", mask_dims=("batch", "mask_len"))
    info = graph_info(path.read_bytes())
    with pytest.raises(ConfigError) as e:  # mask_len is not shared with input_ids: no derivation
        resolve_profiles(info, BuildConfig(shapes=parse_shapes(["input_ids:1x8,4x16,8x32"])))
    msg = str(e.value)
    assert "input 'attention_mask' has dynamic dimensions (batch, mask_len)" in msg
    assert "--input attention_mask:int64:batch=1..4..8xmask_len=1..8..32" in msg and "--shapes attention_mask:" in msg


def test_missing_profile_message_shows_placeholder_dims_as_unknown_and_a_spec_that_parses(tmp_path):
    from trtopt.backends.tensorrt.config import BuildConfig
    from trtopt.backends.tensorrt.graph import graph_info, hide_renamed_dims, prepare_for_parser
    from trtopt.backends.tensorrt.profiles import resolve_profiles
    from trtopt.errors import ConfigError
    from trtopt.inputs import parse_input_spec

    path = qmark_model(tmp_path / "q.onnx")
    data, renamed = prepare_for_parser(path.read_bytes(), "q.onnx")
    assert set(renamed) == {"x[2]", "x[3]"}
    with pytest.raises(ConfigError) as e:
        resolve_profiles(hide_renamed_dims(graph_info(data), renamed), BuildConfig())
    msg = str(e.value)
    assert "input 'x' has dynamic dimensions (?, 3, ?, ?)" in msg
    spec = msg.split("--input ", 1)[1].split(" ", 1)[0]
    assert parse_input_spec(spec).shape("max") == (32, 3, 32, 32)
