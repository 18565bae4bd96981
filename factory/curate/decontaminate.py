"""Benchmark decontamination: word n-gram overlap, fuzzy overlap, and normalised exact match.

A text is contaminated by a benchmark item when, after normalisation, it
- equals the item (exact), or
- shares at least one word n-gram with it (ngram; s1 and NeMo Curator use 13-grams, open-r1 8-grams), or
- holds at least `fuzzy_share` of the item's words in the item's order (fuzzy): difflib's alignment of
  the two word sequences, computed for the items that share at least a fifth of their word 3-grams with
  the text. This catches light rewording of short problems, where two or three edited words leave no
  13-gram intact and few 4-grams, while answer-format boilerplate shared by unrelated problems ("m/n
  where m and n are relatively prime positive integers") stays far below the share.
Normalisation (NFKC, lower case, LaTeX command names dropped, only letters/digits kept, each CJK
character a word) makes "$\\frac{9}{s}$" and "9/s" the same words.

The index (every benchmark n-gram and 4-gram -> the items holding it) is built once on the driver,
put in the object store, and read once per worker process by the map_batches function.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from factory.config import DecontamBenchmark, SourceConfig
from factory.errors import InputError

TEXT_FIELDS = ("problem", "question", "prompt", "input")
ID_FIELDS = ("id", "idx", "problem_id", "unique_id")
_LATEX_COMMAND = re.compile(r"\\[a-zA-Z]+")
_WORD = re.compile(r"[a-z0-9]+|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
PREVIEW_CHARS = 200

HIT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("benchmark", pa.string()),
        ("item_id", pa.string()),
        ("item", pa.string()),
        ("kind", pa.string()),  # "exact" | "ngram" | "fuzzy"
        ("shared_ngrams", pa.int32()),
        ("overlap", pa.float64()),  # share of the item's words found in order in the text (fuzzy rule)
        ("ngram", pa.string()),  # the first shared n-gram, as evidence
    ]
)


def words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text)
    return _WORD.findall(_LATEX_COMMAND.sub(" ", text).lower())


CANDIDATE_NGRAM, CANDIDATE_SHARE = 3, 0.2  # which items the fuzzy rule aligns with a text: cheap, generous


def _grams(toks: list[str], n: int) -> set[str]:
    return {" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)}


@dataclass
class BenchmarkIndex:
    n: int
    exact_match: bool
    fuzzy_share: float | None = None  # None: no fuzzy rule
    benchmarks: list[str] = field(default_factory=list)
    items: list[tuple[int, str, str]] = field(default_factory=list)  # (benchmark index, item id, preview)
    exact: dict[str, tuple[int, ...]] = field(default_factory=dict)  # normalised text -> items
    ngrams: dict[str, tuple[int, ...]] = field(default_factory=dict)  # n-gram -> items
    candidates: dict[str, tuple[int, ...]] = field(default_factory=dict)  # 3-gram -> items (fuzzy rule)
    candidate_sizes: list[int] = field(default_factory=list)  # distinct 3-grams per item
    words: list[list[str]] = field(default_factory=list)  # each item's words, for the alignment

    def add(self, benchmark: int, item_id: str, text: str) -> None:
        item = len(self.items)
        self.items.append((benchmark, item_id, text[:PREVIEW_CHARS]))
        toks = words(text)
        threes = _grams(toks, CANDIDATE_NGRAM) if self.fuzzy_share is not None else set()
        self.candidate_sizes.append(len(threes))
        self.words.append(toks if threes else [])
        if not toks:
            return
        key = " ".join(toks)
        self.exact[key] = self.exact.get(key, ()) + (item,)
        for gram in _grams(toks, self.n):
            self.ngrams[gram] = self.ngrams.get(gram, ()) + (item,)
        for gram in threes:
            self.candidates[gram] = self.candidates.get(gram, ()) + (item,)

    def sizes(self) -> dict[str, int]:
        counts = dict.fromkeys(self.benchmarks, 0)
        for bench, _, _ in self.items:
            counts[self.benchmarks[bench]] += 1
        return counts

    def match(self, text: str) -> list[dict]:
        """Hits of one text: per benchmark, its closest item (exact, then most shared n-grams, then overlap)."""
        toks = words(text or "")
        shared: dict[int, list] = {}  # item -> [count, first n-gram]
        for i in range(len(toks) - self.n + 1):
            gram = " ".join(toks[i : i + self.n])
            for item in self.ngrams.get(gram, ()):
                entry = shared.setdefault(item, [0, gram])
                entry[0] += 1
        overlap = self._aligned(toks) if self.fuzzy_share is not None else {}
        exact = set(self.exact.get(" ".join(toks), ())) if self.exact_match and toks else set()
        fuzzy = {item for item, share in overlap.items() if share >= self.fuzzy_share} if overlap else set()
        best: dict[int, dict] = {}
        for item in exact | set(shared) | fuzzy:
            bench, item_id, preview = self.items[item]
            count, gram = shared.get(item, (0, None))
            kind = "exact" if item in exact else "ngram" if count else "fuzzy"
            hit = {"benchmark": self.benchmarks[bench], "item_id": item_id, "item": preview, "kind": kind,
                   "shared_ngrams": count, "overlap": round(overlap.get(item, 1.0 if kind == "exact" else 0.0), 3),
                   "ngram": gram}
            rank = (kind == "exact", count, hit["overlap"])
            if bench not in best or rank > best[bench][0]:
                best[bench] = (rank, hit)
        return [best[b][1] for b in sorted(best)]

    def _aligned(self, toks: list[str]) -> dict[int, float]:
        """Share of each candidate item's words that line up, in order, with the text's words."""
        from difflib import SequenceMatcher

        shared: Counter = Counter()
        for gram in _grams(toks, CANDIDATE_NGRAM):
            shared.update(self.candidates.get(gram, ()))
        matcher = SequenceMatcher(autojunk=False)
        matcher.set_seq2(toks)  # the text's index is built once for all candidates
        out = {}
        for item, count in shared.items():
            if count >= CANDIDATE_SHARE * self.candidate_sizes[item]:
                matcher.set_seq1(self.words[item])
                out[item] = sum(block.size for block in matcher.get_matching_blocks()) / len(self.words[item])
        return out


def benchmark_name(bench: DecontamBenchmark) -> str:
    if bench.name:
        return bench.name
    if bench.hf is not None:
        return str(bench.hf.get("path", "hf")) + (f"/{bench.hf['name']}" if bench.hf.get("name") else "")
    path = Path(bench.path)
    generic = {"test", "train", "validation", "dev", "data"}
    return path.name if path.is_dir() else (path.parent.name if path.stem in generic else path.stem)


def benchmark_files(path: str) -> list[str]:
    p = Path(path)
    if not p.is_dir():
        return [path]
    found = sorted(str(f) for f in p.iterdir() if f.suffix in (".jsonl", ".json", ".parquet"))
    if not found:
        raise InputError(f"benchmark folder {path} holds no .jsonl or .parquet file")
    return found


def read_benchmark(bench: DecontamBenchmark) -> list[tuple[str, str]]:
    """(item id, text) of every item; rows without a text are skipped (they cannot contaminate)."""
    from factory.ingest import read_raw

    sources = [SourceConfig(hf=bench.hf)] if bench.hf is not None else [SourceConfig(path=f) for f in benchmark_files(bench.path)]
    items = []
    for src in sources:
        for n, (_, row, error) in enumerate(read_raw(src)):
            if error:
                continue
            names = (bench.field,) if bench.field else TEXT_FIELDS
            text = next((row[k] for k in names if isinstance(row.get(k), str) and row[k].strip()), None)
            if text is None:
                continue
            id_names = (bench.id_field,) if bench.id_field else ID_FIELDS
            item_id = next((str(row[k]) for k in id_names if row.get(k) is not None), str(n))
            items.append((item_id, text))
    if not items:
        raise InputError(f"benchmark {benchmark_name(bench)}: no item with a text field ({bench.field or TEXT_FIELDS})")
    return items


def build_index(
    benchmarks: list[DecontamBenchmark], n: int, exact: bool = True, fuzzy_share: float | None = None
) -> BenchmarkIndex:
    index = BenchmarkIndex(n=n, exact_match=exact, fuzzy_share=fuzzy_share)
    for bench in benchmarks:
        index.benchmarks.append(benchmark_name(bench))
        for item_id, text in read_benchmark(bench):
            index.add(len(index.benchmarks) - 1, item_id, text)
    return index


_FETCHED: dict[str, object] = {}


def fetch_once(value):
    """A value broadcast to map_batches as an ObjectRef: fetched once per worker process, then reused."""
    import ray

    if not isinstance(value, ray.ObjectRef):
        return value
    key = value.hex()
    if key not in _FETCHED:
        if len(_FETCHED) >= 8:
            _FETCHED.clear()
        _FETCHED[key] = ray.get(value)
    return _FETCHED[key]


def contamination_batch(batch: pa.Table, text_columns: list[str], id_column: str, index) -> pa.Table:
    idx = fetch_once(index)
    ids = batch.column(id_column).to_pylist()
    texts = [batch.column(c).to_pylist() for c in text_columns]
    rows = []
    for i, row_id in enumerate(ids):
        seen = set()
        for column in texts:
            for hit in idx.match(column[i]):
                if hit["benchmark"] not in seen:
                    seen.add(hit["benchmark"])
                    rows.append({"id": row_id, **hit})
    return pa.Table.from_pylist(rows, schema=HIT_SCHEMA)


def find_contamination(ds, text_columns: list[str], id_column: str, index_ref) -> pa.Table:
    """Every (row id, benchmark) hit over a Ray dataset; the result is small (hits only)."""
    import ray

    hits = ds.map_batches(
        contamination_batch,
        fn_kwargs={"text_columns": text_columns, "id_column": id_column, "index": index_ref},
        batch_format="pyarrow",
        batch_size=1024,
        num_cpus=0.5,
    )
    tables = ray.get(hits.to_arrow_refs())
    return pa.concat_tables([HIT_SCHEMA.empty_table(), *tables])
