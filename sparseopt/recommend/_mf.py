"""Matrix factorisation trained by lazy row updates (explicit ratings, or implicit feedback by
BPR or WARP).

The class holds what is particular to MF: its parameters, its two tables (factors, then
bias, one row per user or item), the two fused training kernels and the scores they define.
Fitting, evaluation and serving follow ``BaseRecommender`` (``_base.py``).
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple, Union

import numpy as np
import scipy.sparse as sp

from .. import _validation as V
from .._kernels import _mf as _mf_kernel
from .._kernels import _features as _feat_kernel
from ..optim import RowGrad, make_optimizer
from .._validation import check_flag
from ._base import BaseRecommender
from ._common import check_recorded, check_table, check_trains, check_training_params
from ._interactions import SeenItems
from ._sampling import pack_ratings, sample_negatives, user_item_ids

__all__ = ["MatrixFactorization"]

# The defaults of the training parameters left at ``None``, per loss. They were chosen on
# ``benchmarks/quality_rec.py``'s real data sets (held-out figures, seed 0); a parameter the
# caller sets is used as given.
_LOSS_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "squared": dict(
        # Adagrad's shrinking per-coordinate steps keep the held-out RMSE flat from epoch 10
        # to 30 (InstEval 1.201-1.203); Adam at its best rate (0.005) drifts up after epoch 6
        # (InstEval 1.207 at 10, 1.212 at 20 epochs) with the same alpha and batches
        optimizer="adagrad",
        # Adagrad at 0.03: MovieLens 0.875 / InstEval 1.202 at 20 epochs; 0.05 reaches
        # 0.872 on MovieLens but InstEval rises to 1.206, 0.1 to 1.213
        learning_rate=0.03,
        # per-rating L2 on factors and biases: 0.2 is the best worst case of both rating
        # sets; 0.02 (the BPR value, with Adam and batches of 4,096) is best at epoch 4 and
        # overfits after it (MovieLens 0.940, InstEval 1.341 at 10 epochs); 0.15 lets InstEval
        # rise to 1.209, 0.25 costs MovieLens 0.882 (Adagrad, 20 epochs)
        alpha=0.2,
        # 20 epochs of 1,024: about 1,600 (MovieLens) / 1,160 (InstEval) steps; the curve is
        # flat around 20 (MovieLens 0.880 / 0.875 / 0.873, InstEval 1.203 / 1.202 / 1.203 at
        # epochs 10 / 20 / 30) and the fit takes about 0.15-0.2 s on one thread
        n_epochs=20,
        # 512 and 2,048 give within 0.002 of 1,024 on both sets (larger batches, i.e. fewer
        # steps, were not measured with Adagrad)
        batch_size=1024,
        # small factors start the model near the biases: 0.01 beats 0.1 at 20 epochs
        # (MovieLens 0.875 vs 0.877, InstEval 1.202 vs 1.203)
        init_std=0.01,
    ),
    "bpr": dict(
        # the BPR defaults were not moved: the squared loss's values above lower BPR's
        # precision@10 on movielens_implicit (0.114 -> 0.093) and flights_planes
        # (0.199 -> 0.158), and at these values BPR already beats implicit's BPR on all
        # three implicit sets
        optimizer="adam", learning_rate=0.01, alpha=0.02, n_epochs=10, batch_size=4096,
        init_std=0.1,
    ),
    "warp": dict(
        # precision@10 on movielens_implicit / flights_planes / pizza_orders (seed 0):
        # Adagrad at 0.03, batches of 1,024, 20 epochs, init 0.01: 0.143 / 0.210 / 0.038.
        # Adam at BPR's values 0.113 / 0.203 / 0.038, and no Adam rate (0.005-0.03), batch
        # (256-4,096) or L2 (0-0.05) tried passed 0.120 on movielens_implicit. Adagrad at
        # 0.02 / 0.04: 0.140 / 0.138 on movielens_implicit; 30 epochs 0.140, batches of
        # 2,048 0.138; init_std 0.1 costs about 0.01 there; alpha 0.003 changes < 0.001.
        # Seeds 1-3 at these values: 0.136 / 0.136 / 0.139 on movielens_implicit (the other
        # two sets do not move), the spread of the choices above.
        # What moves movielens_implicit at every seed is max_sampled (see its "auto" rule):
        # mean / worst P@10 over seeds 0-3 at 20 epochs, 10 draws 0.138 / 0.136, 30 draws
        # 0.142 / 0.139, 50 draws 0.142 / 0.141, 100 draws 0.148 / 0.143; rates 0.04-0.1,
        # batches 256 / 2,048, init 0.1 / 0.001, alpha 0.001 and no biases were all no
        # better. With many draws it still gains after 20 epochs (50 draws: 0.144 at 24,
        # 0.147 at 30) while flights_planes and pizza_orders are flat (mean of seeds 0-3 at
        # 10 draws, epochs 20 / 24: 0.2104 / 0.2106 and 0.0374 / 0.0374); 25 is the
        # compromise with the fit time.
        optimizer="adagrad", learning_rate=0.03, alpha=0.0, n_epochs=25, batch_size=1024,
        init_std=0.01,
    ),
}
_IMPLICIT_LOSSES = ("bpr", "warp")


# The weight argument of the implicit kernels when every positive weighs 1.
_NO_WEIGHTS = np.empty(0, dtype=np.float64)


def _max_sampled(value: Union[int, str], n_items: int) -> int:
    """WARP's draws per positive: ``value``, or for ``"auto"`` one per 50 items within
    [10, 100] (see ``max_sampled`` in the class docstring)."""
    if value == "auto":
        return min(100, max(10, n_items // 50))
    return int(value)


# The candidate argument of the WARP kernel when it draws the candidates itself.
_NO_CANDIDATES = np.empty((0, 0), dtype=np.int64)


class _Fitted(NamedTuple):
    """What the kernels read, taken once per call from checked attributes: a ``fit`` running
    in another thread may replace the attributes, never these references."""
    U: np.ndarray
    Q: np.ndarray
    k: int
    user_bias: bool
    item_bias: bool
    mu: float
    n_users: int
    n_items: int
    # the side features (checked CSR, the model's dtype) of a model fitted with them, else
    # None: identity features, the tables' rows are the users' (items') own rows
    Fu: Optional[sp.csr_matrix] = None
    Fi: Optional[sp.csr_matrix] = None

    @property
    def dtype(self) -> np.dtype:
        return self.U.dtype


def _scratch(st: _Fitted, batch: int, items_per_sample: int) -> Tuple[np.ndarray, ...]:
    """Scratch of the MF training kernels for batches of up to ``batch`` samples, allocated
    once per epoch: gradient rows and row ids of the users and items a batch touches, and
    the row -> slot maps the kernels merge duplicates with. The maps start at -1 and the
    kernels leave them so, which is why one allocation serves every batch."""
    gu = np.empty((batch, st.U.shape[1]), dtype=st.U.dtype)
    gi = np.empty((items_per_sample * batch, st.Q.shape[1]), dtype=st.Q.dtype)
    urows = np.empty(batch, dtype=np.int64)
    irows = np.empty(items_per_sample * batch, dtype=np.int64)
    uslot = np.full(st.n_users, -1, dtype=np.int32)
    islot = np.full(st.n_items, -1, dtype=np.int32)
    return gu, gi, urows, irows, uslot, islot


def represent(F: Optional[sp.csr_matrix], table: np.ndarray) -> np.ndarray:
    """The representation rows ``F @ table`` (C-contiguous, the table's dtype): each row the
    feature-value-weighted sum of its features' table rows; ``table`` itself without
    features (identity features)."""
    if F is None:
        return table
    return np.ascontiguousarray(F @ table, dtype=table.dtype)


class FeatureScratch:
    """The slot maps of :func:`features_step` (int32, -1 everywhere, as the kernels leave
    them), allocated once per epoch: one per user, item, user feature and item feature."""

    def __init__(self, st: "_Fitted") -> None:
        self.uslot = np.full(st.n_users, -1, dtype=np.int32)
        self.islot = np.full(st.n_items, -1, dtype=np.int32)
        self.fuslot = np.full(st.U.shape[0], -1, dtype=np.int32)
        self.fislot = np.full(st.Q.shape[0], -1, dtype=np.int32)


def _unique(ids: np.ndarray, slot: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The distinct ``ids`` in order of first appearance, and each id's position there."""
    uniq = np.empty(ids.shape[0], dtype=np.int64)
    local = np.empty(ids.shape[0], dtype=np.int64)
    m = _feat_kernel.remap_ids(ids, slot, uniq, local)
    return uniq[:m], local


def _gather(F: Optional[sp.csr_matrix], table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The representations of ``rows``: ``F[rows] @ table`` (``table[rows]`` without
    features)."""
    if F is None:
        return table[rows]
    out = np.empty((rows.shape[0], table.shape[1]), dtype=table.dtype)
    _feat_kernel.gather_rows(F.indptr, F.indices, F.data, rows, table, out)
    return out


def _feature_grad(F: Optional[sp.csr_matrix], rows: np.ndarray, G: np.ndarray,
                  fslot: np.ndarray) -> RowGrad:
    """The gradient of a feature table from the merged gradient rows ``G`` of the
    representations of ``rows``: ``F[rows].T @ G`` (the chain rule of :func:`represent`),
    kept to the features those rows use, one merged row each; without features, ``G``
    itself on ``rows``."""
    if F is None:
        return RowGrad(rows, G)
    lengths = F.indptr[rows + 1] - F.indptr[rows]
    room = int(min(int(lengths.sum()), F.shape[1]))
    frows = np.empty(room, dtype=np.int64)
    out = np.empty((room, G.shape[1]), dtype=G.dtype)
    m = _feat_kernel.scatter_rows(F.indptr, F.indices, F.data, rows, G, fslot, frows, out)
    return RowGrad(frows[:m], out[:m])


def features_step(st: "_Fitted", users: np.ndarray, items: Tuple[np.ndarray, ...],
                  kernel: Callable[..., Tuple[int, int]],
                  scratch: Optional[FeatureScratch] = None) -> Tuple[RowGrad, RowGrad]:
    """One mini-batch of a model with side features, for any fused loss kernel.

    The batch's unique users and items (in order of first appearance) get their
    representations (``F[rows] @ table``, ``_features.gather_rows``); the loss kernel runs
    on those small tables with the samples' ids remapped to them, exactly as it runs on the
    full tables without features, and its merged gradient rows are carried back to the
    feature rows they came from (``F[rows].T @ G``, ``_features.scatter_rows``).

    ``users`` are the batch's int64 user ids; ``items`` one or more int64 arrays of item ids
    (a positive and a negative for BPR), each with the batch's length. ``kernel(Ru, Ri,
    ulocal, ilocal, uslot, islot, urows, irows, gu, gi)`` runs the loss kernel: ``ilocal``
    is the tuple of remapped item arrays, the slot and row scratch is sized for these small
    tables; it returns ``(n_unique_users, n_unique_items)`` as the kernels do. ``scratch``:
    the epoch's slot maps (allocated here when not given).
    """
    sc = FeatureScratch(st) if scratch is None else scratch
    uu, ul = _unique(users, sc.uslot)
    allitems = np.concatenate(items) if len(items) > 1 else items[0]
    ii, il = _unique(np.ascontiguousarray(allitems, dtype=np.int64), sc.islot)
    ilocal, start = [], 0
    for arr in items:
        ilocal.append(il[start:start + arr.shape[0]])
        start += arr.shape[0]
    Ru = _gather(st.Fu, st.U, uu)
    Ri = _gather(st.Fi, st.Q, ii)
    gu = np.empty((users.shape[0], st.U.shape[1]), dtype=st.U.dtype)
    gi = np.empty((allitems.shape[0], st.Q.shape[1]), dtype=st.Q.dtype)
    urows = np.empty(users.shape[0], dtype=np.int64)
    irows = np.empty(allitems.shape[0], dtype=np.int64)
    uslot = np.full(uu.shape[0], -1, dtype=np.int32)
    islot = np.full(ii.shape[0], -1, dtype=np.int32)
    nu, ni = kernel(Ru, Ri, ul, tuple(ilocal), uslot, islot, urows, irows, gu, gi)
    return (_feature_grad(st.Fu, uu[urows[:nu]], gu[:nu], sc.fuslot),
            _feature_grad(st.Fi, ii[irows[:ni]], gi[:ni], sc.fislot))


def _ridge_fold_in(Qi: np.ndarray, ci: np.ndarray, r: np.ndarray, mu: float, alpha: float,
                   user_bias: bool) -> np.ndarray:
    """A new user's ``[p, b]`` (or ``p``) under the squared loss: the minimiser of
    ``sum_i 1/2 (mu + b + c_i + <p, q_i> - r_i)^2 + n alpha/2 (||p||^2 + b^2)`` over its
    ``n`` ratings, i.e. ridge regression on the fixed item rows (one small solve)."""
    A = np.hstack([Qi, np.ones((Qi.shape[0], 1))]) if user_bias else Qi
    t = np.asarray(r, dtype=np.float64) - mu - ci
    G = A.T @ A
    G[np.diag_indices_from(G)] += alpha * Qi.shape[0]
    if alpha == 0.0:
        return np.linalg.lstsq(A, t, rcond=None)[0]
    return np.linalg.solve(G, A.T @ t)


# L-BFGS iterations of the BPR fold-in: its objective is smooth and, with alpha > 0, strictly
# convex; the vector moves by less than 1e-4 of its norm after about 30 iterations on the
# test suite's problems, so 100 is a cap that is not reached in practice.
_BPR_FOLD_IN_ITER = 100


def _bpr_fold_in(Q: np.ndarray, c: np.ndarray, items: np.ndarray, alpha: float) -> np.ndarray:
    """A new user's ``p`` under BPR: the minimiser of the expected training loss of its
    positives, each against a uniform negative among its other items,
    ``sum_i mean_j softplus(-(<p, q_i - q_j> + c_i - c_j)) + n alpha/2 ||p||^2``, by
    L-BFGS from zero (deterministic; every negative counted, none drawn)."""
    from scipy.optimize import minimize

    neg = np.ones(Q.shape[0], dtype=bool)
    neg[items] = False
    if not neg.any():
        return np.zeros(Q.shape[1])
    Qi, Qj, ci, cj = Q[items], Q[neg], c[items], c[neg]
    n_pos, n_neg = Qi.shape[0], Qj.shape[0]

    def f(p: np.ndarray) -> Tuple[float, np.ndarray]:
        x = (Qi @ p + ci)[:, None] - (Qj @ p + cj)[None, :]
        loss = np.logaddexp(0.0, -x).sum() / n_neg + 0.5 * alpha * n_pos * (p @ p)
        w = 0.5 * (1.0 - np.tanh(0.5 * x))  # sigmoid(-x), stable for any x
        grad = (-(w.sum(axis=1) @ Qi) + w.sum(axis=0) @ Qj) / n_neg + alpha * n_pos * p
        return float(loss), grad

    res = minimize(f, np.zeros(Q.shape[1]), jac=True, method="L-BFGS-B",
                   options=dict(maxiter=_BPR_FOLD_IN_ITER))
    return res.x


class _Resolved:
    """The estimator's parameters as ``check_training_params`` reads them, with the ones left
    at ``None`` replaced by their loss's default."""

    def __init__(self, est: Any, resolved: Dict[str, Any]) -> None:
        self._est, self._resolved = est, resolved

    def __getattr__(self, name: str) -> Any:
        if name in self._resolved:
            return self._resolved[name]
        return getattr(self._est, name)


class MatrixFactorization(BaseRecommender):
    """Biased matrix factorisation, fitted by mini-batch gradients and lazy row updates.

    Each mini-batch is one pass of a fused Cython kernel (``sparseopt._kernels._mf``)
    that gathers the shuffled samples, computes the predictions, the loss derivatives and the
    gradient of every user and item row the batch touches, duplicates summed in sample order;
    the unique rows go to a sparseopt optimizer as ``RowGrad``, which updates only them. There
    is no Python loop per sample or per row.

    .. rubric:: Models

    ``loss="squared"`` (explicit ratings)::

        pred(u, i) = mu + b_u + c_i + <p_u, q_i>
        objective  = mean over ratings of 1/2 (pred - r)^2
                     + alpha/2 (||p_u||^2 + ||q_i||^2 + b_u^2 + c_i^2)

    ``mu`` (``global_mean_``) is the mean training rating, fixed at the first ``fit`` /
    ``partial_fit``. ``loss="bpr"`` (implicit positives; Rendle et al. 2009): for each positive
    ``(u, i)`` a negative item ``j`` is drawn uniformly among the items ``u`` has no positive
    for (seeded by ``random_state``), and the loss is ``-log sigmoid(x_uij)`` with
    ``x_uij = <p_u, q_i - q_j> + c_i - c_j`` plus ``alpha/2`` times the squared norms of the
    three rows (a user bias would cancel, so BPR has none).

    ``loss="warp"`` (Weston et al. 2011, as LightFM defines it): for each positive ``(u, i)``
    up to ``max_sampled`` items ``j`` are drawn uniformly until one violates the margin,
    ``x_uj > x_ui - 1`` with ``x_ui = <p_u, q_i> + c_i``, and is not one of ``u``'s
    positives (a violating positive is skipped but counts as a draw). If the ``N``-th draw
    is that ``j``, the loss is the hinge ``1 - x_ui + x_uj`` weighted by
    ``log(max(1, floor((n_items - 1) / N)))`` (an estimate of the log-rank of ``i``: a
    violation found at once means ``i`` ranks far down), plus the L2 of the three rows; a
    positive without a violation in its draws changes nothing. The draws are a fixed function
    of one seed per mini-batch taken from the model's generator, so a seeded fit is
    deterministic, and a scan draws only the items it reads.

    **Confidence** (implicit losses; Hu et al. 2008): with ``confidence_alpha > 0`` each
    positive's term, L2 included, is weighted by ``1 + confidence_alpha * r``, ``r`` its
    stored value in ``X`` (a count, say; a pair stored more than once has its values summed).
    The default 0 ignores the values: every positive weighs 1.

    L2 (``alpha``) is attached to every *occurrence* of a row, as in Funk-SVD, Koren et al.
    (2009) and libFM: a user with 300 ratings is penalised 300 times. Because the penalty on a
    row lives only in the terms of the samples that touch it, the kernel adds ``alpha * row``
    to each sample's gradient row, and that is the **exact** gradient of the mini-batch
    objective; rows outside the batch have zero gradient and correctly stay unchanged, so no
    catch-up is owed to them. (A global ``alpha/2 ||W||^2`` would pull every row at every
    step; a lazy optimizer could only approximate it, or apply it as the optimizer's
    decoupled ``weight_decay``, which is a different, non-L2, rule. To use that instead, pass
    ``optimizer_params={"weight_decay": ...}`` with ``alpha=0``.)

    .. rubric:: Side features

    ``fit(X, user_features=Fu, item_features=Fi)`` (LightFM's model, Kula 2015): ``Fu`` is a
    sparse (n_users, n_user_features) matrix, and user ``u`` is represented by the
    feature-value-weighted sum of its features' rows of ``user_table_``,
    ``[p_u, b_u] = Fu[u] @ user_table_`` (items likewise with ``Fi``); the models above then
    hold with these representations. ``None`` means identity features (each user is its own
    feature): the model and the code path without features, bit for bit. Features are used
    as given: to give every known user (item) a row of its own besides its shared features,
    as LightFM's ``Dataset`` does by default, pass ``add_identity_features(F)``; without
    identity columns the shared features carry everything, which serves new users and items
    better (``benchmarks/cold_start.py``). Feature values may be any finite real (negative
    weights included); a row without features has the zero representation.

    Training runs the same fused loss kernels: per mini-batch, the representations of the
    batch's unique users and items are formed (``Fu[rows] @ user_table_``), the loss kernel
    computes their merged gradient rows, and the chain rule carries them to the feature rows
    they use (``Fu[rows].T @ G``), which go to the optimizer as ``RowGrad``: only the
    features of the batch's users and items are updated. The gather and the scatter are
    Cython kernels (``sparseopt._kernels._features``), serial and in a fixed order: a default
    fit with identity item features takes 2.4x (squared, MovieLens ratings) / 1.4x (BPR,
    MovieLens positives) the time of one without features (paired medians of 5, one
    thread), about half of what the same steps cost as SciPy products. With features ``alpha``
    is the same per-occurrence L2 on the *representations* (``alpha/2 ||Fu[u] @
    user_table_||^2`` for each sample of ``u``), not on each feature row as in LightFM's
    ``user_alpha``: a feature row is regularised through the representations it enters, and
    with identity features the rule is the one above.

    .. rubric:: Cold start

    :meth:`predict` and :meth:`recommend` take, as keyword arguments:

    * ``user_features=F`` (rows of ``n_user_features_`` columns): the users are the rows of
      ``F`` and ``user_ids`` index them; new users, or known users with new feature values;
    * ``item_features=F``: the candidate items are the rows of ``F`` (ids, ``items`` and
      ``filter_items`` index them);
    * ``user_interactions=R`` (rows of ``n_items_`` columns, ratings or positives as ``X``):
      new users *folded in* from their interactions, the item representations held fixed.
      Squared loss: each user's ``[p_u, b_u]`` is the exact minimiser of its terms of the
      training objective, ``sum_i 1/2 (mu + b_u + c_i + <p_u, q_i> - r_ui)^2 + n_u alpha/2
      (||p_u||^2 + b_u^2)`` (ridge regression, one ``(k+1) x (k+1)`` solve per user). BPR:
      ``p_u`` minimises the expected training loss of its positives, each against a uniform
      negative among the other items, ``sum_i mean_j softplus(-x_uij) + n_u alpha/2
      ||p_u||^2`` (every negative counted, none drawn; L-BFGS from zero, at most 100
      iterations: deterministic). A user without interactions gets the zero vector. The
      fold-in uses the ``alpha`` of the last ``fit`` / ``partial_fit``.

    Known training interactions are excluded (``exclude_seen``) only where they apply: those
    of ``fit`` for known users and items, those of ``user_interactions`` for folded-in users
    ranked among the fitted items, none for users given by features or items given by
    ``item_features``.

    Parameters
    ----------
    n_components : int, default 32
        Factors per user and item.
    loss : {"squared", "bpr", "warp"}, default "squared"
    optimizer : {"adam", "adagrad", "rmsprop", "sgd"}, optional
        ``sparseopt.Adam`` / ``Adagrad`` / ``RMSprop`` (lazy, see their docs) or plain SGD.
        Default: ``"adagrad"`` for ``loss="squared"`` and ``"warp"``, ``"adam"`` for
        ``loss="bpr"``.
        ``optimizer``, ``learning_rate``, ``alpha``, ``n_epochs``, ``batch_size`` and
        ``init_std`` left at ``None`` take their loss's default: the losses are best
        served by different values (chosen on ``benchmarks/quality_rec.py``'s MovieLens and
        InstEval ratings and its three implicit sets; ``get_params`` keeps the ``None``).
        For ``"adam"`` this estimator defaults to ``bias_correction="global"`` (the rule of
        PyTorch's SparseAdam and TF's LazyAdam; override it in ``optimizer_params``): with
        frozen lazy updates it gives rarely seen users and items larger steps, and on Zipfian
        data it reaches a lower held-out RMSE than the library's default per-row correction,
        even at that rule's best learning rate (``benchmarks/bench_mf.py`` measures both;
        the figures are in the changelog's decisions).
    learning_rate : float, optional
        The optimizer's ``lr``; default 0.03 (squared), 0.01 (BPR), 0.03 (WARP). The gradient is that of
        the batch *mean*, as ``loss.mean()`` in PyTorch, so Adam learning rates carry over
        from torch code; plain SGD needs a larger one (of the order of ``batch_size`` times a
        per-sample rate).
    alpha : float, optional
        Per-occurrence L2 weight, see above; default 0.2 (squared), 0.02 (BPR), 0 (WARP,
        as LightFM's default: its hinge stops pulling once the margin holds). Explicit
        ratings need the strong value: with 0.02 the held-out RMSE is best after a few
        epochs and then rises well above a bias-only model's.
    n_epochs : int, optional
        Passes over the data made by ``fit`` (``partial_fit`` makes one); default 20
        (squared), 10 (BPR), 25 (WARP).
    batch_size : int, optional
        Default 1024 (squared), 4096 (BPR), 1024 (WARP).
    use_biases : bool, default True
        Learn user and item biases (item biases only for BPR and WARP). The global mean
        stays.
    init_std : float, optional
        Factors start as ``N(0, init_std**2)``; biases start at 0. Default 0.01 (squared),
        0.1 (BPR), 0.01 (WARP).
    optimizer_params : dict, optional
        Extra keyword arguments of the optimizer (e.g. ``{"lazy": "decay"}``,
        ``{"betas": (0.9, 0.99)}``). With row-wise state (``{"rowwise": "v"}`` for Adam,
        ``{"rowwise": True}`` for Adagrad and RMSprop) the bias column of each table keeps
        its own row-wise scalars (``rowwise_tail``): the bias gradient is far larger than
        the factors' and, sharing one scalar, would shrink the factors' steps. Set
        ``"rowwise_tail": 0`` to share one scalar per row.
    dtype : float32 or float64, default float32
    random_state : None, int or numpy.random.Generator
        Seeds the initialisation, the shuffling and the BPR negatives / WARP draws.
    n_threads : int, optional
        Threads of the optimizer's row updates, ``predict`` and the top-n selection of
        ``recommend``; ``None`` follows OpenMP's default. The training kernel itself is serial
        (its duplicate merge is a scatter-add in sample order), and the score blocks of
        ``recommend`` are BLAS products, threaded as BLAS is configured (threadpoolctl).
        Results do not depend on the thread count.
    verbose : bool, default False
        Print, per epoch, the training loss, the ``eval_set`` metric (RMSE, or precision@10
        for BPR and WARP) and the training rows (ratings) per second.
    early_stopping : bool, default False
        ``fit`` watches a validation metric (RMSE, or precision@10 for BPR and WARP) after
        every
        epoch: that of ``eval_set`` when given, else of ``validation_fraction`` of ``X``'s
        stored entries held out of training. It stops once the metric has not improved for
        ``n_iter_no_change`` epochs (``n_epochs`` is then the most it runs) and keeps the
        tables of the best epoch (``best_epoch_``); see ``BaseRecommender.fit``.
        ``partial_fit`` ignores it. Off by default: with the squared loss's defaults the
        held-out RMSE of MovieLens and InstEval is flat from epoch 10 to 30, and holding out
        a tenth of the ratings costs more than stopping gains (``benchmarks/quality_rec.py``'s
        splits: 0.876 vs 0.875 on MovieLens, 1.205 vs 1.202 on InstEval).
    validation_fraction : float in (0, 1), default 0.1
        The share of ``X``'s stored entries held out for early stopping without ``eval_set``.
    n_iter_no_change : int, default 5
        Epochs without improvement of the validation metric before early stopping ends
        ``fit``.
    clip_predictions : bool, default True
        With ``loss="squared"``, clip :meth:`predict` (and so ``score``, ``eval_set`` and
        the scores :meth:`recommend` returns, after its ranking) to ``rating_range_``, as
        Surprise clips to its rating scale. Read at prediction time, so it may be switched
        on a fitted model. When the held-out ratings lie in the training range, clipping
        can only bring a prediction closer. At the squared loss's defaults it changes
        nothing measurable: no held-out prediction of ``benchmarks/quality_rec.py``'s
        MovieLens or InstEval leaves the range (RMSE 0.8746 / 1.2016 either way, seeds
        0-2); with weaker L2 it pays (``alpha=0.02``: MovieLens 0.8902 -> 0.8898,
        InstEval 1.2860 -> 1.2852; with Adam at 0.01 for 10 epochs 0.9369 -> 0.9339 and
        1.3897 -> 1.3803, 0.6-3% of predictions out of range).
    confidence_alpha : float >= 0, default 0
        BPR and WARP: each positive weighs ``1 + confidence_alpha * r`` (see above), ``r``
        its value in ``X``, which must then be ``>= 0``. 0 ignores the values. It must be 0
        with ``loss="squared"``.
    max_sampled : int in [1, 1000] or "auto", default "auto"
        WARP: the most items drawn per positive looking for a margin violation. More draws
        find violations of well-ranked positives, at more work per sample. ``"auto"``:
        ``min(100, max(10, n_items // 50))``, i.e. LightFM's 10 up to 549 items, then one
        draw per 50 items, at most 100: a scan of ``S`` draws keeps finding the violations
        of a positive until about ``n_items / S`` items outrank it, so with more items more
        draws keep pushing positives towards the top, where precision at 10 is decided.
        The constant was chosen on the one large catalogue of the quality suite
        (movielens_implicit, 6,170 items, so 100 draws; one draw per 100 items, 61, left
        one seed of four at 0.889 of implicit's ALS): there, at seeds 0-3 and 25 epochs,
        precision@10 goes from 0.851-0.889 of implicit's ALS (10 draws, 20 epochs) to
        0.908-0.952, for about 2.6 times the fit time. Catalogues under 550 items draw 10,
        as before.

    Attributes
    ----------
    user_table_ : ndarray ``(n_user_features_, n_components + 1 if user biases else n_components)``
    item_table_ : ndarray ``(n_item_features_, n_components + 1 if item biases else n_components)``
        The trained tables: one row per user or item (per feature with side features),
        factors then bias, so one optimizer row update covers both.
    n_user_features_, n_item_features_ : int
        The tables' rows: the features' columns, or ``n_users_`` / ``n_items_`` without
        features.
    user_factors_ : ndarray (n_users, n_components)
    item_factors_ : ndarray (n_items, n_components)
    user_bias_ : ndarray (n_users,)
    item_bias_ : ndarray (n_items,)
        The users' and items' representations. Without features, views into the tables
        (writing into them edits the model); with features, computed copies. Without
        biases, ``user_bias_`` / ``item_bias_`` are read-only zeros.
    global_mean_ : float
    optimizer_ : the sparseopt optimizer (its ``state_dict()`` resumes training)
    n_users_, n_items_, n_components_ : int
    history_ : list of dict
        Per epoch: ``loss``, ``train_rmse`` (squared), ``violations`` (WARP: the share of
        positives whose draws found a violation, i.e. that were updated), ``eval`` (metric
        or None), ``seconds`` (training time, evaluation excluded) and ``rows_per_s``; with
        ``early_stopping``, ``validation`` (the metric it watches).
    best_epoch_ : int
        With ``early_stopping``: the epoch whose tables ``fit`` kept (the validation
        metric's best; the latest of equal ones).
    rating_range_ : (float, float)
        ``loss="squared"``: the lowest and highest training rating (every ``fit`` /
        ``partial_fit`` input), the range of ``clip_predictions``.
    user_ids_, item_ids_ : ndarray
        Only for a model fitted on columns of raw ids (a DataFrame or a tuple): the
        distinct ids, sorted (int64, uint64 or str); table row ``r`` is the user
        ``user_ids_[r]``. Such a model takes and returns raw ids in every call.
    n_features_in_ : int
        Only for a model fitted on a matrix: ``n_items_`` (scikit-learn's record of the
        columns of ``X``).

    Notes
    -----
    The tables may be edited in place (``mf.item_table_[i] = ...``). Replacing one, or
    changing ``n_components_``, ``n_users_`` or ``n_items_``, is checked before any kernel
    reads them: another shape or dtype, or a non-contiguous array, raises ``ValueError``
    naming the attribute; a replaced table of the right layout is used by ``predict`` and
    ``recommend`` but refused by ``partial_fit`` (the optimizer trains the original).

    ``fit`` and ``partial_fit`` run one at a time per model (a second thread waits), and a
    call that raises on bad input leaves the model's attributes, tables and optimizer state
    as they were.

    ``X`` may be in any SciPy format; its structure is checked before use. With
    ``loss="squared"`` a (user, item) pair stored more than once is refused, because SciPy
    would add the two ratings (4 and 5 would train as 9). Aggregate such duplicates first,
    e.g. to their mean::

        S = X.tocsr(copy=True); S.sum_duplicates()   # sums, indices sorted
        C = X.copy(); C.data[:] = 1                    # one per stored entry
        C = C.tocsr(); C.sum_duplicates()              # counts: S's pattern
        S.data /= C.data                               # means

    With ``loss="bpr"`` or ``"warp"`` a pair stored more than once is one positive (its
    values summed, which only ``confidence_alpha`` reads).

    :meth:`score` returns minus the RMSE (squared) or the precision at 10 (BPR, WARP), the
    metric ``eval_set`` records in ``history_``: higher is better, as scikit-learn expects.
    The parameters follow scikit-learn's conventions (``get_params``, ``set_params``,
    ``sklearn.base.clone``), and a fitted model pickles.

    Examples
    --------
    >>> from sparseopt.datasets import make_ratings
    >>> from sparseopt.recommend import MatrixFactorization
    >>> X = make_ratings(300, 200, 6000, random_state=0)
    >>> mf = MatrixFactorization(n_components=8, n_epochs=5, random_state=0).fit(X)
    >>> mf.predict([0, 1], [5, 7]).shape
    (2,)
    >>> items, scores = mf.recommend([0, 1], n=3)
    >>> items.shape
    (2, 3)
    >>> mf.score(X) < 0   # minus the RMSE on these ratings
    True

    Raw ids from a DataFrame (columns ``user``, ``item``, ``rating``) are kept as they are:

    >>> import pandas as pd
    >>> df = pd.DataFrame({"user": ["ann", "bob", "ann", "cy"], "item": [10, 20, 30, 10],
    ...                    "rating": [5.0, 3.0, 4.0, 1.0]})
    >>> mf = MatrixFactorization(n_components=2, random_state=0).fit(df)
    >>> mf.user_ids_.tolist(), mf.item_ids_.tolist(), mf.rating_range_
    (['ann', 'bob', 'cy'], [10, 20, 30], (1.0, 5.0))
    >>> sorted(mf.recommend("bob", n=2)[0].tolist())   # bob's unseen items, by raw id
    [10, 30]

    Implicit feedback, with counts as confidence:

    >>> import numpy as np
    >>> from sparseopt.datasets import make_interactions
    >>> C = make_interactions(300, 200, 6000, random_state=0)
    >>> C.data[:] = 1 + np.arange(C.nnz) % 3              # say, 1-3 purchases per pair
    >>> warp = MatrixFactorization(loss="warp", n_components=8, confidence_alpha=0.5,
    ...                            random_state=0).fit(C)
    >>> items, scores = warp.recommend([0, 1], n=5)       # seen items left out
    >>> items.shape
    (2, 5)

    Side features and cold start: items described by two genre columns, a new item
    recommended from its features, a new user folded in from two ratings.

    >>> import scipy.sparse as sp
    >>> genres = sp.csr_matrix(np.eye(2)[np.arange(200) % 2])
    >>> mf = MatrixFactorization(n_components=4, n_epochs=2, random_state=0)
    >>> mf = mf.fit(X, item_features=genres)
    >>> mf.item_table_.shape
    (2, 5)
    >>> new_items = sp.csr_matrix(np.array([[1.0, 0.0], [0.5, 0.5]]))
    >>> mf.recommend([0], n=2, item_features=new_items)[0].shape
    (1, 2)
    >>> ratings = sp.csr_matrix((np.array([5.0, 1.0]), ([0, 0], [3, 4])), shape=(1, 200))
    >>> mf.predict([0], [3], user_interactions=ratings).shape
    (1,)
    """

    def __init__(self, n_components: int = 32, loss: str = "squared",
                 optimizer: Optional[str] = None, learning_rate: Optional[float] = None,
                 alpha: Optional[float] = None, n_epochs: Optional[int] = None,
                 batch_size: Optional[int] = None, use_biases: bool = True,
                 init_std: Optional[float] = None,
                 optimizer_params: Optional[Dict[str, Any]] = None, dtype: Any = np.float32,
                 random_state: Any = None, n_threads: Optional[int] = None,
                 verbose: bool = False, early_stopping: bool = False,
                 validation_fraction: float = 0.1, n_iter_no_change: int = 5,
                 clip_predictions: bool = True,
                 confidence_alpha: float = 0.0, max_sampled: Union[int, str] = "auto") -> None:
        self.n_components = n_components
        self.loss = loss
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.use_biases = use_biases
        self.init_std = init_std
        self.optimizer_params = optimizer_params
        self.dtype = dtype
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.clip_predictions = clip_predictions
        self.confidence_alpha = confidence_alpha
        self.max_sampled = max_sampled

    # -- fitted attributes ---------------------------------------------------------------------

    def _fitted(self, training: bool = False, represent_rows: bool = True) -> _Fitted:
        """The checked tables and scalars the kernels read (see the class docstring).

        Training (or ``represent_rows=False``) gets the trained tables and the side
        features; serving gets the users' and items' representations in their place (the
        tables themselves without features), so that every serving kernel reads one row
        per user and per item whatever the features."""
        self._check_fitted()
        n_users, n_items, k, ub, ib, dtype = self._layout
        Fu, Fi = getattr(self, "_features", (None, None))
        n_uf = n_users if Fu is None else Fu.shape[1]
        n_if = n_items if Fi is None else Fi.shape[1]
        check_recorded("n_users_", getattr(self, "n_users_", None), n_users)
        check_recorded("n_items_", getattr(self, "n_items_", None), n_items)
        check_recorded("n_components_", getattr(self, "n_components_", None), k)
        check_recorded("n_user_features_", getattr(self, "n_user_features_", n_uf), n_uf)
        check_recorded("n_item_features_", getattr(self, "n_item_features_", n_if), n_if)
        U = check_table("user_table_", self.user_table_, (n_uf, k + ub), dtype, training)
        Q = check_table("item_table_", getattr(self, "item_table_", None), (n_if, k + ib),
                        dtype, training)
        mu = V.check_real("global_mean_", getattr(self, "global_mean_", None),
                          low=-math.inf)
        if training:
            check_trains(getattr(self, "optimizer_", None),
                         [("user_table_", U), ("item_table_", Q)])
        st = _Fitted(U, Q, k, ub, ib, mu, n_users, n_items, Fu, Fi)
        if training or not represent_rows or (Fu is None and Fi is None):
            return st
        return st._replace(U=represent(Fu, U), Q=represent(Fi, Q), Fu=None, Fi=None)

    @staticmethod
    def _zeros(n: int, dtype: np.dtype) -> np.ndarray:
        z = np.zeros(n, dtype=dtype)
        z.flags.writeable = False  # no bias is learnt: writing into it would change nothing
        return z

    @property
    def user_factors_(self) -> np.ndarray:
        st = self._fitted()
        return st.U[:, : st.k]

    @property
    def item_factors_(self) -> np.ndarray:
        st = self._fitted()
        return st.Q[:, : st.k]

    @property
    def user_bias_(self) -> np.ndarray:
        st = self._fitted()
        return st.U[:, st.k] if st.user_bias else self._zeros(st.n_users, st.U.dtype)

    @property
    def item_bias_(self) -> np.ndarray:
        st = self._fitted()
        return st.Q[:, st.k] if st.item_bias else self._zeros(st.n_items, st.Q.dtype)

    # -- hooks of BaseRecommender: parameters and initialisation -------------------------------

    def _check_params(self) -> Dict[str, Any]:
        loss = V.check_choice("loss", self.loss, ("squared",) + _IMPLICIT_LOSSES)
        # a parameter left at None takes its loss's default (_LOSS_DEFAULTS)
        given = {name: getattr(self, name) for name in _LOSS_DEFAULTS[loss]}
        resolved = {name: _LOSS_DEFAULTS[loss][name] if value is None else value
                    for name, value in given.items()}
        p = check_training_params(_Resolved(self, resolved))
        p["loss"] = loss
        p["use_biases"] = check_flag("use_biases", self.use_biases)
        p["dtype"] = V.check_float_dtype("dtype", self.dtype)
        p["early_stopping"] = check_flag("early_stopping", self.early_stopping)
        p["validation_fraction"] = V.check_real("validation_fraction", self.validation_fraction,
                                                low=0.0, high=1.0, low_open=True,
                                                high_open=True)
        p["n_iter_no_change"] = V.check_positive_int("n_iter_no_change", self.n_iter_no_change)
        p["clip_predictions"] = check_flag("clip_predictions", self.clip_predictions)
        p["confidence_alpha"] = V.check_real("confidence_alpha", self.confidence_alpha)
        if loss == "squared" and p["confidence_alpha"] != 0.0:
            raise ValueError("confidence_alpha weights implicit positives (loss='bpr' or "
                             "'warp'); with loss='squared' it must be 0")
        p["max_sampled"] = V.check_max_sampled(self.max_sampled)
        return p

    def _implicit_feedback(self, p: Dict[str, Any]) -> bool:
        return p["loss"] in _IMPLICIT_LOSSES

    def _check_call(self, X: Any, y: Any, eval_set: Any, fitted: bool = False,
                    user_features: Any = None, item_features: Any = None
                    ) -> Tuple[Dict[str, Any], sp.csr_matrix, Optional[sp.csr_matrix],
                               Optional[Tuple[Any, Any]]]:
        p, X, E, encoders = super()._check_call(X, y, eval_set, fitted, user_features,
                                                item_features)
        if p["loss"] in _IMPLICIT_LOSSES:  # refused values fail here, before any change
            V.confidence_weights("X", X.data, p["confidence_alpha"])
        return p, X, E, encoders

    def _init_tables(self, X: sp.csr_matrix, p: Dict[str, Any]) -> None:
        k, dt = p["k"], p["dtype"]
        self.n_components_ = k
        self._loss = p["loss"]
        self._alpha = p["alpha"]  # the L2 of the fold-in of new users (recommend)
        Fu, Fi = p["user_features"], p["item_features"]
        self._features = (Fu, Fi)
        # one table row per feature; without features, per user (item): identity features
        self.n_user_features_ = self.n_users_ if Fu is None else Fu.shape[1]
        self.n_item_features_ = self.n_items_ if Fi is None else Fi.shape[1]
        # BPR compares two items of one user: a user bias would cancel, so it has none
        self._user_bias = p["use_biases"] and p["loss"] == "squared"
        self._item_bias = p["use_biases"]
        # the layout every later call checks the public attributes against
        self._layout = (self.n_users_, self.n_items_, k, self._user_bias, self._item_bias, dt)
        U = self._rng.normal(0.0, p["init_std"],
                             size=(self.n_user_features_, k + self._user_bias))
        Q = self._rng.normal(0.0, p["init_std"],
                             size=(self.n_item_features_, k + self._item_bias))
        if self._user_bias:
            U[:, k] = 0.0
        if self._item_bias:
            Q[:, k] = 0.0
        self.user_table_ = np.ascontiguousarray(U, dtype=dt)
        self.item_table_ = np.ascontiguousarray(Q, dtype=dt)
        if p["loss"] == "squared":
            self.global_mean_ = float(X.data.mean()) if X.nnz else 0.0
        else:
            self.global_mean_ = 0.0
        self.optimizer_ = make_optimizer(p["optimizer"], [self.user_table_, self.item_table_],
                                         p["lr"], p["n_threads"], self._optimizer_kwargs(p))

    def _optimizer_kwargs(self, p: Dict[str, Any]) -> Any:
        kw = self.optimizer_params
        if p["optimizer"] == "adam" and (kw is None or isinstance(kw, dict)) and \
                "preset" not in (kw or {}):
            kw = dict(kw or {})
            kw.setdefault("bias_correction", "global")
        if isinstance(kw, dict) and kw.get("rowwise") and "rowwise_tail" not in kw and \
                (self._user_bias or self._item_bias):
            # each table's bias is its last column: its own row-wise scalar, apart from the
            # factors (the bias gradient, the residual itself, would set their step size)
            kw = dict(kw, rowwise_tail=[int(self._user_bias), int(self._item_bias)])
        return kw  # anything but a dict or None is refused by make_optimizer

    def _check_continue(self, p: Dict[str, Any], st: _Fitted) -> None:
        if p["loss"] != self._loss or p["k"] != st.k:
            raise ValueError("loss and n_components cannot change between partial_fit "
                             "calls; call fit to start over")
        features = list(self._features)
        for side, (name, given) in enumerate((("user_features", p["user_features"]),
                                              ("item_features", p["item_features"]))):
            if given is None:
                continue  # the features of the earlier calls stay
            fitted = features[side]
            if fitted is None:
                raise ValueError(f"{name} given to partial_fit, but the model was fitted "
                                 f"without them; call fit to start over")
            if given.shape != fitted.shape:
                raise ValueError(f"{name} has shape {given.shape}, the model was fitted "
                                 f"with {fitted.shape}; the number of features cannot "
                                 f"change (call fit to start over)")
            features[side] = given  # new values (e.g. updated metadata) of the same features
        self._features = tuple(features)
        self._alpha = p["alpha"]

    def _check_features(self, X: sp.csr_matrix, p: Dict[str, Any], user_features: Any,
                        item_features: Any) -> Tuple[Any, Any]:
        if p["loss"] == "warp" and (user_features is not None or item_features is not None):
            # WARP's kernel checks each drawn candidate against the user's stored items by
            # the users' and items' own ids, which the feature path remaps per batch
            raise ValueError("side features are supported with loss='squared' and "
                             "loss='bpr', not yet with loss='warp'")
        Fu = None if user_features is None else V.check_features(
            "user_features", user_features, X.shape[0], None, p["dtype"], "users")
        Fi = None if item_features is None else V.check_features(
            "item_features", item_features, X.shape[1], None, p["dtype"], "items")
        return Fu, Fi

    # -- hooks of BaseRecommender: training ----------------------------------------------------

    def _training_data(self, X: sp.csr_matrix, p: Dict[str, Any]) -> Any:
        users, items = user_item_ids(X)
        if self._loss == "squared":
            return pack_ratings(users, items, X.data)
        # stored values are summed duplicates (check_interactions), aligned with the ids
        return users, items, V.confidence_weights("X", X.data, p["confidence_alpha"])

    def _epoch(self, data: Any, p: Dict[str, Any], st: _Fitted) -> Dict[str, Any]:
        if st.Fu is not None or st.Fi is not None:
            return self._epoch_features(data, p, st)
        if self._loss == "squared":
            return self._epoch_squared(data, p, st)
        if self._loss == "warp":
            return self._epoch_warp(*data, p, st)
        return self._epoch_bpr(*data, p, st)

    def _epoch_squared(self, records: np.ndarray, p: Dict[str, Any],
                       st: _Fitted) -> Dict[str, Any]:
        n = records.shape[0]
        B = max(1, min(p["batch_size"], n))
        k, U, Q = st.k, st.U, st.Q
        perm = self._rng.permutation(n)
        gu, gi, urows, irows, uslot, islot = _scratch(st, B, 1)
        err = np.empty(B, dtype=np.float64)
        mu, alpha, ub, ib = st.mu, p["alpha"], st.user_bias, st.item_bias
        sq = 0.0
        for s in range(0, n, B):
            e = min(s + B, n)
            b = e - s
            nu, ni = _mf_kernel.mf_squared_batch(U, Q, perm[s:e], records, k, ub, ib, mu,
                                                 1.0 / b, alpha, uslot, islot, urows, irows, gu,
                                                 gi, err)
            self._step([RowGrad(urows[:nu], gu[:nu]), RowGrad(irows[:ni], gi[:ni])], True)
            sq += float(np.dot(err[:b], err[:b]))
        mse = sq / n if n else float("nan")
        return dict(loss=0.5 * mse, train_rmse=mse ** 0.5)

    def _epoch_features(self, data: Any, p: Dict[str, Any], st: _Fitted) -> Dict[str, Any]:
        """One pass of a model with side features: the passes below, sample for sample and
        draw for draw (same permutation, same negatives), with each batch's kernel run on
        the representations of its users and items (``features_step``)."""
        k, alpha, ub, ib = st.k, p["alpha"], st.user_bias, st.item_bias
        if self._loss == "squared":
            records = data
            n = records.shape[0]
            keys = records[:, 0]
            users_all, items_all = keys >> 32, keys & ((1 << 32) - 1)
        else:
            users_all, items_all, weights = data
            n = users_all.shape[0]
        B = max(1, min(p["batch_size"], n))
        perm = self._rng.permutation(n)
        scratch = FeatureScratch(st)
        total = 0.0
        for s in range(0, n, B):
            e = min(s + B, n)
            b = e - s
            idx = perm[s:e]
            u = users_all[idx].astype(np.int64)
            if self._loss == "squared":
                out = np.empty(b, dtype=np.float64)
                sub = records[idx]

                def kernel(Ru, Ri, ul, il, uslot, islot, urows, irows, gu, gi):
                    local = pack_ratings(ul, il[0], sub[:, 1].view(np.float64))
                    return _mf_kernel.mf_squared_batch(
                        Ru, Ri, np.arange(b, dtype=np.int64), local, k, ub, ib, st.mu,
                        1.0 / b, alpha, uslot, islot, urows, irows, gu, gi, out)

                grads = features_step(st, u, (items_all[idx].astype(np.int64),), kernel,
                                      scratch)
                self._step(list(grads), True)
                total += float(np.dot(out, out))
            else:
                neg = self._sample_negatives(u, b)
                out = np.empty(b, dtype=np.float64)
                w = _NO_WEIGHTS if weights is None else weights[idx]

                def kernel(Ru, Ri, ul, il, uslot, islot, urows, irows, gu, gi):
                    return _mf_kernel.mf_bpr_batch(
                        Ru, Ri, ul, il[0], il[1], w, k, ib, 1.0 / b, alpha, uslot, islot,
                        urows, irows, gu, gi, out)

                grads = features_step(st, u, (items_all[idx].astype(np.int64), neg),
                                      kernel, scratch)
                self._step(list(grads), True)
                total += float(out.sum())
        if self._loss == "squared":
            mse = total / n if n else float("nan")
            return dict(loss=0.5 * mse, train_rmse=mse ** 0.5)
        return dict(loss=total / n if n else float("nan"))

    def _sample_negatives(self, u: np.ndarray, size: int) -> np.ndarray:
        """BPR negatives for the users ``u`` from the model's generator (``_sampling``)."""
        return sample_negatives(self._rng, self._seen, self._layout[1], u, size)

    def _epoch_bpr(self, users: np.ndarray, items: np.ndarray, weights: Optional[np.ndarray],
                   p: Dict[str, Any], st: _Fitted) -> Dict[str, Any]:
        n = users.shape[0]
        B = max(1, min(p["batch_size"], n))
        k, U, Q = st.k, st.U, st.Q
        perm = self._rng.permutation(n)
        gu, gi, urows, irows, uslot, islot = _scratch(st, B, 2)  # a positive and a negative
        loss = np.empty(B, dtype=np.float64)
        total = 0.0
        for s in range(0, n, B):
            e = min(s + B, n)
            b = e - s
            u = users[perm[s:e]].astype(np.int64)
            neg = self._sample_negatives(u, b)
            w = _NO_WEIGHTS if weights is None else weights[perm[s:e]]
            nu, ni = _mf_kernel.mf_bpr_batch(U, Q, u, items[perm[s:e]].astype(np.int64), neg,
                                             w, k, st.item_bias, 1.0 / b, p["alpha"], uslot,
                                             islot, urows, irows, gu, gi, loss[:b])
            self._step([RowGrad(urows[:nu], gu[:nu]), RowGrad(irows[:ni], gi[:ni])], True)
            total += float(loss[:b].sum())
        return dict(loss=total / n if n else float("nan"))

    def _epoch_warp(self, users: np.ndarray, items: np.ndarray, weights: Optional[np.ndarray],
                    p: Dict[str, Any], st: _Fitted) -> Dict[str, Any]:
        n = users.shape[0]
        B = max(1, min(p["batch_size"], n))
        k, U, Q, S = st.k, st.U, st.Q, _max_sampled(p["max_sampled"], st.n_items)
        seen = self._seen  # the kernel looks users' rows up in it: it must cover them
        if seen.shape != (st.n_users, st.n_items):
            raise ValueError(f"the model's seen items have shape {seen.shape}, the tables "
                             f"({st.n_users}, {st.n_items}); call fit to start over")
        perm = self._rng.permutation(n)
        gu, gi, urows, irows, uslot, islot = _scratch(st, B, 2)  # a positive and a negative
        loss = np.empty(B, dtype=np.float64)
        drawn = np.empty(B, dtype=np.int64)
        total, updates = 0.0, 0
        for s in range(0, n, B):
            e = min(s + B, n)
            b = e - s
            u = users[perm[s:e]].astype(np.int64)
            # the kernel draws the candidates it scans from one seed per batch
            # (``warp_candidates`` lists them): no (b, S) array is drawn and mostly unread
            seed = int(self._rng.integers(0, 2 ** 64, dtype=np.uint64))
            w = _NO_WEIGHTS if weights is None else weights[perm[s:e]]
            nu, ni = _mf_kernel.mf_warp_batch(U, Q, u, items[perm[s:e]].astype(np.int64),
                                              _NO_CANDIDATES, seen.indptr64, seen.indices64,
                                              w, k, st.item_bias, 1.0 / b, p["alpha"],
                                              float(st.n_items), uslot, islot, urows, irows,
                                              gu, gi, loss[:b], drawn[:b], seed, S)
            self._step([RowGrad(urows[:nu], gu[:nu]), RowGrad(irows[:ni], gi[:ni])], True)
            total += float(loss[:b].sum())
            updates += int(np.count_nonzero(drawn[:b]))
        return dict(loss=total / n if n else float("nan"),
                    violations=updates / n if n else float("nan"))

    # -- hooks of BaseRecommender: cold start --------------------------------------------------

    def _serving_state(self, user_features: Any, item_features: Any,
                       user_interactions: Any) -> Tuple[_Fitted, Optional[SeenItems]]:
        if user_features is None and item_features is None and user_interactions is None:
            return self._fitted(), self._seen
        raw = self._fitted(represent_rows=False)
        if user_features is not None and user_interactions is not None:
            raise ValueError("give user_features or user_interactions, not both: a new user "
                             "is represented by its features or folded in from its "
                             "interactions")
        dt = raw.dtype
        Fu = None if user_features is None else V.check_features(
            "user_features", user_features, None, raw.U.shape[0], dt, "users")
        Fi = None if item_features is None else V.check_features(
            "item_features", item_features, None, raw.Q.shape[0], dt, "items")
        R = None if user_interactions is None else V.check_interactions(
            "user_interactions", user_interactions, self._implicit)
        if R is not None and R.shape[1] != raw.n_items:
            raise ValueError(f"user_interactions has {R.shape[1]} columns, the model was "
                             f"fitted on {raw.n_items} items")
        Q_fitted = represent(raw.Fi, raw.Q)
        if Fu is not None:
            U = represent(Fu, raw.U)
        elif R is not None:
            U = self._fold_in(raw, Q_fitted, R)
        else:
            U = represent(raw.Fu, raw.U)
        Q = Q_fitted if Fi is None else represent(Fi, raw.Q)
        st = raw._replace(U=U, Q=Q, n_users=U.shape[0], n_items=Q.shape[0], Fu=None, Fi=None)
        if R is not None and Fi is None:
            return st, SeenItems(R)  # the folded-in users' own items
        return st, None

    def _fold_in(self, st: _Fitted, Q: np.ndarray, R: sp.csr_matrix) -> np.ndarray:
        """The representation rows of new users from their interactions ``R`` (checked,
        over the fitted items), the item representations ``Q`` held fixed: each row
        minimises that user's terms of the training objective (see the class docstring)."""
        k, ub, ib = st.k, st.user_bias, st.item_bias
        alpha = float(self._alpha)
        Qf = Q[:, :k].astype(np.float64)
        c = Q[:, k].astype(np.float64) if ib else np.zeros(Q.shape[0])
        out = np.zeros((R.shape[0], k + ub), dtype=np.float64)
        for r in range(R.shape[0]):
            lo, hi = R.indptr[r], R.indptr[r + 1]
            items = R.indices[lo:hi]
            if items.shape[0] == 0:
                continue  # no interaction: the zero vector (the prior's mean)
            if self._loss == "squared":
                out[r] = _ridge_fold_in(Qf[items], c[items], R.data[lo:hi], st.mu, alpha, ub)
            else:
                out[r, :k] = _bpr_fold_in(Qf, c, items, alpha)
        return np.ascontiguousarray(out, dtype=st.dtype)

    # -- hooks of BaseRecommender: scores ------------------------------------------------------

    def _predict_pairs(self, st: _Fitted, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = np.empty(users.shape[0], dtype=st.U.dtype)
        _mf_kernel.mf_predict(st.U, st.Q, users, items, st.k, st.user_bias, st.item_bias,
                              st.mu, out, self._threads(users.shape[0] * st.k))
        return out

    def _scorer(self, st: _Fitted) -> Callable[[np.ndarray], np.ndarray]:
        k = st.k
        P = st.U[:, :k]
        QT = np.ascontiguousarray(st.Q[:, :k].T)  # once per call: every block reads it
        ib = st.Q[:, k] if st.item_bias else None
        squared = self._loss == "squared"

        def scores(users: np.ndarray) -> np.ndarray:
            S = P[users] @ QT
            if ib is not None:
                S += ib
            if squared:  # BPR / WARP scores rank items: the user's constant terms are left out
                ub = st.U[users, k] if st.user_bias else np.zeros(users.shape[0], st.U.dtype)
                S += (st.mu + ub).astype(S.dtype)[:, None]
            return np.ascontiguousarray(S)

        return scores

    def _item_vectors(self, st: _Fitted) -> np.ndarray:
        return st.Q[:, :st.k]

    def _user_vectors(self, st: _Fitted) -> np.ndarray:
        return st.U[:, :st.k]
