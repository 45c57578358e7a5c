"""Evaluation of recommenders on held-out data, vectorised (no Python loop per user).

Ranking metrics take the held-out interactions as a sparse matrix ``X_true`` whose row ``r``
holds the relevant (stored, non-zero) items of the user whose ranked list is
``recommended[r]`` (e.g. ``X_test[users]`` and ``model.recommend(users)[0]``). Relevance is
binary (entries stored twice are summed first). Users without relevant items are left out of
the average; if no user has any, the result is NaN. Within a list, an item id counts at its
first position only (a repeated id is no second hit), and ids outside ``[0, n_items)`` --
the -1 padding of ``recommend`` among them -- are never hits, so every per-user value lies in
[0, 1]. Sparse inputs are structurally checked before use (``ValueError`` naming ``X_true``
or ``exclude``).

==================  ===========================================================================
``precision_at_k``  hits in the top k / k
``recall_at_k``     hits in the top k / number of relevant items
``ndcg_at_k``       sum of 1/log2(rank + 1) over hits (rank from 1), divided by its ideal value
                    (all relevant items ranked first, at most k of them)
``map_at_k``        mean over hits at rank r of (hits in the first r) / r, summed and divided
                    by min(k, number of relevant items)
``mrr_at_k``        1 / rank of the first hit, 0 without a hit
``hit_rate_at_k``   1 if the top k hold at least one hit, else 0
``auc_score``       probability that a relevant item outscores an irrelevant one (ties count
                    1/2), per user, averaged
``rmse``            root mean squared error of predicted ratings
==================  ===========================================================================

``coverage_at_k(recommended, n_items, k)`` needs no held-out data: the share of the catalogue
that appears in at least one row's top k (ids outside ``[0, n_items)`` are not counted).
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import scipy.sparse as sp
from scipy.stats import rankdata

from .. import _validation as V

__all__ = ["rmse", "precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "mrr_at_k",
           "hit_rate_at_k", "coverage_at_k", "auc_score"]


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error, accumulated in float64.

    Parameters
    ----------
    y_true, y_pred : array-like of the same number of elements
        True and predicted ratings (flattened).

    Returns
    -------
    float
        ``sqrt(mean((y_true - y_pred) ** 2))``; NaN for empty inputs.

    Raises
    ------
    ValueError
        If the two inputs differ in length.

    Examples
    --------
    >>> rmse([1.0, 2.0, 3.0], [1.0, 2.0, 5.0])
    1.1547005383792515
    """
    a = np.asarray(y_true, dtype=np.float64).reshape(-1)
    b = np.asarray(y_pred, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"y_true and y_pred differ in length: {a.shape[0]} vs {b.shape[0]}")
    if a.shape[0] == 0:
        return float("nan")
    d = a - b
    return float(np.sqrt(np.dot(d, d) / d.shape[0]))


def _relevant(name: str, X: Any) -> sp.csr_matrix:
    """The relevant items: a checked canonical CSR matrix (sorted indices, duplicates
    summed) without stored zeros."""
    if not sp.issparse(X):
        X = sp.csr_matrix(np.asarray(X))  # dense: no index arrays to trust
    X = V.check_sparse_matrix(name, X)
    if X.nnz and not X.data.all():
        X = X.copy()  # X may share the caller's arrays
        X.eliminate_zeros()
    return X


def _first_occurrences(rec: np.ndarray) -> np.ndarray:
    """``True`` where ``rec[r, j]`` is the first position of its id in row ``r``."""
    order = np.argsort(rec, axis=1, kind="stable")  # equal ids keep their position order
    ranked = np.take_along_axis(rec, order, axis=1)
    first = np.ones(rec.shape, dtype=bool)
    rows, cols = np.nonzero(ranked[:, 1:] == ranked[:, :-1])
    first[rows, order[rows, cols + 1]] = False
    return first


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")


def _top_k(recommended: Any, k: int) -> np.ndarray:
    """The first ``k`` columns of the checked 2-D integer ``recommended``, as int64 (a 1-D
    list is one row)."""
    rec = np.asarray(recommended)
    if rec.ndim == 1:
        rec = rec[None, :]
    if rec.ndim != 2 or rec.dtype.kind not in "iu":
        raise ValueError(f"recommended must be a 2-D array of item ids, got shape {rec.shape} "
                         f"and dtype {rec.dtype}")
    if rec.shape[1] < k:
        raise ValueError(f"recommended has {rec.shape[1]} items per row, fewer than k={k}")
    return rec[:, :k].astype(np.int64)


def _hits(X_true: Any, recommended: Any, k: int) -> Tuple[np.ndarray, np.ndarray]:
    """(hits (m, k) bool, number of relevant items per row)."""
    _check_k(k)
    X = _relevant("X_true", X_true)
    rec = _top_k(recommended, k)
    if rec.shape[0] != X.shape[0]:
        raise ValueError(f"recommended has {rec.shape[0]} rows but X_true has {X.shape[0]}")
    n_items = X.shape[1]
    rows = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))
    keys = rows * n_items + X.indices.astype(np.int64)           # sorted: CSR, sorted indices
    valid = (rec >= 0) & (rec < n_items)
    q = np.arange(rec.shape[0], dtype=np.int64)[:, None] * n_items + np.where(valid, rec, 0)
    pos = np.searchsorted(keys, q)
    pos = np.minimum(pos, max(keys.shape[0] - 1, 0))
    hits = valid & (keys[pos] == q) if keys.shape[0] else np.zeros(rec.shape, dtype=bool)
    return hits & _first_occurrences(rec), np.diff(X.indptr)


def _mean_over(values: np.ndarray, n_rel: np.ndarray) -> float:
    keep = n_rel > 0
    if not keep.any():
        return float("nan")
    return float(values[keep].mean())


_RANKING_PARAMETERS = """\
    X_true : sparse matrix or array of shape (m, n_items)
        The relevant (held-out) items of each row's user: its stored non-zero entries.
    recommended : int array of shape (m, n) with n >= k, or a 1-D list of item ids (one row)
        Each row's ranked item ids, best first; ids outside ``[0, n_items)``, such as the -1
        padding of ``recommend``, are never hits.
    k : int, default=10
        The length of the list scored.
"""
_RANKING_RAISES = """\
    ValueError
        If ``k`` is not a positive int, ``recommended`` is not 2-D integer with at least ``k``
        columns or has not one row per row of ``X_true``, or ``X_true`` is malformed.
"""


def _ranking_doc(func):
    """Fill in the Parameters and Raises text the ranking metrics share."""
    func.__doc__ = (func.__doc__
                    .replace("    {ranking_parameters}\n", _RANKING_PARAMETERS)
                    .replace("    {ranking_raises}\n", _RANKING_RAISES))
    return func


@_ranking_doc
def precision_at_k(X_true: Any, recommended: Any, k: int = 10) -> float:
    """Mean over users with relevant items of (hits among the first k) / k.

    Parameters
    ----------
    {ranking_parameters}

    Returns
    -------
    float
        The mean over users with relevant items of the precision at k; NaN if no row has a relevant item.

    Raises
    ------
    {ranking_raises}

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> X_true = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 0]]))
    >>> precision_at_k(X_true, np.array([[2, 1], [3, 1]]), k=2)
    0.5
    """
    hits, n_rel = _hits(X_true, recommended, k)
    return _mean_over(hits.sum(axis=1) / k, n_rel)


@_ranking_doc
def recall_at_k(X_true: Any, recommended: Any, k: int = 10) -> float:
    """Mean over users with relevant items of (hits among the first k) / (relevant items).

    Parameters
    ----------
    {ranking_parameters}

    Returns
    -------
    float
        The mean over users with relevant items of the recall at k; NaN if no row has a relevant item.

    Raises
    ------
    {ranking_raises}

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> X_true = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 0]]))
    >>> recall_at_k(X_true, np.array([[2, 1], [3, 1]]), k=2)
    0.75
    """
    hits, n_rel = _hits(X_true, recommended, k)
    return _mean_over(hits.sum(axis=1) / np.maximum(n_rel, 1), n_rel)


@_ranking_doc
def ndcg_at_k(X_true: Any, recommended: Any, k: int = 10) -> float:
    """Normalised discounted cumulative gain at k with binary relevance.

    ``DCG = sum over hits at rank r (1-based) of 1/log2(r + 1)``, divided by the DCG of an
    ideal list (``min(k, relevant)`` hits at the top).

    Parameters
    ----------
    {ranking_parameters}

    Returns
    -------
    float
        The mean over users with relevant items of the NDCG at k, in [0, 1]; NaN if no row has a relevant item.

    Raises
    ------
    {ranking_raises}

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> round(ndcg_at_k(sp.csr_matrix(np.array([[0, 1, 0]])), np.array([[0, 1]]), k=2), 4)
    0.6309
    """
    hits, n_rel = _hits(X_true, recommended, k)
    disc = 1.0 / np.log2(np.arange(2, k + 2, dtype=np.float64))
    dcg = hits @ disc
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[np.minimum(n_rel, k)]
    return _mean_over(dcg / np.where(ideal > 0, ideal, 1.0), n_rel)


@_ranking_doc
def map_at_k(X_true: Any, recommended: Any, k: int = 10) -> float:
    """Mean average precision at k with binary relevance.

    A user's average precision is the sum, over the hits at ranks ``r`` (1-based) among the
    first k, of the precision of the first ``r`` items, divided by ``min(k, relevant)``; it
    is 1 exactly when the top k are as many relevant items as fit.

    Parameters
    ----------
    {ranking_parameters}

    Returns
    -------
    float
        The mean over users with relevant items of the average precision at k; NaN if no row has a relevant item.

    Raises
    ------
    {ranking_raises}

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> X_true = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 0]]))
    >>> map_at_k(X_true, np.array([[2, 1, 0], [3, 1, 2]]), k=3)   # ((1 + 2/3) / 2 + 1/2) / 2
    0.6666666666666666
    """
    hits, n_rel = _hits(X_true, recommended, k)
    precision = np.cumsum(hits, axis=1) / np.arange(1, k + 1, dtype=np.float64)
    ap = np.where(hits, precision, 0.0).sum(axis=1) / np.maximum(np.minimum(n_rel, k), 1)
    return _mean_over(ap, n_rel)


@_ranking_doc
def mrr_at_k(X_true: Any, recommended: Any, k: int = 10) -> float:
    """Mean reciprocal rank at k: 1 / (rank of the first hit among the first k), 0 without a
    hit.

    Parameters
    ----------
    {ranking_parameters}

    Returns
    -------
    float
        The mean over users with relevant items of the reciprocal rank; NaN if no row has a relevant item.

    Raises
    ------
    {ranking_raises}

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> X_true = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 0]]))
    >>> mrr_at_k(X_true, np.array([[3, 2, 0], [3, 2, 0]]), k=3)   # (1/2 + 0) / 2
    0.25
    """
    hits, n_rel = _hits(X_true, recommended, k)
    first = np.argmax(hits, axis=1)
    rr = np.where(hits.any(axis=1), 1.0 / (first + 1.0), 0.0)
    return _mean_over(rr, n_rel)


@_ranking_doc
def hit_rate_at_k(X_true: Any, recommended: Any, k: int = 10) -> float:
    """Share of the users with relevant items that have at least one among their first k.

    Parameters
    ----------
    {ranking_parameters}

    Returns
    -------
    float
        The share of users with relevant items that have a hit; NaN if no row has a relevant item.

    Raises
    ------
    {ranking_raises}

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> X_true = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]]))
    >>> hit_rate_at_k(X_true, np.array([[3, 2], [3, 0], [0, 1]]), k=2)
    0.5
    """
    hits, n_rel = _hits(X_true, recommended, k)
    return _mean_over(hits.any(axis=1).astype(np.float64), n_rel)


def coverage_at_k(recommended: Any, n_items: int, k: int = 10) -> float:
    """Share of the ``n_items`` items that appear among the first k of at least one row.

    Ids outside ``[0, n_items)`` (the -1 padding of ``recommend`` among them) are not items
    and are not counted; with no row at all the coverage is 0.

    Parameters
    ----------
    recommended : int array of shape (m, n) with n >= k, or a 1-D list of item ids (one row)
        Each row's ranked item ids, best first.
    n_items : int
        The size of the catalogue.
    k : int, default=10
        The length of the lists counted.

    Returns
    -------
    float
        The share of the catalogue, in [0, 1].

    Raises
    ------
    ValueError
        If ``k`` or ``n_items`` is not a positive int, or ``recommended`` is not 2-D integer
        with at least ``k`` columns.

    Examples
    --------
    >>> import numpy as np
    >>> coverage_at_k(np.array([[0, 1, 2], [1, 0, -1]]), n_items=8, k=2)   # {0, 1}
    0.25
    """
    _check_k(k)
    if isinstance(n_items, bool) or not isinstance(n_items, (int, np.integer)) or n_items < 1:
        raise ValueError(f"n_items must be a positive int, got {n_items!r}")
    rec = _top_k(recommended, k).reshape(-1)
    rec = rec[(rec >= 0) & (rec < n_items)]
    return float(np.unique(rec).shape[0] / n_items)


def auc_score(X_true: Any, scores: Any, exclude: Optional[Any] = None) -> float:
    """Per-user ROC AUC of ``scores`` for the relevant items of ``X_true``, averaged.

    Parameters
    ----------
    X_true : sparse matrix, shape (m, n_items)
        Relevant (held-out) items per row.
    scores : array, shape (m, n_items)
        Finite scores of every item for the user of each row.
    exclude : sparse matrix, shape (m, n_items), optional
        Items that are neither relevant nor irrelevant (typically the training interactions);
        they are left out of the comparison, and so are relevant items that are also excluded.

    Returns
    -------
    float
        The mean over users of the probability that a relevant item outscores an irrelevant
        one (ties count 1/2). Users with no relevant or no irrelevant candidate item are left
        out of the average; NaN if none is left.

    Raises
    ------
    ValueError
        If ``scores`` is not finite or not of the shape of ``X_true``, or ``exclude`` has
        another shape, or a sparse input is malformed.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> auc_score(sp.csr_matrix(np.array([[1, 0, 0]])), np.array([[0.5, 0.9, 0.1]]))
    0.5
    """
    X = _relevant("X_true", X_true)
    S = np.array(scores, dtype=np.float64)  # a copy: excluded entries are overwritten
    if S.ndim != 2 or S.shape != X.shape:
        raise ValueError(f"scores must have the shape of X_true {X.shape}, got {S.shape}")
    if not np.all(np.isfinite(S)):
        raise ValueError("scores must be finite")
    rel = X.toarray() != 0
    if exclude is not None:
        E = _relevant("exclude", exclude)
        if E.shape != X.shape:
            raise ValueError(f"exclude has shape {E.shape}, expected {X.shape}")
        excl = E.toarray() != 0
        rel &= ~excl
        # Excluded items drop below every candidate; their ranks are then 1..n_excl, and a
        # candidate's rank among candidates is its rank minus n_excl.
        S[excl] = -np.inf
        n_excl = excl.sum(axis=1)
    else:
        n_excl = np.zeros(S.shape[0], dtype=np.int64)
    ranks = rankdata(S, axis=1) - n_excl[:, None]
    n_pos = rel.sum(axis=1)
    n_neg = S.shape[1] - n_excl - n_pos
    keep = (n_pos > 0) & (n_neg > 0)
    if not keep.any():
        return float("nan")
    rank_sum = np.where(rel, ranks, 0.0).sum(axis=1)
    auc = (rank_sum[keep] - n_pos[keep] * (n_pos[keep] + 1) / 2.0) / (n_pos[keep] * n_neg[keep])
    return float(auc.mean())


# The metrics of held-out data ``recommend.evaluate`` computes, by the names it reports them
# under (``coverage_at_k`` follows them there as "coverage").
RANKING_METRICS = {"precision": precision_at_k, "recall": recall_at_k, "ndcg": ndcg_at_k,
                   "map": map_at_k, "mrr": mrr_at_k, "hit_rate": hit_rate_at_k}
