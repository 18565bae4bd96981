"""The dataset card: a YAML header the Hub reads (license, configs with data files per split, features,
sizes) and a body with the teacher, sampling, pipeline settings, counts and reasons per stage,
decontamination hits, generation cost and plots, rendered from data_cards/.

The header is built the way `datasets.push_to_hub` builds it (DatasetCardData, MetadataConfigs,
DatasetInfosDict), so `load_dataset` and the Hub read it the same way.
"""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from importlib import resources

import pyarrow as pa
import yaml

from factory.config import PipelineConfig
from factory.records import SFT_SCHEMA

DEFAULT_NAME = "Distilled reasoning traces"
SIZE_CATEGORIES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                   (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
REQUIRED_KEYS = ("license", "task_categories", "language", "pretty_name", "configs", "dataset_info")
SETTINGS_SECTIONS = ("teacher", "verify", "curate", "shard")  # what shaped the rows; not run_dir, publish, ...


def size_category(rows: int) -> str:
    return next((name for limit, name in SIZE_CATEGORIES if rows < limit), "n>1T")


def card_header(cfg: PipelineConfig, schema: pa.Schema, splits: dict[str, dict]) -> str:
    import datasets
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    rows = sum(s["rows"] for s in splits.values())
    card = DatasetCardData(
        license=cfg.shard.license,
        language=cfg.shard.language,
        task_categories=["text-generation"],
        size_categories=[size_category(rows)],
        pretty_name=cfg.shard.pretty_name or DEFAULT_NAME,
        tags=cfg.shard.tags,
    )
    data_files = [{"split": name, "path": f"data/{name}-*"} for name in splits]
    MetadataConfigs({"default": {"data_files": data_files}}).to_dataset_card_data(card)
    info = datasets.DatasetInfo(
        features=datasets.Features.from_arrow_schema(schema),
        splits=datasets.SplitDict.from_split_dict(
            [{"name": name, "num_bytes": s["num_bytes"], "num_examples": s["rows"]} for name, s in splits.items()]
        ),
        download_size=sum(f["bytes"] for s in splits.values() for f in s["files"]),
        dataset_size=sum(s["num_bytes"] for s in splits.values()),
    )
    DatasetInfosDict({"default": info}).to_dataset_card_data(card)
    return card.to_yaml() + "\n"


def parse_header(card_text: str) -> dict:
    """The YAML header of a card as a dict; ValueError when it is missing or not a mapping."""
    parts = card_text.split("---\n", 2)
    if not card_text.startswith("---\n") or len(parts) < 3:
        raise ValueError("README.md has no YAML header between '---' lines")
    header = yaml.safe_load(parts[1])
    if not isinstance(header, dict):
        raise ValueError("README.md's YAML header is not a mapping")
    return header


def numeric_leaves(entry: dict, prefix: str = "") -> list[tuple[str, float]]:
    """Numbers in a stats entry, nested keys joined with '.', e.g. ('tokens.out', 1234)."""
    out = []
    for key, value in entry.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out += numeric_leaves(value, f"{name}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append((name, value))
    return out


def _clip(value, width: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _example(example) -> str:
    if isinstance(example, dict):
        return "; ".join(f"{k}: {_clip(v, 120)}" for k, v in example.items())
    return _clip(example)


def settings_yaml(cfg: PipelineConfig) -> str:
    dump = cfg.model_dump(mode="json")
    settings = {key: dump[key] for key in SETTINGS_SECTIONS if key in dump}
    for key in ("prompt_template", "chat_template"):  # file names only: local paths say nothing to readers
        if settings["teacher"].get(key):
            settings["teacher"][key] = posixpath.basename(settings["teacher"][key])
    settings["sources"] = [{"name": s.name, "domain": s.domain} for s in cfg.sources]
    return yaml.safe_dump(settings, sort_keys=False, allow_unicode=True)


def teachers_and_sampling(cfg: PipelineConfig, teachers: Counter, samplings: set[str], rows: int
                          ) -> tuple[list[tuple[str, int]], list[dict]]:
    """What the rows themselves record; the pipeline settings when they record nothing."""
    return (
        teachers.most_common() or [(cfg.teacher.model, rows)],
        [json.loads(s) for s in sorted(samplings)] or [cfg.teacher.sampling.model_dump()],
    )


def render_card(cfg: PipelineConfig, stats: dict, splits: dict[str, dict], plots: list[dict],
                teachers: Counter, samplings: set[str]) -> str:
    """`teachers` and `samplings`: what the SFT rows record, counted as they were written."""
    import jinja2

    template = resources.files("data_cards").joinpath("dataset_card.md.j2").read_text(encoding="utf-8")
    stages = [(name, entry) for name, entry in stats.items() if isinstance(entry, dict)]
    reasons = [
        (name, reason, n)
        for name, entry in stages
        for key in ("rejected", "removed")
        for reason, n in numeric_leaves(entry.get(key) or {})
    ]
    curate = stats.get("curate") or {}
    deco = curate.get("decontamination") or {}
    decontamination = [  # {benchmark: {items, hits, examples}}, under "benchmarks" beside the settings
        (bench, found.get("items", ""), found.get("hits", 0), [_example(e) for e in (found.get("examples") or [])[:5]])
        for bench, found in (deco.get("benchmarks") or deco).items()
        if isinstance(found, dict)
    ]
    deco_settings = ", ".join(f"{k}: {_clip(v, 60)}" for k, v in deco.items() if k != "benchmarks")
    total_rows = sum(s["rows"] for s in splits.values())
    teachers, samplings = teachers_and_sampling(cfg, teachers, samplings, total_rows)
    verify_note = (
        "Math answers checked with Math-Verify against the reference; one well-formed think block "
        f"required: {'yes' if cfg.verify.require_think else 'no'}; traces whose reference could not be "
        f"checked were {'kept' if cfg.verify.math.unverifiable == 'accept' else 'set aside'}."
    )
    return jinja2.Template(template, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True).render(
        header=card_header(cfg, SFT_SCHEMA, splits),
        pretty_name=cfg.shard.pretty_name or DEFAULT_NAME,
        teachers=teachers,
        revision=cfg.teacher.revision,
        samplings=samplings,
        reasoning_prefix=cfg.teacher.reasoning_prefix,
        prompt_template=cfg.teacher.prompt_template and posixpath.basename(cfg.teacher.prompt_template),
        splits=splits,
        total_rows=total_rows,
        total_problems=sum(s["problems"] for s in splits.values()),
        first_split=next(iter(splits)),
        stages=stages,
        reasons=reasons,
        curate_ran="curate" in stats,
        decontamination=decontamination,
        deco_settings=deco_settings,
        mix=yaml.safe_dump(curate["mix"], sort_keys=False, allow_unicode=True) if curate.get("mix") else None,
        cost=[(key, f"{value:.6g}" if isinstance(value, float) else value)
              for key, value in numeric_leaves(stats.get("generate") or {}) if key not in ("in", "out")],
        plots=plots,
        settings=settings_yaml(cfg),
        verify_note=verify_note,
    )
