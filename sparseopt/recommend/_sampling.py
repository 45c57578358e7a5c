"""Training samples of the user x item models, as their kernels take them.

* :func:`user_item_ids` lists the (user, item) pair of every stored interaction;
* :func:`pack_ratings` packs explicit ratings into 16-byte records;
* :func:`sample_negatives` draws BPR negatives that avoid the user's seen items;
* :func:`warp_candidates` lists the WARP candidates the kernel draws itself from a seed (it
  skips seen items).

Random draws come from the model's own generator, in a fixed order, so a seeded model
trains to the same bits every time.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import scipy.sparse as sp

from .._kernels import _mf as _mf_kernel
from ._interactions import SeenItems

__all__ = ["user_item_ids", "pack_ratings", "sample_negatives", "warp_candidates"]

# Rounds of re-drawing a BPR negative that turned out to be a positive of its user.
_NEG_ROUNDS = 10


def user_item_ids(X: sp.csr_matrix) -> Tuple[np.ndarray, np.ndarray]:
    """``(users, items)``: int64 ids of every stored entry of the checked CSR ``X``, in
    storage order."""
    users = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))
    items = np.ascontiguousarray(X.indices, dtype=np.int64)
    return users, items


def pack_ratings(users: np.ndarray, items: np.ndarray, ratings: np.ndarray) -> np.ndarray:
    """One ``(2,)`` int64 record per rating: both ids in the first word, the float64 rating
    in the second, so a shuffled epoch reads one cache line per sample.

    Ids must be below ``2**31`` (``_validation.MAX_IDS``, checked with the matrix).
    """
    records = np.empty((users.shape[0], 2), dtype=np.int64)
    _mf_kernel.pack_ratings(users, items, np.ascontiguousarray(ratings, np.float64), records)
    return records


def sample_negatives(rng: np.random.Generator, seen: SeenItems, n_items: int,
                     users: np.ndarray, size: int) -> np.ndarray:
    """One negative item per entry of ``users`` (int64, checked ids), drawn uniformly from
    the items that user has not interacted with.

    A draw that hits a seen item is redrawn, up to ``_NEG_ROUNDS`` rounds: a user who holds
    nearly every item may keep a positive as its negative rather than loop without end.
    ``size`` is ``users.shape[0]``.
    """
    neg = rng.integers(0, n_items, size=size, dtype=np.int64)
    hit = np.empty(size, dtype=np.uint8)
    indptr, indices = seen.indptr64, seen.indices64
    if _mf_kernel.csr_contains(indptr, indices, users, neg, hit):
        for _ in range(_NEG_ROUNDS):
            redo = np.flatnonzero(hit)
            neg[redo] = rng.integers(0, n_items, size=redo.shape[0], dtype=np.int64)
            sub = np.empty(redo.shape[0], dtype=np.uint8)
            if not _mf_kernel.csr_contains(indptr, indices, users[redo], neg[redo], sub):
                break
            hit[:] = 0
            hit[redo] = sub
    return neg



_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def warp_candidates(seed: int, size: int, n_draws: int, n_items: int) -> np.ndarray:
    """``(size, n_draws)`` int64: the candidates ``mf_warp_batch`` draws itself from
    ``seed`` (given no ``cand`` rows), draw ``c = s * n_draws + t`` for candidate ``t`` of
    sample ``s``.

    Each draw is the splitmix64 finaliser of ``seed + (c + 1) * 0x9E3779B97F4A7C15`` (mod
    2**64), mapped to ``[0, n_items)`` as ``((z >> 32) * n_items) >> 32`` (``n_items <
    2**32``). The kernel computes only the draws its scans read; this lists all of them (for
    tests and the reference). Unsigned array arithmetic wraps mod 2**64, as in C.
    """
    c = np.arange(1, size * n_draws + 1, dtype=np.uint64)
    z = np.uint64(seed) + c * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    z = z ^ (z >> np.uint64(31))
    items = ((z >> np.uint64(32)) * np.uint64(n_items)) >> np.uint64(32)
    return items.astype(np.int64).reshape(size, n_draws)
