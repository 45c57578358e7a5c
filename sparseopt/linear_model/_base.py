"""Shared machinery of ``SGDClassifier`` and ``SGDRegressor``: parameters, input handling,
the mini-batch training loop, and coefficients in scikit-learn's layout.

Weights live in one feature-major table ``W`` of shape ``(n_features [+ 1], n_outputs)``; its
last row is the intercept when ``fit_intercept``. A mini-batch touches only the rows of the
features it contains (plus the intercept row), so a step costs O(batch nonzeros), whatever the
number of features:

    _kernels/_linear gradient kernel       margins, losses, dloss, G = X_batch.T @ dloss as
                                           unique rows (+ lazy penalty/average catch-up)
    sparseopt.Adam/Adagrad/RMSprop         (rows, G) through Optimizer._step_trusted: the
    (or sparseopt.optim.SGD)               update of step([RowGrad(rows, G)]) without
                                           re-validating the kernel's unique rows; lazy plain
                                           SGD for optimizer="sgd", same path

``BaseSGD._run`` is the training loop; the step-size schedule, the batches and the kernel's
bundles, the convergence test and the verbose output are in ``_training.py``, the lazy penalty
and averaging in ``_lazy.py``.
"""
from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Dict, Optional, Tuple

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.model_selection import ShuffleSplit, StratifiedShuffleSplit
from sklearn.utils.validation import check_is_fitted

from .. import _validation as V
from .._kernels import _linear
from .._sklearn import Stopping, model_lock, serialised, validate_data
from .._utils import PARALLEL_MIN_MODEL_WORK, check_random_state, threads_for
from ..optim import OPTIMIZERS, Adagrad, Adam, Ftrl, RMSprop, make_optimizer
from ._lazy import LazyRegularizer
from ._training import SCHEDULES, Batches, Progress, Schedule

# An adaptive optimizer's base rate: its lr at scikit-learn's default eta0 (0.01, plain SGD's
# step) and the first rate of learning_rate="optimal", which then decays as scikit-learn's
# 'optimal' does, by t0 / (t0 + k - 1) with Bottou's t0 (a constant base rate scored the same
# with Adagrad and up to 0.015 AUC lower with Adam and RMSprop on the real-data quick suite).
# These base rates are the ones that worked on sparse text-like problems
# (benchmarks/bench_text.py) and on the small dense problems of scikit-learn's estimator
# checks; Adagrad's is also its best constant rate (of 0.1, 0.3, 1, 3) on three of the
# quality suite's sets (tweets, hashed reviews, flights_cancelled).
BASE_RATE = {"adam": 5e-2, "adagrad": 3e-1, "rmsprop": 5e-2, "sgd": 1e-2}
# FTRL-Proximal (optimizer="ftrl"): its lr (the paper's alpha) scales the weights themselves,
# w = -(z - sign(z) l1) / ((beta + sqrt(n))/alpha + l2), so it runs at a constant rate (a
# decaying one would shrink every weight toward 0). Rate and beta chosen on two of the quality
# suite's sets (benchmarks/quality_ftrl.py, --quick; penalty="l1", default alpha): rates 0.1 /
# 0.3 / 1 gave AUC 0.9355 / 0.9363 / 0.9311 on tweets and 0.8491 / 0.8469 / 0.8453 on
# flights_cancelled with beta = 0; beta = 1 (the paper's) fell to 0.896 and 0.792, because the
# estimators' mean mini-batch gradients are far below 1 and beta then dwarfs sqrt(n), and
# beta = 0.01 scored 0.001-0.006 below beta = 0 at rate 0.3 or lower.
BASE_RATE["ftrl"] = 0.3
FTRL_BETA = 0.0
# scikit-learn's default eta0, the plain-SGD step that maps to BASE_RATE (see optimizer_rate)
SGD_ETA0 = 0.01


def optimizer_rate(optimizer: str, eta0: float) -> float:
    """The optimizer's rate (its ``lr``) for an ``eta0`` given on plain SGD's scale.

    ``eta0`` means the same for every optimizer, so a grid written for scikit-learn's
    plain-SGD estimators transfers: ``'sgd'`` runs at ``eta0``; an adaptive optimizer at
    ``BASE_RATE * sqrt(eta0 / 0.01)``, so scikit-learn's default 0.01 gives its base rate and
    the usual grid 1e-3 .. 1 spans 0.32 .. 10 times it (Adagrad: lr 0.095 .. 3). An adaptive
    step is already normalised by the gradients' history, so its useful range is far
    narrower than plain SGD's, and the square root compresses a plain-SGD grid toward it: on
    three of the real-data quality suite's sets (tweets, hashed reviews, flights_cancelled),
    a constant Adagrad rate scores within 0.005 AUC of its best from lr 0.1 to 1 (eta0
    1e-3 .. 0.1) and up to 0.02 lower at 3 (eta0 1); in the grid-search check
    (benchmarks/gridsearch.py) lr 0.01, what ``eta0=0.01`` gave read as the rate, scored
    0.02-0.04 AUC below scikit-learn's candidates.

    Parameters
    ----------
    optimizer : {"adam", "adagrad", "rmsprop", "ftrl", "sgd"}
        The estimators' ``optimizer=``.
    eta0 : float
        The initial step on plain SGD's scale (the estimators' ``eta0=``).

    Returns
    -------
    float
        The optimizer's ``lr``; ``"ftrl"`` runs at a constant rate, mapped the same way.

    See Also
    --------
    eta0_for_rate : the inverse.

    Examples
    --------
    >>> optimizer_rate("sgd", 0.1), optimizer_rate("adagrad", 0.01)
    (0.1, 0.3)
    >>> round(optimizer_rate("adagrad", 1.0), 6)
    3.0
    """
    if optimizer == "sgd":
        return float(eta0)
    return BASE_RATE[optimizer] * math.sqrt(eta0 / SGD_ETA0)


def eta0_for_rate(optimizer: str, lr: float) -> float:
    """The ``eta0`` at which ``optimizer`` runs at the rate ``lr`` (``optimizer_rate``'s
    inverse), for code that thinks in the optimizer's own rate.

    Parameters
    ----------
    optimizer : {"adam", "adagrad", "rmsprop", "ftrl", "sgd"}
        The estimators' ``optimizer=``.
    lr : float
        The optimizer's rate wanted.

    Returns
    -------
    float
        The ``eta0`` to pass to the estimator.

    See Also
    --------
    optimizer_rate : the inverse.

    Examples
    --------
    >>> eta0_for_rate("adam", 0.05), eta0_for_rate("sgd", 0.2)
    (0.01, 0.2)
    """
    if optimizer == "sgd":
        return float(lr)
    return SGD_ETA0 * (lr / BASE_RATE[optimizer]) ** 2


# The default alpha, on scikit-learn's objective. Chosen on the real-data quality suite
# (benchmarks/quality.py: TF-IDF and hashed text, one-hot flights, an imbalanced set, a
# regression) as the value whose worst margin over the suite's targets (scikit-learn's
# default, Vowpal Wabbit, scikit-learn at its best alpha) is largest: 1e-4, scikit-learn's
# default, loses up to 0.05 AUC on hashed text (2**20 columns) and 0.013 on the flights sets;
# 1e-5 leaves 0.003 on hashed text, 3e-6 0.002 RMSE on the regression; 5e-6 keeps at least
# 0.005 AUC above every classification target and meets the regression's.
DEFAULT_ALPHA = 5e-6
# The default tol, on the same suite: the held-out score peaks within a few epochs (Adagrad's
# per-feature steps fit fast) and then drifts while the training objective still falls by
# more than scikit-learn's 1e-3 per epoch, so 1e-3 ran 9-36 epochs for scores equal or up to
# 0.0012 AUC lower (RMSE 1.3740 against 1.3713) than 1e-2 gives in 7-11 (about half the fit
# time). Larger values stop at the n_iter_no_change + 1 = 6 epochs minimum.
DEFAULT_TOL = 1e-2
# batch_size="auto" on large data (see auto_batch_size)
AUTO_BATCH_SIZE = 1024

# Weights (sample_weight times class_weight) count as given, as in scikit-learn: they scale the
# loss against alpha. A weight times a clipped loss derivative (up to 1e12) must stay far
# inside the range of the gradients (float32 for float32 data), so larger weights are refused
# naming them; only their ratio to alpha matters, so any weighting can be rescaled below it.
MAX_SAMPLE_WEIGHT = 1e15

# scikit-learn's names that the estimators refuse with a pointer to what replaces them
_RENAMED_LOSSES = {"log": "log_loss", "squared_loss": "squared_error"}


def auto_batch_size(n_samples: int) -> int:
    """``batch_size="auto"``: about 128 steps per epoch, with at most 1024 samples per step and
    at least 8 (fewer on data so small that 8 would leave under 16 steps per epoch).

    Adaptive optimizers on wide sparse data gain much more from more steps than from larger
    batches, and the convergence test (``tol``, ``n_iter_no_change``) looks at epochs, so small
    data needs many steps per epoch; large data needs batches big enough to keep the per-step
    overhead small.
    """
    n = max(1, int(n_samples))
    floor = min(8, -(-n // 16))
    return int(max(floor, min(AUTO_BATCH_SIZE, -(-n // 128))))


def kernel_csr(X, dtype, n_features: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr, indices, data) of a validated X as the kernel reads it: a canonical CSR with
    one int32/int64 index type and ``dtype`` values (``_validation.check_sparse_matrix``).

    Dense X is converted once (zeros are not stored, so a feature that is 0 in every row of a
    mini-batch is not touched by that step, exactly as for the same sparse matrix).
    """
    if not sp.issparse(X):
        X = sp.csr_matrix(np.asarray(X))
    csr = V.check_sparse_matrix("X", X, dtype=dtype, n_cols=n_features)
    return csr.indptr, csr.indices, csr.data


def _check_int(name, value, low, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return int(value)


def _check_float(name, value, low=0.0, high=np.inf, low_open=False, high_open=False,
                 allow_none=False):
    if value is None and allow_none:
        return None
    try:
        return V.check_real(name, value, low=low, high=high, low_open=low_open,
                            high_open=high_open)
    except TypeError as exc:  # scikit-learn's parameter errors are ValueErrors
        raise ValueError(str(exc)) from None


class BaseSGD(BaseEstimator):
    """Base class of the scikit-learn estimators; see ``SGDClassifier``."""

    # loss name -> (kernel loss, parameter attribute or constant)
    _LOSSES: Dict[str, Tuple[str, Any]] = {}

    def __init__(self, loss, *, penalty="l2", alpha=DEFAULT_ALPHA, l1_ratio=0.15,
                 fit_intercept=True, max_iter=1000, tol=DEFAULT_TOL, shuffle=True, verbose=0,
                 epsilon=0.1, random_state=None, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=5, warm_start=False, average=False,
                 learning_rate="optimal", eta0=0.01, power_t=0.5, optimizer="adagrad",
                 batch_size="auto", beta1=0.9, beta2=0.999, rho=0.99, eps=None,
                 n_threads=None, optimizer_params=None):
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.verbose = verbose
        self.epsilon = epsilon
        self.random_state = random_state
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.warm_start = warm_start
        self.average = average
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.batch_size = batch_size
        self.beta1 = beta1
        self.beta2 = beta2
        self.rho = rho
        self.eps = eps
        self.n_threads = n_threads
        self.optimizer_params = optimizer_params

    # -- scikit-learn protocol ---------------------------------------------------------------

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def _more_tags(self):  # pragma: no cover - scikit-learn < 1.6
        reason = "sample_weight is not equivalent to removing/repeating samples."
        return {"_xfail_checks": {
            "check_sample_weights_invariance(kind=zeros)": reason,
            "check_sample_weight_equivalence_on_dense_data": reason,
            "check_sample_weight_equivalence_on_sparse_data": reason,
        }}

    # -- parameters --------------------------------------------------------------------------

    def _check_params(self) -> Dict[str, Any]:
        """Check every parameter (at fit time, as scikit-learn does); return derived values,
        among them ``rng``: this call's random generator (shuffling, validation split)."""
        if self.loss in _RENAMED_LOSSES and _RENAMED_LOSSES[self.loss] in self._LOSSES:
            raise ValueError(f"loss={self.loss!r} was renamed {_RENAMED_LOSSES[self.loss]!r} "
                             "(scikit-learn 1.1 renamed it and 1.3 removed the old name); pass "
                             f"loss={_RENAMED_LOSSES[self.loss]!r}")
        if not isinstance(self.loss, str) or self.loss not in self._LOSSES:
            raise ValueError(f"loss must be one of {sorted(self._LOSSES)}; got {self.loss!r}")
        if self.penalty not in ("l2", "l1", "elasticnet", None):
            raise ValueError(
                f"penalty must be 'l2', 'l1', 'elasticnet' or None; got {self.penalty!r}")
        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}")
        schedule = self.learning_rate
        if not isinstance(schedule, str):
            hint = (f"; for a fixed step size of {schedule!r} pass learning_rate='constant', "
                    f"eta0={schedule!r}") if isinstance(schedule, numbers.Real) else ""
            raise ValueError(f"learning_rate must be one of {SCHEDULES} (scikit-learn's "
                             f"schedules, whose step size is eta0), got {schedule!r}{hint}")
        if schedule in ("pa1", "pa2"):
            raise ValueError(f"learning_rate={schedule!r} (passive-aggressive updates) is not "
                             f"supported; use one of {SCHEDULES}")
        if schedule not in SCHEDULES:
            raise ValueError(f"learning_rate must be one of {SCHEDULES}, got {schedule!r}")
        eta0 = _check_float("eta0", self.eta0, low_open=True, allow_none=True)
        # from here on "eta0" is the optimizer's own rate
        eta0 = optimizer_rate(self.optimizer, SGD_ETA0 if eta0 is None else eta0)
        power_t = _check_float("power_t", self.power_t)
        alpha = _check_float("alpha", self.alpha)
        if schedule == "optimal" and alpha == 0:
            raise ValueError("alpha must be > 0 since learning_rate is 'optimal'. alpha is used "
                             "to compute the optimal learning rate.")
        l1_ratio = _check_float("l1_ratio", self.l1_ratio, high=1.0)
        if self.penalty is None:
            l1 = l2 = 0.0
        elif self.penalty == "l2":
            l1, l2 = 0.0, alpha
        elif self.penalty == "l1":
            l1, l2 = alpha, 0.0
        else:
            l1, l2 = alpha * l1_ratio, alpha * (1.0 - l1_ratio)
        if isinstance(self.average, (bool, np.bool_)):
            average = 1 if self.average else 0
        else:
            average = _check_int("average", self.average, 0)
        verbose = self.verbose
        _check_int("verbose", int(verbose) if isinstance(verbose, (bool, np.bool_)) else verbose,
                   0)
        cls = {"adam": Adam, "adagrad": Adagrad, "rmsprop": RMSprop, "ftrl": Ftrl}.get(
            self.optimizer)
        accepted = () if cls is None else tuple(inspect.signature(cls).parameters)
        # the lazy penalty reads an adaptive optimizer's state (FTRL applies it itself)
        penalized = self.optimizer in ("adam", "adagrad", "rmsprop") and (l1 > 0 or l2 > 0)
        optimizer_params = V.check_linear_optimizer_params(
            self.optimizer_params, self.optimizer, accepted, penalized)
        try:  # scikit-learn's parameter errors are ValueErrors
            n_threads = self._thread_request()
            rng = check_random_state(self.random_state)
        except TypeError as exc:
            raise ValueError(str(exc)) from None
        return dict(
            schedule=schedule, eta0=eta0, power_t=power_t, alpha=alpha, l1=l1, l2=l2,
            average=average,
            max_iter=_check_int("max_iter", self.max_iter, 1),
            tol=_check_float("tol", self.tol, allow_none=True),
            batch_size=(None if isinstance(self.batch_size, str) and self.batch_size == "auto"
                        else _check_int("batch_size", self.batch_size, 1)),
            n_iter_no_change=_check_int("n_iter_no_change", self.n_iter_no_change, 1),
            validation_fraction=_check_float("validation_fraction", self.validation_fraction,
                                             low_open=True, high=1.0, high_open=True),
            epsilon=_check_float("epsilon", self.epsilon),
            beta1=_check_float("beta1", self.beta1, high=1.0, high_open=True),
            beta2=_check_float("beta2", self.beta2, high=1.0, high_open=True),
            rho=_check_float("rho", self.rho, high=1.0, high_open=True),
            eps=_check_float("eps", self.eps, allow_none=True),
            n_threads=n_threads,
            optimizer_params=optimizer_params,
            rng=rng,
        )

    def _thread_request(self) -> Optional[int]:
        """The checked ``n_threads`` (``None``: OpenMP's default)."""
        return V.check_n_threads(self.n_threads, "n_threads")

    def _schedule(self, params) -> Schedule:
        """The learning-rate schedule of a training call (``_training.Schedule``).

        ``eta0`` and ``power_t`` mean what they mean in scikit-learn, with a step (a
        mini-batch) in place of a sample. For ``optimizer='sgd'`` the rate is the step size of
        the batch-mean gradient, and ``'optimal'`` is scikit-learn's ``1 / (alpha * (t0 + k -
        1))`` with Bottou's ``t0``: the first step gets ``typw / max(1, dloss(1, -typw))``,
        ``typw = alpha**-0.25``. For the adaptive optimizers the rate is their ``lr``
        (``optimizer_rate`` of ``eta0``), and ``'optimal'`` starts at their own base rate
        (``BASE_RATE``, the rate of the default ``eta0``) and decays by the same
        ``t0 / (t0 + k - 1)``.
        """
        kind = params["schedule"]
        if kind == "optimal" and self.optimizer == "ftrl":
            # FTRL's rate scales its weights (see FTRL_RATE): no decay
            return Schedule("constant", BASE_RATE["ftrl"], params["power_t"])
        if kind == "optimal":
            alpha = params["alpha"]
            typw = math.sqrt(1.0 / math.sqrt(alpha))
            loss, loss_param = self._loss_args(params)
            if loss == _linear.LOSSES["softmax"]:  # the derivative of its binary form
                loss = _linear.LOSSES["log"]
            dloss = _linear.py_loss(loss, -typw, 1.0, loss_param)[1]
            eta_first = typw / max(1.0, dloss)
            if self.optimizer == "sgd":
                return Schedule.optimal(alpha, eta_first)
            # the same decay, t0 / (t0 + k - 1), of the optimizer's own base rate
            base, t0 = BASE_RATE[self.optimizer], 1.0 / (alpha * eta_first)
            return Schedule.optimal(1.0 / (base * t0), base)
        return Schedule(kind, params["eta0"], params["power_t"])

    def _loss_args(self, params) -> Tuple[int, float]:
        kernel_loss, arg = self._LOSSES[self.loss]
        value = params["epsilon"] if arg == "epsilon" else float(arg)
        return _linear.LOSSES[kernel_loss], value

    def _make_optimizer(self, W: np.ndarray, params, lr: float, state_from=None):
        """The optimizer of ``W``; ``state_from`` (an optimizer of the same kind over ``W``)
        hands over its state (accumulators, moments, counters), with this call's
        hyper-parameters."""
        fixed: Dict[str, Any] = dict(nonfinite="ignore")
        if self.optimizer == "adam":
            fixed.update(betas=(params["beta1"], params["beta2"]), eps=params["eps"])
        elif self.optimizer == "adagrad":
            fixed.update(eps=params["eps"])
        elif self.optimizer == "rmsprop":
            fixed.update(alpha=params["rho"], eps=params["eps"])
        elif self.optimizer == "ftrl":
            # the paper's convention; l1 / l2 are set per step (_ftrl_penalty)
            fixed.update(convention="paper", beta=FTRL_BETA, initial_accumulator_value=0.0)
        opt = make_optimizer(self.optimizer, {"coef": W}, lr, params["n_threads"],
                             params["optimizer_params"], **fixed)
        if self.optimizer == "ftrl" and self._intercept_row:
            opt._free_row = self._n_feat  # the intercept takes no penalty
        if state_from is not None:
            saved = state_from.state_dict()
            saved["param_groups"] = opt.state_dict()["param_groups"]
            opt.load_state_dict(saved)
        return opt

    # -- coefficients ------------------------------------------------------------------------

    def _n_outputs(self) -> int:
        raise NotImplementedError

    def _init_weights(self, n_features: int, n_outputs: int, dtype, coef_init=None,
                      intercept_init=None) -> None:
        """A new weight table; ``coef_init`` / ``intercept_init`` (or the previous solution
        with ``warm_start``) are checked before anything is replaced."""
        intercept_row = bool(self.fit_intercept)
        n_rows = n_features + (1 if intercept_row else 0)
        W = np.zeros((n_rows, n_outputs), dtype=dtype)
        if coef_init is not None:
            coef = V.check_real_array("coef_init", coef_init, dtype, finite=True)
            coef = coef.reshape(n_outputs, -1) if coef.ndim == 1 and n_outputs == 1 else coef
            if coef.shape != (n_outputs, n_features):
                raise ValueError(
                    f"Provided coef_init does not match dataset: shape {coef.shape}, expected "
                    f"{(n_outputs, n_features) if n_outputs > 1 else (n_features,)} (with "
                    "warm_start=True, coef_init is the previous fit's coef_)")
            W[:n_features] = coef.T
        if intercept_init is not None and intercept_row:
            b = V.check_real_array("intercept_init", intercept_init, dtype, finite=True).reshape(-1)
            if b.shape != (n_outputs,):
                raise ValueError(
                    f"Provided intercept_init does not match dataset: shape {b.shape}, "
                    f"expected ({n_outputs},)")
            W[n_features] = b
        self._W = W
        self._W_avg = None
        self._coef_sparse = None
        self._intercept_fixed = None
        self._n_feat = n_features
        self._intercept_row = intercept_row

    def _pred_weights(self) -> np.ndarray:
        return self._W_avg if self._W_avg is not None else self._W

    def _model_dtype(self):
        if self._coef_sparse is not None:
            return self._coef_sparse.dtype
        return self._W.dtype

    @property
    def coef_(self):
        """Coefficients in scikit-learn's layout: ``(n_outputs, n_features)`` (``(n_features,)``
        for the regressor). A transposed view of the feature-major weights (averaged ones with
        ``average``), or a ``scipy.sparse`` matrix after ``sparsify()``."""
        if getattr(self, "_coef_sparse", None) is not None:
            return self._coef_sparse
        if getattr(self, "_W", None) is None:
            raise AttributeError("coef_ is available after fit")
        return self._coef_view(self._pred_weights()[: self._n_feat])

    @coef_.setter
    def coef_(self, value):
        """Replace the coefficients; the shape must be that of ``coef_`` (a dense value is
        copied into the weight table, a ``scipy.sparse`` one makes the model sparse, as
        ``sparsify()`` does)."""
        if not hasattr(self, "_n_feat"):
            raise AttributeError("coef_ can be set only on a fitted estimator")
        with model_lock(self):
            self._check_layout()
            K, n = self._n_outputs(), self._n_feat
            expected = [(K, n)] + ([(n,)] if K == 1 else [])
            if sp.issparse(value):
                csr = V.check_sparse_matrix("coef_", value, dtype=self._model_dtype())
                if csr.shape != (K, n):
                    raise ValueError(f"coef_ must have shape {(K, n)}, got {csr.shape}")
                if self._coef_sparse is None:
                    self.sparsify()
                self._coef_sparse = csr
                return
            arr = V.check_real_array("coef_", value, self._model_dtype())
            if arr.shape not in expected:
                raise ValueError(f"coef_ must have shape "
                                 f"{' or '.join(map(str, expected))}, got {arr.shape}")
            arr = arr.reshape(K, n)
            if self._coef_sparse is not None:
                self._coef_sparse = sp.csr_matrix(arr)
                return
            self._pred_weights()[:n] = arr.T

    @property
    def intercept_(self):
        """Intercepts, shape ``(n_outputs,)`` (``(1,)`` for binary classification and
        regression); zeros when ``fit_intercept=False``."""
        if not hasattr(self, "_W"):
            raise AttributeError("intercept_ is available after fit")
        if self._intercept_fixed is not None:
            return self._intercept_fixed.copy()
        W = self._pred_weights()
        if self._intercept_row:
            return W[self._n_feat]
        return np.zeros(W.shape[1], dtype=W.dtype)

    @intercept_.setter
    def intercept_(self, value):
        """Replace the intercepts; one per output (shape ``(n_outputs,)``)."""
        if not hasattr(self, "_n_feat"):
            raise AttributeError("intercept_ can be set only on a fitted estimator")
        with model_lock(self):
            self._check_layout()
            K = self._n_outputs()
            b = V.check_real_array("intercept_", value, np.float64).reshape(-1)
            if b.shape != (K,):
                raise ValueError(f"intercept_ must hold {K} value(s) (shape ({K},)), got "
                                 f"shape {np.shape(value)}")
            if self._coef_sparse is None and self._intercept_row:
                self._pred_weights()[self._n_feat] = b
            else:
                self._intercept_fixed = b

    def _coef_view(self, Wf: np.ndarray):
        return Wf.T

    def _check_layout(self, training: bool = False) -> None:
        """Refuse fitted attributes that disagree with the layout recorded at fit.

        SciPy's products and the kernels index the weight table with feature ids that were
        checked against ``n_features_in_``, and the kernels write the touched rows of the
        table, of the penalty bookkeeping and of the gradient scratch sized from it. A table,
        coefficient matrix, intercept or class list replaced by one of another shape is
        therefore a ValueError here, before either runs. O(1), plus a structural check of a
        sparse ``coef_`` (O(its nonzeros), no more than the product it guards) and, for
        training, of the penalty bookkeeping (O(rows), as the flush that ends every call).
        """
        n_feat = self._n_feat
        if isinstance(n_feat, (bool, np.bool_)) or not isinstance(n_feat, numbers.Integral) \
                or n_feat < 0:
            raise ValueError(f"the fitted number of features is corrupt ({n_feat!r}); call fit")
        n_in = getattr(self, "n_features_in_", None)
        if n_in is None or isinstance(n_in, (bool, np.bool_)) or n_in != n_feat:
            raise ValueError(f"n_features_in_ is {n_in!r}, but the model's weights are for "
                             f"{n_feat} features; call fit again")
        K = self._n_outputs()
        if self._coef_sparse is not None:
            coef = self._coef_sparse
            if not sp.issparse(coef):
                raise ValueError(f"coef_ must be a scipy.sparse matrix after sparsify(), got "
                                 f"{type(coef).__name__}")
            V.check_sparse_structure("coef_", coef)
            if tuple(coef.shape) != (K, n_feat) or coef.format != "csr" or \
                    coef.dtype not in (np.float32, np.float64):
                raise ValueError(f"coef_ must be a float32/float64 CSR matrix of shape "
                                 f"{(K, n_feat)}, got a {coef.format} matrix of shape "
                                 f"{coef.shape} and dtype {coef.dtype}")
            _check_fitted_array("intercept_", self._intercept_fixed, (K,), None)
            return
        rows = n_feat + (1 if self._intercept_row else 0)
        W = self._W
        _check_fitted_array("the weight table (coef_ and intercept_)", W, (rows, K), None)
        if not W.flags.c_contiguous:
            raise ValueError("the weight table (coef_ and intercept_) must be C-contiguous")
        if self._W_avg is not None:
            _check_fitted_array("the averaged weights", self._W_avg, (rows, K), W.dtype)
        if self._intercept_fixed is not None:
            _check_fitted_array("intercept_", self._intercept_fixed, (K,), None)
        if not training:
            return
        if not W.flags.writeable:
            raise ValueError("the weight table (coef_ and intercept_) is read-only; training "
                             "updates it in place")
        t = getattr(self, "t_", None)
        if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Integral) or t < 0:
            raise ValueError(f"t_ must be a non-negative int, got {t!r}")
        opt = getattr(self, "optimizer_", None)
        if opt is not None:
            params = getattr(opt, "params", None)
            if not params or params[0] is not W:
                raise ValueError("optimizer_ does not train this model's weight table (was "
                                 "the table or the optimizer replaced?); call fit again")
        reg = getattr(self, "_reg", None)
        if reg is not None and reg.flags:
            # the kernels index the segment tables with every touched row's last step (the
            # per-row steps are absent after unpickling: bind() makes them, all current)
            st = reg.pen_step
            tables = (reg.E, reg.Q, reg.cum_a, reg.cum_q, reg.cum_aq)
            if st is None:
                st = np.zeros(rows, dtype=np.int64)
            if not isinstance(st, np.ndarray) or st.dtype != np.int64 or st.shape != (rows,) \
                    or not 0 <= reg.t <= reg.length or reg.n_rows != rows \
                    or any(tab.shape[0] < reg.length + 1 for tab in tables) \
                    or (rows and not 0 <= int(st.min()) <= int(st.max()) <= reg.t):
                raise ValueError("the lazy penalty bookkeeping does not match the weight "
                                 "table (was it replaced?); call fit again")
            if reg.flags & _linear.PENALTY_FLAGS["AVG"]:
                _check_fitted_array("the running average", reg.avg, (rows, K), np.float64)
                if not reg.avg.flags.c_contiguous:
                    raise ValueError("the running average must be C-contiguous")

    def sparsify(self):
        """Convert ``coef_`` to a ``scipy.sparse`` CSR matrix and free the dense weights.

        The dense weight table, the averaged weights and the optimizer state (for Adam two
        more tables of the same size) are released, so a model with an L1 penalty is small to
        keep and to pickle; predictions use the sparse coefficients. Call ``densify()`` before
        training again with ``partial_fit`` (or ``fit`` with ``warm_start``): the optimizer then
        starts from fresh state.

        Returns
        -------
        self
        """
        check_is_fitted(self, msg="Estimator, %(name)s, must be fitted before sparsifying.")
        with model_lock(self):
            self._check_layout()
            if self._coef_sparse is not None:
                return self
            W = self._pred_weights()
            coef = W[: self._n_feat].T
            self._intercept_fixed = np.array(self.intercept_, copy=True)
            self._coef_sparse = sp.csr_matrix(coef.reshape(-1, self._n_feat))
            self._W = None
            self._W_avg = None
            self.optimizer_ = None
            self._reg = None
        return self

    def densify(self):
        """Convert a sparsified ``coef_`` back to a dense weight table (see ``sparsify``).

        Returns
        -------
        self
        """
        check_is_fitted(self, msg="Estimator, %(name)s, must be fitted before densifying.")
        with model_lock(self):
            self._check_layout()
            if self._coef_sparse is None:
                return self
            coef = self._coef_sparse.toarray()
            dtype = self._coef_sparse.dtype
            n_outputs = coef.shape[0]
            n_rows = self._n_feat + (1 if self._intercept_row else 0)
            W = np.zeros((n_rows, n_outputs), dtype=dtype)
            W[: self._n_feat] = coef.T
            if self._intercept_row:
                W[self._n_feat] = self._intercept_fixed
            self._W = W
            self._coef_sparse = None
            self._intercept_fixed = None
        return self

    @serialised
    def _decision(self, X) -> np.ndarray:
        """Scores ``X @ coef_.T + intercept_``, shape (n_samples, n_outputs)."""
        check_is_fitted(self)
        self._check_layout()
        X = validate_data(self, X, accept_sparse=["csr"], reset=False,
                          dtype=[np.float64, np.float32])
        if self._coef_sparse is not None:
            scores = X @ self._coef_sparse.T
            scores = scores.toarray() if sp.issparse(scores) else np.asarray(scores)
            return scores + self._intercept_fixed
        W = self._pred_weights()
        scores = np.asarray(X @ W[: self._n_feat])
        if self._intercept_row:
            scores = scores + W[self._n_feat]
        return scores

    # -- training ----------------------------------------------------------------------------

    def _check_continue(self) -> None:
        """partial_fit on a fitted model: the weights must be dense and match the recorded
        layout, and the intercept setting cannot change (the table has a row for it or not)."""
        self._check_layout(training=True)
        if self._coef_sparse is not None:
            raise ValueError("coef_ is sparse (sparsify() was called); call densify() before "
                             "partial_fit")
        if bool(self.fit_intercept) != self._intercept_row:
            raise ValueError(
                f"fit_intercept={self.fit_intercept!r}, but the model was fitted with "
                f"fit_intercept={self._intercept_row!r}; partial_fit cannot add or drop the "
                "intercept (call fit to train a new model)")

    def _start_training(self, params, n_features, n_outputs, dtype, *, keep_weights: bool,
                        coef_init=None, intercept_init=None, state_from=None) -> None:
        """A new training run (``fit``, or a first ``partial_fit``): fresh weights, or a copy of
        the current (averaged) ones with ``keep_weights``, a new optimizer (taking over a copy
        of ``state_from``'s state) and new lazy-penalty bookkeeping; the schedule starts again
        at step 1 (``t_ = 0``), as scikit-learn's ``fit`` does."""
        if not keep_weights:
            self._init_weights(n_features, n_outputs, dtype, coef_init, intercept_init)
        else:  # a copy: a fit that fails leaves the previous model (and its state) intact
            self._W = (self._W_avg if self._W_avg is not None else self._W).copy()
        self._intercept_fixed = None
        self.optimizer_ = self._make_optimizer(self._W, params, params["eta0"], state_from)
        self._optimizer_kind = self._optimizer_setting()
        self._reg = None
        self._regularizer(params)
        self._W_avg = None
        self.t_ = 0
        self._samples_seen = 0

    def _continue_training(self, params) -> None:
        """``partial_fit`` on a fitted model: the weights, ``t_`` and the average go on; a
        fresh optimizer replaces one that was released (after ``fit`` without
        ``warm_start``, ``sparsify``/``densify``) or is of another kind than ``optimizer``;
        the penalty follows the current ``alpha``, ``l1_ratio`` and ``penalty``."""
        if getattr(self, "optimizer_", None) is None or \
                getattr(self, "_optimizer_kind", None) != self._optimizer_setting():
            self.optimizer_ = self._make_optimizer(self._W, params, params["eta0"])
            self._optimizer_kind = self._optimizer_setting()
        self._regularizer(params)

    def _optimizer_setting(self) -> Tuple[Any, Dict[str, Any]]:
        """What the optimizer was built from (``optimizer`` and a copy of
        ``optimizer_params``): a ``partial_fit`` or warm start keeps the optimizer and its
        state only while this is unchanged (other settings may mean other state)."""
        return self.optimizer, dict(self.optimizer_params or {})

    def _regularizer(self, params) -> LazyRegularizer:
        """The lazy-penalty bookkeeping for this call's penalty: the current one when its
        settings are unchanged, else a new one (every row is current between calls, so the
        change is exact), which keeps the running average when ``average`` is unchanged."""
        old = getattr(self, "_reg", None)
        pre = self.optimizer != "sgd"
        l1, l2 = params["l1"], params["l2"]
        # FTRL applies the penalty in its own update (exact zeros); see _ftrl_penalty
        self._ftrl_l1l2 = (l1, l2) if self.optimizer == "ftrl" else None
        if self._ftrl_l1l2 is not None:
            l1 = l2 = 0.0
        key = (l1, l2, params["average"])
        if old is not None and (old.l1, old.l2, old.average_from_sample) == key and \
                old.preconditioned == (pre and (old.l1 > 0 or old.l2 > 0)):
            return old
        reg = LazyRegularizer(self._W.shape[0], self._W.shape[1], l1, l2,
                              params["average"], preconditioned=pre)
        if old is not None and old.average_from_sample == reg.average_from_sample and \
                old.avg is not None and reg.avg is not None:
            reg.avg[...] = old.avg
            reg.n_avg, reg.avg_start = old.n_avg, old.avg_start
        self._reg = reg
        return reg

    def _release_training_state(self) -> None:
        """After ``fit`` without ``warm_start``: drop the optimizer state (for Adam two more
        tables of the weights' size, for Adagrad and RMSprop one) and the penalty
        bookkeeping, so that the model in memory and in a pickle holds the coefficients (and,
        with ``average``, the running average that a ``partial_fit`` continues). A later
        ``partial_fit`` starts a fresh optimizer from these coefficients."""
        self.optimizer_ = None
        reg = self._reg
        if reg is not None and reg.avg is None:
            self._reg = None

    def _checked_weights(self, sw: np.ndarray, label: str) -> np.ndarray:
        """The weights the model trains with (sample weights times class weights), as given:
        as in scikit-learn they weigh the loss against ``alpha``. A weight above
        ``MAX_SAMPLE_WEIGHT`` in magnitude is refused (ValueError naming ``label``) before
        anything changes."""
        out = np.ascontiguousarray(sw, dtype=np.float64)
        top = float(np.abs(out).max()) if out.size else 0.0
        if not top <= MAX_SAMPLE_WEIGHT:
            raise ValueError(
                f"{label}: a weight of {top:.3g} is above {MAX_SAMPLE_WEIGHT:.0e}, where the "
                "gradients could overflow. Weights count relative to alpha (scaling all of "
                "them by c is the same as dividing alpha by c): rescale them")
        return out

    def _run(self, Xk: Tuple[np.ndarray, np.ndarray, np.ndarray], y: np.ndarray,
             sw: np.ndarray, params, *, max_iter: int, train_idx: Optional[np.ndarray] = None,
             validation=None, check_convergence: bool = True) -> int:
        """Epochs of mini-batch steps over ``train_idx`` (all samples by default); returns the
        number of epochs run. ``Xk`` is ``kernel_csr(X)`` of the checked training data.
        ``validation`` = (X_val, y_val, val_idx) turns on early stopping on the validation
        score; otherwise the training objective is watched (``tol``), unless
        ``check_convergence`` is off (``partial_fit``: one epoch, no test). When the test
        fails, ``learning_rate='adaptive'`` divides its rate by 5 and goes on (while the rate
        is above 1e-6); every other schedule stops.

        Everything that can be refused is refused before the first step; after it only a
        diverging model raises."""
        n_samples = Xk[0].shape[0] - 1
        order = (np.arange(n_samples, dtype=np.int64) if train_idx is None
                 else np.ascontiguousarray(train_idx, dtype=np.int64))
        if order.shape[0] == 0:
            return 0
        sw = self._checked_weights(sw, self._weight_label())
        if validation is not None:
            validation = (validation[0], validation[1], sw[validation[2]])
        batches = self._batches(Xk, y, sw, order, params)
        schedule = self._schedule(params)
        stopping = (Stopping(params["tol"], params["n_iter_no_change"]) if check_convergence
                    else None)
        progress = Progress(self.verbose)
        W, n_feat, reg = self._W, self._n_feat, self._reg
        # ``_live_rows``: set by sparseopt.dask on its private copy of a model whose rows
        # outside it are zero with no state (see LazyRegularizer.bind), for one call
        reg.bind(self.optimizer_, getattr(self, "_live_rows", None))
        epoch = 0
        for epoch in range(1, max_iter + 1):
            progress.epoch(epoch)
            if self.shuffle or epoch == 1:
                batches.new_epoch(params["rng"] if self.shuffle else None)
            mean_loss = self._epoch(batches, schedule) / batches.n_samples
            reg.flush(batches.model, batches.flush_threads)
            if getattr(self, "_ftrl_l1l2", None) is not None:
                self.optimizer_._refresh()  # every row at the penalty of the last step
            if not (np.isfinite(mean_loss) and np.isfinite(W).all()):
                raise ValueError(
                    f"Floating-point under-/overflow occurred at epoch #{epoch}. Scaling input "
                    "data with StandardScaler or MinMaxScaler might help, or a smaller "
                    "eta0 (learning_rate='constant', 'invscaling' or 'adaptive').")
            if validation is not None:
                self._finish_average()
                score = self.score(*validation)
                progress.validation(mean_loss, score, self.t_)
                if stopping is not None:
                    stopping.update(-score)
            elif stopping is not None:
                # the penalty reads the whole table: only when the convergence test needs it
                objective = mean_loss + reg.penalty(W, n_feat) + self._ftrl_objective_penalty()
                progress.objective(W[:n_feat], mean_loss, objective, self.t_)
                stopping.update(objective)
            progress.epoch_done()
            if stopping is not None and stopping.converged:
                if schedule.plateau():
                    stopping.no_improvement = 0
                else:
                    progress.converged(epoch)
                    break
        self._finish_average()
        reg.unbind()
        # steps ran at eta / wscale (weight-scaling trick); show the schedule's base rate
        self.optimizer_.lr = schedule.lr
        if stopping is not None:
            stopping.warn_if_unconverged(epoch, max_iter)
        return epoch

    def _weight_label(self) -> str:
        """How the refusal of too large a weight names the weights the model trains with."""
        return "sample_weight"

    def _fit_epochs(self, X, y, targets: np.ndarray, sw: np.ndarray, params, coef_init,
                    intercept_init, strata: Optional[np.ndarray] = None,
                    state_from=None):
        """The training of ``fit`` on checked data: new weights (``coef_init`` /
        ``intercept_init``, or zeros; with ``state_from``, the current weights and the
        optimizer state of a ``warm_start``), the validation split of ``early_stopping``, then
        up to ``max_iter`` epochs. ``y`` is what the validation score compares predictions
        with, ``targets`` what the kernel's loss reads, ``strata`` the classes a classifier's
        split keeps in proportion. Without ``warm_start`` the optimizer state is released at
        the end (``_release_training_state``)."""
        Xk = kernel_csr(X, X.dtype, X.shape[1])
        rows = X.shape[1] + (1 if self.fit_intercept else 0)
        if state_from is not None and (self._W.shape != (rows, self._n_outputs())
                                       or self._W.dtype != X.dtype):
            state_from = None  # another layout: start from (a check of) the coefficients
        self._start_training(params, X.shape[1], self._n_outputs(), X.dtype,
                             keep_weights=state_from is not None, coef_init=coef_init,
                             intercept_init=intercept_init, state_from=state_from)
        train_idx, validation = self._split(X, y, sw, params, strata)
        self.n_iter_ = self._run(Xk, targets, sw, params, max_iter=params["max_iter"],
                                 train_idx=train_idx, validation=validation)
        if not self.warm_start:
            self._release_training_state()
        return self

    def _partial_fit_epoch(self, X, targets: np.ndarray, sw: np.ndarray, params,
                           first: bool):
        """The training of ``partial_fit`` on checked data: one epoch, continuing from the
        current weights (``_continue_training``), or from zeros on the ``first`` call. The
        optimizer state is kept for the next call."""
        Xk = kernel_csr(X, X.dtype if first else self._W.dtype,
                        X.shape[1] if first else self._n_feat)
        if first:
            self._start_training(params, X.shape[1], self._n_outputs(), X.dtype,
                                 keep_weights=False)
        else:
            self._continue_training(params)
        self._run(Xk, targets, sw, params, max_iter=1, check_convergence=False)
        self.n_iter_ = 1
        return self

    def _split(self, X, y, sw: np.ndarray, params, strata: Optional[np.ndarray]):
        """``(train indices, (X_val, y_val, val indices))`` for ``early_stopping``, else
        ``(None, None)``: a shuffled split, stratified by ``strata`` when given, seeded from
        the call's generator."""
        if not self.early_stopping:
            return None, None
        fraction = params["validation_fraction"]
        seed = int(params["rng"].integers(2**31 - 1))
        cv = (ShuffleSplit(test_size=fraction, random_state=seed) if strata is None
              else StratifiedShuffleSplit(test_size=fraction, random_state=seed))
        try:
            idx_train, idx_val = next(cv.split(np.zeros((len(y), 1)), strata))
        except ValueError as exc:
            raise ValueError(
                f"Splitting {len(y)} samples into a train set and a validation set with "
                f"validation_fraction={fraction!r} failed ({exc}). Please either change "
                "validation_fraction, increase number of samples, or disable "
                "early_stopping.") from None
        if idx_train.shape[0] == 0 or idx_val.shape[0] == 0:
            raise ValueError(
                f"Splitting {len(y)} samples into a train set and a validation set with "
                f"validation_fraction={fraction!r} led to an empty set "
                f"({idx_train.shape[0]} and {idx_val.shape[0]} samples). Please either change "
                "validation_fraction, increase number of samples, or disable early_stopping.")
        if not np.any(sw[idx_val] > 0):
            raise ValueError("The sample weights for validation set are all zero, consider "
                             "using a different random state.")
        return idx_train, (X[idx_val], y[idx_val], idx_val)

    def _batches(self, Xk, y: np.ndarray, sw: np.ndarray, order: np.ndarray,
                 params) -> Batches:
        """The batches of a training call over ``order`` and the kernel's bundles; thread
        counts follow ``threads_for`` with the model-kernel threshold."""
        W = self._W
        n_train = order.shape[0]
        size = min(params["batch_size"] or auto_batch_size(n_train), n_train)
        mean_nnz = float(np.diff(Xk[0])[order].mean())
        n_threads = threads_for(params["n_threads"], int(size * mean_nnz * W.shape[1]),
                                PARALLEL_MIN_MODEL_WORK)
        # the end-of-segment catch-up runs over every row of the table
        flush_threads = threads_for(params["n_threads"], W.size, PARALLEL_MIN_MODEL_WORK)
        loss, loss_param = self._loss_args(params)
        model = _linear.LinearModel(W, self._n_feat, loss, loss_param)
        return Batches(Xk, np.ascontiguousarray(y, dtype=np.float64), sw, order, size, model,
                       n_threads, flush_threads, PARALLEL_MIN_MODEL_WORK)

    def _epoch(self, batches: Batches, schedule: Schedule) -> float:
        """One pass over the batches, each a kernel call (margins, losses, row gradient and
        the lazy catch-up of its rows), an optimizer step and the step's penalty; returns
        the sample-weighted sum of the losses measured on the way (each batch at the weights
        before its step).

        The kernel's gradient rows are unique and in range, so they go to the optimizer's
        trusted step (``Optimizer._step_trusted``: ``step`` without validating and merging
        the gradient, bitwise the same update)."""
        reg, opt = self._reg, self.optimizer_
        opt._begin_trusted()
        step_trusted = opt._step_trusted
        before_step, after_step = reg.before_step, reg.after_step
        lr_factor, intercept_factor = reg.lr_factor, reg.intercept_factor
        at, run = schedule.at, schedule.run
        gradient, model, flush_threads = batches.gradient, batches.model, batches.flush_threads
        scratch = batches.scratch
        rows, G = scratch.rows, scratch.G
        intercept = self._intercept_row
        n_steps = batches.steps
        ftrl = getattr(self, "_ftrl_l1l2", None)
        loss_sum = 0.0
        for step, (start, stop) in enumerate(batches):
            if scratch.G is not G:  # pragma: no cover - the scratch only grows in new_epoch
                rows, G = scratch.rows, scratch.G
            t = self.t_
            eta = at(t + 1)
            penalty = before_step(t, run, n_steps - step, self._samples_seen, stop - start)
            m, batch_loss = gradient(start, stop, penalty)
            if intercept:
                c = intercept_factor(eta)
                if c != 1.0:
                    G[0] *= c  # the kernel puts the intercept's row first
            if ftrl is not None:
                self._ftrl_penalty(opt, ftrl)
            step_trusted(rows[:m], G[:m], eta * lr_factor(eta))
            self.t_ = t + 1
            self._samples_seen += stop - start
            after_step(model, eta, t + 1, flush_threads)
            loss_sum += batch_loss
        return loss_sum

    @staticmethod
    def _ftrl_penalty(opt, l1l2: Tuple[float, float]) -> None:
        """Set FTRL's ``l1`` / ``l2`` for its next step: ``alpha * l1_ratio`` and
        ``alpha * (1 - l1_ratio)`` times the number of steps its state will have absorbed.

        FTRL's weights minimise the *sum* of the steps' linearised losses plus its penalty
        once; scikit-learn's objective adds the penalty to the *mean* loss, and every step's
        gradient is a mean over its mini-batch. So the penalty that matches ``alpha`` grows with
        the steps taken: with ``t`` steps, ``t * alpha * R(w)`` against ``t`` summed mean
        gradients (the paper's convention: ``l2`` is the coefficient of ``||w||**2 / 2``, as
        in scikit-learn)."""
        st = opt.state[opt._keys[0]]
        t = st.get("step", 0) + 1
        group = opt.param_groups[0]
        group["l1"] = l1l2[0] * t
        group["l2"] = l1l2[1] * t

    def _ftrl_objective_penalty(self) -> float:
        """scikit-learn's penalty of the feature weights with ``optimizer="ftrl"`` (which
        applies it itself; the lazy regulariser's part is 0 then), else 0."""
        l1l2 = getattr(self, "_ftrl_l1l2", None)
        if l1l2 is None:
            return 0.0
        Wf = self._W[:self._n_feat]
        return 0.5 * l1l2[1] * float(np.vdot(Wf, Wf)) + l1l2[0] * float(np.abs(Wf).sum())

    def _finish_average(self) -> None:
        self._W_avg = self._reg.averaged(self._W)

    def _warm_start_state(self, coef_init, intercept_init):
        """``(coef_init, intercept_init, state_from)`` for ``fit``. With ``warm_start`` and a
        fitted model: the previous solution (the averaged one with ``average``, as
        scikit-learn), and, when the model kept its optimizer (a ``warm_start`` fit or
        ``partial_fit``) of the same kind and its table is dense, that optimizer: training
        then continues from a copy of its state (``state_from``, when the new data has the
        same layout; ``_fit_epochs`` decides), else from the copy of the coefficients with a
        fresh optimizer. An explicit ``coef_init`` starts afresh."""
        fitted = getattr(self, "_W", None) is not None or \
            getattr(self, "_coef_sparse", None) is not None
        if not (self.warm_start and fitted) or coef_init is not None:
            return coef_init, intercept_init, None
        self._check_layout()
        coef = self.coef_
        coef = coef.toarray() if sp.issparse(coef) else np.array(coef)
        intercept = np.array(self.intercept_) if intercept_init is None else intercept_init
        opt = getattr(self, "optimizer_", None)
        # the state carries over only from the optimizer of this very table
        if (opt is not None and self._coef_sparse is None and intercept_init is None
                and getattr(self, "_optimizer_kind", None) == self._optimizer_setting()
                and bool(self.fit_intercept) == self._intercept_row
                and getattr(opt, "params", None) and opt.params[0] is self._W):
            return coef, intercept, opt
        return coef, intercept, None


def _check_fitted_array(name: str, arr: Any, shape: Tuple[int, ...], dtype) -> None:
    """A fitted array the kernels or SciPy read: an ndarray of the recorded shape, float32 or
    float64 (or exactly ``dtype``)."""
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array, got {type(arr).__name__}; call fit "
                         "again")
    ok_dtype = arr.dtype == dtype if dtype is not None else arr.dtype in (np.float32,
                                                                          np.float64)
    if arr.shape != shape or not ok_dtype:
        raise ValueError(f"{name} has shape {arr.shape} and dtype {arr.dtype}, but the fitted "
                         f"model needs shape {shape}"
                         + (f" and dtype {np.dtype(dtype)}" if dtype is not None else "")
                         + "; it was replaced after fit (call fit again)")
