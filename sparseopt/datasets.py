"""Generated recommender data: heavy-tailed popularity and a known low-rank signal.

Examples, tests and benchmarks use these instead of downloads. Both generators draw users and
items from a bounded Zipf law (``P(rank r) ~ r**-zipf``, ranks scattered over the ids by a
random permutation, so popular rows are not all at the start of a table), keep each
(user, item) pair at most once, and return a ``scipy.sparse.csr_matrix`` of shape
``(n_users, n_items)`` with sorted indices.

* :func:`make_ratings`: explicit ratings from a biased rank-``rank`` factorisation plus
  Gaussian noise (``noise`` is the best RMSE any model can reach);
* :func:`make_interactions`: implicit positives (value 1) of users who pick popular items they
  like: a popularity-drawn candidate is kept with probability ``sigmoid(signal * <p_u, q_i>)``;
* :func:`holdout_split`: a seeded random split of the stored entries into train and test.

The pairs are a weighted sample without replacement: pairs are drawn independently (user and
item by popularity, then kept with the taste probability) and the first ``n`` distinct ones
are stored. Duplicates are found by sorting the keys ``user * n_items + item``, never by
looking at every cell, so a call costs O(n log n) for ``n`` stored pairs, however large
``n_users * n_items`` is:

* when the pairs fill at least half of the matrix, one pass over its cells draws the same
  sample exactly (Efraimidis and Spirakis 2006: each cell gets the key ``E / w`` with
  ``E ~ Exp(1)`` and ``w`` its weight, and the ``n`` smallest keys win), in O(n) cells;
* otherwise, when a steep ``zipf`` saturates the popular rows (a round of draws yields fewer
  than one new pair in eight), the remaining pairs are drawn uniformly among the free cells
  (at least half of the matrix): the head users then hold most of their items and the other
  samples go to the rest. Should even those draws keep almost nothing (an extreme ``signal``
  in :func:`make_interactions`, which gives the disliked pairs a keep probability that
  rounds to 0), the sample is finished by one pass over the cells; a request for more pairs
  than have a non-zero probability raises ``ValueError``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import scipy.sparse as sp

from . import _validation as V
from ._utils import check_random_state, sorted_unique

__all__ = ["make_ratings", "make_interactions", "holdout_split"]

# Ids are stored in CSR indices and hashed as user * n_items + item in int64.
_MAX_IDS = V.MAX_IDS
# Matrices holding at least this share of stored pairs are sampled in one pass over the cells.
_DENSE_SHARE = 0.5
# A round of popularity draws yielding fewer new pairs per draw than this means the popular
# cells are taken: the remaining pairs are drawn uniformly among the free cells.
_MIN_YIELD = 1.0 / 8.0
# Draws per round at most (bounds the memory of one round).
_MAX_ROUND = 1 << 22
# Rows of cells keyed at once by the one-pass sampler.
_BLOCK_CELLS = 1 << 20


def _check_count(name: str, value: Any, n_users: int, n_items: int) -> int:
    n = V.check_int(name, value, 0, 2**62)
    if n > n_users * n_items:
        raise ValueError(f"{name}={n} exceeds n_users * n_items = {n_users * n_items}: pairs "
                         "are distinct")
    return n


class _Zipf:
    """Bounded Zipf ids: rank r in 1..n drawn with p ~ r**-s, mapped to an id by a permutation."""

    def __init__(self, rng: np.random.Generator, n: int, s: float) -> None:
        r = np.arange(1, n + 1, dtype=np.float64)
        p = r ** -s
        self.cdf = np.cumsum(p)
        total = self.cdf[-1]
        self.cdf /= total
        self.perm = rng.permutation(n)
        # log-probabilities by id (by rank they would underflow for a steep law)
        self.logp = np.empty(n)
        self.logp[self.perm] = -s * np.log(r) - math.log(total)

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        ranks = np.searchsorted(self.cdf, rng.random(size), side="right")
        return self.perm[np.minimum(ranks, self.perm.shape[0] - 1)]


def _log_sigmoid(z: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -z)


class _Taste:
    """The keep probability of a pair in :func:`make_interactions`: ``sigmoid(signal *
    <P[u], Q[i]>)``."""

    def __init__(self, P: np.ndarray, Q: np.ndarray, signal: float) -> None:
        self.P, self.Q, self.signal = P, Q, signal

    def pairs(self, u: np.ndarray, i: np.ndarray) -> np.ndarray:
        return np.exp(_log_sigmoid(self.signal * np.einsum("ij,ij->i", self.P[u], self.Q[i])))

    def log_rows(self, users: np.ndarray) -> np.ndarray:
        return _log_sigmoid(self.signal * (self.P[users] @ self.Q.T))


def _not_in(uniq: np.ndarray, taken: np.ndarray) -> np.ndarray:
    """Mask of the sorted distinct ``uniq`` that are not in the sorted ``taken``."""
    if taken.shape[0] == 0:
        return np.ones(uniq.shape[0], dtype=bool)
    pos = np.minimum(np.searchsorted(taken, uniq), taken.shape[0] - 1)
    return taken[pos] != uniq


def _fresh_keys(keys: np.ndarray, taken: np.ndarray, need: int) -> Tuple[np.ndarray, int]:
    """The distinct ``keys`` not in ``taken``, sorted, and how many there were; when there are
    more than ``need``, only the ``need`` drawn first (sequential sampling keeps the first
    distinct draws; ordering by first draw costs a second sort, so only this case pays it)."""
    uniq = sorted_unique(keys)
    uniq = uniq[_not_in(uniq, taken)]
    if uniq.shape[0] <= need:
        return uniq, uniq.shape[0]
    uniq, first = np.unique(keys, return_index=True)
    fresh = _not_in(uniq, taken)
    uniq, first = uniq[fresh], first[fresh]
    return np.sort(uniq[np.argsort(first)[:need]]), uniq.shape[0]


def _all_cells(rng: np.random.Generator, zu: _Zipf, zi: _Zipf, n: int,
               taste: Optional[_Taste], taken: Optional[np.ndarray] = None) -> np.ndarray:
    """Keys of ``n`` cells drawn by weight without replacement, in one pass over all cells:
    the ``n`` smallest of ``log E - log w`` (Efraimidis and Spirakis 2006), sorted. Cells in
    ``taken`` are kept and the sample continues from them (the keys of the other cells order
    them as sequential draws would)."""
    n_users, n_items = zu.logp.shape[0], zi.logp.shape[0]
    cells = n_users * n_items
    if n == 0:
        return np.empty(0, dtype=np.int64)
    keys = np.empty(cells, dtype=np.float64)
    rows = max(1, _BLOCK_CELLS // n_items)
    for s in range(0, n_users, rows):
        users = np.arange(s, min(s + rows, n_users))
        logw = zu.logp[users, None] + zi.logp[None, :]
        if taste is not None:
            logw += taste.log_rows(users)
        with np.errstate(divide="ignore"):  # E = 0 has probability 0; -inf would still do
            block = np.log(rng.standard_exponential(logw.shape)) - logw
        keys[s * n_items:(s + users.shape[0]) * n_items] = block.reshape(-1)
    if taken is not None:
        keys[taken] = -np.inf
    possible = int(np.count_nonzero(keys < np.inf))  # cells of weight 0 are never drawn
    if possible < n:
        raise ValueError(f"only {possible} (user, item) pairs have a non-zero probability of "
                         f"being kept, fewer than the {n} asked for (lower signal)")
    if n < cells:
        chosen = np.argpartition(keys, n - 1)[:n]
    else:
        chosen = np.arange(cells)
    return np.sort(chosen.astype(np.int64))


def _sample_pairs(rng: np.random.Generator, n_users: int, n_items: int, n: int, zipf: float,
                  taste: Optional[_Taste] = None) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` distinct (user, item) pairs, weighted as the module docstring describes, as
    ``(users, items)`` sorted by user then item."""
    zu, zi = _Zipf(rng, n_users, zipf), _Zipf(rng, n_items, zipf)
    cells = n_users * n_items
    if n >= _DENSE_SHARE * cells:
        keys = _all_cells(rng, zu, zi, n, taste)
        return keys // n_items, keys % n_items
    taken = np.empty(0, dtype=np.int64)  # sorted keys
    popular, rate = True, 1.0
    while taken.shape[0] < n:
        need = n - taken.shape[0]
        # aim a little short of `need`: the rounds that fall short need no ordering by draw
        size = int(min(need / max(rate, 1e-3) * 0.9, _MAX_ROUND)) + 64
        if popular:
            u, i = zu.draw(rng, size), zi.draw(rng, size)
        else:  # at least half of the cells are free: one draw in two or more is new
            u, i = rng.integers(0, n_users, size), rng.integers(0, n_items, size)
        if taste is not None:
            keep = rng.random(size) < taste.pairs(u, i)
            u, i = u[keep], i[keep]
        new, n_fresh = _fresh_keys(u.astype(np.int64) * n_items + i, taken, need)
        rate = n_fresh / size
        taken = np.sort(np.concatenate([taken, new]), kind="stable")  # merges two sorted runs
        if popular and rate < _MIN_YIELD:
            popular, rate = False, 1.0
        elif not popular and rate < _MIN_YIELD / 8 and taken.shape[0] < n:
            # free cells are there but almost none is kept (an extreme taste signal): the
            # cells that can still be kept are few, and one pass over all of them finishes
            taken = _all_cells(rng, zu, zi, n, taste, taken)
    return taken // n_items, taken % n_items


def _csr(values: np.ndarray, users: np.ndarray, items: np.ndarray, n_users: int,
         n_items: int) -> sp.csr_matrix:
    """The CSR matrix of distinct pairs already sorted by user, then item."""
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return sp.csr_matrix((values, items, indptr), shape=(n_users, n_items))


def make_ratings(n_users: int = 1000, n_items: int = 500, n_ratings: int = 20_000,
                 rank: int = 8, zipf: float = 1.1, noise: float = 0.3,
                 random_state: Any = None, *, mean: float = 3.5, bias_scale: float = 0.5,
                 dtype=np.float32, return_truth: bool = False
                 ) -> Union[sp.csr_matrix, Tuple[sp.csr_matrix, Dict[str, Any]]]:
    """Explicit ratings with Zipfian user and item popularity and a known low-rank signal.

    ``rating(u, i) = mean + b_u + c_i + <p_u, q_i> + noise * N(0, 1)`` with
    ``p_u, q_i ~ N(0, rank**-0.5 I)`` (so ``<p_u, q_i>`` has unit variance) and biases
    ``~ N(0, bias_scale**2)``. The pairs are distinct and drawn with probability proportional
    to ``r_u**-zipf * r_i**-zipf`` over popularity ranks (see the module docstring); the cost
    is O(n_ratings log n_ratings) plus O(n_users + n_items).

    Parameters
    ----------
    n_users, n_items : int
        At most 2**31 - 1 each.
    n_ratings : int
        Stored ratings (distinct pairs); at most ``n_users * n_items`` (more raises
        ``ValueError``).
    rank : int
        Rank of the hidden factorisation.
    zipf : float
        Popularity exponent (0 = uniform; 1.1 = as heavy as a click log).
    noise : float
        Standard deviation of the Gaussian noise: the lowest RMSE a model can reach.
    random_state : None, int in [0, 2**32), numpy.random.Generator or RandomState
    mean, bias_scale : float
        Global mean and standard deviation of the user and item biases.
    dtype : float32 or float64
    return_truth : bool
        Also return the hidden model (``user_factors``, ``item_factors``, ``user_bias``,
        ``item_bias``, ``mean``).

    Returns
    -------
    X : scipy.sparse.csr_matrix, shape (n_users, n_items)
    truth : dict, only when ``return_truth``

    Examples
    --------
    >>> from sparseopt.datasets import make_ratings
    >>> X = make_ratings(200, 100, 3000, random_state=0)
    >>> X.shape, X.nnz
    ((200, 100), 3000)
    """
    n_users = V.check_int("n_users", n_users, 1, _MAX_IDS)
    n_items = V.check_int("n_items", n_items, 1, _MAX_IDS)
    n_ratings = _check_count("n_ratings", n_ratings, n_users, n_items)
    rank = V.check_int("rank", rank, 1, _MAX_IDS)
    zipf, noise = V.check_real("zipf", zipf, low=0.0), V.check_real("noise", noise, low=0.0)
    mean = V.check_real("mean", mean, low=-math.inf)
    bias_scale = V.check_real("bias_scale", bias_scale, low=0.0)
    dtype = V.check_float_dtype("dtype", dtype)
    return_truth = V.check_flag("return_truth", return_truth)
    rng = check_random_state(random_state)
    users, items = _sample_pairs(rng, n_users, n_items, n_ratings, zipf)
    scale = rank ** -0.25
    P = rng.normal(0.0, scale, size=(n_users, rank))
    Q = rng.normal(0.0, scale, size=(n_items, rank))
    bu = rng.normal(0.0, bias_scale, size=n_users)
    bi = rng.normal(0.0, bias_scale, size=n_items)
    r = (mean + bu[users] + bi[items] + np.einsum("ij,ij->i", P[users], Q[items])
         + noise * rng.standard_normal(users.shape[0]))
    X = _csr(r.astype(dtype), users, items, n_users, n_items)
    if return_truth:
        return X, dict(user_factors=P, item_factors=Q, user_bias=bu, item_bias=bi, mean=mean)
    return X


def make_interactions(n_users: int = 1000, n_items: int = 500, n_interactions: int = 20_000,
                      rank: int = 8, zipf: float = 1.1, signal: float = 3.0,
                      random_state: Any = None, *, dtype=np.float32, return_truth: bool = False
                      ) -> Union[sp.csr_matrix, Tuple[sp.csr_matrix, Dict[str, Any]]]:
    """Implicit feedback: users pick popular items that they like.

    A candidate pair is drawn with Zipfian user and item popularity and kept with probability
    ``sigmoid(signal * <p_u, q_i>)`` (``<p_u, q_i>`` of unit variance, rank ``rank``), so the
    data mixes popularity (learnable by item biases) with personal taste (learnable only by
    the factors). Kept pairs are distinct (see the module docstring for the sampling and its
    O(n_interactions log n_interactions) cost); stored values are 1.

    Parameters
    ----------
    n_users, n_items, n_interactions, rank, zipf, random_state, dtype, return_truth
        As in :func:`make_ratings`.
    signal : float
        Strength of taste against popularity (0 = popularity only).

    Returns
    -------
    X : scipy.sparse.csr_matrix, shape (n_users, n_items), values 1
    truth : dict (``user_factors``, ``item_factors``), only when ``return_truth``

    Examples
    --------
    >>> from sparseopt.datasets import make_interactions
    >>> X = make_interactions(300, 200, 4000, random_state=0)
    >>> X.nnz, float(X.data.min()), float(X.data.max())
    (4000, 1.0, 1.0)
    """
    n_users = V.check_int("n_users", n_users, 1, _MAX_IDS)
    n_items = V.check_int("n_items", n_items, 1, _MAX_IDS)
    n_interactions = _check_count("n_interactions", n_interactions, n_users, n_items)
    rank = V.check_int("rank", rank, 1, _MAX_IDS)
    zipf, signal = V.check_real("zipf", zipf, low=0.0), V.check_real("signal", signal, low=0.0)
    dtype = V.check_float_dtype("dtype", dtype)
    return_truth = V.check_flag("return_truth", return_truth)
    rng = check_random_state(random_state)
    scale = rank ** -0.25
    P = rng.normal(0.0, scale, size=(n_users, rank))
    Q = rng.normal(0.0, scale, size=(n_items, rank))
    users, items = _sample_pairs(rng, n_users, n_items, n_interactions, zipf,
                                 _Taste(P, Q, signal))
    X = _csr(np.ones(users.shape[0], dtype=dtype), users, items, n_users, n_items)
    if return_truth:
        return X, dict(user_factors=P, item_factors=Q)
    return X


def holdout_split(X: Any, test_size: float = 0.2, random_state: Any = None
                  ) -> Tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split the stored entries of ``X`` at random into train and test matrices.

    Parameters
    ----------
    X : scipy.sparse matrix or array, shape (n_users, n_items)
        Any SciPy format; its structure is checked first, and entries stored twice are
        summed into one.
    test_size : float in (0, 1)
        Fraction of the stored entries that go to the test matrix.
    random_state : None, int in [0, 2**32), numpy.random.Generator or RandomState

    Returns
    -------
    X_train, X_test : scipy.sparse.csr_matrix, both of the shape of ``X``

    Examples
    --------
    >>> from sparseopt.datasets import make_ratings, holdout_split
    >>> tr, te = holdout_split(make_ratings(100, 50, 1000, random_state=0), 0.1, random_state=0)
    >>> tr.nnz, te.nnz
    (900, 100)
    """
    # canonical: duplicates summed, indices sorted; the values keep their dtype
    csr = V.check_sparse_matrix("X", X, dtype=getattr(X, "dtype", None))
    test_size = V.check_real("test_size", test_size, low=0.0, high=1.0, low_open=True,
                             high_open=True)
    rng = check_random_state(random_state)
    coo = sp.coo_matrix(csr)
    n = coo.nnz
    n_test = int(round(test_size * n))
    test = np.zeros(n, dtype=bool)
    test[rng.choice(n, size=n_test, replace=False)] = True
    out = []
    for mask in (~test, test):
        m = sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=coo.shape)
        m.sort_indices()
        out.append(m)
    return out[0], out[1]
