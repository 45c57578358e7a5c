"""Second-order factorisation machines (Rendle 2010) with the scikit-learn API."""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from .. import _utils
from .. import _validation as V
from .._kernels import _coalesce, _fm as _fm_kernel
from .._sklearn import fit_guard, serialised, validate_data
from .._utils import check_random_state, threads_for
from ..optim import RowGrad, make_optimizer
from .._validation import check_flag, check_positive_int
from ._common import check_recorded, check_table, check_trains, check_training_params
from ._training import Stopping, optimizer_step, print_epoch, run_epochs

__all__ = ["FMRegressor", "FMClassifier"]

_LOSS = _fm_kernel.LOSSES
_ACCEPT_SPARSE = ["csr", "csc", "coo"]


def _csr(X: Any, dtype: np.dtype, n_cols: Optional[int] = None) -> sp.csr_matrix:
    """The output of scikit-learn's checks as the CSR matrix the kernels trust (structure
    checked, duplicates summed, one index dtype, data in ``dtype``)."""
    if not sp.issparse(X):
        X = sp.csr_matrix(np.asarray(X))  # dense: no index arrays to trust
    X = V.check_sparse_matrix("X", X, dtype=dtype, n_cols=n_cols)
    if X.nnz and not X.data.all():
        # an explicitly stored 0 is no feature: it must not draw the L2 penalty of its row
        X = X.copy()  # X may share the caller's arrays
        X.eliminate_zeros()
    return X


class _Fitted(NamedTuple):
    """What the kernels read, taken once per call from checked attributes."""
    W: np.ndarray
    w0: np.ndarray
    k: int
    n_out: int
    n_features: int


# The defaults of each model, chosen on real data (benchmarks/quality_fm.py; held-out AUC of the
# classifier and RMSE of the regressor, one thread, seed 0). Both share the per-occurrence L2
# and Adagrad of MatrixFactorization's squared loss; they differ in how many samples carry a
# feature: the click sets' one-hot rows hold 15 features of a 27k-column space, so a feature
# row is seen far more often than a user or an item of the rating sets.
_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "classifier": dict(
        n_components=8,
        # Adam (the former default, lr 0.01) overfits from epoch 4 and peaks lower (flights_delay
        # 0.783-0.784 with alpha 1e-3..5e-2); Adagrad 0.05 reaches 0.800 at epoch 2
        optimizer="adagrad",
        # batches of 64 at 0.05 beat larger batches at a scaled-up rate (alpha 0.01): at epoch 2,
        # flights_delay 0.800 vs 0.793 (256, lr 0.1) and 0.786 (1,024, lr 0.2, alpha 0.05);
        # flights_cancelled 0.898 vs 0.893 / 0.885; on MovieLens clicks (rating >= 4, user +
        # item one-hot) 256 at lr 0.1 ties at epoch 2 (0.783 vs 0.782) and falls after (0.771
        # at epoch 4)
        learning_rate=0.05,
        batch_size=64,
        # 0.003 with 2 epochs: the one setting tried that beats sparseopt's linear
        # SGDClassifier (log loss) on both flights sets, and on two seeds: flights_cancelled
        # 0.9012 / 0.9007 (seeds 0 / 1; linear 0.9001), flights_delay 0.7994 / 0.7967 (linear
        # 0.7883). At epoch 2, alpha 0.005 / 0.01 / 0.02 / 0.1 give flights_cancelled 0.8997 /
        # 0.8980 / 0.8946 / 0.8894 and flights_delay - / 0.7998 / 0.7979 / 0.7901. The
        # rating-derived click sets prefer more penalty (MovieLens clicks, rating >= 4 on
        # one-hot user + item: 0.7825 at 0.003, 0.7824 at 0.01, 0.7872 at 0.02 after 4 epochs;
        # InstEval clicks 0.7007 / 0.7018 / 0.7028 at epoch 2); there the best setting tried
        # is within 0.002 of the linear model (0.7872 vs 0.7857, 0.7028 vs 0.7029): a user +
        # item one-hot row has one pair, whose interaction adds little to the two biases. The
        # former 1e-4 (with Adam, 50 epochs) overfits: flights_delay 0.733
        alpha=0.003,
        # the held-out AUC peaks at epoch 2 on both flights sets and falls slowly after it
        # (alpha 0.003: flights_cancelled 0.8984 / 0.9012 / 0.8991 / 0.8965 at epochs 1-4,
        # flights_delay 0.7946 / 0.7994 / 0.7986 / 0.7968; InstEval clicks 0.6997 / 0.7007 /
        # 0.6967; MovieLens clicks peak at 3, 0.7839 vs 0.7825); the training loss still
        # falls, so tol does not stop it: the epoch count is the early stop
        n_epochs=2,
        init_std=0.01,
    ),
    "regressor": dict(
        n_components=8,
        # one-hot user + item rows make the FM a biased matrix factorisation: the squared
        # loss's MatrixFactorization defaults carry over. Adagrad 0.03, alpha 0.2, batches of
        # 1,024, 20 epochs: MovieLens 0.8771, InstEval 1.2010 (MF: 0.8746, 1.2016). Adagrad 0.05
        # reaches 0.8743 on MovieLens but InstEval rises to 1.2049 at epoch 20 (1.2012 at 10);
        # batches of 64 with alpha 0.1: 0.864 / 1.207 at their best epochs but rising after
        # (0.866 / 1.240 at 20). The former Adam 0.01 / alpha 1e-4 / batches of 64 peak at
        # epoch 2 (0.887 / 1.217) and overfit to 1.093 / 1.707 by epoch 49
        optimizer="adagrad",
        learning_rate=0.03,
        batch_size=1024,
        alpha=0.2,
        n_epochs=20,
        init_std=0.01,
    ),
}

_COMMON_DOC = """
    Parameters
    ----------
    n_components : int, default 8
        Rank ``k`` of the pairwise interactions.
    optimizer : {"adam", "adagrad", "rmsprop", "sgd"}, default "adagrad"
    learning_rate : float, default %(learning_rate)s
        The optimizer's ``lr``; the gradient is that of the (weighted) batch mean.
    alpha : float, default %(alpha)s
        Per-occurrence L2: every non-zero entry ``x_j`` of a sample adds
        ``alpha/2 * (||v_j||^2 + w_j^2)`` to that sample's loss (libFM's SGD regularisation).
        The penalty of a feature row lives only in the samples that contain the feature, so
        the per-sample gradient rows the kernel writes are the exact gradient of the batch
        objective; untouched rows owe nothing, and the lazy update is exact. ``w0`` is not
        penalised.
    n_epochs : int, default %(n_epochs)s
        Maximum passes over the data in ``fit``.
    batch_size : int, default %(batch_size)s
    tol : float or None, default 1e-4
        ``fit`` stops when the epoch's mean training loss has not improved on the best by
        ``tol`` for ``n_iter_no_change`` epochs; ``None`` runs all ``n_epochs``.
    n_iter_no_change : int, default 5
    init_std : float, default 0.01
        Factors start as ``N(0, init_std**2)``; linear weights at 0.
    optimizer_params : dict, optional
        Extra keyword arguments of the sparseopt optimizer. With row-wise state
        (``{"rowwise": True}``, ``{"rowwise": "v"}`` for Adam) and one output, each row's
        linear weight (its last column) keeps its own row-wise scalar (``rowwise_tail``), apart
        from the factors; ``"rowwise_tail": 0`` shares one. With several outputs a row holds
        one ``[v, w]`` block per output and shares one scalar.
    warm_start : bool, default False
        Continue from the previous ``fit`` (same features and outputs).
    random_state : None, int, RandomState or Generator
        Seeds the initialisation and the shuffling.
    n_threads : int, optional
        Threads of the kernels and of the optimizer.
    verbose : bool, default False
        Print the loss and samples per second of each epoch.
"""

_STATE_NOTES = """
    Notes
    -----
    ``fit`` and ``partial_fit`` run one at a time per model (a second thread waits), and a
    call that raises on bad input leaves the model's attributes, table and optimizer state
    as they were. ``table_`` and ``w0_`` may be edited in place; replacing them with arrays
    of another shape, dtype or layout, or changing ``n_components_``, raises ``ValueError``
    naming the attribute before any kernel reads them (a replacement of the right layout is
    used for prediction but refused by further training: the optimizer trains the original).
"""


class _BaseFM(BaseEstimator):
    """Shared machinery: parameters, validation, the epoch loop over the fused kernel."""

    _loss_name = "squared"

    def __init__(self, n_components: int, optimizer: str, learning_rate: float, alpha: float,
                 n_epochs: int, batch_size: int, tol: Optional[float], n_iter_no_change: int,
                 init_std: float, optimizer_params: Optional[Dict[str, Any]],
                 warm_start: bool, random_state: Any, n_threads: Optional[int],
                 verbose: bool) -> None:
        self.n_components = n_components
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.init_std = init_std
        self.optimizer_params = optimizer_params
        self.warm_start = warm_start
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # -- fitted views of the table -------------------------------------------------------------

    def _fitted(self, training: bool = False) -> _Fitted:
        """The checked table, intercepts and sizes the kernels read."""
        check_is_fitted(self, "table_")
        n_features, n_out, k, dtype = self._layout
        check_recorded("n_components_", getattr(self, "n_components_", None), k)
        W = check_table("table_", self.table_, (n_features, n_out * (k + 1)), dtype, training)
        w0 = check_table("w0_", getattr(self, "w0_", None), (n_out,), dtype, training)
        if training:
            check_trains(getattr(self, "optimizer_", None), [("table_", W), ("w0_", w0)])
        return _Fitted(W, w0, k, n_out, n_features)

    def _table3(self) -> np.ndarray:
        st = self._fitted()
        return st.W.reshape(st.n_features, st.n_out, st.k + 1)

    @property
    def coef_(self) -> np.ndarray:
        """Linear weights: ``(n_features,)``, or ``(n_classes, n_features)`` for multiclass."""
        w = self._table3()[:, :, -1].T
        return w[0] if w.shape[0] == 1 else w

    @property
    def factors_(self) -> np.ndarray:
        """Interaction factors: ``(n_features, k)``, or ``(n_classes, n_features, k)``."""
        v = self._table3()[:, :, :-1].transpose(1, 0, 2)
        return v[0] if v.shape[0] == 1 else v

    @property
    def intercept_(self) -> np.ndarray:
        return self._fitted().w0

    # -- checks --------------------------------------------------------------------------------

    def _check_params(self) -> Dict[str, Any]:
        p = check_training_params(self)
        p["n_iter_no_change"] = check_positive_int("n_iter_no_change", self.n_iter_no_change)
        p["warm_start"] = check_flag("warm_start", self.warm_start)
        p["tol"] = None if self.tol is None else V.check_real("tol", self.tol)
        return p

    def _validate_fit(self, X, y, sample_weight, reset):
        """``(X, y, sample_weight)`` checked; ``X`` as the CSR matrix the kernels trust (of the
        fitted number of features when the model is trained further)."""
        X, y = validate_data(self, X, y, reset=reset, accept_sparse=_ACCEPT_SPARSE,
                             dtype=[np.float64, np.float32], y_numeric=self._loss_name ==
                             "squared", multi_output=False)
        sw = V.check_sample_weight(sample_weight, X.shape[0], non_negative=True)
        sw = V.relative_weights("sample_weight", sw)
        n_cols = None if reset else self._layout[0]
        return _csr(X, X.dtype, n_cols), y, np.ascontiguousarray(sw)

    def _check_X(self, X):
        """``(X as a trusted CSR matrix, the checked fitted state)`` for prediction."""
        st = self._fitted()
        X = validate_data(self, X, reset=False, accept_sparse=_ACCEPT_SPARSE,
                          dtype=[np.float64, np.float32])
        return _csr(X, st.W.dtype, st.n_features), st

    # -- training ------------------------------------------------------------------------------

    def _init_model(self, n_features: int, dtype, n_out: int, w0: np.ndarray,
                    p: Dict[str, Any]) -> None:
        k = p["k"]
        self._rng = check_random_state(self.random_state)
        # the layout every later call checks the public attributes against
        self._layout = (n_features, n_out, k, np.dtype(dtype))
        T = self._rng.normal(0.0, p["init_std"], size=(n_features, n_out, k + 1))
        T[:, :, k] = 0.0
        self.table_ = np.ascontiguousarray(T.reshape(n_features, n_out * (k + 1)), dtype=dtype)
        self.w0_ = np.ascontiguousarray(w0, dtype=dtype)
        self.n_components_ = k
        kw = self.optimizer_params
        if isinstance(kw, dict) and kw.get("rowwise") and "rowwise_tail" not in kw and \
                n_out == 1:
            # the linear weight is the row's last column: its own row-wise scalar, apart from
            # the factors (its gradient, the residual times x, is on another scale)
            kw = dict(kw, rowwise_tail=[1, 0])
        self.optimizer_ = make_optimizer(p["optimizer"], [self.table_, self.w0_], p["lr"],
                                         p["n_threads"], kw)
        self.loss_curve_: List[float] = []
        self.n_iter_ = 0
        self.t_ = 0

    def _compatible(self, n_features: int, dtype, n_out: int, p: Dict[str, Any]) -> bool:
        """warm_start may continue: the recorded layout fits this data and these parameters
        (whether the tables still match the record is checked before training)."""
        return (hasattr(self, "table_") and
                getattr(self, "_layout", None) == (n_features, n_out, p["k"], np.dtype(dtype)))

    def _run(self, X: sp.csr_matrix, y: np.ndarray, sw: np.ndarray, p: Dict[str, Any],
             n_epochs: int, early_stop: bool) -> None:
        st = self._fitted(training=True)
        self.optimizer_.lr = p["lr"]
        n = X.shape[0]

        def record(loss: float, seconds: float, rows_per_s: float) -> float:
            self.n_iter_ += 1
            self.t_ += n
            self.loss_curve_.append(loss)
            if p["verbose"]:
                print_epoch(type(self).__name__, self.n_iter_,
                            [f"loss {loss:.6f}", f"{rows_per_s:,.0f} rows/s",
                             f"{seconds:.3f} s"])
            return loss

        # early stopping watches the mean training loss (tol=None: never stops)
        stopping = Stopping(p["tol"], p["n_iter_no_change"]) if early_stop else None
        run_epochs(n_epochs, lambda: self._epoch(X, y, sw, p, st), n, record, stopping)

    def _epoch(self, X: sp.csr_matrix, y: np.ndarray, sw: np.ndarray, p: Dict[str, Any],
               st: _Fitted) -> float:
        """One shuffled pass: per mini-batch one kernel call (predictions, losses, a gradient
        row per stored entry), one merge of those rows into one per feature, and one
        optimizer step of the touched rows and of ``w0``.

        Everything per epoch is set up once (the running totals of stored entries and the
        scratch), so a batch costs two kernel calls and the step: at the classifier's
        batches of 64 the Python work per batch, not the arithmetic, is what an epoch costs.
        The merged rows are unique and in range, so they go to the optimizer's trusted step
        (``Optimizer._step_trusted``: ``step`` without validating and merging, bitwise the
        same update); an optimizer set to average duplicates, or a batch whose gradient is
        not finite, takes the checked ``step`` (which raises or skips as the optimizer is
        set)."""
        n = X.shape[0]
        B = min(p["batch_size"], n)
        k, W, w0, n_out = st.k, st.W, st.w0, st.n_out
        indptr, indices, data = X.indptr, X.indices, X.data
        perm = self._rng.permutation(n).astype(np.int64)
        swp = sw[perm]
        # offsets[s]: stored entries of the epoch's first s samples; a batch's slice of it is
        # what the kernel reads (it subtracts the slice's first value)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.diff(indptr)[perm], out=offsets[1:])
        starts = np.arange(0, n, B)
        ends = np.minimum(starts + B, n)
        cap = int((offsets[ends] - offsets[starts]).max()) if n else 0
        sums = np.empty((B, 2 * n_out * k), dtype=np.float64)
        pred = np.empty((B, n_out), dtype=np.float64)
        g0 = np.empty((B, n_out), dtype=np.float64)
        loss = np.zeros(n, dtype=np.float64)  # in epoch order; skipped batches stay 0
        G = np.empty((cap, W.shape[1]), dtype=W.dtype)
        gidx = np.empty(cap, dtype=indices.dtype)
        rows = np.empty(cap, dtype=np.int64)
        slot = np.full(W.shape[0], -1, dtype=np.int32)
        out_rows = np.arange(n_out, dtype=np.int64)
        code = _LOSS[self._loss_code]
        nnz_mean = offsets[n] / n if n else 0.0
        n_threads = threads_for(p["n_threads"], int(B * nnz_mean * W.shape[1]),
                                _utils.PARALLEL_MIN_MODEL_WORK)
        opt, lr, alpha, model = self.optimizer_, p["lr"], p["alpha"], type(self).__name__
        trusted = opt.duplicates == "sum"
        check = opt.nonfinite != "ignore"
        if trusted:
            opt._begin_trusted()
        step_trusted = opt._step_trusted
        for s, e in zip(starts.tolist(), ends.tolist()):
            bw = float(swp[s:e].sum())
            if bw <= 0.0:  # zero-weight samples are absent samples: no step at all
                continue
            b = e - s
            nnz = int(offsets[e] - offsets[s])
            _fm_kernel.fm_grads(data, indices, indptr, perm[s:e], offsets[s:e + 1], W, w0, y,
                                sw, k, code, 1.0 / bw, alpha, sums[:b], pred[:b], G[:nnz],
                                gidx[:nnz], g0[:b], loss[s:e], n_threads)
            gw0 = g0[:b].sum(axis=0)
            if not trusted:
                optimizer_step(opt, [RowGrad(gidx[:nnz], G[:nnz]), gw0], model,
                               self.n_iter_ + 1)
                continue
            m = _fm_kernel.fm_merge_rows(G[:nnz], gidx[:nnz], slot, rows)
            if check and (_coalesce.any_nonfinite(G[:m]) or not np.isfinite(gw0).all()):
                optimizer_step(opt, [RowGrad(rows[:m], G[:m]), gw0], model, self.n_iter_ + 1)
                continue
            step_trusted(rows[:m], G[:m], lr, 0)
            step_trusted(out_rows, gw0.astype(w0.dtype).reshape(n_out, 1), lr, 1)
        wsum = float(swp.sum())
        return float(np.dot(loss, swp)) / wsum if wsum > 0 else float("nan")

    def _decision(self, X: sp.csr_matrix, st: _Fitted) -> np.ndarray:
        out = np.empty((X.shape[0], st.n_out), dtype=np.float64)
        if X.shape[0]:
            n = threads_for(V.check_n_threads(self.n_threads), X.nnz * st.k,
                            _utils.PARALLEL_MIN_MODEL_WORK)
            _fm_kernel.fm_predict(X.data, X.indices, X.indptr, st.W, st.w0, st.k, out, n)
        return out


class FMRegressor(RegressorMixin, _BaseFM):
    __doc__ = """Factorisation machine regressor (Rendle 2010), squared loss.

    ``yhat(x) = w0 + sum_j w_j x_j + sum_{j<l} <v_j, v_l> x_j x_l``, computed in
    O(k * nnz(x)). Each feature is one row ``[v_j, w_j]`` of an embedding table; a mini-batch
    is one pass of a fused Cython kernel that writes one gradient row per stored entry, and a
    sparseopt optimizer merges duplicates and updates only the touched feature rows.
    Minimises the weighted mean of ``(yhat - y)^2 / 2`` plus the L2 below.
    """ + _COMMON_DOC % _DEFAULTS["regressor"] + """
    Attributes
    ----------
    table_ : ndarray (n_features, n_components + 1)
        Row ``j`` is ``[v_j, w_j]``; ``factors_`` and ``coef_`` are views of it.
    intercept_ : ndarray (1,)
    coef_ : ndarray (n_features,)
    factors_ : ndarray (n_features, n_components)
    n_iter_ : int
    loss_curve_ : list of float
    optimizer_ : the sparseopt optimizer
""" + _STATE_NOTES + """
    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from sparseopt.recommend import FMRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = sp.random(200, 30, density=0.2, random_state=0, format="csr")
    >>> y = X @ rng.normal(size=30)
    >>> FMRegressor(random_state=0).fit(X, y).predict(X[:2]).shape
    (2,)
    """

    _loss_name = "squared"
    _loss_code = "squared"

    def __init__(self, n_components: int = 8, optimizer: str = "adagrad",
                 learning_rate: float = 0.03, alpha: float = 0.2, n_epochs: int = 20,
                 batch_size: int = 1024, tol: Optional[float] = 1e-4, n_iter_no_change: int = 5,
                 init_std: float = 0.01, optimizer_params: Optional[Dict[str, Any]] = None,
                 warm_start: bool = False, random_state: Any = None,
                 n_threads: Optional[int] = None, verbose: bool = False) -> None:
        # the defaults: _DEFAULTS["regressor"], where the figures that chose them are
        super().__init__(n_components, optimizer, learning_rate, alpha, n_epochs, batch_size,
                         tol, n_iter_no_change, init_std, optimizer_params, warm_start,
                         random_state, n_threads, verbose)

    @fit_guard
    def fit(self, X, y, sample_weight=None):
        """Fit for up to ``n_epochs`` passes (from scratch unless ``warm_start``)."""
        p = self._check_params()
        X, y, sw = self._validate_fit(X, y, sample_weight, reset=True)
        y = np.ascontiguousarray(y, dtype=np.float64)
        if not (p["warm_start"] and self._compatible(X.shape[1], X.dtype, 1, p)):
            self._init_model(X.shape[1], X.dtype, 1, np.array([np.average(y, weights=sw)]), p)
        self._run(X, y, sw, p, p["n_epochs"], early_stop=True)
        return self

    @fit_guard
    def partial_fit(self, X, y, sample_weight=None):
        """One pass over ``(X, y)``; the first call initialises the model."""
        p = self._check_params()
        first = not hasattr(self, "table_")
        X, y, sw = self._validate_fit(X, y, sample_weight, reset=first)
        y = np.ascontiguousarray(y, dtype=np.float64)
        if first:
            self._init_model(X.shape[1], X.dtype, 1, np.array([np.average(y, weights=sw)]), p)
        self._run(X, y, sw, p, 1, early_stop=False)
        return self

    @serialised
    def predict(self, X):
        """Predicted targets, in the model's dtype."""
        X, st = self._check_X(X)
        return self._decision(X, st)[:, 0].astype(st.W.dtype)


class FMClassifier(ClassifierMixin, _BaseFM):
    __doc__ = """Factorisation machine classifier (Rendle 2010): logistic or softmax loss.

    Two classes: one FM output and the logistic loss (``classes_[1]`` is the positive class).
    More classes: one FM per class sharing the feature rows (row ``j`` holds every class's
    ``[v_jc, w_jc]``, so one row update serves all classes) and the multinomial (softmax)
    cross-entropy. Trained like :class:`FMRegressor`: a fused Cython kernel per mini-batch and
    lazy row updates by a sparseopt optimizer.
    """ + _COMMON_DOC % _DEFAULTS["classifier"] + """
    Attributes
    ----------
    classes_ : ndarray
    table_ : ndarray (n_features, n_outputs * (n_components + 1))
    intercept_ : ndarray (n_outputs,)
    coef_, factors_ : views of ``table_`` (see :class:`FMRegressor`; a leading class axis
        for multiclass)
    n_iter_ : int
    loss_curve_ : list of float
    optimizer_ : the sparseopt optimizer
""" + _STATE_NOTES + """
    Examples
    --------
    >>> import numpy as np
    >>> from sparseopt.recommend import FMClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 5)); y = (X[:, 0] * X[:, 1] > 0).astype(int)
    >>> clf = FMClassifier(n_components=4, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:3]).shape
    (3, 2)
    """

    _loss_name = "classification"

    def __init__(self, n_components: int = 8, optimizer: str = "adagrad",
                 learning_rate: float = 0.05, alpha: float = 0.003, n_epochs: int = 2,
                 batch_size: int = 64, tol: Optional[float] = 1e-4, n_iter_no_change: int = 5,
                 init_std: float = 0.01, optimizer_params: Optional[Dict[str, Any]] = None,
                 warm_start: bool = False, random_state: Any = None,
                 n_threads: Optional[int] = None, verbose: bool = False) -> None:
        # the defaults: _DEFAULTS["classifier"], where the figures that chose them are
        super().__init__(n_components, optimizer, learning_rate, alpha, n_epochs, batch_size,
                         tol, n_iter_no_change, init_std, optimizer_params, warm_start,
                         random_state, n_threads, verbose)

    def _fitted(self, training: bool = False) -> _Fitted:
        st = super()._fitted(training)
        # the softmax kernel indexes its outputs by the position of a label in classes_
        n_classes = 2 if st.n_out == 1 else st.n_out
        classes = getattr(self, "classes_", None)
        if not isinstance(classes, np.ndarray) or classes.shape != (n_classes,):
            raise ValueError(f"classes_ must be an array of the {n_classes} classes the model "
                             f"was fitted on, got {classes!r}")
        return st

    @property
    def _loss_code(self) -> str:
        return "logistic" if self._layout[1] == 1 else "softmax"

    def _encode(self, y, sw, reset_classes: Optional[np.ndarray]):
        check_classification_targets(y)
        if reset_classes is not None:
            self.classes_ = reset_classes
        classes = self.classes_
        if classes.shape[0] < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in "
                             f"the data; got 1 class: {classes[0]!r}")
        pos = np.searchsorted(classes, y)
        pos = np.minimum(pos, classes.shape[0] - 1)
        if not np.all(classes[pos] == y):
            bad = np.asarray(y)[classes[pos] != y][0]
            raise ValueError(f"y contains a label {bad!r} not in classes {classes!r}")
        if classes.shape[0] == 2:
            yy = np.where(pos == 1, 1.0, -1.0)
            prior = np.clip(np.average(pos == 1, weights=sw), 1e-6, 1 - 1e-6)
            w0 = np.array([np.log(prior / (1 - prior))])
        else:
            yy = pos.astype(np.float64)
            prior = np.bincount(pos, weights=sw, minlength=classes.shape[0]) / sw.sum()
            w0 = np.log(np.clip(prior, 1e-6, None))
            w0 -= w0.mean()
        return np.ascontiguousarray(yy), w0

    @fit_guard
    def fit(self, X, y, sample_weight=None):
        """Fit for up to ``n_epochs`` passes (from scratch unless ``warm_start``)."""
        p = self._check_params()
        X, y, sw = self._validate_fit(X, y, sample_weight, reset=True)
        check_classification_targets(y)
        classes = np.unique(y)
        if (p["warm_start"] and hasattr(self, "classes_")
                and not np.array_equal(classes, self.classes_)):
            raise ValueError("warm_start: the classes differ from the previous fit")
        yy, w0 = self._encode(y, sw, classes)
        n_out = 1 if classes.shape[0] == 2 else classes.shape[0]
        if not (p["warm_start"] and self._compatible(X.shape[1], X.dtype, n_out, p)):
            self._init_model(X.shape[1], X.dtype, n_out, w0, p)
        self._run(X, yy, sw, p, p["n_epochs"], early_stop=True)
        return self

    @fit_guard
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One pass over ``(X, y)``. The first call needs ``classes`` (all labels)."""
        p = self._check_params()
        first = not hasattr(self, "table_")
        X, y, sw = self._validate_fit(X, y, sample_weight, reset=first)
        if first:
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
            classes = np.unique(np.asarray(classes))
            yy, w0 = self._encode(y, sw, classes)
            n_out = 1 if classes.shape[0] == 2 else classes.shape[0]
            self._init_model(X.shape[1], X.dtype, n_out, w0, p)
        else:
            self._fitted(training=True)  # classes_ included, before it encodes y
            if classes is not None and not np.array_equal(np.unique(classes), self.classes_):
                raise ValueError(f"classes {classes!r} differ from those of the first "
                                 f"partial_fit call, {self.classes_!r}")
            yy, _ = self._encode(y, sw, None)
        self._run(X, yy, sw, p, 1, early_stop=False)
        return self

    @serialised
    def decision_function(self, X):
        """Raw scores: ``(n_samples,)`` for two classes (positive = ``classes_[1]``), else
        ``(n_samples, n_classes)``."""
        X, st = self._check_X(X)
        d = self._decision(X, st)
        return d[:, 0] if st.n_out == 1 else d

    def predict_proba(self, X):
        """Class probabilities, ``(n_samples, n_classes)``, in float64."""
        d = self.decision_function(X)
        if d.ndim == 1:
            p1 = expit(d)
            return np.column_stack([1.0 - p1, p1])
        return softmax(d, axis=1)

    def predict_log_proba(self, X):
        """Logarithms of ``predict_proba``, ``(n_samples, n_classes)``."""
        return np.log(self.predict_proba(X))

    @serialised
    def predict(self, X):
        """The class of each sample: ``classes_[1]`` where the decision value is positive for
        two classes, the class of the largest decision value for more."""
        d = self.decision_function(X)
        if d.ndim == 1:
            return self.classes_[(d > 0).astype(np.intp)]
        return self.classes_[np.argmax(d, axis=1)]
