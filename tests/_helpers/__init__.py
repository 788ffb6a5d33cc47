"""Helpers shared by the test suites: tiny ONNX graphs, a user's project on disk, runner diagnosis.

``pyproject.toml`` puts ``tests/`` on ``sys.path`` (pytest's ``pythonpath``), so tests import them as
``from _helpers.onnx_models import tiny_conv_net``.
"""
