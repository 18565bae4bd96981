"""SFT data: loss masks, chat templates that keep the think block, pre-flight errors, the length
policy, the model card, and eval's metrics and benchmark files. No Ray, no engine: fast."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from factory.config import BenchmarkConfig, SFTConfig, load_config
from factory.errors import ConfigError
from factory.sft.data import load_tokenizer, tokenize, tokenize_dataset
from factory.sft.preflight import PreflightError, check_lengths, check_sample, preflight_samples
from tests.conftest import MATH_COT, SHARED_DATA

THINK = "<think>\nFirst 48 / 2 = 24, then 48 + 24 = 72 (3 × 24).\n</think>\n\nThe answer is \\boxed{72}."
CONVERSATION = [
    {"role": "system", "content": "Please reason step by step."},
    {"role": "user", "content": "How many clips did Natalia sell?"},
    {"role": "assistant", "content": THINK},
]
TWO_TURNS = CONVERSATION + [
    {"role": "user", "content": "And in May alone?"},
    {"role": "assistant", "content": "<think>\nHalf of 48.\n</think>\n\n\\boxed{24}"},
]
# The assistant branch of DeepSeek-R1-Distill-Qwen's shipped template: it keeps only the text after
# </think>, so a student trained through it never sees the reasoning (TRL PR 6363, LLaMA-Factory 6987).
R1_SHIPPED_STYLE = (
    "{% for message in messages %}{% set content = message['content'] %}"
    "{% if message['role'] == 'assistant' and '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + content + '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
NO_EOS = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def masked_text(sample):
    covered = {i for (s, e), m in zip(sample.offsets, sample.assistant_masks) if m for i in range(s, e)}
    return "".join(sample.text[i] for i in sorted(covered))


@pytest.mark.parametrize("family", ["tiny_qwen2", "tiny_llama"])
@pytest.mark.parametrize("template", [None, "chatml", "r1"])
def test_mask_covers_exactly_the_assistant_turns(family, template, request):
    tok = load_tokenizer(SFTConfig(model=str(request.getfixturevalue(family)), chat_template=template))
    for messages in (CONVERSATION, TWO_TURNS):
        sample = tokenize(tok, messages)
        replies = [m["content"] + tok.eos_token for m in messages if m["role"] == "assistant"]
        assert masked_text(sample) == "".join(replies)
        # Masked tokens are the assistant turns' tokens, each ending with the end-of-turn token.
        eos_id = tok.convert_tokens_to_ids(tok.eos_token)
        ends = [i for i, m in enumerate(sample.assistant_masks) if m and (i + 1 == len(sample.input_ids) or not sample.assistant_masks[i + 1])]
        assert [sample.input_ids[i] for i in ends] == [eos_id] * len(replies)
        assert "<think>" in tok.decode([t for t, m in zip(sample.input_ids, sample.assistant_masks) if m])
        assert check_sample(tok, messages) == []


def test_preflight_stops_a_template_that_drops_the_think_block(tiny_qwen2, tmp_path):
    (tmp_path / "r1_shipped.jinja").write_text(R1_SHIPPED_STYLE)
    tok = load_tokenizer(SFTConfig(model=str(tiny_qwen2), chat_template=str(tmp_path / "r1_shipped.jinja")))
    with pytest.raises(PreflightError, match="drops or rewrites the <think> block.*sft.chat_template"):
        preflight_samples(tok, [{"messages": CONVERSATION, "problem_id": "p1"}])
    # The shipped replacement keeps it.
    fixed = load_tokenizer(SFTConfig(model=str(tiny_qwen2), chat_template="chatml"))
    assert preflight_samples(fixed, [{"messages": CONVERSATION}]) == 1


def test_preflight_stops_a_template_without_end_of_turn(tiny_qwen2, tmp_path):
    (tmp_path / "no_eos.jinja").write_text(NO_EOS)
    tok = load_tokenizer(SFTConfig(model=str(tiny_qwen2), chat_template=str(tmp_path / "no_eos.jinja")))
    with pytest.raises(PreflightError, match="does not end the assistant turn"):
        preflight_samples(tok, [{"messages": CONVERSATION}])


def real_rows(n):
    """SFT rows shaped as the pipeline writes them, from real completions of math_cot_100.jsonl."""
    rows = []
    for line in MATH_COT.open():
        row = json.loads(line)
        rows.append({"problem_id": f"math-{row['idx']}", "messages": [
            {"role": "user", "content": row["question"]},
            {"role": "assistant", "content": "<think>\n" + row["code"][0].strip() + "\n</think>\n\n" + row["code"][0].strip().split("\n\n")[-1]},
        ]})
        if len(rows) == n:
            return rows


def test_length_policy_is_counted(tiny_qwen2):
    tok = load_tokenizer(SFTConfig(model=str(tiny_qwen2)))
    rows = real_rows(40) + [{"messages": [{"role": "user", "content": "no reply"}]}, {"messages": "garbage"}]
    lengths = [len(tokenize(tok, r["messages"]).input_ids) for r in rows[:40]]
    limit = sorted(lengths)[20]
    dropped = tokenize_dataset(rows, tok, limit, "drop")
    assert dropped.counts["dropped_too_long"] == sum(n > limit for n in lengths)
    assert dropped.counts["out"] == sum(n <= limit for n in lengths)
    assert sorted(r["reason"] for r in dropped.rejects) == ["no_final_assistant_turn", "no_messages"]
    truncated = tokenize_dataset(rows, tok, limit, "truncate")
    assert truncated.counts["truncated"] == dropped.counts["dropped_too_long"]
    assert truncated.counts["out"] == 40 and max(len(r["input_ids"]) for r in truncated.rows) == limit
    with pytest.raises(PreflightError, match="no sample fits sft.max_length=16"):
        check_lengths(tokenize_dataset(rows, tok, 16, "drop").counts, 16)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="sft.model: needed"):
        load_config(None, ["stages=[sft]"])
    with pytest.raises(ConfigError, match="sft.overflow"):
        load_config(None, ["sft.overflow=cut"])
    with pytest.raises(ConfigError, match=r"k values \[8\]"):
        load_config(None, ["eval.k=[1,8]"])


def test_bad_trl_argument_fails_before_ray(tmp_path, tiny_qwen2):
    code = (
        "import sys; from typer.testing import CliRunner; from factory.cli import app;"
        "r = CliRunner().invoke(app, ['sft', '--model', sys.argv[1], '--dataset', sys.argv[2], '--run-dir', sys.argv[2],"
        " '--set', 'sft.trl={bogus_arg: 1}']);"
        "print(r.output); print('ray' in sys.modules); sys.exit(r.exit_code)"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tiny_qwen2), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "invalid training arguments" in proc.stdout and "bogus_arg" in proc.stdout
    assert proc.stdout.strip().endswith("False")


def test_model_card_eval_section_and_push_folder(tmp_path):
    from factory.sft.export import EVAL_END, EVAL_START, push_model, with_eval_section

    card = f"---\nbase_model: x\n---\n# m\n\n## Evaluation\n\n{EVAL_START}\nNot evaluated yet.\n{EVAL_END}\n"
    once = with_eval_section(card, "| aime24 | 30 |")
    twice = with_eval_section(once, "| aime24 | 31 |")
    assert "Not evaluated" not in twice and "| aime24 | 31 |" in twice and twice.count(EVAL_START) == 1
    assert with_eval_section("# bare\n", "T").endswith(f"## Evaluation\n\n{EVAL_START}\nT\n{EVAL_END}\n")

    class FakeHubApi:  # a fake at the network boundary: records what would be uploaded
        def __init__(self):
            self.calls = []

        def create_repo(self, repo_id, **kw):
            self.calls.append(("create_repo", repo_id, kw))

        def upload_folder(self, folder_path, repo_id, **kw):
            self.calls.append(("upload_folder", sorted(p.name for p in Path(folder_path).iterdir()), repo_id))
            return type("Info", (), {"commit_url": f"https://hub/{repo_id}/commit/1"})()

    (tmp_path / "README.md").write_text(once)
    (tmp_path / "config.json").write_text("{}")
    api = FakeHubApi()
    assert push_model(str(tmp_path), "org/student", api=api) == "https://hub/org/student/commit/1"
    assert api.calls[0] == ("create_repo", "org/student", {"repo_type": "model", "private": True, "exist_ok": True})
    assert api.calls[1] == ("upload_folder", ["README.md", "config.json"], "org/student")


def test_pass_at_k_and_majority():
    from factory.eval.metrics import majority_correct, pass_at_k, score_benchmark

    assert pass_at_k(4, 0, 1) == 0 and pass_at_k(4, 1, 1) == 0.25 and pass_at_k(4, 1, 4) == 1.0
    assert pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)

    def s(pid, idx, extracted, passed):
        return {"problem_id": pid, "sample_idx": idx, "extracted": extracted, "passed": passed,
                "completion_tokens": 10, "finish_reason": "stop"}

    # Two wrong answers agree, one right: the vote is wrong although pass@3 holds.
    p = [s("a", 0, "5", False), s("a", 1, "7", True), s("a", 2, "5", False)]
    assert not majority_correct(p, 3) and majority_correct(p, 2) is False and majority_correct(p[1:2], 1)
    scores = score_benchmark(p + [s("b", i, "1", True) for i in range(3)] + [s("c", i, None, None) for i in range(3)], [1, 3])
    assert scores["problems"] == 3 and scores["scored_problems"] == 2
    assert scores["pass@1"] == pytest.approx((1 / 3 + 1) / 2, abs=1e-4) and scores["pass@3"] == 1.0
    assert scores["maj@3"] == 0.5


def test_shared_benchmark_files_load_as_they_are():
    from factory.eval.benchmarks import benchmark_name, load_benchmark

    expected = {"aime24": 30, "amc23": 40, "minerva_math": 272, "olympiadbench": 675}
    for name, count in expected.items():
        bench = BenchmarkConfig(path=str(SHARED_DATA / "qwen25_math_eval" / name / "test.jsonl"))
        problems, rejects = load_benchmark(bench)
        assert benchmark_name(bench) == name and len(problems) == count and not rejects
        assert all(p["problem"] and p["answer"] for p in problems)
    amc, _ = load_benchmark(BenchmarkConfig(path=str(SHARED_DATA / "qwen25_math_eval" / "amc23" / "test.jsonl"), limit=3))
    assert len(amc) == 3 and amc[0]["answer"] == "27"  # 27.0 in the file


def test_generation_prompt_that_opens_the_think_block(tiny_qwen2, tmp_path):
    """Templates like R1-Distill's later revision put "<think>\\n" in the generation prompt: the
    student then learns the rest of the turn, and the opening tag stays in the prompt, as at inference."""
    template = (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n<think>\n' }}{% endif %}"
    )
    (tmp_path / "opens_think.jinja").write_text(template)
    tok = load_tokenizer(SFTConfig(model=str(tiny_qwen2), chat_template=str(tmp_path / "opens_think.jinja")))
    sample = tokenize(tok, CONVERSATION)
    assert masked_text(sample) == THINK.removeprefix("<think>\n") + "<|im_end|>"
    assert check_sample(tok, CONVERSATION) == []
    # Without the think block in the data, the conversation is not a prefix of its continuation.
    plain = CONVERSATION[:2] + [{"role": "assistant", "content": "72"}]
    assert "does not render a conversation as the start of its continuation" in check_sample(tok, plain)[0]


def test_packed_samples_do_not_attend_to_each_other(tiny_qwen2):
    """sft.packing relies on this without flash attention: with position ids restarting at each sample
    and no cache (TRL's compute_loss turns it off), SDPA gets a block-diagonal mask from transformers."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2)
    a, b = torch.randint(5, model.config.vocab_size, (1, 7)), torch.randint(5, model.config.vocab_size, (1, 5))
    with torch.no_grad():
        alone = model(b, use_cache=False).logits
        packed = model(torch.cat([a, b], 1), position_ids=torch.cat([torch.arange(7), torch.arange(5)])[None], use_cache=False).logits
    assert torch.allclose(packed[:, 7:], alone, atol=1e-4)
