"""`cluster.pool_resources`: the custom resources that put engines on the GPU pool's nodes (the two-node run
itself is in test_two_nodes.py)."""

import pytest

from factory.config import ClusterConfig, PipelineConfig, load_config
from factory.errors import ConfigError
from factory.runtime import on_pool
from factory.teacher.engine import processor_kwargs


@pytest.mark.parametrize("on_cpu, device", [(True, {"CPU": 1}), (False, {"GPU": 1, "CPU": 1})])
def test_engine_bundles_ask_for_the_pool(on_cpu, device):
    cfg = load_config(None, ["cluster.pool_resources={pool: 1}", "teacher.tensor_parallel_size=2"])
    kwargs = on_pool(processor_kwargs(cfg.teacher, on_cpu), cfg.cluster)
    assert kwargs["placement_group_config"]["bundle_per_worker"] == {**device, "pool": 1}


def test_without_a_pool_the_engine_bundles_are_untouched():
    teacher = PipelineConfig().teacher
    assert on_pool(processor_kwargs(teacher, True), ClusterConfig()) == processor_kwargs(teacher, True)


def test_a_bad_pool_setting_names_the_key():
    with pytest.raises(ConfigError, match=r"cluster\.pool_resources\.pool"):
        load_config(None, ["cluster.pool_resources={pool: many}"])
