"""``trtopt run --strict``: exit 1 when an engine-column build failed; without it, one line per failure."""

from __future__ import annotations

from types import SimpleNamespace

from trtopt.cli.main import main


def _fake_run(monkeypatch, tmp_path, engine_extra):
    """``trtopt run`` on a stub pipeline whose report has one variant with ``engine_extra`` in its engine cell."""
    import trtopt.pipeline
    import trtopt.recipe
    from trtopt.benchmark import EngineCell, Report, VariantResult

    report = Report(environment={}, workload={"name": "w"}, variants=[
        VariantResult("int8", "onnxruntime", "int8", batch_size=b, engine=EngineCell(**engine_extra)) for b in (1, 8)])

    class FakePipeline:
        def __init__(self, *a, **k):
            pass

        def run(self):
            return SimpleNamespace(report=report, paths={}, stage_seconds={"bench": 0.1})

    recipe = SimpleNamespace(run=SimpleNamespace(backend="onnxruntime", name="w", out=None))
    monkeypatch.setattr(trtopt.pipeline, "Pipeline", FakePipeline)
    monkeypatch.setattr(trtopt.recipe, "load_recipe", lambda *a, **k: recipe)
    monkeypatch.setattr("trtopt.benchmark.render_table", lambda rep: "table")
    (tmp_path / "r.toml").write_text("")


def test_run_strict_exits_1_when_an_engine_build_failed(tmp_path, monkeypatch, capsys):
    bad = {"text": "build failed: TensorRT engine build failed: ?: Input dimensions ...", "status": "failed",
           "reason": "TensorRT engine build failed: ?: Input dimensions with this name differ\nsecond line"}
    _fake_run(monkeypatch, tmp_path, bad)
    assert main(["run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "o")]) == 0  # not strict: exit 0 ...
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "engine build failed" in ln]
    assert len(lines) == 1 and "int8: TensorRT engine build failed: ?: Input dimensions" in lines[0]  # ... but said
    assert "second line" not in out
    assert main(["run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "o"), "--strict"]) == 1
    assert "--strict: 1 variant(s) not ok: engine build failed: int8" in capsys.readouterr().err


def test_run_strict_exits_0_when_engines_built(tmp_path, monkeypatch, capsys):
    _fake_run(monkeypatch, tmp_path, {"text": "0.9 MB · 5/5 INT8", "status": "ok"})
    assert main(["run", str(tmp_path / "r.toml"), "--out", str(tmp_path / "o"), "--strict"]) == 0
    assert "engine build failed" not in capsys.readouterr().out


def test_cli_unknown_recipe_key_exit_2(tmp_path, capsys):
    bad = tmp_path / "r.toml"
    bad.write_text('[bench]\nwarmpu = 3\n')
    assert main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    assert "warmpu" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
