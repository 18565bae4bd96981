"""Generation modes (reasoning / direct) and prompt templates per source."""

from pathlib import Path

import pytest

from factory.config import PipelineConfig, SourceConfig, TeacherConfig, VerifyConfig, load_config
from factory.errors import ConfigError
from factory.records import TRACE_SCHEMA, trace_key
from factory.stages.generate import plan_samples
from factory.stages.verify import verify_rows
from factory.teacher.prompts import reasoning_prefix, render_prompt, source_teachers

PROMPTS = Path(__file__).resolve().parent.parent / "pipelines" / "prompts"


def test_reasoning_mode_opens_the_think_block_and_direct_mode_does_not(tiny_qwen2):
    reasoning = TeacherConfig(model=str(tiny_qwen2))
    direct = reasoning.model_copy(update={"mode": "direct", "prompt_template": str(PROMPTS / "math_direct.txt")})
    assert render_prompt(reasoning, "2+2?").endswith("<|im_start|>assistant\n<think>\n")
    text = render_prompt(direct, "2+2?")
    assert text.endswith("<|im_start|>assistant\n") and "<think>" not in text
    assert "without showing your reasoning" in text
    assert (reasoning_prefix(reasoning), reasoning_prefix(direct)) == ("<think>\n", "")


def test_r1_sampling_defaults():
    s = TeacherConfig().sampling
    assert (TeacherConfig().mode, s.temperature, s.top_p) == ("reasoning", 0.6, 0.95)


def test_a_source_overrides_the_teachers_mode_and_template(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"problem": "2+2?"}\n')
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "short.txt").write_text("{problem} Answer only.")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "teacher: {prompt_template: " + str(PROMPTS / "math_reasoning.txt") + "}\n"
        "sources:\n"
        "  - {name: hard, path: p.jsonl}\n"
        "  - {name: easy, path: p.jsonl, mode: direct, prompt_template: prompts/short.txt}\n"
    )
    cfg = load_config(pipeline)
    assert cfg.sources[1].prompt_template == str(tmp_path / "prompts" / "short.txt")  # relative to the file
    teachers = source_teachers(cfg)
    assert (teachers["hard"].mode, teachers["hard"].prompt_template) == ("reasoning", cfg.teacher.prompt_template)
    assert (teachers["easy"].mode, teachers["easy"].prompt_template) == ("direct", cfg.sources[1].prompt_template)
    assert cfg.teacher.mode == "reasoning"  # the teacher itself is untouched

    problems = [{"problem_id": "x", "source": s, "problem": "2+2?"} for s in ("hard", "easy", "other")]
    rows = plan_samples(problems, cfg, set())
    assert [r["mode"] for r in rows if r["sample_idx"] == 0] == ["reasoning", "direct", "reasoning"]


def test_a_missing_source_template_fails_naming_the_key(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"problem": "2+2?"}\n')
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text("sources: [{path: p.jsonl, prompt_template: nope.txt}]\n")
    with pytest.raises(ConfigError, match="sources.0.prompt_template"):
        load_config(pipeline)
    with pytest.raises(ConfigError, match="sources.0.mode"):
        load_config(pipeline, ["sources.0.prompt_template=null", "sources.0.mode=fast"])


def test_the_mode_is_recorded_and_changes_the_key():
    assert "mode" in TRACE_SCHEMA.names
    args = ("pid", 0, "teacher", None, {"n": 1})
    assert trace_key(*args) == trace_key(*args, "reasoning") != trace_key(*args, "direct")
    cfg = PipelineConfig(sources=[SourceConfig(path="x", name="s")])
    reasoning = plan_samples([{"problem_id": "x", "source": "s", "problem": "p"}], cfg, set())
    cfg.teacher.mode = "direct"
    direct = plan_samples([{"problem_id": "x", "source": "s", "problem": "p"}], cfg, set())
    assert {r["trace_key"] for r in reasoning}.isdisjoint(r["trace_key"] for r in direct)


def _trace(completion: str, mode: str | None) -> dict:
    return {"problem_id": "p", "problem": "What is 2+2?", "domain": "math", "answer": "4", "language": "en",
            "completion": completion, "finish_reason": "stop", "mode": mode}


def test_require_think_does_not_reject_direct_traces():
    rows = verify_rows(
        [_trace("The answer is \\boxed{4}.", "direct"), _trace("The answer is \\boxed{4}.", "reasoning"),
         _trace("The answer is \\boxed{4}.", None), _trace("<think>\n2+2=4\n</think>\n\\boxed{4}", "reasoning")],
        VerifyConfig(require_think=True),
    )
    assert [(r["accepted"], r["reject_reason"]) for r in rows] == [
        (True, None), (False, "format:no_think_block"), (False, "format:no_think_block"), (True, None)]


def test_shipped_templates_hold_the_problem():
    for name in ("math_reasoning.txt", "math_direct.txt", "code_reasoning.txt", "general_direct.txt"):
        assert "{problem}" in (PROMPTS / name).read_text()
