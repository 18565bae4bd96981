"""Exact and near-duplicate (MinHash LSH) detection over a Ray Dataset, or over a plain list of texts.

API (the curate stage applies its own keep rule per cluster):

    exact_duplicates(ds, *, text_column, id_column) -> DuplicateClusters
    near_duplicates(ds, *, text_column, id_column, threshold=0.8, num_perm=128, ngram=5, seed=1,
                    verify="exact") -> DuplicateClusters
    exact_duplicates_local(texts, ids=None) / near_duplicates_local(texts, ids=None, ...): the same, no Ray

    DuplicateClusters.representative  {id: smallest id of its cluster}, for every row in a cluster of >= 2
    DuplicateClusters.num_clusters    how many clusters of >= 2 rows
    DuplicateClusters.num_duplicates  rows a keep-one-per-cluster rule drops

Exact: rows whose `minhash.normalize`d texts are equal (a 128-bit BLAKE2 digest of it).

Near: rows joined when their word n-gram shingle sets have Jaccard similarity >= threshold.
1. MinHash signatures in `map_batches`; only ids and signatures (num_perm x 4 bytes a row: the dedup
   index) reach the driver, never the texts.
2. LSH on the driver: each band's bucket keys are sorted and grouped (numpy); each row of a bucket is
   paired with the bucket's first row, and the pair is checked against the signatures' Jaccard estimate.
3. `verify="exact"` (default): the candidate rows alone are read again, grouped by candidate component
   (`groupby().map_groups`), and each pair is kept only if its exact shingle-set Jaccard reaches the
   threshold. This is what makes precision and recall both hold near the threshold, where a 128-value
   estimate errs by +-0.035 (bench/bench_near_dup.py). "estimate" keeps pairs whose estimate reaches
   the threshold (no second pass); "none" keeps every LSH candidate, like datasketch's MinHashLSH.
4. Kept pairs are joined into connected components (vectorised union-find).
Ids must be unique. A text that is None or has no words is never a near duplicate.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from factory.curate import minhash

if TYPE_CHECKING:
    import ray.data

BATCH_SIZE = 256  # ~5 MB of 20 KB traces per map_batches call
NUM_CPUS = 0.5  # fractional, so reads and writes of the same dataset keep running beside it (CPU_RECIPES)
ROWS_PER_PARTITION = 2000  # candidate rows per shuffle partition of the exact check
VERIFY_MODES = ("exact", "estimate", "none")
# When pairs are verified, the LSH only proposes candidates, so its banding leans to recall (misses ~2%
# of pairs right at the threshold, far fewer above it); verification removes the false positives.
CANDIDATE_FN_WEIGHT = 0.98
PREFILTER_SIGMAS = 3.0  # exact mode: drop candidates whose estimate is this many std devs below threshold


@dataclass(frozen=True)
class DuplicateClusters:
    representative: dict[Hashable, Hashable]
    num_clusters: int

    @property
    def num_duplicates(self) -> int:
        return len(self.representative) - self.num_clusters


@lru_cache(maxsize=16)
def band_layout(threshold: float, num_perm: int, verify: str) -> tuple[int, int]:
    """(bands, rows) of the LSH: datasketch's balanced choice unverified, a recall-leaning one otherwise."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, got {verify!r}")
    fn_weight = 0.5 if verify == "none" else CANDIDATE_FN_WEIGHT
    return minhash.lsh_params(threshold, num_perm, fp_weight=1 - fn_weight, fn_weight=fn_weight)


# ---- the core, on numpy arrays (both the Ray and the plain path end here) ----


def _components(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Connected components of n nodes and edges (u, v): each node's label is the smallest node in its component.

    Vectorised union-find: hook each edge's larger root under its smaller one, then compress paths.
    """
    parent = np.arange(n)
    while len(u):
        pu, pv = parent[u], parent[v]
        differ = pu != pv
        if not differ.any():
            break
        np.minimum.at(parent, np.maximum(pu, pv)[differ], np.minimum(pu, pv)[differ])
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                break
            parent = grand
    return parent


def _bucket_pairs(labels: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows sharing a label: (row, first row of its label) for all but the first. `rows` ascending."""
    order = np.argsort(labels, kind="stable")  # stable: within a bucket rows stay ascending
    sorted_labels = labels[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = sorted_labels[1:] != sorted_labels[:-1]
    head = np.maximum.accumulate(np.where(new, np.arange(len(order)), 0))
    return rows[order[~new]], rows[order[head[~new]]]


def clusters_from_pairs(ids: np.ndarray, u: np.ndarray, v: np.ndarray) -> DuplicateClusters:
    """Clusters from pairs over rows sorted by id: component labels are then the smallest ids."""
    root = _components(len(ids), u, v)
    sizes = np.bincount(root, minlength=len(ids))
    members = np.flatnonzero(sizes[root] >= 2)
    return DuplicateClusters(
        representative=dict(zip(ids[members].tolist(), ids[root[members]].tolist())),
        num_clusters=int((sizes >= 2).sum()),
    )


def _sorted_by_id(ids: Sequence, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    ids = np.asarray(ids)
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if len(ids) > 1 and (ids[1:] == ids[:-1]).any():
        dup = ids[1:][ids[1:] == ids[:-1]][0]
        raise ValueError(f"ids must be unique; {dup!r} appears more than once")
    return (ids, *(a[order] for a in arrays))


def clusters_from_digests(ids: Sequence, digests: np.ndarray) -> DuplicateClusters:
    """Exact clusters: rows whose digests (n, 16) uint8 are equal."""
    ids, digests = _sorted_by_id(ids, digests)
    _, labels = np.unique(digests.view(np.dtype((np.void, digests.shape[1]))).ravel(), return_inverse=True)
    u, v = _bucket_pairs(labels.ravel(), np.arange(len(ids)))
    return clusters_from_pairs(ids, u, v)


def candidate_pairs(sig: np.ndarray, *, threshold: float, verify: str) -> tuple[np.ndarray, np.ndarray]:
    """Row pairs (u, v), v < u, that share an LSH bucket and pass the signature check of `verify`.

    Each row in a bucket is paired with the bucket's first row; rows the check rejects are paired again
    among themselves, so a bucket's rows are not all judged against one row only.
    """
    bands, rows = band_layout(threshold, sig.shape[1], verify)
    if verify == "exact":  # a loose check: the exact one follows, this only saves it work
        cutoff = threshold - PREFILTER_SIGMAS * (threshold * (1 - threshold) / sig.shape[1]) ** 0.5
    else:
        cutoff = threshold
    has_shingles = np.flatnonzero((sig != minhash.EMPTY).any(axis=1))
    keys = minhash.band_keys(sig[has_shingles], bands, rows)
    us, vs = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for band in range(bands):
        labels, members = keys[:, band], has_shingles
        while len(members) > 1:
            u, v = _bucket_pairs(labels, members)
            if verify == "none":
                us.append(u)
                vs.append(v)
                break
            ok = minhash.estimated_jaccard(sig[u], sig[v]) >= cutoff
            us.append(u[ok])
            vs.append(v[ok])
            rejected = np.isin(members, u[~ok])
            labels, members = labels[rejected], members[rejected]
    pairs = np.unique(np.stack([np.concatenate(us), np.concatenate(vs)], axis=1), axis=0)
    return pairs[:, 0], pairs[:, 1]


def shingle_set(text: str | None, ngram: int) -> np.ndarray:
    """The text's distinct shingle hashes, sorted (32-bit: ~1e-3 collisions among 4,000 shingles)."""
    return np.unique(minhash.shingle_hashes([text or ""], ngram)[0])


def exact_jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = len(np.intersect1d(a, b, assume_unique=True))
    union = len(a) + len(b) - inter
    return inter / union if union else 0.0


def verify_group(batch: dict, *, threshold: float, ngram: int) -> dict:
    """Exact-Jaccard check of candidate pairs inside one group of rows (columns row, text, partners)."""
    sets = {int(r): shingle_set(t, ngram) for r, t in zip(batch["row"], batch["text"])}
    a, b = [], []
    for r, partners in zip(batch["row"], batch["partners"]):
        for p in partners:
            if exact_jaccard(sets[int(r)], sets[int(p)]) >= threshold:
                a.append(int(r))
                b.append(int(p))
    return {"a": np.array(a, dtype=np.int64), "b": np.array(b, dtype=np.int64)}


def _candidate_table(u: np.ndarray, v: np.ndarray, n: int) -> tuple[dict[int, int], dict[int, list[int]]]:
    """Per candidate row: its group (connected component of the candidate graph) and its partners."""
    root = _components(n, u, v)
    rows = np.unique(np.concatenate([u, v]))
    partners: dict[int, list[int]] = {int(r): [] for r in rows}
    for a, b in zip(u.tolist(), v.tolist()):
        partners[a].append(b)
    return {int(r): int(root[r]) for r in rows}, partners


def digest(text: str | None) -> bytes:
    """128-bit digest of the normalised text (None counts as empty)."""
    return hashlib.blake2b(minhash.normalize(text or "").encode(), digest_size=16).digest()


# ---- plain path ----


def exact_duplicates_local(texts: Sequence[str | None], ids: Sequence | None = None) -> DuplicateClusters:
    ids = list(range(len(texts))) if ids is None else ids
    digests = np.frombuffer(b"".join(digest(t) for t in texts), dtype=np.uint8).reshape(len(texts), 16)
    return clusters_from_digests(ids, digests)


def near_duplicates_local(
    texts: Sequence[str | None],
    ids: Sequence | None = None,
    *,
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 1,
    verify: str = "exact",
) -> DuplicateClusters:
    ids = list(range(len(texts))) if ids is None else ids
    sig = minhash.signatures([t or "" for t in texts], num_perm=num_perm, ngram=ngram, seed=seed)
    ids, sig, order = _sorted_by_id(ids, sig, np.arange(len(texts)))
    u, v = candidate_pairs(sig, threshold=threshold, verify=verify)
    if verify == "exact":
        u, v = verify_exact(u, v, len(ids), lambda r: texts[order[r]], threshold=threshold, ngram=ngram)
    return clusters_from_pairs(ids, u, v)


def verify_exact(
    u: np.ndarray, v: np.ndarray, n: int, text_of_row: Callable[[int], str | None], *, threshold: float, ngram: int
) -> tuple[np.ndarray, np.ndarray]:
    """The candidate pairs whose exact shingle-set Jaccard reaches the threshold (in-process form)."""
    if not len(u):
        return u, v
    group, partners = _candidate_table(u, v, n)
    by_group: dict[int, list[int]] = defaultdict(list)
    for r, g in group.items():
        by_group[g].append(r)
    edges = [
        verify_group({"row": rows, "text": [text_of_row(r) for r in rows], "partners": [partners[r] for r in rows]},
                     threshold=threshold, ngram=ngram)
        for rows in by_group.values()
    ]
    return np.concatenate([e["a"] for e in edges]), np.concatenate([e["b"] for e in edges])


# ---- Ray Data path ----


def _digest_batch(batch: dict, *, text_column: str, id_column: str) -> dict:
    digests = b"".join(digest(t) for t in batch[text_column])
    return {"id": batch[id_column], "digest": np.frombuffer(digests, dtype=np.uint8).reshape(-1, 16)}


def _signature_batch(batch: dict, *, text_column: str, id_column: str, num_perm: int, ngram: int, seed: int) -> dict:
    texts = [t or "" for t in batch[text_column]]
    return {"id": batch[id_column], "sig": minhash.signatures(texts, num_perm=num_perm, ngram=ngram, seed=seed)}


def _collect(ds: ray.data.Dataset, column: str) -> tuple[np.ndarray, np.ndarray]:
    """Ids and one fixed-width array column, streamed to the driver batch by batch."""
    ids, values = [], []
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        ids.append(batch["id"])
        values.append(batch[column])
    if not ids:
        return np.zeros(0, dtype=object), np.zeros((0, 0))
    return np.concatenate(ids), np.concatenate(values)


def _check_columns(ds: ray.data.Dataset, *columns: str) -> None:
    names = ds.schema().names
    missing = [c for c in columns if c not in names]
    if missing:
        raise KeyError(f"dataset has no column {missing[0]!r} (columns: {', '.join(names)})")


def exact_duplicates(ds: ray.data.Dataset, *, text_column: str, id_column: str) -> DuplicateClusters:
    _check_columns(ds, text_column, id_column)
    digests = ds.select_columns([id_column, text_column]).map_batches(
        _digest_batch,
        fn_kwargs={"text_column": text_column, "id_column": id_column},
        batch_format="numpy",
        batch_size=BATCH_SIZE,
        num_cpus=NUM_CPUS,
    )
    ids, values = _collect(digests, "digest")
    return clusters_from_digests(ids, values.reshape(len(ids), 16).astype(np.uint8))


def _tag_candidates(batch: dict, *, text_column: str, id_column: str, row_of: dict, group: dict, partners: dict):
    """The batch's candidate rows, with their row number, group and partners (pyarrow: a fixed schema
    even when a batch has no candidate)."""
    import pyarrow as pa

    rows = [(row_of[i], t) for i, t in zip(batch[id_column].tolist(), batch[text_column].tolist()) if i in row_of]
    return pa.table({
        "row": pa.array([r for r, _ in rows], pa.int64()),
        "group": pa.array([group[r] for r, _ in rows], pa.int64()),
        "text": pa.array([t for _, t in rows], pa.string()),
        "partners": pa.array([partners[r] for r, _ in rows], pa.list_(pa.int64())),
    })


def near_duplicates(
    ds: ray.data.Dataset,
    *,
    text_column: str,
    id_column: str,
    threshold: float = 0.8,
    num_perm: int = 128,
    ngram: int = 5,
    seed: int = 1,
    verify: str = "exact",
) -> DuplicateClusters:
    _check_columns(ds, text_column, id_column)
    band_layout(threshold, num_perm, verify)  # a bad threshold or mode fails here, before any Ray work
    columns = ds.select_columns([id_column, text_column])
    sigs = columns.map_batches(
        _signature_batch,
        fn_kwargs={"text_column": text_column, "id_column": id_column, "num_perm": num_perm, "ngram": ngram, "seed": seed},
        batch_format="numpy",
        batch_size=BATCH_SIZE,
        num_cpus=NUM_CPUS,
    )
    ids, sig = _collect(sigs, "sig")
    ids, sig = _sorted_by_id(ids, sig.reshape(len(ids), num_perm).astype(np.uint32))
    u, v = candidate_pairs(sig, threshold=threshold, verify=verify)
    if verify == "exact" and len(u):
        # Second pass over the candidate rows only: grouped by candidate component, checked exactly.
        group, partners = _candidate_table(u, v, len(ids))
        id_list = ids.tolist()
        tagged = columns.map_batches(
            _tag_candidates,
            fn_kwargs={"text_column": text_column, "id_column": id_column, "row_of": {id_list[r]: r for r in group},
                       "group": group, "partners": partners},
            batch_format="numpy",
            batch_size=BATCH_SIZE,
            num_cpus=NUM_CPUS,
        )
        # Ray's default of 200 shuffle partitions made the check most of the time on small inputs.
        partitions = min(200, 1 + len(group) // ROWS_PER_PARTITION)
        edges = tagged.groupby("group", num_partitions=partitions).map_groups(
            verify_group, fn_kwargs={"threshold": threshold, "ngram": ngram}, batch_format="numpy", num_cpus=NUM_CPUS
        )
        found = list(edges.iter_batches(batch_size=None, batch_format="numpy"))
        u = np.concatenate([np.zeros(0, np.int64)] + [b["a"] for b in found]).astype(np.int64)
        v = np.concatenate([np.zeros(0, np.int64)] + [b["b"] for b in found]).astype(np.int64)
    return clusters_from_pairs(ids, u, v)
