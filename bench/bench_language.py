"""Language consistency: how well check_language separates consistent Chinese reasoning from reasoning
that drifts into English, on Chinese problems from the shared data.

The data has Chinese problems but no Chinese model reasoning, so traces are assembled from real text:
a consistent trace strings together Chinese problem statements (formulas, variables and units included:
the hard negatives), a mixed one swaps some of those segments for English sentences taken from real
model reasoning (math_cot_100). Positive = mixed; a check flags a trace when passed is False.

Run: python bench/bench_language.py
"""

from __future__ import annotations

import json
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from verifiers import check_language, detect_language  # noqa: E402
from verifiers.language import DEFAULT_MIN_SHARE, script_counts  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "qwen25_math_eval"
SEGMENTS = 6
THRESHOLDS = (0.8, 0.9, 0.95, 0.98, 0.99)


def chinese_segments() -> list[str]:
    return [
        json.loads(line)["question"]
        for name in ("cmath", "cn_middle_school")
        for line in (DATA / name / "test.jsonl").open()
    ]


def english_sentences() -> list[str]:
    sentences = []
    for line in (DATA / "math_cot_100.jsonl").open():
        for completion in json.loads(line)["code"][:2]:
            for sentence in re.split(r"(?<=[.!?])\s+", completion):
                # real prose: at least 5 counted English words (not a formula with a few words)
                if len(sentence.split()) <= 40 and script_counts(sentence).get("latin", 0) >= 5:
                    if not re.search(r"[\u4e00-\u9fff]", sentence):
                        sentences.append(sentence.strip())
    return sentences


# Terms a consistent Chinese trace may still contain; they must not get it flagged.
TERMS = ["Cauchy-Schwarz", "Vieta", "Python", "modulo", "Euler", "Fibonacci", "Pascal", "AM-GM", "Taylor"]


def build(rng: random.Random, zh: list[str], en: list[str], english_segments: int, terms: int = 0) -> str:
    parts = rng.sample(zh, SEGMENTS)
    for slot in rng.sample(range(SEGMENTS), english_segments):
        parts[slot] = rng.choice(en)
    for _ in range(terms):
        slot = rng.randrange(SEGMENTS)
        cut = rng.randrange(len(parts[slot]) + 1)
        parts[slot] = f"{parts[slot][:cut]}（{rng.choice(TERMS)}）{parts[slot][cut:]}"
    return "\n".join(parts)


def main() -> None:
    rng = random.Random(0)
    zh, en = chinese_segments(), english_sentences()
    start = time.perf_counter()
    detected = [detect_language(text) for text in zh]
    per_text_ms = (time.perf_counter() - start) / len(zh) * 1000
    print(f"detect_language on {len(zh)} Chinese problems: {detected.count('zh')} detected as zh "
          f"({per_text_ms:.2f} ms per text, first call builds the detector)")  # fmt: skip

    samples = [(build(rng, zh, en, 0), False) for _ in range(300)]
    samples += [(build(rng, zh, en, 0, terms=3), False) for _ in range(300)]
    for english_segments in (1, 2, 3):
        samples += [(build(rng, zh, en, english_segments), True) for _ in range(200)]
    levels = {
        0: "consistent",
        -1: "consistent + 3 English terms",
        1: "1 of 6 segments English",
        2: "2 of 6",
        3: "3 of 6",
    }
    level_of = [0] * 300 + [-1] * 300 + [1] * 200 + [2] * 200 + [3] * 200

    start = time.perf_counter()
    scores = [check_language(text, "zh").score for text, _ in samples]  # passed == score >= min_share
    per_text_ms = (time.perf_counter() - start) / len(samples) * 1000
    print(f"\n{len(samples)} traces of {SEGMENTS} segments; check_language {per_text_ms:.2f} ms per trace")
    for level, name in levels.items():
        level_scores = sorted(s for s, lv in zip(scores, level_of) if lv == level)
        print(f"  {name:30s} share of Chinese: min {level_scores[0]:.3f}  median "
              f"{level_scores[len(level_scores) // 2]:.3f}  max {level_scores[-1]:.3f}")  # fmt: skip

    print("\nmixed = positive; flagged when share < min_share")
    print(f"  {'min_share':>9s} {'precision':>9s} {'recall':>7s}   recall by level (1/6, 2/6, 3/6)"
          "   false positives (plain, with terms)")  # fmt: skip
    for threshold in THRESHOLDS:
        flagged = [s < threshold for s in scores]
        tp = sum(f and mixed for f, (_, mixed) in zip(flagged, samples))
        fp = sum(f and not mixed for f, (_, mixed) in zip(flagged, samples))
        fn = sum(not f and mixed for f, (_, mixed) in zip(flagged, samples))
        by_level = [sum(f for f, lv in zip(flagged, level_of) if lv == level) / 200 for level in (1, 2, 3)]
        false_positives = [sum(f for f, lv in zip(flagged, level_of) if lv == level) for level in (0, -1)]
        precision = tp / (tp + fp) if tp + fp else 1.0
        marker = "  <- default" if threshold == DEFAULT_MIN_SHARE else ""
        print(f"  {threshold:9.2f} {precision:9.3f} {tp / (tp + fn):7.3f}   "
              + ", ".join(f"{r:.3f}" for r in by_level)
              + f"{'':22s}{false_positives[0]}, {false_positives[1]}" + marker)  # fmt: skip


if __name__ == "__main__":
    main()
