"""The built-in workload registry and the config's list of built-in names agree."""

from __future__ import annotations

import pytest

from trtopt.errors import ConfigError
from trtopt.models.builtin import WORKLOADS
from trtopt.models.load import validate_workload
from trtopt.models.workload import BUILTIN_WORKLOADS, WorkloadConfig


def test_every_built_in_name_has_a_factory_and_no_more():
    assert tuple(WORKLOADS) == BUILTIN_WORKLOADS


def test_a_config_checks_its_values_and_validation_checks_the_users_model(tmp_path):
    with pytest.raises(ConfigError, match="num_calib must be positive"):
        WorkloadConfig(num_calib=0)
    cfg = WorkloadConfig(model="mypkg.models:make")  # constructing it imports nothing of the user's
    with pytest.raises(ConfigError, match="workload.inputs is required"):
        validate_workload(cfg)
    validate_workload(WorkloadConfig(model="resnet18"))
