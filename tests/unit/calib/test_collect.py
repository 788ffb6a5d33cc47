"""Calibration sources and the ONNX Runtime histogram collection on a tiny model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from _helpers.calib_graphs import ORT, matmul_model
from trtopt.calib import (
    CalibrationConfig,
    ImageFolderSource,
    NumpySource,
    PreprocessSpec,
    TorchSource,
    calibrate,
    calibration_targets,
)
from trtopt.errors import ConfigError, InputError


def _tiny_model(tmp_path):
    """x[N,3,6,6] -> Conv -> Relu -> Conv -> Add(residual) -> Relu -> GAP -> Flatten -> Gemm -> y."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.5, "w1"),
        numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32) * 0.3, "w2"),
        numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "wg"),
        numpy_helper.from_array(np.zeros(5, np.float32), "bg"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="/conv2/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c2", "r1"], ["a"], name="/add/Add"),
        helper.make_node("Relu", ["a"], ["r2"], name="/relu2/Relu"),
        helper.make_node("GlobalAveragePool", ["r2"], ["p"], name="/pool/GlobalAveragePool"),
        helper.make_node("Flatten", ["p"], ["f"], name="/flatten/Flatten"),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], name="/fc/Gemm", transB=1),
    ]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "tiny.onnx"
    onnx.save(m, str(path))
    return path, m


@pytest.fixture
def tiny(tmp_path):
    return _tiny_model(tmp_path)


def _data(n=40, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 6, 6)).astype(np.float32)


def test_targets_are_weighted_op_and_residual_add_inputs(tiny):
    _, m = tiny
    # the Add's skip input r1 is calibrated (it is a conv input anyway); the conv branch c2 is not:
    # it fuses into the Add and never gets Q/DQ
    assert calibration_targets(m) == ["x", "r1", "f"]
    assert set(calibration_targets(m, scope="all")) == {"x", "c1", "r1", "c2", "a", "r2", "p", "f", "y"}


def test_residual_add_skip_from_a_downsample_conv_is_calibrated():
    """ResNet's downsample block: Add(conv2(relu(conv1(x))), downsample(x)) -> only the short branch."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), f"w{i}")
             for i, s in enumerate([(4, 3, 3, 3), (4, 4, 3, 3), (4, 3, 1, 1)])]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c1"], name="/conv1/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="/relu1/Relu"),
        helper.make_node("Conv", ["r1", "w1"], ["c2"], name="/conv2/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w2"], ["d"], name="/downsample/Conv"),
        helper.make_node("Add", ["c2", "d"], ["y"], name="/add/Add"),
    ]
    g = helper.make_graph(nodes, "ds", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    assert calibration_targets(m) == ["x", "r1", "d"]


def test_minmax_matches_reference_evaluator_and_entropy_is_tighter(tiny):
    path, m = tiny
    x = _data()
    want = {}
    for t in ("r1", "f"):
        sub = onnx.ModelProto()
        sub.CopyFrom(m)
        sub.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
        want[t] = float(np.abs(ReferenceEvaluator(sub).run([t], {"x": x})[0]).max())
    mm = calibrate(path, NumpySource({"x": x}, batch_size=16), CalibrationConfig(method="minmax"))
    for t, v in want.items():
        assert mm.amax[t] == pytest.approx(v, rel=1e-5)
    assert mm.amax["x"] == pytest.approx(float(np.abs(x).max()))
    ent = calibrate(path, NumpySource({"x": x}, batch_size=16), CalibrationConfig(method="entropy"))
    pct = calibrate(path, NumpySource({"x": x}, batch_size=16), CalibrationConfig(method="percentile", percentile=99.0))
    for t in want:
        assert 0 < ent.amax[t] <= mm.amax[t] + 1e-6
        assert 0 < pct.amax[t] < mm.amax[t]
    assert ent.num_samples == 40 and ent.method == "entropy" and len(ent.model_hash) == 64


def test_data_hash_follows_data_and_order_is_seeded(tiny):
    path, _ = tiny
    x = _data()
    a = calibrate(path, NumpySource({"x": x}, seed=1), CalibrationConfig(method="minmax"))
    b = calibrate(path, NumpySource({"x": x}, seed=1), CalibrationConfig(method="minmax"))
    c = calibrate(path, NumpySource({"x": x}, seed=2), CalibrationConfig(method="minmax"))
    assert a.data_hash == b.data_hash != c.data_hash
    src = NumpySource({"x": x}, batch_size=16, seed=3)
    first = [b["x"].copy() for b in src]
    again = [b["x"] for b in src]  # rewindable, same order
    assert len(first) == 3 and all(np.array_equal(p, q) for p, q in zip(first, again))


def test_bad_data_is_rejected_clearly(tiny):
    path, _ = tiny
    x = _data()
    x[3, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="input 'x' contains 1 NaN/Inf"):
        NumpySource({"x": x})
    with pytest.raises(InputError, match="do not match the model's"):
        calibrate(path, NumpySource({"image": _data()}))
    with pytest.raises(InputError, match="expects"):
        calibrate(path, NumpySource({"x": _data()[:, :2]}))
    with pytest.raises(InputError, match="dtype"):
        calibrate(path, NumpySource({"x": _data().astype(np.int32)}))
    with pytest.raises(InputError, match="not found"):
        calibrate(path.parent / "missing.onnx", NumpySource({"x": _data()}))
    with pytest.raises(ConfigError):
        CalibrationConfig(method="kl")


def test_npz_torch_and_image_folder_sources(tiny, tmp_path):
    import torch
    from PIL import Image

    path, _ = tiny
    x = _data(20)
    np.savez(tmp_path / "c.npz", x=x, labels=np.zeros(20))
    npz = NumpySource.from_npz(tmp_path / "c.npz", batch_size=8, exclude=("labels",))
    assert npz.num_samples == 20 and len(npz) == 3
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.zeros(20)),
                                         batch_size=8)
    t1 = calibrate(path, TorchSource(loader, ["x"]), CalibrationConfig(method="minmax"))
    t2 = calibrate(path, npz, CalibrationConfig(method="minmax"))
    assert t1.amax == pytest.approx(t2.amax)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(5):
        img = np.random.default_rng(i).uniform(0, 255, (9, 11, 3)).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i}.png")
    src = ImageFolderSource(folder, "x", PreprocessSpec(size=(6, 6), resize_shorter=7), batch_size=2, seed=0)
    batches = list(src)
    assert [b["x"].shape for b in batches] == [(2, 3, 6, 6), (2, 3, 6, 6), (1, 3, 6, 6)]
    assert calibrate(path, src).num_samples == 5


def test_optimized_and_unoptimized_sessions_see_the_same_tensors(tiny):
    path, _ = tiny
    x = _data()
    a = calibrate(path, NumpySource({"x": x}, batch_size=16), CalibrationConfig(method="minmax", ort_optimize=True))
    b = calibrate(path, NumpySource({"x": x}, batch_size=16), CalibrationConfig(method="minmax", ort_optimize=False,
                                                                               run_batch_size=0))
    assert set(a.amax) == set(b.amax) == {"x", "r1", "f"}
    for k in a.amax:
        assert a.amax[k] == pytest.approx(b.amax[k], rel=1e-5)


def test_static_batch_model_gets_split_batches(tmp_path):
    _, m = _tiny_model(tmp_path)
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 4  # static batch 4
    x = _data(16)
    t = calibrate(m, NumpySource({"x": x}, batch_size=8), CalibrationConfig(method="minmax"))
    assert t.num_samples == 16 and t.amax["x"] == pytest.approx(float(np.abs(x).max()))
    odd = calibrate(m, NumpySource({"x": x[:15]}, batch_size=6), CalibrationConfig(method="minmax"))
    assert odd.num_samples == 15  # calls of 4 across source batches of 6; the last 3 padded to one call


def test_collector_choice_and_torch_collector_end_to_end(tiny, tmp_path, capsys):
    from trtopt.calib.collect import choose_collector
    from trtopt.cli.main import main

    pytest.importorskip("torch")
    import torch

    path, _ = tiny
    x = _data()
    if not torch.cuda.is_available():  # this machine: auto means ONNX Runtime, without importing torch for it
        assert choose_collector(CalibrationConfig()) == ("onnxruntime", "cpu")
        with pytest.raises(InputError, match="CUDA is not available"):
            choose_collector(CalibrationConfig(collector="torch", device="cuda"))
    assert choose_collector(CalibrationConfig(collector="torch", device="cpu")) == ("torch", "cpu")
    with pytest.raises(ConfigError, match="applies to the torch collector"):
        CalibrationConfig(collector="onnxruntime", device="cuda")
    with pytest.raises(ConfigError, match="collector must be one of"):
        CalibrationConfig(collector="trt")
    ort_t = calibrate(path, NumpySource({"x": x}, batch_size=16), CalibrationConfig(collector="onnxruntime"))
    tch_t = calibrate(path, NumpySource({"x": x}, batch_size=16), CalibrationConfig(collector="torch", device="cpu"))
    assert ort_t.meta["collector"] == "onnxruntime" and tch_t.meta["collector"] == "torch:cpu"
    assert set(ort_t.amax) == set(tch_t.amax) and ort_t.data_hash == tch_t.data_hash
    for k, v in ort_t.amax.items():
        assert tch_t.amax[k] == pytest.approx(v, rel=0.01)
    np.savez(tmp_path / "c.npz", x=x)
    assert main(["calibrate", str(path), "--data", str(tmp_path / "c.npz"), "--collector", "torch", "--device", "cpu",
                 "--out", str(tmp_path / "o")]) == 0
    assert "collector torch:cpu" in capsys.readouterr().err
    if not torch.cuda.is_available():  # checked before the progress bar: one line, no output folder
        assert main(["calibrate", str(path), "--data", str(tmp_path / "c.npz"), "--collector", "torch",
                     "--device", "cuda", "--out", str(tmp_path / "o2")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("trtopt calibrate: error: device 'cuda'") and err.count("\n") == 1
        assert not (tmp_path / "o2").exists()


def test_non_finite_activations_are_left_out_with_a_warning(caplog):
    """An additive attention mask (-inf) under scope='all' must not stop a full-cache calibration."""
    mask = numpy_helper.from_array(np.array([0.0, -np.inf, 0.0, -np.inf], np.float32), "mask")
    nodes = [helper.make_node("Add", ["x", "mask"], ["masked"], name="/mask/Add"),
             helper.make_node("Softmax", ["masked"], ["y"], name="/softmax/Softmax", axis=-1)]
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [mask])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((8, 4)).astype(np.float32)
    with caplog.at_level("WARNING"):
        t = calibrate(m, NumpySource({"x": x}), CalibrationConfig(method="minmax", scope="all"))
    assert t.amax["masked"] == pytest.approx(float(np.abs(x[:, [0, 2]]).max()))
    assert "16 NaN/Inf values" in caplog.text


def test_augmented_bytes_and_skeleton_type_inference():
    """The concatenated-protobuf augmented model and the weight-free type inference match the slow paths."""
    from trtopt.calib.collect import _augmented
    from trtopt.onnx.graph import float_tensor_types

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((64, 128)).astype(np.float32), "w"),  # > 4096 elements
             numpy_helper.from_array(np.array([0, 8, 16], np.int64), "shape")]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="/fc/MatMul"),
             helper.make_node("Reshape", ["h", "shape"], ["r"], name="/r/Reshape"),
             helper.make_node("Relu", ["r"], ["y"], name="/relu/Relu")]
    g = helper.make_graph(nodes, "aug", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    slow = onnx.shape_inference.infer_shapes(m).graph
    want = {v.name: v.type.tensor_type.elem_type for v in list(slow.value_info) + list(slow.output)}
    got = float_tensor_types(m)
    assert {k: got[k] for k in want} == want and got["h"] == TensorProto.FLOAT
    aug = onnx.load_from_string(_augmented(m, ["h", "r", "x"], got))
    assert [o.name for o in aug.graph.output] == ["y", "h", "r"]  # graph inputs are not re-added
    assert [t.name for t in aug.graph.initializer] == ["w", "shape"] and aug.graph.name == "aug"
    import onnxruntime as ort

    sess = ort.InferenceSession(_augmented(m, ["h", "r"], got), providers=["CPUExecutionProvider"])
    y, h, r = sess.run(None, {"x": np.ones((2, 64), np.float32)})
    np.testing.assert_allclose(h, np.ones((2, 64), np.float32) @ numpy_helper.to_array(inits[0]), rtol=1e-5)
    assert r.shape == (2, 8, 16) and np.array_equal(y, np.maximum(r, 0))


def test_histogram_scratch_buffer_and_top_edge_clamp_keep_counts_identical():
    from trtopt.calib.histogram import AbsHistogram

    rng = np.random.default_rng(3)
    batches = [rng.standard_normal(1000).astype(np.float32) * s for s in (1.0, 3.0, 0.5, 7.0)]
    batches.append(np.array([7.0 * 4, -28.0, 0.0], np.float32))  # a value exactly on a grown top edge
    plain, shared = AbsHistogram(64), AbsHistogram(64, scratch={})
    lengths = []
    for b in batches:
        plain.update(b)
        shared.update(b.copy(), owned=True)
        lengths.append(len(plain.counts))
    # reference: floor(|x| * float32(1/width)) clipped to the last bin existing after that batch
    ref = np.zeros_like(plain.counts)
    for b, n in zip(batches, lengths):
        idx = (np.abs(b) * np.float32(1.0 / plain.width)).astype(np.int64)
        ref[:n] += np.bincount(np.minimum(idx, n - 1), minlength=n)
    assert np.array_equal(plain.counts, shared.counts) and plain.amax == shared.amax == 28.0
    assert np.array_equal(plain.counts, ref) and plain.counts.sum() == sum(b.size for b in batches)


def test_auto_collector_falls_back_to_onnxruntime_for_ops_torch_cannot_run(monkeypatch, caplog):
    import trtopt.calib.collect as collect

    pytest.importorskip("torch")
    nodes = [helper.make_node("LRN", ["x"], ["l"], name="/lrn/LRN", size=3),
             helper.make_node("Conv", ["l", "w"], ["y"], name="/conv/Conv")]
    w = numpy_helper.from_array(np.ones((2, 3, 1, 1), np.float32), "w")
    g = helper.make_graph(nodes, "lrn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 4, 4])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.random.default_rng(0).standard_normal((4, 3, 4, 4)).astype(np.float32)
    monkeypatch.setattr(collect, "choose_collector", lambda cfg: ("torch", "cpu"))  # as on a GPU machine
    with caplog.at_level("WARNING"):
        t = calibrate(m, NumpySource({"x": x}), CalibrationConfig())
    assert t.meta["collector"] == "onnxruntime" and "no kernel for LRN" in caplog.text and "l" in t.amax
    with pytest.raises(InputError, match="LRN"):  # asked for explicitly: a clear error instead
        calibrate(m, NumpySource({"x": x}), CalibrationConfig(collector="torch", device="cpu"))


def test_calibration_of_a_model_under_2gb_makes_no_scratch_folder(tiny, tmp_path, monkeypatch):
    """The external-data folder exists only for a model over protobuf's limit: a process that dies while
    calibrating (an ONNX Runtime crash, SIGKILL) leaves no empty ``trtopt-calib-*`` folder behind."""
    import tempfile

    path, _ = tiny
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    seen: list[list[str]] = []
    calibrate(path, NumpySource({"x": _data()}, batch_size=16), CalibrationConfig(method="minmax"),
              progress=lambda *_: seen.append(sorted(p.name for p in scratch.iterdir())))
    assert seen and all(names == [] for names in seen), seen


def test_an_empty_calibration_result_is_an_input_error():
    m = matmul_model()
    with pytest.raises(InputError, match="calibration produced no ranges"):
        calibrate(m, NumpySource({"x": np.zeros((8, 16), np.float32)}), ORT)
