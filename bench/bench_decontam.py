"""Decontamination: planted benchmark problems caught, unrelated problems flagged, our rule vs the usual ones.

Index: every item of aime24, amc23 and minerva_math (../shared/data/qwen25_math_eval/<name>/test.jsonl),
read and indexed by `build_index` exactly as the curate stage does, and matched one text at a time with
`BenchmarkIndex.match` (what `contamination_batch` runs per row).

Planted texts: every indexed item in four variants, each a pure function of the item's text:
(a) verbatim: the text as stored.
(b) reworded: "Solve the following problem. " in front, every `$` dropped, and the first three
    occurrences (in text order) of words in SYNONYMS swapped for their synonym ("Find" -> "Determine",
    "How many" -> "Count how many", "largest" -> "greatest", ...); texts with none of them get only the
    first two edits. This is the rewording the README's figure described.
(c) edited: an RNG seeded with the text's CRC-32; `\\frac{a}{b}` (also dfrac/tfrac, unnested braces)
    spelled `a/b`, `\\cdot` spelled `*`, `\\left(`/`\\right)` spelled `(`/`)`; then 2 or 3 (chosen at
    random) of the plain English words (letters only, math left alone) at random positions each deleted
    or replaced by a filler word (even odds); then the words re-joined with single spaces and a line
    break after each sentence.
(d) embedded: the verbatim text inside a longer prompt, two sentences of instructions before it and
    two after it (EMBED_BEFORE / EMBED_AFTER).
A planted text counts as caught when `match` returns any hit (the curate stage drops a row on any hit);
a catch whose hit for the item's benchmark names another item (minerva_math's sub-problems share a
preamble) is still a catch, and is listed under the rule's details.

Unrelated texts: GSM8K test questions, the MATH problems of math_cot_100.jsonl, and the eval sets that are
not indexed (olympiadbench, gaokao2023en, cmath, cn_middle_school), read with the same reader
(`read_benchmark`: first of problem/question/prompt/input). One of them is not unrelated: gaokao2023en
holds 64 AMC 2023 problems (its `sourcename` 2023AMC10A/10B/12A/12B), 37 of them amc23 items, retyped by
whoever compiled it: LaTeX spelled differently, amc23's "The final answer can be written in the form
m/n ..." tail missing, some reworded ("Alicia ... Beth bikes toward A at 12 miles per hour" -> "Alice and
Barbara start biking from A and B at speeds of 18 mph and 12 mph"). They are listed in AMC23_COPIES,
found by comparing every amc23 item with its most similar gaokao2023en question and every gaokao2023en
AMC question with its most similar amc23 item (difflib word-sequence similarity), each pair then judged
by eye; word similarity alone does not separate them (the copies go down to 0.33, unrelated pairs up to
0.6). The table reports them apart, as copies in the wild (caught / 37); every other flag is a false
positive, printed beside the item it matched so a reader can judge it.

Rules, all over the same normalisation (`words`: NFKC, lower case, LaTeX command names dropped, letters
and digits only):
- ours: the curate defaults read from DecontaminateConfig (exact + 13-gram + share of the item's words
  found in its order in the text >= 0.75, for items sharing a fifth of their word 3-grams),
- 13-gram only (s1, NeMo Curator), 8-gram only (open-r1), exact match only (normalised text equal).
Speed: CPU seconds (time.process_time) per 1,000 texts matched, one process, for information only.

Run: python bench/bench_decontam.py   (from the project root, with the shared data beside it; seconds)
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from factory.config import DecontamBenchmark, DecontaminateConfig  # noqa: E402
from factory.curate.decontaminate import build_index, read_benchmark, words  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
EVAL = DATA / "qwen25_math_eval"
INDEXED = ("aime24", "amc23", "minerva_math")
UNRELATED = {
    "gsm8k test": DATA / "gsm8k" / "test.jsonl",
    "MATH (math_cot_100)": EVAL / "math_cot_100.jsonl",
    "olympiadbench": EVAL / "olympiadbench" / "test.jsonl",
    "gaokao2023en": EVAL / "gaokao2023en" / "test.jsonl",
    "cmath": EVAL / "cmath" / "test.jsonl",
    "cn_middle_school": EVAL / "cn_middle_school" / "test.jsonl",
}

# gaokao2023en question id -> the amc23 item it copies (judged by eye; see the docstring).
AMC23_COPIES = {
    "2023AMC10A_1": "0", "2023AMC12A_10": "1", "2023AMC12A_11": "2", "2023AMC12A_12": "3", "2023AMC10A_16": "4",
    "2023AMC12A_14": "5", "2023AMC12A_16": "7", "2023AMC12A_17": "8", "2023AMC10A_2": "11", "2023AMC10A_25": "13",
    "2023AMC12A_22": "14", "2023AMC12A_23": "15", "2023AMC12A_24": "16", "2023AMC12A_25": "17", "2023AMC10A_3": "18",
    "2023AMC10A_7": "20", "2023AMC12A_6": "21", "2023AMC10A_9": "22", "2023AMC10A_10": "23", "2023AMC10B_1": "25",
    "2023AMC12B_10": "26", "2023AMC12B_11": "27", "2023AMC12B_12": "28", "2023AMC10B_17": "29", "2023AMC12B_14": "30",
    "2023AMC12B_16": "32", "2023AMC12B_17": "33", "2023AMC10B_2": "36", "2023AMC12B_23": "40", "2023AMC12B_24": "41",
    "2023AMC10B_3": "43", "2023AMC10B_4": "44", "2023AMC10B_10": "45", "2023AMC10B_12": "46", "2023AMC12B_7": "47",
    "2023AMC12B_8": "48", "2023AMC10B_13": "49",
}

SYNONYMS = {
    "Find": "Determine", "find": "determine", "What is": "Compute", "How many": "Count how many",
    "Compute": "Calculate", "compute": "calculate", "Determine": "Find", "determine": "find",
    "largest": "greatest", "greatest": "largest", "smallest": "least", "least": "smallest",
    "Suppose": "Assume", "suppose": "assume", "Let": "Take", "Given": "Suppose", "each": "every",
    "distinct": "different", "sum": "total", "probability": "chance", "satisfies": "fulfils",
    "such that": "so that", "number of": "count of", "Consider": "Take", "consider": "take",
}
_SYNONYM = re.compile(r"\b(" + "|".join(sorted(map(re.escape, SYNONYMS), key=len, reverse=True)) + r")\b")
FILLERS = ("some", "this", "that", "then", "also", "each")
_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_PLAIN_WORD = re.compile(r"[A-Za-z]+([,.;:?!]?)")
EMBED_BEFORE = ("You are an expert competition mathematician. Read the problem below carefully and reason "
                "step by step before you answer.\n\nProblem:\n")
EMBED_AFTER = ("\n\nPut your final answer within \\boxed{}. If the problem has several parts, answer them in "
               "order, and check your arithmetic before you finish.")


def reworded(text: str) -> str:
    swapped = _SYNONYM.sub(lambda m: SYNONYMS[m.group(1)], text.replace("$", ""), count=3)
    return "Solve the following problem. " + swapped


def edited(text: str) -> str:
    rng = random.Random(zlib.crc32(text.encode()))
    text = _FRAC.sub(r"\1/\2", text).replace("\\cdot", "*").replace("\\left(", "(").replace("\\right)", ")")
    tokens = text.split()
    plain = [i for i, t in enumerate(tokens) if _PLAIN_WORD.fullmatch(t)]
    for i in rng.sample(plain, min(rng.choice((2, 3)), len(plain))):
        tail = _PLAIN_WORD.fullmatch(tokens[i]).group(1)
        tokens[i] = tail if rng.random() < 0.5 else rng.choice(FILLERS) + tail
    return re.sub(r"([.?!]) ", r"\1\n", " ".join(t for t in tokens if t))


def embedded(text: str) -> str:
    return EMBED_BEFORE + text + EMBED_AFTER


VARIANTS = {"verbatim": lambda t: t, "reworded": reworded, "edited": edited, "embedded": embedded}


def rules(cfg: DecontaminateConfig) -> dict[str, dict]:
    """build_index arguments per rule; exact-only takes an n longer than any text (no n-gram can match)."""
    return {
        "ours": {"n": cfg.ngram, "exact": cfg.exact, "fuzzy_share": cfg.fuzzy_share},
        "13-gram": {"n": 13, "exact": False, "fuzzy_share": None},
        "8-gram": {"n": 8, "exact": False, "fuzzy_share": None},
        "exact": {"n": sys.maxsize, "exact": True, "fuzzy_share": None},
    }


def short(text: str, chars: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[: chars - 3] + "..."


def load():
    benchmarks = [DecontamBenchmark(path=str(EVAL / name)) for name in INDEXED]
    items = {name: read_benchmark(b) for name, b in zip(INDEXED, benchmarks)}
    planted = [(name, variant, item_id, fn(text))
               for variant, fn in VARIANTS.items() for name in INDEXED for item_id, text in items[name]]
    unrelated = [(name, row_id, text) for name, path in UNRELATED.items()
                 for row_id, text in read_benchmark(DecontamBenchmark(path=str(path)))]
    return benchmarks, items, planted, unrelated


def is_copy(set_name: str, row_id: str) -> bool:
    return set_name == "gaokao2023en" and row_id in AMC23_COPIES


def run_rules(benchmarks, planted, unrelated) -> dict[str, dict]:
    results = {}
    for rule, kw in rules(DecontaminateConfig()).items():
        start = time.process_time()
        index = build_index(benchmarks, **kw)
        built = time.process_time() - start
        start = time.process_time()
        planted_hits = [index.match(text) for *_, text in planted]
        unrelated_hits = [index.match(text) for *_, text in unrelated]
        per_1000 = (time.process_time() - start) / (len(planted) + len(unrelated)) * 1000
        results[rule] = {"planted": planted_hits, "unrelated": unrelated_hits, "build_s": built, "per_1000_s": per_1000}
    return results


def print_table(results, planted, unrelated):
    names = list(results)
    width = 30

    def row(label, cells):
        print(f"  {label}".ljust(width) + "".join(f"{c:>12}" for c in cells))

    def ratio(key, rows):
        return [f"{sum(bool(results[r][key][i]) for i in rows)}/{len(rows)}" for r in names]

    print("\n" + "".ljust(width) + "".join(f"{r:>12}" for r in names))
    print("caught / planted")
    for variant in VARIANTS:
        for name in INDEXED:
            row(f"{name} {variant}", ratio("planted", [i for i, p in enumerate(planted) if p[:2] == (name, variant)]))
    for variant in VARIANTS:
        row(f"all {variant}", ratio("planted", [i for i, p in enumerate(planted) if p[1] == variant]))
    row("all planted", ratio("planted", range(len(planted))))
    print("caught / copies in the wild")
    row("gaokao2023en = amc23", ratio("unrelated", [i for i, u in enumerate(unrelated) if is_copy(*u[:2])]))
    print("false positives / unrelated")
    for name in UNRELATED:
        row(name, ratio("unrelated", [i for i, u in enumerate(unrelated) if u[0] == name and not is_copy(*u[:2])]))
    row("all unrelated", ratio("unrelated", [i for i, u in enumerate(unrelated) if not is_copy(*u[:2])]))
    print("CPU s / 1,000 texts matched".ljust(width) + "".join(f"{results[r]['per_1000_s']:>12.3f}" for r in names))
    print("CPU s to build the index".ljust(width) + "".join(f"{results[r]['build_s']:>12.3f}" for r in names))


def print_details(rule, result, planted, unrelated, items, limit):
    """Misses, copies missed, false positives (each beside the item it matched), catches by a sibling item."""
    size = {(name, item_id): len(words(text)) for name in INDEXED for item_id, text in items[name]}
    full = {(name, item_id): text for name in INDEXED for item_id, text in items[name]}
    misses = [p for p, hits in zip(planted, result["planted"]) if not hits]
    copies_missed = [u for u, hits in zip(unrelated, result["unrelated"]) if is_copy(*u[:2]) and not hits]
    flags = [(u, h) for u, hits in zip(unrelated, result["unrelated"]) if not is_copy(*u[:2]) for h in hits]
    sibling = [(p, h) for p, hits in zip(planted, result["planted"]) for h in hits
               if h["benchmark"] == p[0] and h["item_id"] != p[2]]
    print(f"\n== {rule}: {len(misses)} planted missed, {len(copies_missed)} copies in the wild missed, "
          f"{len(flags)} false-positive hits, {len(sibling)} planted caught by another item of their benchmark")
    for name, variant, item_id, text in misses[:limit]:
        print(f"  missed {name}#{item_id} {variant} ({size[name, item_id]} words): {short(text, 150)!r}")
    for _, row_id, text in copies_missed[:limit]:
        print(f"  missed copy gaokao2023en#{row_id}: {short(text, 110)!r}\n"
              f"     = amc23#{AMC23_COPIES[row_id]}: {short(full['amc23', AMC23_COPIES[row_id]], 110)!r}")
    for (name, row_id, text), hit in flags[:limit]:
        print(f"  flagged {name}#{row_id}: {short(text, 130)!r}\n"
              f"     ~ {hit['benchmark']}#{hit['item_id']} ({hit['kind']}, {hit['shared_ngrams']} shared, "
              f"aligned share {hit['overlap']}, {hit['ngram']!r}): {short(hit['item'], 110)!r}")
    for (name, variant, item_id, _), hit in sibling[:limit]:
        print(f"  {name}#{item_id} {variant} -> #{hit['item_id']} ({hit['kind']}): {short(hit['item'], 90)!r}")
    if limit is not None and max(len(misses), len(copies_missed), len(flags), len(sibling)) > limit:
        print(f"  (at most {limit} of each shown; --show N for more)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--show", type=int, default=5, help="misses and flags printed per baseline rule (ours: all)")
    args = parser.parse_args()

    benchmarks, items, planted, unrelated = load()
    n_items = sum(map(len, items.values()))
    swapped = sum(_SYNONYM.search(text.replace("$", "")) is not None for name in INDEXED for _, text in items[name])
    sets = ", ".join(f"{n} {sum(u[0] == n for u in unrelated)}" for n in UNRELATED)
    print(f"indexed: {', '.join(f'{n} {len(v)}' for n, v in items.items())} = {n_items} items")
    print(f"planted: {n_items} items x {len(VARIANTS)} variants = {len(planted)} texts "
          f"(reworded: {swapped} of {n_items} have a word swapped)")
    print(f"unrelated: {len(unrelated)} texts ({sets}); {len(AMC23_COPIES)} of gaokao2023en are amc23 items (by eye)")
    cfg = DecontaminateConfig()
    print(f"rules: ours = curate defaults: exact {cfg.exact} + {cfg.ngram}-gram + share of the item's words in order >= "
          f"{cfg.fuzzy_share}; 13-gram only (s1, NeMo Curator); 8-gram only (open-r1); exact only")

    results = run_rules(benchmarks, planted, unrelated)
    print_table(results, planted, unrelated)
    for k, (rule, result) in enumerate(results.items()):
        print_details(rule, result, planted, unrelated, items, None if k == 0 else args.show)

    ours = results["ours"]
    caught = sum(map(bool, ours["planted"]))
    clean = [i for i, u in enumerate(unrelated) if not is_copy(*u[:2])]
    flagged = sum(bool(ours["unrelated"][i]) for i in clean)
    print(f"\ncriterion: every planted problem caught by our rule: {'yes' if caught == len(planted) else 'NO'} "
          f"({caught}/{len(planted)}); false positives: {flagged}/{len(clean)} unrelated")


if __name__ == "__main__":
    main()
