from pathlib import Path

import pytest

from factory.config import DEFAULT_TEACHER, load_config, parse_override
from factory.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_are_r1_sampling():
    cfg = load_config()
    assert cfg.teacher.model == DEFAULT_TEACHER
    assert (cfg.teacher.sampling.temperature, cfg.teacher.sampling.top_p) == (0.6, 0.95)
    assert cfg.stages == ["generate", "verify", "curate", "shard"]


@pytest.mark.parametrize(
    "item, keys, value",
    [
        ("teacher.sampling.n=4", ["teacher", "sampling", "n"], 4),
        ("verify.require_think=false", ["verify", "require_think"], False),
        ("teacher.model=/models/x", ["teacher", "model"], "/models/x"),
        ("teacher.engine={tensor_parallel_size: 2}", ["teacher", "engine"], {"tensor_parallel_size": 2}),
        ("run_dir=", ["run_dir"], ""),
    ],
)
def test_override_values_are_read_as_yaml(item, keys, value):
    assert parse_override(item) == (keys, value)


def test_overrides_beat_the_file_and_paths_resolve_against_it():
    cfg = load_config(ROOT / "pipelines/quickstart.yaml", ["teacher.sampling.n=3", "sources.0.limit=5"], run_dir="/tmp/r")
    assert cfg.teacher.sampling.n == 3 and cfg.sources[0].limit == 5 and cfg.run_dir == "/tmp/r"
    assert cfg.sources[0].path == str(ROOT / "pipelines/data/quickstart_problems.jsonl")
    assert cfg.teacher.prompt_template == str(ROOT / "pipelines/prompts/math_reasoning.txt")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["teacher.sampling.nn=3"], "teacher.sampling.nn: unknown key"),
        (["teacher.sampling.n=0"], "teacher.sampling.n: Input should be greater than or equal to 1"),
        (["teacher.sampling.top_p=lots"], "teacher.sampling.top_p"),
        (["stages=[generate, polish]"], "unknown stage(s) ['polish']"),
        (["verify.math.unverifiable=maybe"], "verify.math.unverifiable"),
        (["sources=[{domain: math}]"], "give exactly one of 'path' or 'hf'"),
        (["sources=[{path: /nope.jsonl}]"], "sources.0.path: /nope.jsonl does not exist"),
        (["teacher.prompt_template=/nope.txt"], "teacher.prompt_template: /nope.txt does not exist"),
        (["teacher.sampling"], "expected key.path=value"),
        (["teacher.model.name=x"], "teacher.model: Input should be a valid string"),
        (["sources=[]", "sources.3.path=x"], "sources.3: expected an index below 0"),
        (["teacher.sampling.n=2", "teacher.sampling.n.max=3"], "'teacher.sampling.n' is not a section"),
    ],
)
def test_bad_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("teacher: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
