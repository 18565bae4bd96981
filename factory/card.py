"""The dataset card: a YAML header the Hub reads (configs, features, sizes) and a body with the
teacher, sampling settings and counts per stage, rendered from data_cards/."""

from __future__ import annotations

from importlib import resources

import pyarrow as pa
import yaml

from factory.config import PipelineConfig

STAGE_ORDER = ("ingest", "generate", "verify", "shard")


def card_header(cfg: PipelineConfig, sft: pa.Table, num_bytes: int) -> str:
    import datasets

    split = cfg.shard.split
    info = datasets.DatasetInfo(
        features=datasets.Features.from_arrow_schema(sft.schema),
        splits=[{"name": split, "num_bytes": num_bytes, "num_examples": sft.num_rows}],
        dataset_size=num_bytes,
    )
    header = {
        "license": cfg.shard.license,
        "task_categories": ["text-generation"],
        "tags": ["reasoning", "distillation", "synthetic"],
        "pretty_name": cfg.shard.pretty_name or "Distilled reasoning traces",
        "configs": [{"config_name": "default", "data_files": [{"split": split, "path": f"data/{split}-*"}]}],
        "dataset_info": info._to_yaml_dict(),
    }
    return yaml.safe_dump(header, sort_keys=False, allow_unicode=True)


def render_card(cfg: PipelineConfig, stats: dict, sft: pa.Table, num_bytes: int) -> str:
    import jinja2

    template = resources.files("data_cards").joinpath("dataset_card.md.j2").read_text(encoding="utf-8")
    stages = [(name, stats[name]) for name in STAGE_ORDER if name in stats]
    rejects = [(name, reason, n) for name, entry in stages for reason, n in entry.get("rejected", {}).items()]
    verify_note = (
        "Math answers checked with Math-Verify against the reference; one well-formed think block "
        f"required: {'yes' if cfg.verify.require_think else 'no'}; traces whose reference could not be "
        f"checked were {'kept' if cfg.verify.math.unverifiable == 'accept' else 'set aside'}."
    )
    return jinja2.Template(template, keep_trailing_newline=True).render(
        header=card_header(cfg, sft, num_bytes),
        pretty_name=cfg.shard.pretty_name or "Distilled reasoning traces",
        teacher=cfg.teacher,
        sampling=cfg.teacher.sampling.model_dump(),
        prompt_template=cfg.teacher.prompt_template and cfg.teacher.prompt_template.rsplit("/", 1)[-1],
        split=cfg.shard.split,
        stages=stages,
        rejects=rejects,
        verify_note=verify_note,
    )
