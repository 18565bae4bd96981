"""Dedup: MinHash signatures equal datasketch's, planted duplicates are found on real traces and nothing
else is merged, exact dedup normalises, results are deterministic, and the Ray path equals the plain one."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from datasketch import MinHash
from datasketch.lsh import _optimal_param

from factory.curate import dedup, minhash
from tests.conftest import MATH_COT

EDGE_CASES = [
    "Héllo, WORLD!! ﬁne — “quoted” text\u3000with ｆｕｌｌ width, ΣΑΣ and 12,345.6 done",
    "",
    "   !!! ...",
    "two words",
    "exactly five words are here",
    "x_1 + y_2 = z\tand\nnew\r\nlines\x0bvertical\x1cseparator",
    "中文的推理过程，没有空格。然后 some English words follow here",
]


def completions(limit: int | None = None) -> list[str]:
    texts = [c for line in MATH_COT.open() for c in json.loads(line)["code"]]
    return texts[:limit]


def reference_hash(shingle: bytes) -> int:
    """The shingle hash minhash.py documents, written plainly: polynomial over code points, fmix64, low 32 bits."""
    h, power = 0, 1
    for ch in shingle.decode():
        h = (h + ord(ch) * power) % (1 << 64)
        power = (power * int(minhash.BASE)) % (1 << 64)
    return int(minhash.fmix64(np.array([h], dtype=np.uint64))[0]) & 0xFFFFFFFF


def reference_shingles(text: str, ngram: int) -> list[bytes]:
    words = minhash.normalize(text).split()
    return [" ".join(words[i : i + ngram]).encode() for i in range(max(len(words) - ngram + 1, 1 if words else 0))]


def edit_words(text: str, count: int, rng: random.Random) -> str:
    words = text.split(" ")
    for at in rng.sample(range(len(words)), count):
        words[at] = rng.choice(["alpha", "beta", "gamma", "delta"])
    return " ".join(words)


def test_normalize_folds_case_width_punctuation_and_whitespace():
    assert minhash.normalize("  Hello,\tWORLD!!  ｆｕｌｌ\n\nwidth — x_1 ") == "hello world full width x_1"
    assert minhash.normalize("") == minhash.normalize(" ... ") == ""


@pytest.mark.parametrize("ngram", [1, 3, 5])
def test_signatures_equal_datasketch_on_real_text(ngram):
    texts = completions(40) + EDGE_CASES
    ours = minhash.signatures(texts, num_perm=64, ngram=ngram, seed=3)
    for text, sig in zip(texts, ours):
        theirs = MinHash(num_perm=64, seed=3, hashfunc=reference_hash)
        theirs.update_batch(reference_shingles(text, ngram))
        assert np.array_equal(theirs.hashvalues, sig), text[:60]


def test_shingle_counts_follow_the_rule():
    _, counts = minhash.shingle_hashes(EDGE_CASES, ngram=5)
    expected = [len(reference_shingles(t, 5)) for t in EDGE_CASES]
    assert counts.tolist() == expected
    assert expected[1] == expected[2] == 0 and expected[3] == 1 and expected[4] == 1


@pytest.mark.parametrize("threshold,num_perm", [(0.8, 128), (0.5, 64), (0.9, 256), (0.7, 32)])
def test_lsh_params_match_datasketch(threshold, num_perm):
    assert minhash.lsh_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)


def test_components_join_chains_under_the_smallest_node():
    labels = dedup._components(7, np.array([1, 3, 6, 5]), np.array([3, 6, 4, 2]))
    assert labels.tolist() == [0, 1, 2, 1, 1, 2, 1]


def planted_corpus():
    """Real completions; 30 long ones get a near copy (1 or 2 words replaced), one an exact copy in other case."""
    rng = random.Random(5)
    base = completions()
    texts, ids, planted = list(base), [f"r{i:04d}" for i in range(len(base))], []
    long = [i for i, t in enumerate(base) if len(t.split()) >= 250]
    for i in rng.sample(long, 30):
        ids.append(f"p{i:04d}")
        texts.append(edit_words(base[i], rng.randint(1, 2), rng))
        planted.append((ids[i], ids[-1]))
    ids.append("x0000")
    texts.append(base[7].upper().replace(".", " . "))
    planted.append((ids[7], "x0000"))
    return texts, ids, planted


def exact_jaccard(a: str, b: str) -> float:
    sa, sb = set(reference_shingles(a, 5)), set(reference_shingles(b, 5))
    return len(sa & sb) / len(sa | sb)


def test_planted_near_duplicates_found_and_nothing_else_merged():
    texts, ids, planted = planted_corpus()
    found = dedup.near_duplicates_local(texts, ids, threshold=0.8)
    rep = found.representative
    text_of = dict(zip(ids, texts))
    for a, b in planted:
        assert exact_jaccard(text_of[a], text_of[b]) >= 0.85  # the setup plants clear near duplicates
        assert rep.get(a) is not None and rep.get(a) == rep.get(b), (a, b)
    # Clusters are joined by true near duplicates only: each member has one in its own cluster.
    # (Real completions of one problem are sometimes near duplicates too: those clusters are genuine.)
    clusters: dict[str, list[str]] = {}
    for member, head in rep.items():
        clusters.setdefault(head, []).append(member)
    for members in clusters.values():
        for m in members:
            assert max(exact_jaccard(text_of[m], text_of[o]) for o in members if o != m) >= 0.8, m
    assert found.num_clusters >= len(planted) - 1
    assert all(rep[r] == min(m for m in rep if rep[m] == rep[r]) for r in rep)  # representative = smallest id


def test_exact_duplicates_normalise_text():
    texts = ["Hello, World!", "hello world", "HELLO   WORLD.", "hello worlds", None, "", "ＨＥＬＬＯ world"]
    ids = ["e", "b", "c", "d", "z", "y", "a"]
    found = dedup.exact_duplicates_local(texts, ids)
    assert found.representative == {"a": "a", "b": "a", "c": "a", "e": "a", "y": "y", "z": "y"}
    assert (found.num_clusters, found.num_duplicates) == (2, 4)


def test_results_do_not_depend_on_row_order_and_seed_changes_signatures():
    texts, ids, _ = planted_corpus()
    order = list(range(len(texts)))
    random.Random(1).shuffle(order)
    first = dedup.near_duplicates_local(texts, ids)
    shuffled = dedup.near_duplicates_local([texts[i] for i in order], [ids[i] for i in order])
    assert first == shuffled
    assert np.array_equal(minhash.signatures(texts[:5], seed=1), minhash.signatures(texts[:5], seed=1))
    assert not np.array_equal(minhash.signatures(texts[:5], seed=1), minhash.signatures(texts[:5], seed=2))


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="unique"):
        dedup.near_duplicates_local(["a b c", "d e f"], ["x", "x"])
    with pytest.raises(ValueError, match="verify"):
        dedup.near_duplicates_local(["a b c"], verify="maybe")
    with pytest.raises(ValueError, match="threshold"):
        dedup.near_duplicates_local(["a b c"], threshold=1.5)


@pytest.fixture(scope="module")
def ray_local():
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    if started:
        ray.shutdown()


def test_ray_path_equals_plain_path(ray_local):
    texts, ids, _ = planted_corpus()
    rows = dict(zip(ids[::3] + ids[-31:] + ["n0000"], texts[::3] + texts[-31:] + [None]))  # planted copies + bases
    ds = ray_local.data.from_items([{"trace_key": k, "completion": t} for k, t in rows.items()], override_num_blocks=4)
    near = dedup.near_duplicates(ds, text_column="completion", id_column="trace_key", threshold=0.8)
    assert near == dedup.near_duplicates_local(list(rows.values()), list(rows))
    assert near.num_clusters > 5
    exact = dedup.exact_duplicates(ds, text_column="completion", id_column="trace_key")
    assert exact == dedup.exact_duplicates_local(list(rows.values()), list(rows))
    with pytest.raises(KeyError, match="response"):
        dedup.near_duplicates(ds, text_column="response", id_column="trace_key")
