"""Every command that reads a data file names the file and its shape on a mismatch, before any work."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from _helpers.data_files import (
    FAST_ARGS,
    cnn_model,
)
from trtopt.cli.main import main
from trtopt.dataset import Dataset, load_npz
from trtopt.errors import InputError

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


def _table(files) -> Path:
    out = files["dir"] / "calib"
    assert main(["calibrate", str(files["cnn"]), "--data", str(files["good"]), "--out", str(out)]) == 0
    return out / "cnn.calib.json"


@pytest.mark.parametrize("cmd", ["calibrate", "quantize-calib-data", "quantize-eval", "bench"])
def test_wrong_shape_names_file_and_its_shape(files, capsys, cmd):
    m, wrong, out = str(files["cnn"]), str(files["wrong"]), files["dir"] / "out"
    argv = {"calibrate": ["calibrate", m, "--data", wrong, "--out", str(out)],
            "bench": ["bench", m, "--data", wrong, "--out", str(out), *FAST_ARGS]}.get(cmd)
    if argv is None:
        table = str(_table(files))
        capsys.readouterr()
        extra = ["--calib-data", wrong] if cmd == "quantize-calib-data" else ["--eval", wrong,
                                                                              "--max-accuracy-drop", "1"]
        argv = ["quantize", m, "--calib", table, *extra, "--out", str(out / "q.onnx")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    # the file by name, the file's own shape (341 samples), never a batch's (32 / 1 samples)
    assert "cnn_wrongshape.npz: 'img' has size 6 on axis 2; the model fixes it to 8" in lines[0]
    assert "[341, 1, 6, 8]" in lines[0] and "(32," not in err and "(1, 1, 6, 8)" not in err
    assert "(evaluate)" not in err  # bench: checked before the first model ran
    assert not out.exists() or not any(out.iterdir())  # nothing written


def test_nan_labels_rejected_naming_the_file(tmp_path, capsys):
    x = np.zeros((4, 1, 8, 8), np.float32)
    np.savez(tmp_path / "nanlab.npz", img=x, labels=np.array([np.nan, 1.0, 2.0, np.inf]))
    with pytest.raises(InputError, match=r"^nanlab.npz: 'labels' holds 2 NaN/Inf value\(s\) of 4"):
        load_npz(tmp_path / "nanlab.npz")
    with pytest.raises(InputError, match="mem: 'labels' holds 1 NaN/Inf"):
        Dataset({"img": x}, labels=np.array([0.0, 1.0, np.nan, 2.0]), source="mem")
    ok = Dataset({"img": x}, labels=np.array([0.0, 1.0, 3.0, 2.0]), source="mem")  # finite floats are fine
    assert ok.labels is not None
    cnn = cnn_model(tmp_path / "cnn.onnx")
    assert main(["bench", str(cnn), "--data", str(tmp_path / "nanlab.npz"), "--out", str(tmp_path / "o"),
                 *FAST_ARGS]) == 2
    err = capsys.readouterr().err
    assert "nanlab.npz: 'labels' holds 2 NaN/Inf" in err and "(evaluate)" not in err
