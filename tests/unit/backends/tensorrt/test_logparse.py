"""CPU tests of TensorRT log / inspector parsing and error messages."""

from __future__ import annotations

import json

import pytest

from trtopt.backends.tensorrt.logparse import (
    build_failure,
    deserialize_failure,
    format_parser_errors,
    merge_inspector_sparsity,
    parse_inspector,
    parse_sparsity_log,
    precision_counts,
)
from trtopt.errors import BuildError, IncompatibleArtifactError, InputError

# Shapes of real build logs (TensorRT issues #2169 / #4054, trtexec and Python-logger prefixes).
BUILD_LOG = """\
[03/13/2023-07:07:30] [I] [TRT] Total Activation Memory: 12845568
[03/13/2023-07:07:31] [I] [TRT] (Sparsity) Layers eligible for sparse math: /features/0/Conv + /features/2/Relu, \
/features/3/Conv + /features/5/Relu, /features/6/Conv + /features/8/Relu, /classifier/0/Gemm
[03/13/2023-07:07:31] [I] [TRT] (Sparsity) TRT inference plan picked sparse implementation for layers: \
/features/6/Conv + /features/8/Relu
[03/13/2023-07:07:31] [I] [TRT] Engine generation completed in 12.3 seconds.
""".splitlines()


def test_sparsity_log_eligible_vs_picked():
    rep = parse_sparsity_log(BUILD_LOG)
    assert rep.eligible == ["/features/0/Conv + /features/2/Relu", "/features/3/Conv + /features/5/Relu",
                            "/features/6/Conv + /features/8/Relu", "/classifier/0/Gemm"]
    assert rep.picked == ["/features/6/Conv + /features/8/Relu"]
    assert rep.summary() == "4 layers eligible, 1 picked"


def test_sparsity_log_from_our_logger_prefix_and_absent_lines():
    lines = ["INFO: (Sparsity) Layers eligible for sparse math: conv1", "INFO: (Sparsity) Layers eligible for "
             "sparse math: conv1, conv2", "INFO: (Sparsity) TRT inference plan picked sparse implementation for "
             "layers: "]
    rep = parse_sparsity_log(lines)
    assert rep.eligible == ["conv1", "conv2"] and rep.picked == []
    assert parse_sparsity_log(["INFO: nothing here"]).summary() == "0 layers eligible, 0 picked"


INSPECTOR_10 = {"Layers": [
    {"Name": "/features/0/Conv + /features/2/Relu", "LayerType": "CaskConvolution",
     "Outputs": [{"Name": "a", "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format"}],
     "TacticName": "sm80_xmma_fprop_sparse_conv_interleaved_i8i8_i8i32_f32", "HasSparseWeights": 1},
    {"Name": "/classifier/0/Gemm", "LayerType": "CaskGemmConvolution",
     "Outputs": [{"Name": "b", "Format/Datatype": "Row major linear FP16 format"}],
     "TacticName": "sm80_xmma_gemm_f16f16_f16f32", "HasSparseWeights": 0},
    {"Name": "/Softmax", "LayerType": "CaskSoftMax",
     "Outputs": [{"Name": "c", "Format/Datatype": "Row major linear FP32"}]},
], "Bindings": ["input", "logits"]}

INSPECTOR_11 = {"Layers": [
    {"Name": "conv", "LayerType": "CaskConvolution",
     "Outputs": [{"Name": "a", "Format": "Row major", "Datatype": "Half"}],
     "TacticName": "sm87_xmma_fprop_conv_f16"},
], "I/O Tensors": [{"Name": "input"}]}


def test_inspector_precisions_and_sparse_flags_10x():
    layers = parse_inspector(json.dumps(INSPECTOR_10))
    assert [(x["precision"], x["sparse"]) for x in layers] == [("INT8", True), ("FP16", False), ("FP32", False)]
    assert precision_counts(layers) == {"FP16": 1, "FP32": 1, "INT8": 1}
    rep = merge_inspector_sparsity(parse_sparsity_log([]), layers)
    assert rep.picked == ["/features/0/Conv + /features/2/Relu"]


def test_inspector_11x_schema_and_layer_names_only():
    assert parse_inspector(INSPECTOR_11)[0]["precision"] == "FP16"
    names_only = parse_inspector({"Layers": ["conv", "relu"], "Bindings": []})
    assert [x["name"] for x in names_only] == ["conv", "relu"]
    assert precision_counts(names_only) == {"unknown": 2}


def test_inspector_garbage_is_input_error():
    with pytest.raises(InputError, match="not JSON"):
        parse_inspector("{oops")
    with pytest.raises(InputError, match="no 'Layers'"):
        parse_inspector({"Bindings": []})


def test_parser_errors_name_node_operator_and_message():
    msg = format_parser_errors([{"code": "ErrorCode.UNSUPPORTED_NODE", "node": 3, "node_name": "/head/NonZero",
                                 "node_operator": "NonZero", "desc": "No importer registered for op: NonZero "}])
    assert msg == "node 3 '/head/NonZero' (NonZero): No importer registered for op: NonZero [UNSUPPORTED_NODE]"
    assert format_parser_errors([], ["ERROR: ModelImporter.cpp:123: failed to parse"]) == \
        "ModelImporter.cpp:123: failed to parse"  # the severity prefix is dropped
    assert format_parser_errors([]) == "no details in the parser or log"


def test_build_failure_quotes_logged_errors():
    err = build_failure(["INFO: start", "ERROR: 4: [network.cpp::validate::3100] Error Code 4: Internal Error "
                         "(input: dynamic input is missing dimensions in profile 0.)"])
    assert isinstance(err, BuildError) and "missing dimensions in profile 0" in str(err)
    assert "no error" in str(build_failure([]))


def test_deserialize_failure_version_mismatch_vs_not_an_engine():
    lines = ["ERROR: 1: [stdArchiveReader.cpp::StdArchiveReaderInitCommon::47] Error Code 1: Serialization "
             "(Serialization assertion stdVersionRead == kSERIALIZATION_VERSION failed.Version tag does not match. "
             "Note: Current Version: 239, Serialized Engine Version: 236)"]
    assert isinstance(deserialize_failure("m.engine", lines), IncompatibleArtifactError)
    lines2 = ["ERROR: The engine plan file is not compatible with this version of TensorRT, expecting library "
              "version 10.3.0.26 got 10.0.1.6, please rebuild."]
    err = deserialize_failure("m.engine", lines2)
    assert isinstance(err, IncompatibleArtifactError) and "10.3.0.26" in str(err)
    other = deserialize_failure("m.engine", ["ERROR: 1: Unexpected call to stdArchiveReader"])
    assert isinstance(other, InputError) and "not a TensorRT engine" in str(other)


def test_sparsity_summary_without_log_lines_is_unknown_not_zero():
    from trtopt.backends.tensorrt.logparse import parse_sparsity_log

    rep = parse_sparsity_log(["INFO: nothing about sparsity"])
    assert rep.summary() == "0 layers eligible, 0 picked" and not rep.reported  # TensorRT 10 wording kept
    rep.unknown_reason = "no log"
    assert rep.summary() == "unknown (no log)" and rep.to_dict()["reported"] is False
    seen = parse_sparsity_log(["[TRT] (Sparsity) Layers eligible for sparse math: conv1"])
    seen.unknown_reason = "no log"
    assert seen.reported and seen.summary() == "1 layers eligible, 0 picked"
