"""MinHash signatures and LSH banding, vectorised over a batch of texts with numpy (no Ray here).

Why our own and not datasketch: datasketch hashes every shingle in a Python loop and builds one
`MinHash` object per document; here a whole batch is hashed and permuted as numpy arrays, which is
what makes dedup of ~20 KB reasoning traces affordable (bench/bench_near_dup.py measures the ratio).
The permutations are datasketch's default scheme ("affine32", datasketch >= 2.0) drawn from the same
seed, so for the same shingle hash our signatures equal datasketch's bit for bit (tests check this).

Pipeline per text: `normalize` (NFKC, lowercase; the words are the maximal runs of Unicode word
characters, so punctuation and whitespace only separate them) -> word n-gram shingles, each the string
"w1 w2 ... wn" of the normalised text, hashed with a polynomial hash from prefix sums over its code
points (no Python loop per shingle or per character) -> 32-bit shingle hash -> MurmurHash3 fmix32 ->
`a_k * h + b_k mod 2^32` for k < num_perm -> min per text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

# Shingle hash: sum(ord(char_j) * BASE**j) mod 2^64 over the shingle's characters, then fmix64, low 32 bits.
BASE = np.uint64(0x100000001B3)  # the FNV-1 64-bit prime (odd, so invertible mod 2^64)
BASE_INV = np.uint64(pow(int(BASE), -1, 1 << 64))
EMPTY = np.uint32(0xFFFFFFFF)  # signature value of a text without shingles (datasketch's empty sketch)

_WORD = re.compile(r"\w+")
_CHUNK_CHARS = 1 << 18  # texts are hashed in chunks of about this many characters (cache-sized arrays)
_BLOCK_CELLS = 1 << 20  # num_perm x shingles cells permuted at once (4 MiB of uint32): stays in cache

# ASCII code point -> itself lowercased if a word character ([A-Za-z0-9_], as re's \w), else a space.
_ASCII_CANON = np.array([ord(chr(c).lower()) if chr(c).isalnum() or c == ord("_") else 32 for c in range(128)], np.uint8)


def normalize(text: str) -> str:
    """NFKC, lowercase, then the words (maximal runs of Unicode word characters) joined by single spaces.

    Punctuation, symbols and whitespace only separate words. `shingle_hashes` applies the same rule
    to a batch of texts at once in numpy; tests check that the two agree.
    """
    return " ".join(_WORD.findall(unicodedata.normalize("NFKC", text).lower()))


def _code_points(text: str) -> np.ndarray:
    """The text's code points, NFKC and lowercased for non-ASCII text (ASCII is lowercased in numpy)."""
    if text.isascii():  # ASCII is NFKC already, and its uint8 view is cheaper to build
        return np.frombuffer(text.encode(), dtype=np.uint8)
    return np.frombuffer(unicodedata.normalize("NFKC", text).lower().encode("utf-32-le"), dtype=np.uint32)


def _canonical(cp: np.ndarray) -> np.ndarray:
    """Word characters lowercased, every other character a space (re's \\w: str.isalnum() or "_")."""
    if cp.dtype == np.uint8:  # all ASCII: one table lookup
        return _ASCII_CANON[cp]
    canon = cp.copy()
    ascii_ = cp < 128
    canon[ascii_] = _ASCII_CANON[cp[ascii_]]
    other = np.flatnonzero(~ascii_)  # non-ASCII text was lowercased in Python; classify each distinct char once
    distinct, inverse = np.unique(cp[other], return_inverse=True)
    is_word = np.array([chr(c).isalnum() for c in distinct.tolist()], dtype=bool)
    canon[other] = np.where(is_word[inverse], cp[other], 32)
    return canon


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (datasketch applies it before the affine permutations)."""
    h = h.astype(np.uint32, copy=True)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def fmix64(h: np.ndarray) -> np.ndarray:
    h = h.astype(np.uint64, copy=True)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def permutations(num_perm: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) of the affine permutations, drawn exactly as datasketch.MinHash(num_perm, seed) does."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


@lru_cache(maxsize=2)
def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """BASE**j and BASE**-j mod 2^64 for j < n (uint64 products wrap, which is the modulo)."""
    pw = np.full(n, BASE, dtype=np.uint64)
    pw[0] = 1
    inv = np.full(n, BASE_INV, dtype=np.uint64)
    inv[0] = 1
    return np.cumprod(pw, dtype=np.uint64), np.cumprod(inv, dtype=np.uint64)


def _shingle_hashes_chunk(texts: list[np.ndarray], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes of texts given as code points (see `_code_points`), and how many each text has."""
    # A space between texts keeps words from spanning two; all-ASCII chunks stay uint8.
    sep = np.array([32], dtype=np.uint8)
    canon = _canonical(np.concatenate([part for t in texts for part in (t, sep)]))
    is_word = canon != 32
    # Compact to the normalised form: word characters, one space for each run of other characters.
    keep = is_word.copy()
    keep[1:] |= is_word[:-1]
    pos = np.flatnonzero(keep)
    buf = canon[pos]
    in_word = is_word[pos]
    edge = np.diff(in_word.astype(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts, ends = np.flatnonzero(edge == 1), np.flatnonzero(edge == -1)

    text_starts = np.cumsum([0] + [len(t) + 1 for t in texts[:-1]])
    text_of_word = np.searchsorted(text_starts, pos[starts], side="right") - 1
    words_per_text = np.bincount(text_of_word, minlength=len(texts))

    pw, inv = _powers(max(_CHUNK_CHARS, 1 << len(buf).bit_length()))
    prefix = np.zeros(len(buf) + 1, dtype=np.uint64)
    np.cumsum(pw[: len(buf)] * buf, out=prefix[1:])

    # Shingle k of a text spans its words k .. k+ngram-1 (all of them when it has fewer than ngram).
    shingles_per_text = np.where(words_per_text >= ngram, words_per_text - ngram + 1, np.minimum(words_per_text, 1))
    first_word = np.cumsum(words_per_text) - words_per_text
    text_of = np.repeat(np.arange(len(texts)), shingles_per_text)
    first_shingle = np.cumsum(shingles_per_text) - shingles_per_text
    s_word = first_word[text_of] + np.arange(len(text_of)) - first_shingle[text_of]
    e_word = np.minimum(s_word + ngram - 1, first_word[text_of] + words_per_text[text_of] - 1)
    s, e = starts[s_word], ends[e_word]
    h = (prefix[e] - prefix[s]) * inv[s]  # = sum(ord(char_j) * BASE**(j - s)) over the shingle
    return fmix64(h).astype(np.uint32), shingles_per_text


def _chunks(texts: Sequence[str]):
    """Texts as code points, grouped into chunks of about _CHUNK_CHARS characters."""
    chunk, size = [], 0
    for text in texts:
        cp = _code_points(text)
        if chunk and size + len(cp) + 1 > _CHUNK_CHARS:
            yield chunk
            chunk, size = [], 0
        chunk.append(cp)
        size += len(cp) + 1
    if chunk:
        yield chunk


def shingle_hashes(texts: Sequence[str], ngram: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of the word n-gram shingles of each normalised text, concatenated, and counts per text.

    A text with fewer than `ngram` words has one shingle (all its words); a text without words has none.
    """
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    parts = [_shingle_hashes_chunk(chunk, ngram) for chunk in _chunks(texts)]
    if not parts:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64)
    return np.concatenate([h for h, _ in parts]), np.concatenate([c for _, c in parts])


def signatures(texts: Sequence[str], num_perm: int = 128, ngram: int = 5, seed: int = 1) -> np.ndarray:
    """MinHash signatures, shape (len(texts), num_perm), uint32; a text without shingles gets all EMPTY.

    Works chunk by chunk, so memory holds one chunk's shingles besides the signatures.
    """
    if ngram < 1:
        raise ValueError(f"ngram must be >= 1, got {ngram}")
    parts = [signatures_from_hashes(*_shingle_hashes_chunk(chunk, ngram), num_perm, seed) for chunk in _chunks(texts)]
    return np.concatenate(parts) if parts else np.zeros((0, num_perm), np.uint32)


def signatures_from_hashes(hashes: np.ndarray, counts: np.ndarray, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """Signatures of texts given as their shingle hashes (concatenated) and shingle counts."""
    a, b = permutations(num_perm, seed)
    a, b = a[:, None], b[:, None]
    h = fmix32(hashes)
    sig = np.full((len(counts), num_perm), EMPTY, dtype=np.uint32)
    owner = np.repeat(np.arange(len(counts)), counts)
    block = max(1, _BLOCK_CELLS // num_perm)
    buf = np.empty((num_perm, block), dtype=np.uint32)
    for lo in range(0, len(h), block):
        hi = min(lo + block, len(h))
        cells = buf[:, : hi - lo]
        np.multiply(a, h[None, lo:hi], out=cells)
        cells += b
        # Pieces of texts inside this block: a long text spans blocks, so fold with the running minimum.
        who = owner[lo:hi]
        cuts = np.flatnonzero(np.diff(who)) + 1
        piece_starts = np.concatenate(([0], cuts))
        mins = np.minimum.reduceat(cells, piece_starts, axis=1).T
        rows = who[piece_starts]
        np.minimum(sig[rows], mins, out=mins)
        sig[rows] = mins
    return sig


def estimated_jaccard(sig_a: np.ndarray, sig_b: np.ndarray) -> np.ndarray:
    """Share of equal signature values, row by row (MinHash's Jaccard estimate)."""
    return (sig_a == sig_b).mean(axis=-1)


def lsh_params(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive and false negative areas, as datasketch does.

    P(candidate | Jaccard s) = 1 - (1 - s**rows)**bands; false positives integrate it over [0, threshold],
    false negatives its complement over [threshold, 1]. Integrated numerically (no scipy needed).
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    grid_lo = np.linspace(0.0, threshold, 2001)
    grid_hi = np.linspace(threshold, 1.0, 2001)
    best, opt = float("inf"), (1, 1)
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(1 - (1 - grid_lo**rows) ** bands, grid_lo)
            fn = np.trapezoid((1 - grid_hi**rows) ** bands, grid_hi)
            err = fp * fp_weight + fn * fn_weight
            if err < best:
                best, opt = err, (bands, rows)
    return opt


_BAND_MIX = np.random.RandomState(0x5EED).randint(1, 1 << 62, 256, dtype=np.uint64) | np.uint64(1)


def band_keys(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit bucket key per (text, band), shape (n, bands): texts share a bucket iff the band's
    signature values (band b: columns b*rows .. b*rows+rows-1) match, up to 64-bit hash collisions."""
    if bands * rows > sig.shape[1]:
        raise ValueError(f"bands x rows = {bands * rows} exceeds num_perm = {sig.shape[1]}")
    if rows > len(_BAND_MIX):
        raise ValueError(f"at most {len(_BAND_MIX)} rows per band")
    keys = np.zeros((sig.shape[0], bands), dtype=np.uint64)
    for j in range(rows):
        keys += sig[:, j : bands * rows : rows].astype(np.uint64) * _BAND_MIX[j]
    return fmix64(keys)
