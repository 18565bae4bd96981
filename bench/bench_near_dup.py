"""Near-duplicate detection: quality against brute-force Jaccard, speed against datasketch, linearity.

(a) Quality: R1-style traces of ~20 KB (bench/trace_corpus.py, real model text) where half the traces
    get a planted copy with 1 to 20% of its words edited. Ground truth = every pair of the corpus whose
    word 5-gram shingle sets (built from `normalize(text).split()` in plain Python, independent of our
    numpy hashing) have Jaccard >= threshold, found by brute force over all pairs (sparse X @ X.T).
    Predicted = pairs in the same cluster of `near_duplicates_local`; datasketch's MinHashLSH at the same
    threshold is scored alongside.
(b) Speed: our MinHash + LSH + exact verification + clustering (the default near_duplicates pipeline,
    in one process; re-reading the candidate texts is not timed, as generating is not) vs datasketch (MinHash.update_batch with its default SHA-1
    shingle hash, MinHashLSH.query + insert, then union of the candidates), same normalisation, shingles
    and num_perm, one process each, on the same batches (interleaved, so both see the same machine load;
    generating the traces is not timed).
(c) Linearity: our time at each size, per document, against the smallest size.
Times in (b) and (c) are CPU seconds of this process (time.process_time): the machine is shared, and
wall time there measures the neighbours' load as much as the code. Both sides run single-threaded.

Run: python bench/bench_near_dup.py                 (a few minutes)
     python bench/bench_near_dup.py --sizes 10000,30000,100000 --baseline-docs 10000   (the issue's figure)
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import numpy as np  # noqa: E402
from trace_corpus import TraceCorpus  # noqa: E402

from factory.curate import dedup, minhash  # noqa: E402

BATCH = 500


def shingles(text: str, ngram: int) -> list[str]:
    words = minhash.normalize(text).split()
    return [" ".join(words[i : i + ngram]) for i in range(max(len(words) - ngram + 1, 1 if words else 0))]


def cluster_pairs(representative: dict) -> set[tuple]:
    groups = defaultdict(list)
    for row, rep in representative.items():
        groups[rep].append(row)
    return {(a, b) for members in groups.values() for a in members for b in members if a < b}


def union_pairs(edges: list[tuple]) -> set[tuple]:
    """Clusters (as same-cluster pairs) from candidate edges, with a small union-find."""
    parent: dict = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in edges:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return cluster_pairs({x: find(x) for x in parent})


def exact_jaccard_pairs(texts: list[str], ids: list[int], ngram: int, threshold: float) -> dict[tuple, float]:
    """Every pair with shingle-set Jaccard >= threshold, over all pairs (sparse intersection counts)."""
    from scipy.sparse import csr_matrix

    # Shingles as 64-bit Python hashes of the strings: collision odds ~1e-6 over the corpus.
    rows, cols = [], []
    for r, t in enumerate(texts):
        hs = {hash(s) for s in shingles(t, ngram)}
        rows += [r] * len(hs)
        cols += list(hs)
    _, col_ids = np.unique(np.array(cols, dtype=np.int64), return_inverse=True)
    x = csr_matrix((np.ones(len(rows), np.int32), (np.array(rows), col_ids)), shape=(len(texts), col_ids.max() + 1))
    sizes = np.asarray(x.sum(axis=1)).ravel()
    inter = (x @ x.T).tocoo()
    keep = inter.row < inter.col
    r, c, n = inter.row[keep], inter.col[keep], inter.data[keep]
    jac = n / (sizes[r] + sizes[c] - n)
    hit = jac >= threshold
    return {(ids[a], ids[b]): float(j) for a, b, j in zip(r[hit], c[hit], jac[hit])}


def datasketch_minhash(text: str, num_perm: int, ngram: int):
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm)
    m.update_batch([s.encode() for s in shingles(text, ngram)])
    return m


def score(predicted: set, truth: set) -> tuple[float, float]:
    tp = len(predicted & truth)
    return tp / max(len(truth), 1), tp / max(len(predicted), 1)


def quality(args) -> None:
    from datasketch import MinHashLSH

    corpus = TraceCorpus(seed=1)
    n = args.quality_docs
    ids, texts = list(range(n)), [corpus.document(i) for i in range(n)]
    rng = random.Random(7)
    shares = {}
    for base in range(0, n, 2):
        shares[n + base] = rng.uniform(0.01, 0.20)
        ids.append(n + base)
        texts.append(corpus.near_copy(texts[base], shares[n + base], rng))
    t0 = time.perf_counter()
    truth = exact_jaccard_pairs(texts, ids, args.ngram, args.threshold)
    brute_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours = dedup.near_duplicates_local(texts, ids, threshold=args.threshold, num_perm=args.num_perm, ngram=args.ngram)
    ours_s = time.perf_counter() - t0
    lsh = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm)
    edges = []
    for i, t in zip(ids, texts):
        m = datasketch_minhash(t, args.num_perm, args.ngram)
        edges += [(j, i) for j in lsh.query(m)]
        lsh.insert(i, m)

    truth_pairs = set(truth)
    near = sum(1 for j in truth.values() if j < args.threshold + 0.05)
    print(f"(a) quality: {len(texts)} traces ({n} bases + {len(shares)} planted copies, 1-20% of words edited), "
          f"mean {np.mean([len(t) for t in texts]) / 1000:.1f} KB, ngram={args.ngram}, num_perm={args.num_perm}")
    print(f"    ground truth: {len(truth_pairs)} pairs with exact Jaccard >= {args.threshold} over all "
          f"{len(texts) * (len(texts) - 1) // 2} pairs ({near} of them below {args.threshold + 0.05:.2f}); "
          f"brute force {brute_s:.1f} s")
    estimated = dedup.near_duplicates_local(texts, ids, threshold=args.threshold, num_perm=args.num_perm,
                                            ngram=args.ngram, verify="estimate")
    for name, predicted in (("ours, verify=exact (default)", cluster_pairs(ours.representative)),
                            ("ours, verify=estimate (signatures only)", cluster_pairs(estimated.representative)),
                            ("datasketch MinHashLSH (its candidates)", union_pairs(edges))):
        recall, precision = score(predicted, truth_pairs)
        print(f"    {name:40s} recall {recall:.3f}  precision {precision:.3f}  ({len(predicted)} predicted pairs)")
    print(f"    ours took {ours_s:.1f} s for {len(texts)} traces")


def speed(args) -> None:
    from datasketch import MinHashLSH

    sizes = sorted(int(s) for s in args.sizes.split(","))
    corpus = TraceCorpus(seed=2)
    lsh = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm)
    sig_parts, id_parts, ours_s, base_s, base_docs, edges, chars = [], [], 0.0, 0.0, 0, [], 0
    ours_at: dict[int, tuple[float, int, int]] = {}
    for start in range(0, sizes[-1], BATCH):
        stop = min(start + BATCH, sizes[-1])
        ids = list(range(start, stop))
        texts = [corpus.text(i) for i in ids]
        chars += sum(len(t) for t in texts)
        t0 = time.process_time()
        sig_parts.append(minhash.signatures(texts, num_perm=args.num_perm, ngram=args.ngram))
        ours_s += time.process_time() - t0
        id_parts.append(np.array(ids))
        for i, t in list(zip(ids, texts))[: max(0, args.baseline_docs - start)]:
            t0 = time.process_time()
            m = datasketch_minhash(t, args.num_perm, args.ngram)
            edges += [(j, i) for j in lsh.query(m)]
            lsh.insert(i, m)
            base_s += time.process_time() - t0
            base_docs += 1
        if stop in sizes:
            t0 = time.process_time()
            all_ids, sig = np.concatenate(id_parts), np.concatenate(sig_parts)
            u, v = dedup.candidate_pairs(sig, threshold=args.threshold, verify="exact")
            taken = time.process_time() - t0
            rows = np.unique(np.concatenate([u, v]))
            candidate_text = {int(r): corpus.text(int(all_ids[r])) for r in rows}  # the second read: not timed
            t0 = time.process_time()
            u, v = dedup.verify_exact(u, v, len(all_ids), candidate_text.__getitem__, threshold=args.threshold, ngram=args.ngram)
            found = dedup.clusters_from_pairs(all_ids, u, v)
            ours_at[stop] = (ours_s + taken + time.process_time() - t0, found.num_clusters, len(rows))
    t0 = time.process_time()
    base_pairs = union_pairs(edges)
    base_s += time.process_time() - t0
    print(f"(b) speed in CPU seconds, one process each, num_perm={args.num_perm}, ngram={args.ngram}, threshold={args.threshold}, "
          f"traces of {chars / sizes[-1] / 1000:.1f} KB on average, every 10th a planted near copy")
    n_max = sizes[-1]
    ours_total, clusters, candidates = ours_at[n_max]
    base_rate = base_s / base_docs
    extrapolated = base_docs < n_max
    base_total = base_rate * n_max
    print(f"    datasketch: {base_docs} traces in {base_s:.1f} s ({1000 * base_rate:.2f} ms/trace, "
          f"{len(base_pairs)} same-cluster pairs)")
    print(f"    ours:       {n_max} traces in {ours_total:.1f} s ({1000 * ours_total / n_max:.2f} ms/trace, {clusters} clusters; "
          f"{candidates} candidate traces verified exactly)")
    note = f" (datasketch EXTRAPOLATED linearly from {base_docs} traces)" if extrapolated else ""
    print(f"    at {n_max} traces: datasketch {base_total:.0f} s vs ours {ours_total:.1f} s -> "
          f"speedup {base_total / ours_total:.1f}x{note}")
    print("(c) linearity of ours (time per trace relative to the smallest size; 1.00 = linear)")
    first = sizes[0]
    for n in sizes:
        t, k, _ = ours_at[n]
        print(f"    {n:7d} traces: {t:7.1f} s, {1000 * t / n:.3f} ms/trace, ratio {t / n / (ours_at[first][0] / first):.2f}, {k} clusters")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quality-docs", type=int, default=1000, help="base traces in (a); half get a planted copy")
    p.add_argument("--sizes", default="1000,3000,10000", help="corpus sizes for (b) and (c)")
    p.add_argument("--baseline-docs", type=int, default=1000, help="traces datasketch is timed on (rest extrapolated)")
    p.add_argument("--num-perm", type=int, default=128)
    p.add_argument("--ngram", type=int, default=5)
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--skip-quality", action="store_true")
    args = p.parse_args()
    if not args.skip_quality:
        quality(args)
    speed(args)


if __name__ == "__main__":
    main()
