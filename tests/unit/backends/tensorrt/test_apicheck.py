"""The TensorRT names the backend uses: declared list vs sources, and vs the real bindings.

Part 1 (always runs): scan ``trtopt/backends/tensorrt/*.py`` with ``ast`` for ``trt.X.Y`` chains and
for attributes of the reserved TensorRT variables (``builder.create_network`` ...), and require the
declared :data:`USED_API` to equal what the sources (plus the flag names plans produce) use; check that
weak-typing-only names appear only behind feature detection.

Part 2 (needs the package registry once; wheels cached in ``.cache/trt-bindings/``): download the
``tensorrt-cu12-bindings`` 10.x and ``tensorrt-cu13-bindings`` 11.x wheels, extract the names their
``tensorrt.so`` registers, and check every declared name exists where the backend would use it.
"""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

import trtopt.backends.tensorrt as pkg
from trtopt.backends.tensorrt.api import INSTANCE_VARS, USED_API, WEAK_TYPING_FUNCTIONS
from trtopt.backends.tensorrt.config import HARDWARE_COMPAT, PRECISIONS, PROFILING_VERBOSITY, BuildConfig
from trtopt.backends.tensorrt.features import Features, detect_features
from trtopt.backends.tensorrt.graph import GraphInfo
from trtopt.backends.tensorrt.plan import plan_build
from trtopt.errors import ConfigError

SOURCES = sorted(Path(pkg.__file__).parent.glob("*.py"))
DECLARED = {n for names in USED_API.values() for n in names}
WEAK = set(USED_API["weak_typing_only"])


# -- part 1: sources ---------------------------------------------------------------------------
def _chain(node: ast.AST) -> list[str] | None:
    """``trt.A.B`` -> ["A", "B"]; ``builder.f`` -> ["<Builder>", "f"]; else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        root = node.id
    elif isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):  # self._state["context"]
        root = str(node.slice.value)
    else:
        return None
    parts.reverse()
    if root == "trt":
        return parts
    if root in INSTANCE_VARS and parts:
        return [INSTANCE_VARS[root], parts[0]]  # one level: further attributes belong to the returned object
    return None


def _uses() -> list[tuple[str, str, ast.AST, list[ast.AST]]]:
    """(file, dotted name, node, enclosing nodes) for every TensorRT attribute use in the backend."""
    out = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))

        def visit(node, stack, path=path):
            if isinstance(node, ast.Attribute):
                chain = _chain(node)
                if chain:
                    out.append((path.name, ".".join(chain), node, stack))
                    return  # the outermost attribute holds the whole chain
            for child in ast.iter_child_nodes(node):
                visit(child, [*stack, node])

        visit(tree, [])
    return out


def _planned_names() -> set[str]:
    """Enum names that reach ``getattr(trt.<Enum>, name)`` through plans and config choices."""
    names = set()
    infos = [GraphInfo({"x": (1,)}, q, f) for q, f in itertools.product((False, True), repeat=2)]
    for prec, feats, info, calib, sparse, vc in itertools.product(
            PRECISIONS, (Features(True, False), Features(False, True)), infos, (False, True), (False, True),
            (False, True)):
        try:
            plan = plan_build(BuildConfig(precision=prec, sparsity=sparse, version_compatible=vc,
                                          exclude_lean_runtime=vc), feats, info, calib)
        except ConfigError:
            continue
        names |= {f"BuilderFlag.{f}" for f in (*plan.builder_flags, *plan.cleared_flags)}
        names |= {f"NetworkDefinitionCreationFlag.{f}" for f in plan.network_flags}
    dla = plan_build(BuildConfig(precision="fp16", dla_core=0), Features(True), GraphInfo({"x": (1,)}))
    names |= {f"BuilderFlag.{f}" for f in dla.builder_flags}
    names |= {f"ProfilingVerbosity.{v.upper()}" for v in PROFILING_VERBOSITY}
    names |= {f"HardwareCompatibilityLevel.{v.upper()}" for v in HARDWARE_COMPAT}
    return names


def test_declared_api_equals_what_the_sources_use():
    used = {name for _f, name, _n, _s in _uses()} | _planned_names()
    undeclared = sorted(used - DECLARED)
    unused = sorted(DECLARED - used)
    assert not undeclared, f"TensorRT names used but not declared in api.USED_API: {undeclared}"
    assert not unused, f"api.USED_API declares names nothing uses (remove them): {unused}"


def test_scanner_finds_the_core_calls():
    used = {name for _f, name, _n, _s in _uses()}
    for name in ("Builder.build_serialized_network", "IExecutionContext.execute_async_v3",
                 "IBuilderConfig.int8_calibrator", "IInt8EntropyCalibrator2", "OnnxParser.get_error"):
        assert name in used


def _mentions_weak_typing(test: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "weak_typing" for n in ast.walk(test))


def test_weak_typing_names_only_behind_feature_detection():
    for fname, name, _node, stack in _uses():
        if name in WEAK:
            funcs = [s.name for s in stack if isinstance(s, ast.FunctionDef)]
            assert set(funcs) & set(WEAK_TYPING_FUNCTIONS), f"{fname}: {name} used outside {WEAK_TYPING_FUNCTIONS}"
    calls = 0
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in WEAK_TYPING_FUNCTIONS:
                p = node
                inside = False
                while p in parents:
                    p = parents[p]
                    if isinstance(p, ast.FunctionDef) and p.name in WEAK_TYPING_FUNCTIONS:
                        inside = True
                        break
                    if isinstance(p, ast.If) and _mentions_weak_typing(p.test):
                        inside = True
                        break
                assert inside, f"{path.name}:{node.lineno}: {node.func.id}() called without a weak_typing check"
                calls += 1
    assert calls >= 1


# -- part 2: real bindings ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def bindings():
    from tools.trt_apicheck import extract_api, fetch_bindings
    from trtopt.errors import TrtoptError

    out = {}
    for line in ("10.x", "11.x"):
        try:
            out[line] = extract_api(fetch_bindings(line, timeout=180))
        except TrtoptError as exc:
            pytest.skip(f"TensorRT API check against the bindings skipped: {exc}")
    return out


def _has(api, name):
    return api.has(name[: -len(".__init__")] if name.endswith(".__init__") else name)


@pytest.mark.network
def test_extraction_finds_known_names(bindings):
    ten, eleven = bindings["10.x"], bindings["11.x"]
    assert ten.version.startswith("10.") and eleven.version.startswith("11.")
    for api in (ten, eleven):
        assert len(api.identifiers) > 500
        for name in ("IBuilderConfig", "Builder.build_serialized_network",
                     "NetworkDefinitionCreationFlag.STRONGLY_TYPED", "BuilderFlag.SPARSE_WEIGHTS",
                     "IExecutionContext.execute_async_v3"):
            assert api.has(name), (api.version, name)
        assert not api.has("BuilderFlag.NOT_A_FLAG") and not api.has("IBuilderConfig.not_a_method")
    # the version gates the backend relies on
    assert ten.has("BuilderFlag.INT8") and not eleven.has("BuilderFlag.INT8")
    assert ten.has("BuilderFlag.FP16") and not eleven.has("BuilderFlag.FP16")
    assert ten.has("IInt8EntropyCalibrator2") and not eleven.has("IInt8EntropyCalibrator2")
    assert ten.has("NetworkDefinitionCreationFlag.EXPLICIT_BATCH")
    assert not eleven.has("NetworkDefinitionCreationFlag.EXPLICIT_BATCH")
    if ten.version.startswith("10.3"):
        assert not ten.has("Builder.build_engine_with_config")  # first in 10.6
        assert not ten.has("HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY")  # first in 10.9
    assert eleven.has("Builder.build_engine_with_config")


@pytest.mark.network
def test_feature_detection_on_real_bindings(bindings):
    assert detect_features(bindings["10.x"].has).weak_typing
    assert not detect_features(bindings["11.x"].has).weak_typing


@pytest.mark.network
def test_every_used_name_exists_where_it_is_used(bindings):
    for api in bindings.values():
        missing = [n for n in USED_API["common"] if not _has(api, n)]
        assert not missing, f"TensorRT {api.version} lacks {missing}"
    ten = bindings["10.x"]
    assert not [n for n in USED_API["weak_typing_only"] if not _has(ten, n)]
    # optional names are only used after hasattr(); check the detection sees them where they exist
    assert detect_features(bindings["11.x"].has).same_compute_capability == bindings["11.x"].has(
        "HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY")


@pytest.mark.network
def test_planned_flags_exist_in_each_version_that_plans_them(bindings):
    for api in bindings.values():
        feats = detect_features(api.has)
        infos = [GraphInfo({"x": (-1, 4)}, q, f) for q, f in itertools.product((False, True), repeat=2)]
        for prec, info, calib in itertools.product(PRECISIONS, infos, (False, True)):
            try:
                plan = plan_build(BuildConfig(precision=prec, sparsity=True, version_compatible=True), feats, info,
                                  calib)
            except ConfigError:
                continue
            for flag in (*plan.builder_flags, *plan.cleared_flags):
                assert api.has(f"BuilderFlag.{flag}"), (api.version, prec, flag)
            for flag in plan.network_flags:
                assert api.has(f"NetworkDefinitionCreationFlag.{flag}"), (api.version, flag)
            assert api.has(f"HardwareCompatibilityLevel.{plan.hardware_compat}")
            assert api.has(f"ProfilingVerbosity.{plan.profiling_verbosity}")


def _signature_names() -> dict[str, bool]:
    """``Class.name`` -> weak-typing-only, for keyword arguments passed to TensorRT methods and for
    methods overridden in subclasses of TensorRT classes (pybind11 trampolines look them up by name)."""
    out: dict[str, bool] = {}
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.keywords:
                chain = _chain(node.func)
                if chain and len(chain) == 2:
                    for kw in node.keywords:
                        out[f"{chain[0]}.{kw.arg}"] = ".".join(chain) in WEAK
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    chain = _chain(base)
                    if chain:
                        for item in node.body:
                            if isinstance(item, ast.FunctionDef) and not item.name.startswith("__"):
                                out[f"{chain[0]}.{item.name}"] = chain[0] in WEAK
    return out


@pytest.mark.network
def test_keyword_arguments_and_overridden_methods_exist(bindings):
    names = _signature_names()
    assert {"IBuilderConfig.ignore_mismatch", "ILogger.log"} <= set(names)
    for api in bindings.values():
        weak = detect_features(api.has).weak_typing
        missing = [n for n, weak_only in names.items() if (weak or not weak_only) and not api.has(n)]
        assert not missing, f"TensorRT {api.version} lacks {missing}"


#: The TensorRT calibrator callbacks (pybind11 trampolines look them up by name on the Python subclass).
CALIBRATOR_CALLBACKS = {"get_batch_size", "get_batch", "read_calibration_cache", "write_calibration_cache"}


def _polygraphy_calibrator_methods() -> set[str]:
    """Methods defined by the class inside ``polygraphy.backend.trt.Calibrator`` (read from the installed source)."""
    calibrator = pytest.importorskip("polygraphy.backend.trt.calibrator")
    tree = ast.parse(Path(calibrator.__file__).read_text())
    cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "CalibratorClass")
    return {f.name for f in cls.body if isinstance(f, ast.FunctionDef)}


def test_polygraphy_calibrator_overrides_every_tensorrt_callback():
    # trtopt no longer subclasses the calibrator; the callbacks TensorRT calls must all be Polygraphy's.
    assert not CALIBRATOR_CALLBACKS - _polygraphy_calibrator_methods()


@pytest.mark.network
def test_polygraphy_calibrator_callbacks_exist_on_the_10x_base_classes(bindings):
    from trtopt.backends.tensorrt.calibrator import CALIBRATOR_BASES

    ten = bindings["10.x"]
    for base in CALIBRATOR_BASES.values():
        missing = [m for m in sorted(CALIBRATOR_CALLBACKS) if not ten.has(f"{base}.{m}")]
        assert ten.has(base) and not missing, f"TensorRT {ten.version}: {base} lacks {missing}"


def test_unreachable_registry_is_a_clear_error(tmp_path, monkeypatch):
    from tools.trt_apicheck import fetch_bindings
    from trtopt.errors import InputError

    for var, value in (("PIP_INDEX_URL", "http://127.0.0.1:9/simple"), ("PIP_EXTRA_INDEX_URL", ""),
                       ("PIP_FIND_LINKS", str(tmp_path / "none")), ("PIP_RETRIES", "0"), ("PIP_TIMEOUT", "3")):
        monkeypatch.setenv(var, value)
    with pytest.raises(InputError, match="could not download tensorrt-cu13-bindings"):
        fetch_bindings("11.x", tmp_path / "cache", timeout=60)


def test_cached_wheel_is_reused_without_network(tmp_path, monkeypatch):
    from tools.trt_apicheck import fetch_bindings

    wheel = tmp_path / "tensorrt_cu12_bindings-10.3.0-cp311-none-manylinux_2_17_x86_64.whl"
    wheel.write_bytes(b"")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    assert fetch_bindings("10.x", tmp_path) == wheel


def test_scope_grouping_of_lea_strings():
    from tools.trt_apicheck import BindingsAPI, merge_scopes, scopes_from_strings

    seq = ["BuilderFlag", "FP16", "INT8", "IBuilderConfig", "set_flag", "ILogger", "Severity", "WARNING"]
    scopes = scopes_from_strings(seq)
    assert scopes["BuilderFlag"] == {"FP16", "INT8"} and scopes["Severity"] == {"WARNING"}
    merged = merge_scopes(seq, {"IBuilder": {"build_serialized_network"}}, {})
    api = BindingsAPI("x", frozenset(seq), merge_scopes([*seq, "Builder"], {"IBuilder": {"create_network"}}, {}))
    assert merged["IBuilder"] == {"build_serialized_network"}
    assert api.has("Builder.create_network") and api.has("ILogger.Severity") and api.has("BuilderFlag.INT8")
    assert not api.has("BuilderFlag.set_flag") and not api.has("Nope")
