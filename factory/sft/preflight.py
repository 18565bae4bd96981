"""Checks on rendered samples before any training step, so that the known silent failures of
reasoning SFT stop the run with a message instead of producing a student that cannot think:
a chat template that drops the think block, an assistant turn without its end-of-turn token
(the student never learns to stop), a loss mask that is empty or spills outside the assistant turn,
and samples that do not fit `max_length`.
"""

from __future__ import annotations

from factory.errors import FactoryError
from factory.sft.data import RowError, Sample, check_messages, tokenize


class PreflightError(FactoryError):
    """The rendered training samples would teach the wrong thing; the message names the check."""


def _masked_text(sample: Sample) -> str:
    """The characters the masked tokens cover (byte-level tokens can share one multi-byte character)."""
    covered = {i for (s, e), m in zip(sample.offsets, sample.assistant_masks) if m for i in range(s, e)}
    return "".join(sample.text[i] for i in sorted(covered))


def check_sample(tok, messages: list[dict]) -> list[str]:
    """Problems with one conversation's rendering and mask (empty list: it is right)."""
    try:
        sample = tokenize(tok, messages)
    except RowError:
        return ["the chat template does not render a conversation as the start of its continuation (the prompt "
                "with its generation prompt is not a prefix of the prompt plus the assistant turn, as when the "
                "template strips reasoning or adds <think> to the generation prompt); set sft.chat_template (chatml, r1)"]
    problems = []
    assistants = [m["content"] for m in messages if m["role"] == "assistant"]
    for content in assistants:
        if "<think>" in content and content not in sample.text:
            return ["the chat template drops or rewrites the <think> block of the assistant turn "
                    "(set sft.chat_template, e.g. chatml or r1, to a template that keeps it)"]
        if content not in sample.text:
            return ["the chat template does not render the assistant turn verbatim"]
    eos = tok.eos_token
    for content, (s, e) in zip(assistants, sample.spans):
        if not eos or not sample.text[s:e].endswith(eos):
            problems.append(f"the end-of-turn token {eos!r} does not end the assistant turn: the student would not learn to stop")
            break
    if not any(sample.assistant_masks):
        problems.append("the loss mask is empty")
    expected = "".join(sample.text[s:e] for s, e in sample.spans)
    got = _masked_text(sample)
    if got != expected:
        problems.append(f"the loss mask does not cover exactly the assistant turns: masked {got[:80]!r}..., expected {expected[:80]!r}...")
    return problems


def preflight_samples(tok, rows) -> int:
    """Render and check a sample of dataset rows; raise PreflightError naming what is wrong.
    Returns how many conversations were checked."""
    checked, problems = 0, {}
    for raw in rows:
        try:
            messages = check_messages(raw.get("messages"))
        except RowError:
            continue  # set aside and counted by tokenize_dataset
        checked += 1
        for p in check_sample(tok, messages):
            problems.setdefault(p, raw.get("problem_id") or f"sample {checked}")
    if not checked:
        raise PreflightError("pre-flight: none of the sampled rows has a usable conversation (messages ending in an assistant turn)")
    if problems:
        listed = "\n".join(f"  - {p} (e.g. {where})" for p, where in problems.items())
        raise PreflightError(f"pre-flight failed on the rendered samples:\n{listed}")
    return checked


def check_lengths(counts: dict, max_length: int) -> None:
    """After the length policy: something must be left to train on."""
    if counts["out"] == 0:
        raise PreflightError(
            f"pre-flight: no sample fits sft.max_length={max_length} "
            f"({counts['dropped_too_long']} of {counts['in']} dropped as too long); raise it or set sft.overflow=truncate"
        )
