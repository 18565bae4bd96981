"""Shared fixtures: paths to real data and tiny models built locally (never downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"
MATH_COT = SHARED_DATA / "qwen25_math_eval" / "math_cot_100.jsonl"


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory) -> Path:
    from tests.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", "qwen2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from tests.tiny_models import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-llama", "llama")


@pytest.fixture(scope="session")
def math_cot_traces(tmp_path_factory) -> tuple[Path, dict]:
    """The 800 real completions of math_cot_100.jsonl as trace rows, and their grader labels."""
    out = tmp_path_factory.mktemp("traces") / "math_cot_traces.jsonl"
    labels = {}
    with out.open("w") as f:
        for line in MATH_COT.open():
            row = json.loads(line)
            pid = f"math-{row['idx']}"
            for i, (completion, score) in enumerate(zip(row["code"], row["score"])):
                f.write(json.dumps({"problem_id": pid, "problem": row["question"], "answer": row["answer"],
                                    "completion": completion, "sample_idx": i}) + "\n")
                labels[(pid, i)] = score
    return out, labels
