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

With a steep ``zipf`` and many samples the head users can run out of distinct items; their
rows then saturate (hold most items) and the remaining samples go to other users.
"""
from __future__ import annotations

import numbers
from typing import Any, Dict, Tuple, Union

import numpy as np
import scipy.sparse as sp

__all__ = ["make_ratings", "make_interactions", "holdout_split"]


def _rng(random_state: Any) -> np.random.Generator:
    """A ``numpy.random.Generator`` from None, an int, a Generator or a RandomState."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(random_state.randint(0, 2**31 - 1))
    if random_state is None or isinstance(random_state, (numbers.Integral, np.integer)):
        return np.random.default_rng(random_state)
    raise TypeError(f"random_state must be None, an int or a numpy Generator, got {random_state!r}")


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return int(value)


def _check_nonneg(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value) \
            or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


class _Zipf:
    """Bounded Zipf ids: rank r in 1..n drawn with p ~ r**-s, mapped to an id by a permutation."""

    def __init__(self, rng: np.random.Generator, n: int, s: float) -> None:
        p = np.arange(1, n + 1, dtype=np.float64) ** -s
        self.cdf = np.cumsum(p)
        self.cdf /= self.cdf[-1]
        self.perm = rng.permutation(n)

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        ranks = np.searchsorted(self.cdf, rng.random(size), side="right")
        return self.perm[np.minimum(ranks, self.perm.shape[0] - 1)]


def _union(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sorted distinct values of two int64 arrays (a sort, not NumPy's hash-based unique,
    which is several times slower on millions of keys)."""
    c = np.sort(np.concatenate([a, b]), kind="stable")
    if c.shape[0] == 0:
        return c
    keep = np.empty(c.shape[0], dtype=bool)
    keep[0] = True
    np.not_equal(c[1:], c[:-1], out=keep[1:])
    return c[keep]


def _unique_pairs(rng, n_users, n_items, n_pairs, zipf, accept=None):
    """``n_pairs`` distinct (user, item) pairs drawn from the Zipf laws (and kept with
    probability ``accept(u, i)`` when given), as sorted flat keys ``u * n_items + i``."""
    zu, zi = _Zipf(rng, n_users, zipf), _Zipf(rng, n_items, zipf)
    keys = np.empty(0, dtype=np.int64)
    rounds = 0
    while keys.shape[0] < n_pairs:
        need = n_pairs - keys.shape[0]
        size = int(need * 1.25) + 64
        u = zu.draw(rng, size)
        i = zi.draw(rng, size)
        if accept is not None:
            keep = rng.random(size) < accept(u, i)
            u, i = u[keep], i[keep]
        keys = _union(keys, u.astype(np.int64) * n_items + i)
        rounds += 1
        if rounds > 60 and keys.shape[0] < n_pairs:
            # The popular part of the matrix is saturated: fill up uniformly among free cells.
            while keys.shape[0] < n_pairs:
                extra = rng.integers(0, n_users * n_items, size=2 * (n_pairs - keys.shape[0]))
                keys = _union(keys, extra.astype(np.int64))
    if keys.shape[0] > n_pairs:
        keys = np.sort(rng.choice(keys, size=n_pairs, replace=False))
    return keys // n_items, keys % n_items


def make_ratings(n_users: int = 1000, n_items: int = 500, n_ratings: int = 20_000,
                 rank: int = 8, zipf: float = 1.1, noise: float = 0.3,
                 random_state: Any = None, *, mean: float = 3.5, bias_scale: float = 0.5,
                 dtype=np.float32, return_truth: bool = False
                 ) -> Union[sp.csr_matrix, Tuple[sp.csr_matrix, Dict[str, Any]]]:
    """Explicit ratings with Zipfian user and item popularity and a known low-rank signal.

    ``rating(u, i) = mean + b_u + c_i + <p_u, q_i> + noise * N(0, 1)`` with
    ``p_u, q_i ~ N(0, rank**-0.5 I)`` (so ``<p_u, q_i>`` has unit variance) and biases
    ``~ N(0, bias_scale**2)``. The pairs are distinct and drawn with probability proportional
    to ``r_u**-zipf * r_i**-zipf`` over popularity ranks.

    Parameters
    ----------
    n_users, n_items : int
    n_ratings : int
        Stored ratings (distinct pairs); at most ``n_users * n_items``.
    rank : int
        Rank of the hidden factorisation.
    zipf : float
        Popularity exponent (0 = uniform; 1.1 = as heavy as a click log).
    noise : float
        Standard deviation of the Gaussian noise: the lowest RMSE a model can reach.
    random_state : None, int or numpy.random.Generator
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
    n_users = _check_int("n_users", n_users, 1)
    n_items = _check_int("n_items", n_items, 1)
    n_ratings = _check_int("n_ratings", n_ratings, 0)
    rank = _check_int("rank", rank, 1)
    zipf, noise = _check_nonneg("zipf", zipf), _check_nonneg("noise", noise)
    if n_ratings > n_users * n_items:
        raise ValueError(f"n_ratings={n_ratings} exceeds n_users * n_items = {n_users * n_items}")
    rng = _rng(random_state)
    users, items = _unique_pairs(rng, n_users, n_items, n_ratings, zipf)
    scale = rank ** -0.25
    P = rng.normal(0.0, scale, size=(n_users, rank))
    Q = rng.normal(0.0, scale, size=(n_items, rank))
    bu = rng.normal(0.0, bias_scale, size=n_users)
    bi = rng.normal(0.0, bias_scale, size=n_items)
    r = (mean + bu[users] + bi[items] + np.einsum("ij,ij->i", P[users], Q[items])
         + noise * rng.standard_normal(users.shape[0]))
    X = sp.csr_matrix((r.astype(dtype), (users, items)), shape=(n_users, n_items))
    X.sort_indices()
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
    the factors). Kept pairs are distinct; stored values are 1.

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
    n_users = _check_int("n_users", n_users, 1)
    n_items = _check_int("n_items", n_items, 1)
    n_interactions = _check_int("n_interactions", n_interactions, 0)
    rank = _check_int("rank", rank, 1)
    zipf, signal = _check_nonneg("zipf", zipf), _check_nonneg("signal", signal)
    if n_interactions > n_users * n_items:
        raise ValueError(f"n_interactions={n_interactions} exceeds n_users * n_items = "
                         f"{n_users * n_items}")
    rng = _rng(random_state)
    scale = rank ** -0.25
    P = rng.normal(0.0, scale, size=(n_users, rank))
    Q = rng.normal(0.0, scale, size=(n_items, rank))

    def accept(u, i):
        return 1.0 / (1.0 + np.exp(-signal * np.einsum("ij,ij->i", P[u], Q[i])))

    users, items = _unique_pairs(rng, n_users, n_items, n_interactions, zipf, accept)
    X = sp.csr_matrix((np.ones(users.shape[0], dtype=dtype), (users, items)),
                      shape=(n_users, n_items))
    X.sort_indices()
    if return_truth:
        return X, dict(user_factors=P, item_factors=Q)
    return X


def holdout_split(X: Any, test_size: float = 0.2, random_state: Any = None
                  ) -> Tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split the stored entries of ``X`` at random into train and test matrices.

    Parameters
    ----------
    X : scipy.sparse matrix or array, shape (n_users, n_items)
    test_size : float in (0, 1)
        Fraction of the stored entries that go to the test matrix.
    random_state : None, int or numpy.random.Generator

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
    if not sp.issparse(X):
        raise TypeError(f"X must be a scipy.sparse matrix or array, got {type(X).__name__}")
    if not (isinstance(test_size, numbers.Real) and 0.0 < test_size < 1.0):
        raise ValueError(f"test_size must be in (0, 1), got {test_size!r}")
    coo = sp.coo_matrix(X)
    coo.sum_duplicates()
    n = coo.nnz
    n_test = int(round(test_size * n))
    test = np.zeros(n, dtype=bool)
    test[_rng(random_state).choice(n, size=n_test, replace=False)] = True
    out = []
    for mask in (~test, test):
        m = sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=coo.shape)
        m.sort_indices()
        out.append(m)
    return out[0], out[1]
