"""Shared pytest setup: GPU / TensorRT markers skip cleanly where the hardware is absent."""

from __future__ import annotations

import importlib.util

import pytest

#: Fixtures shared by several test files (importable helpers in tests/_helpers).
pytest_plugins = ["_helpers.data_files", "_helpers.user_nets"]


def _has_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _has_tensorrt() -> bool:
    try:
        return importlib.util.find_spec("tensorrt") is not None
    except (ImportError, ValueError):
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``gpu`` tests without CUDA and ``tensorrt`` tests without TensorRT + CUDA."""
    cuda = tensorrt = None
    for item in items:
        # Markers, not keywords: keywords also hold folder names (tests/gpu, tests/unit/backends/tensorrt).
        wants_trt = item.get_closest_marker("tensorrt") is not None
        if wants_trt or item.get_closest_marker("gpu") is not None:
            if cuda is None:
                cuda, tensorrt = _has_cuda(), _has_tensorrt()
            if wants_trt and not tensorrt:
                item.add_marker(pytest.mark.skip(reason="TensorRT is not installed (pip install 'trtopt[tensorrt]')"))
            elif not cuda:
                item.add_marker(pytest.mark.skip(reason="no CUDA GPU available"))
