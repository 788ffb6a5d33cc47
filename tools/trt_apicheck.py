"""Check the TensorRT names the backend uses against the real Python bindings (no GPU needed).

A test tool, not part of the library: ``tests/unit/test_trt_apicheck.py`` and
``tests/unit/test_trt_rtx_api.py`` import it from the repository root (``tools.trt_apicheck``).

TensorRT's libraries cannot be installed everywhere, but the ``tensorrt-cu12-bindings`` /
``tensorrt-cu13-bindings`` wheels are small and hold ``tensorrt.so``, the pybind11 module. pybind11
registers every class, method, property and enum value with a C string literal passed by address,
so x86-64 code loads each name with a RIP-relative ``lea`` just before the registering call. Walking
the disassembly in order therefore yields, for each ``py::class_``/``py::enum_`` name, the names
registered right after it (``BuilderFlag`` -> ``FP16``, ``INT8``, ...). Reading the strings through
the ``lea`` targets (not ``strings``) matters: the linker tail-merges literals, so ``"INT8"`` may only
exist as the tail of a longer string.

Nothing here imports ``tensorrt``; the wheels are downloaded with ``pip download --no-deps`` into a
cache folder and only read.
"""

from __future__ import annotations

import ast
import itertools
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from trtopt.backends.tensorrt.features import has_attr_chain
from trtopt.errors import BackendUnavailableError, InputError

#: Where downloaded binding wheels are kept between runs (git-ignored).
DEFAULT_CACHE = Path(".cache/trt-bindings")
#: (distribution, preferred version spec, major) per TensorRT line that the backend supports.
BINDINGS = {
    "10.x": ("tensorrt-cu12-bindings", "==10.3.0", 10),  # what JetPack 6 ships
    "11.x": ("tensorrt-cu13-bindings", ">=11,<12", 11),  # newest 11.x
}
_ENUM_VALUE = re.compile(r"^[A-Z][A-Z0-9_]*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# A pybind11 class/enum name: CamelCase, no underscores (enum values are UPPER_CASE, methods snake_case).
_SCOPE = re.compile(r"^_?[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*$")
#: The pybind11 module inside a bindings wheel: ``tensorrt.so``, ``tensorrt.cpython-311-....so`` or
#: TensorRT for RTX's ``tensorrt_rtx.so``.
_SO = re.compile(r"/tensorrt(_rtx)?(\.cpython[^/]*)?\.so$")
_LEA = re.compile(r"\slea\s+-?0x[0-9a-f]+\(%rip\),%\w+\s+#\s+([0-9a-f]+)")


@dataclass
class BindingsAPI:
    """Names defined by one version of the TensorRT Python bindings.

    Attributes:
        version: ``tensorrt.__version__`` of the wheel, e.g. ``"10.3.0"``.
        identifiers: Every identifier-like name the module registers (any scope).
        scopes: Class/enum name -> names registered right after it (methods, properties, values).
        python_names: Top-level names defined in the wheel's ``__init__.py`` (e.g. ``nptype``).
    """

    version: str
    identifiers: frozenset[str]
    scopes: dict[str, frozenset[str]] = field(default_factory=dict)
    python_names: frozenset[str] = frozenset()

    def has(self, dotted: str) -> bool:
        """Whether ``trt.<dotted>`` exists, e.g. ``"BuilderFlag.INT8"`` or ``"IBuilderConfig.set_flag"``.

        The first component must be a registered class/enum or a Python-level name; each further
        component must be registered in the scope of the previous one, or be a nested class/enum
        (``ILogger.Severity``). Two corrections of the in-order grouping (both measured against the
        imported TensorRT-for-RTX module and the 11.4 wheel): an enum (a scope with pybind11's
        ``__int__``) has no snake_case members except ``name``/``value`` (method names of the next
        class are otherwise credited to it), and an UPPER_CASE value the grouping left in a class
        scope (``STRONGLY_TYPED`` registered after ``IBuilderConfig``'s block) counts for enums.
        """
        parts = dotted.split(".")
        head = parts[0]
        if head not in self.scopes and head not in self.python_names and head not in self.identifiers:
            return False
        for owner, name in itertools.pairwise(parts):
            if name in self.scopes:
                continue
            if owner in self.scopes and self._is_enum(owner):
                if name in ("name", "value"):
                    continue
                if not _ENUM_VALUE.match(name):
                    return False
                if name not in self.scopes[owner] and name not in self._stray_values():
                    return False
                continue
            if owner not in self.scopes or name not in self.scopes[owner]:
                return False
        return True

    def _is_enum(self, scope: str) -> bool:
        return "__int__" in self.scopes.get(scope, ()) or "__index__" in self.scopes.get(scope, ())

    def _stray_values(self) -> frozenset[str]:
        """UPPER_CASE names found only in class (non-enum) scopes: enum values registered out of order."""
        enums = {k for k in self.scopes if self._is_enum(k)}
        in_enums = {n for k in enums for n in self.scopes[k]}
        stray = {n for k, v in self.scopes.items() if k not in enums for n in v if _ENUM_VALUE.match(n)}
        return frozenset(stray - in_enums)


# -- by import (where the bindings import) --------------------------------------------------
@dataclass
class ImportedAPI:
    """Names of an imported TensorRT module, checked by attribute lookup (no disassembly heuristics).

    TensorRT for RTX imports on a machine without a GPU, so its names are checked this way; the
    ``objdump`` scan (:func:`extract_api`) remains for wheels whose libraries cannot be installed here.

    Attributes:
        version: ``module.__version__``.
        module: The imported module.
    """

    version: str
    module: object

    def has(self, dotted: str) -> bool:
        """Whether ``module.<dotted>`` resolves (``.__init__`` suffixes are accepted)."""
        return has_attr_chain(self.module, dotted)


def imported_api(module_name: str) -> ImportedAPI:
    """Import ``tensorrt`` / ``tensorrt_rtx`` and wrap it for name checks.

    Raises:
        BackendUnavailableError: The module does not import here (use :func:`extract_api` on its wheel).
    """
    import importlib

    try:
        mod = importlib.import_module(module_name)
    except ImportError as exc:
        raise BackendUnavailableError(f"{module_name} does not import here ({exc}); check its wheel with "
                                      "extract_api instead") from exc
    return ImportedAPI(version=str(getattr(mod, "__version__", "unknown")), module=mod)


def scanner_errors(scanned: BindingsAPI, truth: ImportedAPI, names: Iterable[str]) -> dict[str, list[str]]:
    """Where the ``objdump`` scan disagrees with the imported module, over ``names``.

    Returns:
        ``{"false_missing": [...], "false_present": [...]}`` (names the scan gets wrong).
    """
    out: dict[str, list[str]] = {"false_missing": [], "false_present": []}
    for n in names:
        real, seen = truth.has(n), scanned.has(n)
        if real != seen:
            out["false_missing" if real else "false_present"].append(n)
    return out


# -- ELF / disassembly ---------------------------------------------------------------------
def _elf_sections(data: bytes) -> dict[str, tuple[int, int, int]]:
    """Section name -> (address, file offset, size) of a little-endian ELF64 file."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise InputError("not an ELF64 shared object")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    heads = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    str_off = heads[shstrndx][4]
    out = {}
    for name_off, _type, _flags, addr, off, size in heads:
        end = data.index(b"\0", str_off + name_off)
        out[data[str_off + name_off:end].decode()] = (addr, off, size)
    return out


def _disassemble(so_path: Path) -> str:
    if shutil.which("objdump") is None:
        raise BackendUnavailableError("the TensorRT API check needs objdump: install GNU binutils "
                                      "(apt-get install binutils)")
    return subprocess.run(["objdump", "-d", "-C", "--no-show-raw-insn", str(so_path)], capture_output=True,
                          text=True, check=True, timeout=600).stdout


def _owner(symbol: str) -> tuple[str, str] | None:
    """``(C++ type, member function)`` of a ``pybind11::class_<T, ...>::f`` / ``enum_<T>::f`` symbol."""
    m = re.match(r"pybind11::(?:class_|enum_)<([\w:]+)", symbol)
    if not m:
        return None
    depth, start, i = 0, symbol.index("<"), 0
    for i in range(start, len(symbol)):  # find the '>' closing the class template
        depth += {"<": 1, ">": -1}.get(symbol[i], 0)
        if depth == 0:
            break
    fn = re.match(r">::(\w+)", symbol[i:])
    return m.group(1).split("::")[-1], fn.group(1) if fn else ""


def _scan(so_path: Path) -> tuple[list[str], dict[str, set[str]], dict[str, str]]:
    """Walk the disassembly once.

    Returns the ``lea``-loaded strings in code order, the identifiers attributed to each C++ type
    through the pybind11 call they feed (or the specialised pybind11 function they sit in: newer
    compilers clone ``class_<T>::def`` per call with the name folded in), and C++ type -> Python name.
    """
    data = so_path.read_bytes()
    addr, off, size = _elf_sections(data)[".rodata"]
    seq: list[str] = []
    members: dict[str, set[str]] = {}
    alias: dict[str, str] = {}
    pending: list[str] = []
    inside: tuple[str, str] | None = None
    for line in _disassemble(so_path).splitlines():
        head = re.match(r"^[0-9a-f]+ <(.+)>:$", line)
        if head:
            inside, pending = _owner(head.group(1)), []
            continue
        m = _LEA.search(line)
        if m:
            target = int(m.group(1), 16)
            if addr <= target < addr + size:
                start = target - addr + off
                text = data[start:data.index(b"\0", start)]
                if text.isascii() and _IDENT.match(text.decode("ascii")):
                    seq.append(text.decode("ascii"))
                    pending.append(seq[-1])
            continue
        call = re.search(r"\scall\s+[0-9a-f]+ <(.+)>$", line)
        if call:
            owner = inside or _owner(call.group(1))
            if owner:
                _attribute(owner, pending, members, alias)
            pending = []
    if inside and pending:
        _attribute(inside, pending, members, alias)
    return seq, members, alias


def _attribute(owner: tuple[str, str], names: list[str], members: dict[str, set[str]],
               alias: dict[str, str]) -> None:
    cpp, fn = owner
    if fn in ("class_", "enum_"):  # constructor: its scope-like string argument is the Python name
        scoped = [n for n in names if _SCOPE.match(n)]
        if scoped:
            alias.setdefault(cpp, scoped[-1])
        return
    members.setdefault(cpp, set()).update(names)


def scopes_from_strings(seq: Iterable[str]) -> dict[str, frozenset[str]]:
    """Group the ``lea`` string sequence into class/enum scopes (see the module docstring)."""
    scopes: dict[str, set[str]] = {}
    current: set[str] | None = None
    for s in seq:
        if _SCOPE.match(s):
            current = scopes.setdefault(s, set())
        elif current is not None and _IDENT.match(s):
            current.add(s)
    return {k: frozenset(v) for k, v in scopes.items()}


def merge_scopes(seq: list[str], members: dict[str, set[str]], alias: dict[str, str]) -> dict[str, frozenset[str]]:
    """Union of the in-order grouping and the call-site attribution (keyed by Python name)."""
    scopes = {k: set(v) for k, v in scopes_from_strings(seq).items()}
    for cpp, names in members.items():
        targets = {alias.get(cpp, cpp)}
        # pybind11 names most interfaces without the C++ "I" (nvinfer1::IBuilder -> Builder): when the
        # constructor's name was not seen, credit both spellings (membership stays an over-approximation).
        if re.match(r"^I[A-Z]", cpp) and cpp[1:] in scopes:
            targets.add(cpp[1:])
        for t in targets:
            scopes.setdefault(t, set()).update(n for n in names if n != t)
    return {k: frozenset(v) for k, v in scopes.items()}


def _python_names(init_source: str) -> frozenset[str]:
    tree = ast.parse(init_source)
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return frozenset(names)


def extract_api(wheel: str | Path) -> BindingsAPI:
    """Read a bindings wheel and return the names its ``tensorrt.so`` registers.

    Args:
        wheel: Path of a ``tensorrt-cu1x-bindings`` wheel.

    Returns:
        The extracted API.
    """
    with zipfile.ZipFile(wheel) as zf, tempfile.TemporaryDirectory() as tmp:
        so = next((n for n in zf.namelist() if _SO.search(n)), None)
        init = next((n for n in zf.namelist() if n.endswith("/__init__.py") and n.count("/") == 1), None)
        if so is None or init is None:
            raise InputError(f"{wheel} holds no tensorrt.so / __init__.py: not a TensorRT bindings wheel")
        so_path = Path(zf.extract(so, tmp))
        init_src = zf.read(init).decode("utf-8")
        seq, members, alias = _scan(so_path)
    m = re.search(r"__version__\s*=\s*[\"']([^\"']+)", init_src)
    return BindingsAPI(version=m.group(1) if m else "unknown",
                       identifiers=frozenset(seq),
                       scopes=merge_scopes(seq, members, alias), python_names=_python_names(init_src))


# -- downloads -----------------------------------------------------------------------------
def _pip(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=timeout)


def _oldest(dist: str, major: int, timeout: float) -> str | None:
    res = _pip("index", "versions", dist, timeout=timeout)
    m = re.search(r"Available versions:\s*(.+)", res.stdout)
    if not m:
        return None
    vers = [v.strip() for v in m.group(1).split(",") if v.strip().startswith(f"{major}.")]
    key = [tuple(int(p) for p in re.findall(r"\d+", v)) for v in vers]
    return min(zip(key, vers))[1] if vers else None


def fetch_bindings(line: str, cache_dir: str | Path = DEFAULT_CACHE, timeout: float = 300.0) -> Path:
    """Return a cached bindings wheel for ``line`` (``"10.x"`` or ``"11.x"``), downloading it if needed.

    The 10.x line prefers 10.3 (JetPack 6); when the registry lacks it the oldest 10.x is taken.

    Raises:
        InputError: The registry is unreachable or has no matching wheel (message says which).
    """
    dist, spec, major = BINDINGS[line]
    cache = Path(cache_dir)
    stem = dist.replace("-", "_")
    pattern = f"{stem}-10.3.*.whl" if line == "10.x" else f"{stem}-{major}.*.whl"
    hits = sorted(cache.glob(pattern)) or ([] if line == "11.x" else sorted(cache.glob(f"{stem}-{major}.*.whl")))
    if hits:
        return hits[-1]
    cache.mkdir(parents=True, exist_ok=True)
    for attempt in (spec, None):
        if attempt is None:
            oldest = _oldest(dist, major, timeout) if line == "10.x" else None
            if oldest is None:
                break
            attempt = f"=={oldest}"
        try:
            res = _pip("download", "--no-deps", "--only-binary", ":all:", "-d", str(cache), f"{dist}{attempt}",
                       timeout=timeout)
        except subprocess.TimeoutExpired:
            raise InputError(f"downloading {dist}{attempt} timed out after {timeout:.0f} s") from None
        if res.returncode == 0:
            got = sorted(cache.glob(f"{stem}-{major}.*.whl"))
            if got:
                return got[-1]
    raise InputError(f"could not download {dist} ({spec}) from the package registry")
