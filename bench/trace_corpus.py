"""Synthetic R1-style reasoning traces of about 20 KB, built from real model text, for dedup benchmarks.

A trace is `<think>` + real solution texts (MATH CoT completions from math_cot_100, MATH reference
solutions, GSM8K model and reference solutions) stitched with reflection phrases, + `</think>` + a final
answer. Each piece has some of its numbers redrawn, so traces that share a piece still differ. Trace i
is a pure function of (seed, i): benchmarks regenerate batches instead of holding 2 GB of text.
`near_copy` plants a near duplicate: a share of the words edited (substituted, deleted or inserted)
in runs of 1 to 6 words, the way two samples of one trace differ in phrases rather than single words.
"""

from __future__ import annotations

import json
import random
import re
from functools import cached_property
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TRANSITIONS = (
    "\n\nWait, let me double-check that.\n\n",
    "\n\nHmm, let me try another approach.\n\n",
    "\n\nAlternatively, we can verify this differently.\n\n",
    "\n\nLet me re-read the problem.\n\n",
    "\n\nOkay, so far so good. Next,\n\n",
    "\n\n",
)
_NUMBER = re.compile(r"\d+")


class TraceCorpus:
    def __init__(self, seed: int = 0, target_chars: int = 20_000):
        self.seed = seed
        self.target_chars = target_chars

    @cached_property
    def pieces(self) -> list[str]:
        pieces = []
        for line in (DATA / "qwen25_math_eval" / "math_cot_100.jsonl").open():
            row = json.loads(line)
            pieces += row["code"] + [row["solution"]]
        for line in (DATA / "gsm8k" / "example_model_solutions.jsonl").open():
            row = json.loads(line)
            pieces.append(row["ground_truth"])
            pieces += [v["solution"] for v in row.values() if isinstance(v, dict) and "solution" in v]
        return pieces

    @cached_property
    def vocabulary(self) -> list[str]:
        return sorted({w for p in self.pieces[:2000] for w in p.split() if w.isalpha()})

    def _piece(self, rng: random.Random) -> str:
        return _NUMBER.sub(lambda m: str(rng.randrange(1000)) if rng.random() < 0.3 else m.group(), rng.choice(self.pieces))

    def document(self, i: int) -> str:
        rng = random.Random(self.seed * 1_000_003 + i)
        parts, size = ["<think>\n"], 0
        while size < self.target_chars:
            part = self._piece(rng) + rng.choice(TRANSITIONS)
            parts.append(part)
            size += len(part)
        parts.append("</think>\n\n" + self._piece(rng))
        return "".join(parts)

    def near_copy(self, text: str, edit_share: float, rng: random.Random) -> str:
        words = text.split(" ")
        target, edited = round(edit_share * len(words)), 0
        while edited < target:
            run = min(rng.randint(1, 6), target - edited)
            at = rng.randrange(max(1, len(words) - run))
            op = rng.random()
            if op < 0.6:
                words[at : at + run] = rng.choices(self.vocabulary, k=run)
            elif op < 0.8:
                del words[at : at + run]
            else:
                words[at:at] = rng.choices(self.vocabulary, k=run)
            edited += run
        return " ".join(words)

    def text(self, i: int, dup_every: int = 10) -> str:
        """Trace i of a corpus where each `dup_every`-th trace is a near copy (1-20% edited) of the one before."""
        if dup_every and i % dup_every == dup_every - 1:
            rng = random.Random(-(self.seed * 1_000_003 + i))
            return self.near_copy(self.document(i - 1), rng.uniform(0.01, 0.2), rng)
        return self.document(i)
