"""Matrix factorisation trained by lazy row updates (explicit ratings or implicit BPR)."""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import scipy.sparse as sp

from .. import _utils
from .. import _validation as V
from .._kernels import _mf as _mf_kernel, _topk
from .._sklearn import fit_guard, serialised
from .._utils import check_random_state, threads_for
from ..optim import OPTIMIZERS, RowGrad, make_optimizer
from . import metrics as _metrics
from .._validation import check_flag, check_ids, check_positive_int, check_verbose
from ._common import check_recorded, check_table, check_trains

__all__ = ["MatrixFactorization"]

# Users whose held-out items score the BPR eval_set metric each epoch (a fixed sample).
_EVAL_USERS = 2000
_EVAL_K = 10
# Scores computed at once by recommend / similar_items (entries of the dense block).
_BLOCK_ENTRIES = 1 << 22
# Rounds of re-drawing a BPR negative that turned out to be a positive of its user.
_NEG_ROUNDS = 10
# Users and items are packed into 32-bit halves of one int64 per rating (pack_ratings).
_MAX_IDS = 2**31 - 1


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


def _check_interactions(name: str, X: Any, loss: str) -> sp.csr_matrix:
    """``X`` or ``eval_set`` as a checked CSR matrix (see ``fit`` for the rules)."""
    if not sp.issparse(X):
        raise TypeError(f"{name} must be a scipy.sparse users x items matrix, got "
                        f"{type(X).__name__}")
    V.check_sparse_structure(name, X)  # before X.shape is trusted and before any conversion
    if max(X.shape) > _MAX_IDS:
        raise ValueError(f"{name} has shape {X.shape}: at most 2**31 - 1 users and items")
    if loss == "bpr":
        # implicit data: an interaction stored twice is one interaction (summed, then a stored
        # 0 is no interaction)
        X = V.check_sparse_matrix(name, X, dtype=np.float64)
        if X.nnz and not X.data.all():
            X = X.copy()  # X may share the caller's index arrays
            X.eliminate_zeros()
    else:
        if X.format == "coo":  # SciPy's COO -> CSR conversion would sum the duplicates
            coords = X.coords if hasattr(X, "coords") else (X.row, X.col)
            _refuse_duplicates(name, coords[0], coords[1], X.shape[1])
        X = V.check_sparse_matrix(name, X, sum_duplicates=False)
        rows = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))
        _refuse_duplicates(name, rows, X.indices, X.shape[1])
    if X.nnz and not np.all(np.isfinite(X.data)):
        raise ValueError(f"{name} holds NaN or infinite values")
    return X


def _refuse_duplicates(name: str, rows: np.ndarray, cols: np.ndarray, n_cols: int) -> None:
    """A rating stored twice is ambiguous (SciPy would add the two: 4 and 5 would train as
    9), so it is refused; the message says how to aggregate."""
    keys = np.sort(rows.astype(np.int64) * n_cols + cols, kind="stable")  # CSR: sorted runs
    dup = np.flatnonzero(keys[1:] == keys[:-1])
    if dup.shape[0]:
        u, i = divmod(int(keys[dup[0]]), n_cols)
        raise ValueError(
            f"{name} stores {dup.shape[0]} duplicate (user, item) entr"
            f"{'y' if dup.shape[0] == 1 else 'ies'} (the first: user {u}, item {i}); each "
            "rating must be stored once. Aggregate them first: X.sum_duplicates() adds them "
            "up; the MatrixFactorization docstring shows how to average them")


class MatrixFactorization:
    """Biased matrix factorisation, fitted by mini-batch gradients and lazy row updates.

    Each mini-batch is one pass of a fused Cython kernel (``sparseopt._kernels._recommend``)
    that gathers the shuffled samples, computes the predictions, the loss derivatives and the
    gradient of every user and item row the batch touches, duplicates summed in sample order;
    the unique rows go to a sparseopt optimizer as ``RowGrad``, which updates only them. There
    is no Python loop per sample or per row.

    Models
    ------
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

    L2 (``alpha``) is attached to every *occurrence* of a row, as in Funk-SVD, Koren et al.
    (2009) and libFM: a user with 300 ratings is penalised 300 times. Because the penalty on a
    row lives only in the terms of the samples that touch it, the kernel adds ``alpha * row``
    to each sample's gradient row, and that is the **exact** gradient of the mini-batch
    objective; rows outside the batch have zero gradient and correctly stay unchanged, so no
    catch-up is owed to them. (A global ``alpha/2 ||W||^2`` would pull every row at every
    step; a lazy optimizer could only approximate it, or apply it as the optimizer's
    decoupled ``weight_decay``, which is a different, non-L2, rule. To use that instead, pass
    ``optimizer_params={"weight_decay": ...}`` with ``alpha=0``.)

    Parameters
    ----------
    n_components : int, default 32
        Factors per user and item.
    loss : {"squared", "bpr"}, default "squared"
    optimizer : {"adam", "adagrad", "rmsprop", "sgd"}, default "adam"
        ``sparseopt.Adam`` / ``Adagrad`` / ``RMSprop`` (lazy, see their docs) or plain SGD.
        For ``"adam"`` this estimator defaults to ``bias_correction="global"`` (the rule of
        PyTorch's SparseAdam and TF's LazyAdam; override it in ``optimizer_params``): with
        frozen lazy updates it gives rarely seen users and items larger steps, and on Zipfian
        data (``benchmarks/bench_mf.py``: 1M ratings, lr 0.01, 10 epochs) it reached a test
        RMSE of 0.586 against 0.630 for the library's default per-row correction (0.605 at
        that rule's best learning rate).
    learning_rate : float, default 0.01
        The optimizer's ``lr``. The gradient is that of the batch *mean*, as
        ``loss.mean()`` in PyTorch, so Adam learning rates carry over from torch code; plain
        SGD needs a larger one (of the order of ``batch_size`` times a per-sample rate).
    alpha : float, default 0.02
        Per-occurrence L2 weight, see above.
    n_epochs : int, default 10
        Passes over the data made by ``fit`` (``partial_fit`` makes one).
    batch_size : int, default 4096
    use_biases : bool, default True
        Learn user and item biases (item biases only for BPR). The global mean stays.
    init_std : float, default 0.1
        Factors start as ``N(0, init_std**2)``; biases start at 0.
    optimizer_params : dict, optional
        Extra keyword arguments of the optimizer (e.g. ``{"lazy": "decay"}``,
        ``{"betas": (0.9, 0.99)}``).
    dtype : float32 or float64, default float32
    random_state : None, int or numpy.random.Generator
        Seeds the initialisation, the shuffling and the BPR negatives.
    n_threads : int, optional
        Threads of the optimizer's row updates, ``predict`` and the top-n selection of
        ``recommend``; ``None`` follows OpenMP's default. The training kernel itself is serial
        (its duplicate merge is a scatter-add in sample order), and the score blocks of
        ``recommend`` are BLAS products, threaded as BLAS is configured (threadpoolctl).
        Results do not depend on the thread count.
    verbose : bool, default False
        Print, per epoch, the training loss, the ``eval_set`` metric (RMSE, or precision@10
        for BPR) and the training rows (ratings) per second.

    Attributes
    ----------
    user_table_ : ndarray (n_users, n_components + 1 if user biases else n_components)
    item_table_ : ndarray (n_items, n_components + 1 if item biases else n_components)
        The trained tables: one row per user or item, factors then bias, so one optimizer
        row update covers both.
    user_factors_ : ndarray (n_users, n_components)
    item_factors_ : ndarray (n_items, n_components)
    user_bias_ : ndarray (n_users,)
    item_bias_ : ndarray (n_items,)
        Views into the tables (writing into them edits the model). Without biases,
        ``user_bias_`` / ``item_bias_`` are read-only zeros.
    global_mean_ : float
    optimizer_ : the sparseopt optimizer (its ``state_dict()`` resumes training)
    n_users_, n_items_, n_components_ : int
    history_ : list of dict
        Per epoch: ``loss``, ``train_rmse`` (squared), ``eval`` (metric or None),
        ``seconds`` (training time, evaluation excluded) and ``rows_per_s``.

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
    """

    def __init__(self, n_components: int = 32, loss: str = "squared", optimizer: str = "adam",
                 learning_rate: float = 0.01, alpha: float = 0.02, n_epochs: int = 10,
                 batch_size: int = 4096, use_biases: bool = True, init_std: float = 0.1,
                 optimizer_params: Optional[Dict[str, Any]] = None, dtype=np.float32,
                 random_state: Any = None, n_threads: Optional[int] = None,
                 verbose: bool = False) -> None:
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

    # -- scikit-learn style parameters ---------------------------------------------------------

    _PARAMS = ("n_components", "loss", "optimizer", "learning_rate", "alpha", "n_epochs",
               "batch_size", "use_biases", "init_std", "optimizer_params", "dtype",
               "random_state", "n_threads", "verbose")

    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params: Any) -> "MatrixFactorization":
        for k, v in params.items():
            if k not in self._PARAMS:
                raise ValueError(f"invalid parameter {k!r} for MatrixFactorization")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        defaults = MatrixFactorization().get_params()
        changed = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()
                            if v is not defaults[k] and v != defaults[k])
        return f"MatrixFactorization({changed})"

    # -- fitted attributes ---------------------------------------------------------------------

    def _fitted(self, training: bool = False) -> _Fitted:
        """The checked tables and scalars the kernels read (see the class docstring)."""
        if not hasattr(self, "user_table_"):
            raise AttributeError("this MatrixFactorization is not fitted yet; call fit first")
        n_users, n_items, k, ub, ib, dtype = self._layout
        check_recorded("n_users_", getattr(self, "n_users_", None), n_users)
        check_recorded("n_items_", getattr(self, "n_items_", None), n_items)
        check_recorded("n_components_", getattr(self, "n_components_", None), k)
        U = check_table("user_table_", self.user_table_, (n_users, k + ub), dtype, training)
        Q = check_table("item_table_", getattr(self, "item_table_", None), (n_items, k + ib),
                        dtype, training)
        mu = V.check_real("global_mean_", getattr(self, "global_mean_", None),
                          low=-math.inf)
        if training:
            check_trains(getattr(self, "optimizer_", None),
                         [("user_table_", U), ("item_table_", Q)])
        return _Fitted(U, Q, k, ub, ib, mu, n_users, n_items)

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

    # -- checks --------------------------------------------------------------------------------

    def _check_params(self) -> Dict[str, Any]:
        p = dict(
            k=check_positive_int("n_components", self.n_components),
            loss=V.check_choice("loss", self.loss, ("squared", "bpr")),
            optimizer=V.check_choice("optimizer", self.optimizer, OPTIMIZERS),
            lr=V.check_real("learning_rate", self.learning_rate, low_open=True),
            alpha=V.check_real("alpha", self.alpha),
            n_epochs=check_positive_int("n_epochs", self.n_epochs),
            batch_size=check_positive_int("batch_size", self.batch_size),
            init_std=V.check_real("init_std", self.init_std),
            n_threads=V.check_n_threads(self.n_threads),
            use_biases=check_flag("use_biases", self.use_biases),
            verbose=check_verbose(self.verbose),
        )
        try:
            dt = np.dtype(self.dtype)
        except TypeError:
            dt = None
        if dt not in (np.float32, np.float64):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype!r}")
        p["dtype"] = dt
        return p

    # -- fitting -------------------------------------------------------------------------------

    @fit_guard
    def fit(self, X: Any, eval_set: Any = None) -> "MatrixFactorization":
        """Fit from scratch for ``n_epochs`` passes over ``X``.

        Parameters
        ----------
        X : scipy.sparse matrix or array, shape (n_users, n_items)
            Ratings (``loss="squared"``; stored values are the ratings, explicit zeros
            included) or positive interactions (``loss="bpr"``; every stored non-zero is a
            positive, and a pair stored more than once is one positive: its entries are
            summed first). Any SciPy format; its structure is checked before use.
        eval_set : scipy.sparse matrix, optional
            Held-out ratings or interactions of the same shape, scored after every epoch
            (RMSE, or precision@10 with training items excluded) into ``history_``.

        Raises
        ------
        ValueError
            A malformed sparse structure, NaN or infinite values, more than 2**31 - 1 users
            or items, or (``loss="squared"``) a (user, item) pair stored more than once.
            SciPy would add such duplicates (ratings 4 and 5 would train as 9), so they are
            refused: aggregate them first, e.g. to their mean::

                S = X.tocsr(copy=True); S.sum_duplicates()   # sums, indices sorted
                C = X.copy(); C.data[:] = 1                    # one per stored entry
                C = C.tocsr(); C.sum_duplicates()              # counts: S's pattern
                S.data /= C.data                               # means
        """
        p = self._check_params()
        X = _check_interactions("X", X, p["loss"])
        E = self._check_eval_set(eval_set, X, p["loss"])
        rng = check_random_state(self.random_state)
        for attr in ("user_table_", "item_table_"):  # free the old tables before new ones
            self.__dict__.pop(attr, None)
        self._init_model(X, p, rng)
        self._train(X, p, p["n_epochs"], E)
        return self

    @fit_guard
    def partial_fit(self, X: Any, eval_set: Any = None) -> "MatrixFactorization":
        """One pass over ``X``; the first call initialises the model from ``X``'s shape.

        Later calls must pass a matrix of the same shape; their interactions are added to
        those excluded by ``recommend`` and from BPR negatives. The optimizer state, the
        random generator and ``global_mean_`` carry over. ``X`` follows the rules of
        :meth:`fit`.
        """
        p = self._check_params()
        X = _check_interactions("X", X, p["loss"])
        E = self._check_eval_set(eval_set, X, p["loss"])
        if not hasattr(self, "user_table_"):
            self._init_model(X, p, check_random_state(self.random_state))
        else:
            st = self._fitted(training=True)
            if X.shape != (st.n_users, st.n_items):
                raise ValueError(f"X has shape {X.shape}, the model was fitted on "
                                 f"({st.n_users}, {st.n_items})")
            if p["loss"] != self._loss or p["k"] != st.k:
                raise ValueError("loss and n_components cannot change between partial_fit "
                                 "calls; call fit to start over")
            self._add_seen(X)
        self.optimizer_.lr = p["lr"]
        self._train(X, p, 1, E)
        return self

    def _init_model(self, X: sp.csr_matrix, p: Dict[str, Any],
                    rng: np.random.Generator) -> None:
        k, dt = p["k"], p["dtype"]
        self._rng = rng
        self.n_users_, self.n_items_ = X.shape
        self.n_components_ = k
        self._loss = p["loss"]
        self._user_bias = p["use_biases"] and p["loss"] == "squared"
        self._item_bias = p["use_biases"]
        # the layout every later call checks the public attributes against
        self._layout = (self.n_users_, self.n_items_, k, self._user_bias, self._item_bias, dt)
        U = self._rng.normal(0.0, p["init_std"], size=(self.n_users_, k + self._user_bias))
        Q = self._rng.normal(0.0, p["init_std"], size=(self.n_items_, k + self._item_bias))
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
        self._set_seen(self._structure(X))
        self.history_: List[Dict[str, Any]] = []
        self.n_epochs_ = 0

    def _optimizer_kwargs(self, p: Dict[str, Any]) -> Any:
        kw = self.optimizer_params
        if p["optimizer"] == "adam" and (kw is None or isinstance(kw, dict)) and \
                "preset" not in (kw or {}):
            kw = dict(kw or {})
            kw.setdefault("bias_correction", "global")
        return kw  # anything but a dict or None is refused by make_optimizer

    @staticmethod
    def _structure(X: sp.csr_matrix) -> sp.csr_matrix:
        """The pattern of X (values 1, indices sorted), for exclusion and negatives."""
        S = sp.csr_matrix((np.ones(X.nnz, dtype=np.int8), X.indices, X.indptr), shape=X.shape)
        S.sort_indices()
        return S

    def _set_seen(self, S: sp.csr_matrix) -> None:
        self._seen = S
        # int64 copies for the negative-sampling kernel (made once, not per batch)
        self._seen64 = (S.indptr.astype(np.int64), S.indices.astype(np.int64))

    def _add_seen(self, X: sp.csr_matrix) -> None:
        S = self._seen
        if X.nnz == S.nnz and X.has_sorted_indices and np.array_equal(X.indptr, S.indptr) \
                and np.array_equal(X.indices, S.indices):
            return  # the same interactions again (another epoch of the same matrix)
        merged = (self._seen.astype(np.int32) + self._structure(X).astype(np.int32)).tocsr()
        self._set_seen(self._structure(merged))

    def _check_eval_set(self, eval_set: Any, X: sp.csr_matrix, loss: str):
        if eval_set is None:
            return None
        E = _check_interactions("eval_set", eval_set, loss)
        if E.shape != X.shape:
            raise ValueError(f"eval_set has shape {E.shape}, X has shape {X.shape}")
        return E

    def _train(self, X: sp.csr_matrix, p: Dict[str, Any], n_epochs: int,
               E: Optional[sp.csr_matrix]) -> None:
        st = self._fitted(training=True)
        users = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))
        items = np.ascontiguousarray(X.indices, dtype=np.int64)
        if self._loss == "squared":
            # one 16-byte record per rating: a shuffled epoch reads one cache line per sample
            records = np.empty((users.shape[0], 2), dtype=np.int64)
            _mf_kernel.pack_ratings(users, items, np.ascontiguousarray(X.data, np.float64),
                                    records)
        for _ in range(n_epochs):
            t0 = time.perf_counter()
            if self._loss == "squared":
                stats = self._epoch_squared(records, p, st)
            else:
                stats = self._epoch_bpr(users, items, p, st)
            seconds = time.perf_counter() - t0
            self.n_epochs_ += 1
            stats.update(epoch=self.n_epochs_, seconds=seconds,
                         rows_per_s=users.shape[0] / seconds if seconds > 0 else float("inf"),
                         eval=self._evaluate(E) if E is not None else None)
            self.history_.append(stats)
            if p["verbose"]:
                self._print(stats)

    def _step(self, grads: List[RowGrad]) -> None:
        try:
            self.optimizer_.step(grads)
        except FloatingPointError as exc:
            raise FloatingPointError(
                f"MatrixFactorization diverged (non-finite gradient) in epoch "
                f"{self.n_epochs_ + 1}; lower learning_rate (now {self.optimizer_.lr})"
            ) from exc

    def _epoch_squared(self, records, p, st: _Fitted) -> Dict[str, Any]:
        n = records.shape[0]
        B = max(1, min(p["batch_size"], n))
        k, U, Q = st.k, st.U, st.Q
        perm = self._rng.permutation(n)
        gu = np.empty((B, U.shape[1]), dtype=U.dtype)
        gi = np.empty((B, Q.shape[1]), dtype=Q.dtype)
        urows = np.empty(B, dtype=np.int64)
        irows = np.empty(B, dtype=np.int64)
        uslot = np.full(st.n_users, -1, dtype=np.int32)
        islot = np.full(st.n_items, -1, dtype=np.int32)
        err = np.empty(B, dtype=np.float64)
        mu, alpha, ub, ib = st.mu, p["alpha"], st.user_bias, st.item_bias
        sq = 0.0
        for s in range(0, n, B):
            e = min(s + B, n)
            b = e - s
            nu, ni = _mf_kernel.mf_squared_batch(U, Q, perm[s:e], records, k, ub, ib, mu,
                                                 1.0 / b, alpha, uslot, islot, urows, irows, gu,
                                                 gi, err)
            self._step([RowGrad(urows[:nu], gu[:nu]), RowGrad(irows[:ni], gi[:ni])])
            sq += float(np.dot(err[:b], err[:b]))
        mse = sq / n if n else float("nan")
        return dict(loss=0.5 * mse, train_rmse=mse ** 0.5)

    def _sample_negatives(self, u: np.ndarray, size: int) -> np.ndarray:
        """Uniform items that are not positives of their user (a few rejection rounds; a
        user holding nearly every item may keep a positive as its negative)."""
        n_items = self._layout[1]
        neg = self._rng.integers(0, n_items, size=size, dtype=np.int64)
        hit = np.empty(size, dtype=np.uint8)
        indptr, indices = self._seen64
        if _mf_kernel.csr_contains(indptr, indices, u, neg, hit):
            for _ in range(_NEG_ROUNDS):
                redo = np.flatnonzero(hit)
                neg[redo] = self._rng.integers(0, n_items, size=redo.shape[0], dtype=np.int64)
                sub = np.empty(redo.shape[0], dtype=np.uint8)
                if not _mf_kernel.csr_contains(indptr, indices, u[redo], neg[redo], sub):
                    break
                hit[:] = 0
                hit[redo] = sub
        return neg

    def _epoch_bpr(self, users, items, p, st: _Fitted) -> Dict[str, Any]:
        n = users.shape[0]
        B = max(1, min(p["batch_size"], n))
        k, U, Q = st.k, st.U, st.Q
        perm = self._rng.permutation(n)
        gu = np.empty((B, U.shape[1]), dtype=U.dtype)
        gi = np.empty((2 * B, Q.shape[1]), dtype=Q.dtype)
        urows = np.empty(B, dtype=np.int64)
        irows = np.empty(2 * B, dtype=np.int64)
        uslot = np.full(st.n_users, -1, dtype=np.int32)
        islot = np.full(st.n_items, -1, dtype=np.int32)
        loss = np.empty(B, dtype=np.float64)
        total = 0.0
        for s in range(0, n, B):
            e = min(s + B, n)
            b = e - s
            u = users[perm[s:e]].astype(np.int64)
            neg = self._sample_negatives(u, b)
            nu, ni = _mf_kernel.mf_bpr_batch(U, Q, u, items[perm[s:e]].astype(np.int64), neg,
                                             k, st.item_bias, 1.0 / b, p["alpha"], uslot,
                                             islot, urows, irows, gu, gi, loss[:b])
            self._step([RowGrad(urows[:nu], gu[:nu]), RowGrad(irows[:ni], gi[:ni])])
            total += float(loss[:b].sum())
        return dict(loss=total / n if n else float("nan"))

    def _evaluate(self, E: sp.csr_matrix) -> float:
        if self._loss == "squared":
            users = np.repeat(np.arange(E.shape[0], dtype=np.int64), np.diff(E.indptr))
            pred = self.predict(users, E.indices.astype(np.int64))
            return _metrics.rmse(E.data, pred)
        users = np.flatnonzero(np.diff(E.indptr))
        if users.shape[0] > _EVAL_USERS:  # the same sample every epoch (fixed seed)
            users = np.sort(np.random.default_rng(0).choice(users, _EVAL_USERS, replace=False))
        if users.shape[0] == 0:
            return float("nan")
        recs, _ = self.recommend(users, n=_EVAL_K, exclude_seen=True)
        return _metrics.precision_at_k(E[users], recs, k=_EVAL_K)

    def _print(self, st: Dict[str, Any]) -> None:
        parts = [f"epoch {st['epoch']:3d}", f"loss {st['loss']:.5f}"]
        if "train_rmse" in st:
            parts.append(f"train rmse {st['train_rmse']:.4f}")
        if st["eval"] is not None:
            name = "eval rmse" if self._loss == "squared" else f"eval precision@{_EVAL_K}"
            parts.append(f"{name} {st['eval']:.4f}")
        parts.append(f"{st['rows_per_s']:,.0f} rows/s")
        parts.append(f"{st['seconds']:.2f} s")
        print("[MatrixFactorization] " + "  ".join(parts), file=sys.stdout, flush=True)

    # -- using the model -----------------------------------------------------------------------

    def _threads(self, work: int) -> int:
        return threads_for(V.check_n_threads(self.n_threads), work,
                           _utils.PARALLEL_MIN_MODEL_WORK)

    @serialised
    def predict(self, user_ids: Any, item_ids: Any) -> np.ndarray:
        """Predicted rating (or BPR score) of each ``(user_ids[s], item_ids[s])`` pair."""
        st = self._fitted()
        u = check_ids("user_ids", user_ids, st.n_users, "users")
        i = check_ids("item_ids", item_ids, st.n_items, "items")
        if u.shape != i.shape:
            raise ValueError(f"user_ids and item_ids differ in length: {u.shape[0]} vs "
                             f"{i.shape[0]}")
        out = np.empty(u.shape[0], dtype=st.U.dtype)
        _mf_kernel.mf_predict(st.U, st.Q, u, i, st.k, st.user_bias, st.item_bias, st.mu, out,
                              self._threads(u.shape[0] * st.k))
        return out

    def _topn(self, scores: np.ndarray, excl: Optional[sp.csr_matrix], n: int
              ) -> Tuple[np.ndarray, np.ndarray]:
        """Top ``n`` per row of ``scores`` (C-contiguous, scratch); ``excl`` is a CSR matrix
        of ``scores``' shape built here from the model's own interaction pattern."""
        m = scores.shape[0]
        ids = np.empty((m, n), dtype=np.int64)
        out = np.empty((m, n), dtype=np.float64)
        if excl is None:
            indptr = np.zeros(m + 1, dtype=np.int64)
            indices = np.zeros(1, dtype=np.int64)
        else:
            indptr = excl.indptr.astype(np.int64, copy=False)
            indices = excl.indices.astype(np.int64, copy=False)
            if indices.shape[0] == 0:
                indices = np.zeros(1, dtype=np.int64)
        _topk.topn_rows(scores, indptr, indices, ids, out, self._threads(scores.size))
        return ids, out

    @serialised
    def recommend(self, user_ids: Any, n: int = 10, exclude_seen: bool = True
                  ) -> Tuple[np.ndarray, np.ndarray]:
        """The ``n`` items of highest predicted score for each user, best first.

        Scores are computed for blocks of users as one matrix product (BLAS), then a Cython
        kernel selects the top ``n`` of each row in parallel over users with a bounded heap
        (ties go to the lower item id). With ``exclude_seen`` the items of the user's training
        interactions (every matrix given to ``fit`` / ``partial_fit``) are left out.

        Parameters
        ----------
        user_ids : int or array-like of int
        n : int, default 10
            At most ``n_items`` columns are returned.
        exclude_seen : bool, default True

        Returns
        -------
        item_ids : ndarray of int64, shape (n_users_asked, n) (or (n,) for a single id)
            Padded with -1 when a user has fewer than ``n`` candidate items.
        scores : ndarray, same shape, the model's dtype
            Predicted ratings (squared) or BPR scores ``<p_u, q_i> + c_i``; -inf for padding.
        """
        st = self._fitted()
        scalar = np.ndim(user_ids) == 0
        users = check_ids("user_ids", user_ids, st.n_users, "users")
        n = min(check_positive_int("n", n), st.n_items)
        exclude_seen = check_flag("exclude_seen", exclude_seen)
        seen = self._seen
        if exclude_seen and seen.shape != (st.n_users, st.n_items):
            # a fit in another thread replaced the tables between the two reads: the kernel
            # would exclude items by the other shape's ids
            raise ValueError("the model was refitted during this call (its interactions no "
                             "longer match item_table_); call recommend again")
        k = st.k
        P = st.U[:, :k]
        QT = np.ascontiguousarray(st.Q[:, :k].T)
        ib = st.Q[:, k] if st.item_bias else None
        m = users.shape[0]
        ids = np.empty((m, n), dtype=np.int64)
        scores = np.empty((m, n), dtype=st.U.dtype)
        block = max(1, _BLOCK_ENTRIES // max(1, st.n_items))
        for s in range(0, m, block):
            bu = users[s:s + block]
            S = P[bu] @ QT
            if ib is not None:
                S += ib
            if self._loss == "squared":
                ub = st.U[bu, k] if st.user_bias else np.zeros(bu.shape[0], st.U.dtype)
                S += (st.mu + ub).astype(S.dtype)[:, None]
            S = np.ascontiguousarray(S)
            excl = seen[bu] if exclude_seen else None
            bi, bs = self._topn(S, excl, n)
            ids[s:s + block] = bi
            scores[s:s + block] = bs
        if scalar:
            return ids[0], scores[0]
        return ids, scores

    @serialised
    def similar_items(self, item_ids: Any, n: int = 10) -> Tuple[np.ndarray, np.ndarray]:
        """The ``n`` items most similar to each given item by cosine of their factors.

        The item itself is left out; items with all-zero factors have similarity 0 to all.
        Returns ``(item_ids, similarities)`` shaped like :meth:`recommend`'s output.
        """
        st = self._fitted()
        scalar = np.ndim(item_ids) == 0
        items = check_ids("item_ids", item_ids, st.n_items, "items")
        n = min(check_positive_int("n", n), max(1, st.n_items - 1))
        Q = st.Q[:, :st.k].astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", Q, Q))
        Qn = Q / np.where(norms > 0, norms, 1.0)[:, None]
        QnT = np.ascontiguousarray(Qn.T)
        m = items.shape[0]
        ids = np.empty((m, n), dtype=np.int64)
        sims = np.empty((m, n), dtype=st.Q.dtype)
        block = max(1, _BLOCK_ENTRIES // max(1, st.n_items))
        for s in range(0, m, block):
            bi = items[s:s + block]
            S = np.ascontiguousarray(Qn[bi] @ QnT)
            excl = sp.csr_matrix((np.ones(bi.shape[0]), bi, np.arange(bi.shape[0] + 1)),
                                 shape=(bi.shape[0], st.n_items))
            ti, ts = self._topn(S, excl, n)
            ids[s:s + block] = ti
            sims[s:s + block] = ts
        if scalar:
            return ids[0], sims[0]
        return ids, sims
