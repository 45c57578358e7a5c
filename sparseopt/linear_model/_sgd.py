"""``SGDClassifier`` and ``SGDRegressor``: scikit-learn's linear SGD estimators, with
scikit-learn's parameters and objective, trained in mini-batches by sparseopt's lazy Adam,
Adagrad or RMSprop (or plain SGD)."""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.extmath import softmax
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import column_or_1d

from .. import _validation as V
from .._kernels import _linear
from .._sklearn import fit_guard, validate_data
from ._base import DEFAULT_ALPHA, DEFAULT_TOL, BaseSGD

_ACCEPT_SPARSE = ["csr"]  # CSC, COO, ... are converted
_DTYPES = [np.float64, np.float32]

_SHARED_DOC = """    penalty : {'l2', 'l1', 'elasticnet', None}, default='l2'
        The regulariser of scikit-learn's objective (see ``alpha``). It is applied lazily and
        exactly as a proximal step after every optimizer step: each coefficient (never the
        intercept) follows the penalty's flow for the step's rate times the step multiplier
        the optimizer gives that coefficient (1 for 'sgd'; ``1/(sqrt(G)+eps)`` for Adagrad and
        the like), so ``alpha`` weighs against the loss as it does in scikit-learn whatever
        the optimizer. A coefficient receives the steps it missed when a mini-batch next
        touches it, and all are brought up to date at the end of every epoch and call, so
        ``coef_`` is exactly what applying the step to every coefficient at every step would
        give (up to rounding): see ``sparseopt/linear_model/_lazy.py``.
    alpha : float, default=5e-6
        Regularisation strength, on scikit-learn's objective: the mean over the samples of
        the loss (times the sample and class weights) plus ``alpha * (l1_ratio * |w|_1 +
        (1 - l1_ratio) / 2 * |w|_2**2)`` (``alpha/2 |w|^2`` for 'l2', ``alpha |w|_1`` for
        'l1'), so a value tuned for scikit-learn transfers. Also sets the 'optimal' schedule
        of 'sgd'. The default is smaller than scikit-learn's 1e-4: chosen on real text,
        tabular and regression data, where 1e-4 over-regularises wide sparse problems (up to
        0.05 ROC-AUC lost on hashed text with 2**20 columns); pass ``alpha=1e-4`` for
        scikit-learn's.
    l1_ratio : float, default=0.15
        Elastic-net mixing (0 = L2, 1 = L1); used with ``penalty='elasticnet'``.
    fit_intercept : bool, default=True
        Learn an (unpenalised) intercept, stored as one more row of the weight table.
    max_iter : int, default=1000
        Maximum number of epochs of ``fit`` (``partial_fit`` makes one).
    tol : float or None, default=1e-2
        Training stops when the epoch's objective (the sample-weighted mean loss, measured
        during the epoch as scikit-learn does, plus ``alpha`` times the penalty of the
        weights at its end; ``verbose`` prints it) has not improved on its best by ``tol``
        for ``n_iter_no_change`` epochs in a row (with ``early_stopping``: the validation
        score). ``learning_rate='adaptive'`` then divides its rate by 5 instead, until the
        rate falls below 1e-6. ``None`` runs ``max_iter`` epochs. The default is larger than
        scikit-learn's 1e-3: on real data the held-out score stops improving long before the
        training objective does, so 1e-2 reaches the same scores in about half the epochs.
    shuffle : bool, default=True
        Shuffle the samples before every epoch.
    verbose : int, default=0
        Print per-epoch progress.
    random_state : int, RandomState instance, numpy Generator or None, default=None
        Seeds the shuffling and the validation split: an int in [0, 2**32) gives the same
        model on every call; a RandomState or Generator is drawn from (and advanced).
    learning_rate : {'optimal', 'constant', 'invscaling', 'adaptive'}, default=%(lr_default)r
        scikit-learn's schedules, for step ``k`` (a mini-batch; 1-based, counted since
        ``fit`` started, ``partial_fit`` continues): 'constant' ``eta0``; 'invscaling'
        ``eta0 / k**power_t``; 'adaptive' ``eta0``, divided by 5 each time ``tol`` stops
        being met for ``n_iter_no_change`` epochs (training stops when it falls below 1e-6);
        'optimal' ``1 / (alpha * (t0 + k - 1))`` with ``t0`` from Bottou's heuristic as in
        scikit-learn (the first rate is ``alpha**-0.25`` for the usual losses), and with an
        adaptive optimizer its own base rate (see ``eta0``) times the same decay
        ``t0 / (t0 + k - 1)``. With 'sgd' the rate is the step size of the batch's mean
        gradient (with ``batch_size=1`` scikit-learn's per-sample steps), with the adaptive
        optimizers their ``lr``.
    eta0 : float, default=0.01
        The base rate of 'constant', 'invscaling' and 'adaptive' (unused by 'optimal'), on
        plain SGD's scale for every optimizer, so a value or grid written for scikit-learn
        transfers: 'sgd' steps at ``eta0`` (scikit-learn's rate); an adaptive optimizer runs
        at ``lr = base * sqrt(eta0 / 0.01)``, its own base rate (0.3 'adagrad', 0.05 'adam'
        and 'rmsprop'; also the first rate of 'optimal') at scikit-learn's default 0.01. Its
        steps are normalised by the gradients' history, so its useful range of rates is far
        narrower than plain SGD's, and the square root compresses the usual grid 1e-3 .. 1
        to 0.32 .. 10 times the base rate (``linear_model.optimizer_rate``;
        ``eta0_for_rate`` is the inverse). None means 0.01.
    power_t : float, default=%(power_t_default)r
        Exponent of 'invscaling' (>= 0).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the training data (stratified for classifiers)
        and stop when its score stops improving.
    validation_fraction : float, default=0.1
    n_iter_no_change : int, default=5
        Epochs without improvement (by ``tol``) before stopping or, with 'adaptive', before
        the rate is divided by 5.
    warm_start : bool, default=False
        ``fit`` starts from the previous solution (the averaged one with ``average``), as in
        scikit-learn, and ``t_`` (the schedule) restarts. The optimizer state is kept after
        ``fit`` only with ``warm_start=True`` (or after ``partial_fit``), and a warm-started
        ``fit`` continues from it; without it ``fit`` releases the state at its end, so the
        fitted model (and its pickle) holds only the coefficients.
    average : bool or int, default=False
        ``True``: ``coef_``/``intercept_`` are the average of the weights after every step
        (Polyak-Ruppert); an int ``n`` starts averaging at the step that sees the ``n``-th
        sample. Lazy and exact like the penalty (with an adaptive optimizer and a penalty,
        catching a coefficient up costs one flow evaluation per step it missed).
    optimizer : {'adagrad', 'adam', 'rmsprop', 'sgd', 'ftrl'}, default='adagrad'
        The update rule: sparseopt's lazy ``Adagrad``, ``Adam`` or ``RMSprop`` (untouched
        coefficients and their optimizer state stay unchanged, ``lazy='frozen'``), or plain
        mini-batch SGD (scikit-learn's updates for ``batch_size=1``). Adagrad is the default:
        per-feature step sizes suit sparse features (Duchi et al., 2011; McMahan et al.,
        2013), it keeps one state table where Adam keeps two plus a counter per feature, and
        it is the fastest of the three per step. Plain SGD takes the mean gradient of a batch,
        so a feature seen once in a batch of 1024 moves 1024 times less than with per-sample
        SGD: on sparse data use a small ``batch_size`` with it.
        ``'ftrl'``: FTRL-Proximal (``sparseopt.Ftrl``), which applies the penalty in its own
        update, so ``penalty='l1'`` or ``'elasticnet'`` gives coefficients that are exactly
        0: before its ``t``-th step FTRL's ``l1`` / ``l2`` are ``t * alpha * l1_ratio`` and
        ``t * alpha * (1 - l1_ratio)`` (its weights answer for the sum of ``t`` mean
        gradients), the intercept is not penalised, and it runs at a constant rate (with
        ``learning_rate='optimal'``, 0.3; ``eta0`` maps onto it as for the other adaptive
        optimizers). See ``docs/semantics.md``, "Penalty". ``alpha`` is the objective's,
        so with ``penalty='l1'`` the default 5e-6 keeps 0.1 to 0.76 of the coefficients on
        the real-data quality suite (ROC-AUC within 0.003 of the default model); for a
        sparser model pass ``alpha = c * l1_alpha_max(X, y)`` (the smallest alpha whose L1
        solution is all zeros): ``c = 1e-3`` kept 0.12 to 0.45 of them, for 0.001 to 0.01
        ROC-AUC, depending on the data (the user guide, "Choosing an optimizer", has the
        table); choose ``c`` on held-out data when the score matters at that level.
    batch_size : int or 'auto', default='auto'
        Samples per step; the gradient of a step is their (sample-weighted) mean. 'auto' aims
        at about 128 steps per epoch, with at most 1024 and (unless the data is tiny) at
        least 8 samples per step.
    beta1, beta2 : float, default=0.9, 0.999
        Adam's moment decay rates.
    rho : float, default=0.99
        RMSprop's smoothing constant (``alpha`` of ``torch.optim.RMSprop``).
    eps : float or None, default=None
        The optimizer's epsilon; ``None`` keeps its default (1e-8 Adam/RMSprop, 1e-10
        Adagrad).
    n_threads : int or None, default=None
        Threads for large batches (the kernels run one thread on small ones); ``None``
        follows %(threads_default)s. At most four per available core (a ValueError above).
        Results do not depend on it.
    optimizer_params : dict or None, default=None
        Further keyword arguments of the optimizer's class (``sparseopt.Adam``, ``Adagrad``,
        ``RMSprop``, ``Ftrl``), e.g. ``{"state_dtype": "bfloat16", "rounding":
        "stochastic"}`` (half-size moments) or ``{"rowwise": "v"}``. Keys that the
        estimator's own parameters decide (``lr``, ``betas``, ``eps``, ``alpha`` of RMSprop,
        FTRL's ``l1`` / ``l2``, ...) and unknown keys are refused, as is any key with
        ``optimizer='sgd'``. With an L1/L2 penalty (``alpha > 0``) the lazy penalty reads the
        optimizer's per-coefficient state under its default rule, so only keys that keep it
        are accepted then (e.g. ``weight_decay``); the others need ``penalty=None``. A
        ``partial_fit`` or warm start with other ``optimizer_params`` starts a new optimizer.
"""

_ATTRIBUTES_DOC = """    n_iter_ : int
        Epochs run by the last ``fit`` (1 after ``partial_fit``).
    t_ : int
        Optimizer steps (mini-batches) since training started (``fit`` restarts it).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when X has string column names.
    optimizer_ : sparseopt.Adam, Adagrad, RMSprop, sparseopt.optim.SGD or None
        The optimizer, whose single parameter ``'coef'`` is the feature-major weight table;
        kept after ``partial_fit`` and after ``fit`` with ``warm_start=True``, ``None`` after
        any other ``fit`` and after ``sparsify()``.
"""


_THREADS_DEFAULT = {
    "SGDClassifier": "``n_jobs`` when it is set (as in joblib: -1 is every available core, "
                     "-2 all but one, ...), else OpenMP's default and threadpoolctl",
    "SGDRegressor": "OpenMP's default and threadpoolctl",
}


def _fill_doc(cls):
    kw = cls.__init__.__kwdefaults__
    shared = _SHARED_DOC % dict(lr_default=kw["learning_rate"], power_t_default=kw["power_t"],
                                threads_default=_THREADS_DEFAULT[cls.__name__])
    cls.__doc__ = cls.__doc__.replace("    %(shared)s\n", shared).replace(
        "    %(attributes)s\n", _ATTRIBUTES_DOC)
    return cls


def _prepare_training_data(est, X, y, reset):
    """Checked X (dense C-ordered or CSR, float32 kept) and y; a malformed sparse X or y is
    refused before scikit-learn's conversions see it."""
    X, y = validate_data(est, X, y, accept_sparse=_ACCEPT_SPARSE, dtype=_DTYPES,
                         order="C", accept_large_sparse=True, reset=reset)
    return X, y


@_fill_doc
class SGDClassifier(ClassifierMixin, BaseSGD):
    """Linear classifier (logistic regression, linear SVM, ...) trained in mini-batches by a
    lazy adaptive optimizer.

    A drop-in for ``sklearn.linear_model.SGDClassifier`` on large sparse data (text, clicks):
    weights are stored feature-major, ``(n_features, n_outputs)``, so a step reads and writes
    only the features present in its mini-batch, and the optimizer is sparseopt's lazy
    ``Adam`` (Kingma & Ba, 2015), ``Adagrad`` (Duchi et al., 2011) or ``RMSprop``.

    Parameters
    ----------
    loss : {'hinge', 'log_loss', 'modified_huber', 'squared_hinge', 'perceptron', \
'squared_error', 'huber', 'epsilon_insensitive', 'squared_epsilon_insensitive'}, \
default='hinge'
        scikit-learn's losses with its meanings: the regression losses fit the targets +1/-1.
        'log_loss' is logistic regression, **multinomial** (softmax) with more than two
        classes, where scikit-learn fits one-vs-rest; the others are one-vs-rest with more
        than two classes (one output per class, trained together). ``predict_proba`` needs
        'log_loss' or 'modified_huber'.
    %(shared)s
    epsilon : float, default=0.1
        Width of the 'huber', 'epsilon_insensitive' and 'squared_epsilon_insensitive' losses.
    class_weight : dict, 'balanced' or None, default=None
        Weights per class (finite numbers), multiplied into the sample weights (every output
        of a sample gets its class's weight), as in scikit-learn. 'balanced' uses
        ``n_samples / (n_classes * bincount(y))`` of the training data of ``fit``.
    n_jobs : int or None, default=None
        scikit-learn's parallelism parameter, here the number of threads when ``n_threads``
        is None (``n_threads`` takes precedence): -1 is every available core, -2 all but
        one, and so on. ``None`` leaves the choice to ``n_threads``'s default. Results do not
        depend on it.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        A view of the weight table (averaged weights with ``average``); a ``scipy.sparse``
        matrix after ``sparsify()``.
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray of shape (n_classes,)
    %(attributes)s

    Notes
    -----
    float32 X keeps float32 weights and optimizer state. Dense, CSR, CSC and COO X are
    accepted (converted to CSR once per call; a feature whose value is 0 in every row of a
    batch is not touched by that step). One fused Cython kernel computes the margins, loss
    derivatives and the row gradient ``X_batch.T @ (dloss * w) / batch_size`` of a batch
    (``sparseopt/_kernels/_linear.pyx``). Sample weights times class weights count as given,
    as in scikit-learn (they weigh the loss against ``alpha``); a weight above 1e15 in
    magnitude is refused. Every method checks a sparse ``X`` (indices, index pointers) before
    SciPy or a kernel reads it, and the fitted attributes (weights, ``coef_``,
    ``intercept_``, ``classes_``) against the shapes recorded at fit; ``fit`` and
    ``partial_fit`` run one at a time per estimator and leave it unchanged when they raise on
    bad input. The penalty and averaging are lazy and exact: see
    ``sparseopt/linear_model/_lazy.py``. ``docs/semantics.md`` ("Estimators") maps every
    scikit-learn parameter. Results do not depend on ``n_threads``.

    Examples
    --------
    >>> import numpy as np
    >>> from sparseopt.linear_model import SGDClassifier
    >>> X = np.array([[-1., -1.], [-2., -1.], [1., 1.], [2., 1.]])
    >>> y = np.array([0, 0, 1, 1])
    >>> clf = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    >>> clf.predict([[-0.8, -1.], [1.5, 0.8]])
    array([0, 1])
    """

    _LOSSES = {
        "hinge": ("hinge", 1.0),
        "perceptron": ("hinge", 0.0),
        "squared_hinge": ("squared_hinge", 1.0),
        "log_loss": ("log", 0.0),
        "modified_huber": ("modified_huber", 0.0),
        # scikit-learn's classifier also fits the +1/-1 targets with the regression losses
        "squared_error": ("squared", 0.0),
        "huber": ("huber", "epsilon"),
        "epsilon_insensitive": ("epsilon_insensitive", "epsilon"),
        "squared_epsilon_insensitive": ("squared_epsilon_insensitive", "epsilon"),
    }

    def __init__(self, loss="hinge", *, penalty="l2", alpha=DEFAULT_ALPHA,
                 l1_ratio=0.15, fit_intercept=True, max_iter=1000, tol=DEFAULT_TOL, shuffle=True,
                 verbose=0, epsilon=0.1, n_jobs=None, random_state=None, learning_rate="optimal",
                 eta0=0.01, power_t=0.5, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=5, class_weight=None, warm_start=False, average=False,
                 optimizer="adagrad", batch_size="auto", beta1=0.9, beta2=0.999, rho=0.99,
                 eps=None, n_threads=None, optimizer_params=None):
        super().__init__(loss, penalty=penalty, alpha=alpha, l1_ratio=l1_ratio,
                         fit_intercept=fit_intercept, max_iter=max_iter, tol=tol,
                         shuffle=shuffle, verbose=verbose, epsilon=epsilon,
                         random_state=random_state, early_stopping=early_stopping,
                         validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, warm_start=warm_start,
                         average=average, learning_rate=learning_rate, eta0=eta0,
                         power_t=power_t, optimizer=optimizer, batch_size=batch_size,
                         beta1=beta1, beta2=beta2, rho=rho, eps=eps, n_threads=n_threads,
                         optimizer_params=optimizer_params)
        self.n_jobs = n_jobs
        self.class_weight = class_weight

    def _thread_request(self):
        """``n_threads`` when set, else ``n_jobs`` (joblib's convention), else None."""
        if self.n_threads is not None:
            return V.check_n_threads(self.n_threads, "n_threads")
        return V.check_n_jobs(self.n_jobs)

    # -- targets -----------------------------------------------------------------------------

    def _n_outputs(self) -> int:
        return 1 if len(self.classes_) == 2 else len(self.classes_)

    def _check_params(self):
        params = super()._check_params()
        cw = self.class_weight
        if cw is None or (isinstance(cw, str) and cw == "balanced"):
            return params
        if not isinstance(cw, Mapping):
            raise ValueError(f"class_weight must be a dict, 'balanced' or None; got {cw!r}")
        for label, weight in cw.items():
            if isinstance(weight, np.ndarray) and weight.ndim == 0:
                weight = weight.item()
            if isinstance(weight, (bool, np.bool_)) or not isinstance(weight, numbers.Real) \
                    or not math.isfinite(weight):
                raise ValueError(f"class_weight[{label!r}] must be a finite real number, got "
                                 f"{weight!r}")
        return params

    def _check_layout(self, training=False):
        classes = getattr(self, "classes_", None)
        if not isinstance(classes, np.ndarray) or classes.ndim != 1 or classes.shape[0] < 2:
            raise ValueError(f"classes_ must be a 1-D array of at least 2 classes, got "
                             f"{classes!r}; it was replaced after fit (call fit again)")
        sparse_coef = getattr(self, "_coef_sparse", None)
        table = sparse_coef if sparse_coef is not None else getattr(self, "_W", None)
        shape = getattr(table, "shape", ())
        fitted = (shape[0] if table is sparse_coef else shape[1]) if len(shape) == 2 else None
        if fitted is not None and fitted != self._n_outputs():
            raise ValueError(
                f"classes_ ({len(classes)} classes, so {self._n_outputs()} output(s)) does not "
                f"match the fitted weights ({fitted} output(s)): one of them was replaced "
                "after fit; call fit again")
        super()._check_layout(training)

    def _loss_args(self, params):
        loss_id, arg = super()._loss_args(params)
        if self.loss == "log_loss" and self._n_outputs() > 1:
            return _linear.LOSSES["softmax"], 0.0  # multinomial, not one-vs-rest
        return loss_id, arg

    def _encode(self, y):
        """Class index per sample (ValueError for unknown labels)."""
        idx = np.searchsorted(self.classes_, y)
        idx = np.clip(idx, 0, len(self.classes_) - 1)
        bad = self.classes_[idx] != y
        if np.any(bad):
            raise ValueError(
                f"y contains labels not in classes {self.classes_.tolist()}: "
                f"{np.unique(np.asarray(y)[bad])[:5].tolist()}")
        return idx

    def _kernel_targets(self, idx):
        if len(self.classes_) == 2:
            return np.where(idx == 1, 1.0, -1.0)
        return idx.astype(np.float64)

    def _class_weights(self, y_idx, for_partial_fit):
        cw = self.class_weight
        if cw is None:
            return np.ones(len(self.classes_))
        if isinstance(cw, str):
            if cw != "balanced":
                raise ValueError(f"class_weight must be a dict, 'balanced' or None; got {cw!r}")
            if for_partial_fit:
                raise ValueError(
                    "class_weight 'balanced' is not supported for partial_fit. In order to "
                    "use 'balanced' weights, use compute_class_weight('balanced', "
                    "classes=classes, y=y). In place of y you can use a large enough sample "
                    "of the full training set target to properly estimate the class "
                    "frequency distributions. Pass the resulting weights as the class_weight "
                    "parameter.")
        return compute_class_weight(cw, classes=self.classes_, y=self.classes_[y_idx])

    def _weights(self, X, y_idx, sample_weight, for_partial_fit):
        """sample_weight times the class weight of each sample (finite, checked)."""
        sw = V.check_sample_weight(sample_weight, X.shape[0])
        with np.errstate(over="ignore", invalid="ignore"):
            w = sw * self._class_weights(y_idx, for_partial_fit)[y_idx]
        if not np.isfinite(w).all():
            raise ValueError("sample_weight times class_weight overflows float64; rescale "
                             "them (only their ratios matter)")
        return w

    def _weight_label(self) -> str:
        return "sample_weight" if self.class_weight is None else \
            "sample_weight times class_weight"

    # -- fit ---------------------------------------------------------------------------------

    @fit_guard
    def fit(self, X, y, coef_init=None, intercept_init=None, sample_weight=None):
        """Fit the model with up to ``max_iter`` epochs of mini-batch steps.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        coef_init : ndarray of shape (n_classes, n_features), optional
        intercept_init : ndarray of shape (n_classes,), optional
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        params = self._check_params()
        coef_init, intercept_init, state_from = self._warm_start_state(coef_init,
                                                                       intercept_init)
        X, y = _prepare_training_data(self, X, y, reset=True)
        check_classification_targets(y)
        self.classes_ = np.unique(y)
        if len(self.classes_) < 2:
            raise ValueError(
                "The number of classes has to be greater than one; got "
                f"{len(self.classes_)} class")
        y_idx = self._encode(y)
        sw = self._weights(X, y_idx, sample_weight, False)
        return self._fit_epochs(X, y, self._kernel_targets(y_idx), sw, params, coef_init,
                                intercept_init, strata=y_idx, state_from=state_from)

    @fit_guard
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch of mini-batch steps over the given samples, continuing training.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), optional
            Every class; required on the first call.
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        first = not hasattr(self, "classes_")
        params = self._check_params()
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if not first:
            self._check_continue()
        X, y = _prepare_training_data(self, X, y, reset=first)
        check_classification_targets(y)
        if first:
            self.classes_ = np.unique(column_or_1d(np.asarray(classes)))
            if len(self.classes_) < 2:
                raise ValueError(
                    "The number of classes has to be greater than one; got "
                    f"{len(self.classes_)} class")
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(
                f"`classes={np.unique(classes)!r}` is not the same as on last call to "
                f"partial_fit, was: {self.classes_!r}")
        y_idx = self._encode(y)
        sw = self._weights(X, y_idx, sample_weight, True)
        return self._partial_fit_epoch(X, self._kernel_targets(y_idx), sw, params, first)

    # -- prediction --------------------------------------------------------------------------

    def decision_function(self, X):
        """Confidence scores: signed distance to the hyperplane (binary: shape (n_samples,)),
        else one column per class."""
        scores = self._decision(X)
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, X):
        """Predicted class labels."""
        scores = self._decision(X)
        if scores.shape[1] == 1:
            return self.classes_[(scores[:, 0] > 0).astype(int)]
        return self.classes_[scores.argmax(axis=1)]

    def _check_proba(self):
        if self.loss not in ("log_loss", "modified_huber"):
            raise AttributeError(
                f"probability estimates are not available for loss={self.loss!r}")
        return True

    @available_if(_check_proba)
    def predict_proba(self, X):
        """Class probabilities: the logistic / softmax of the scores for 'log_loss'; for
        'modified_huber', ``(clip(score, -1, 1) + 1) / 2`` normalised over classes (as
        scikit-learn)."""
        scores = self._decision(X).astype(np.float64, copy=False)
        if self.loss == "log_loss":
            if scores.shape[1] == 1:
                p1 = 0.5 * (1.0 + np.tanh(0.5 * scores[:, 0]))
                return np.column_stack([1.0 - p1, p1])
            return softmax(scores.copy())
        if scores.shape[1] == 1:
            p1 = (np.clip(scores[:, 0], -1, 1) + 1) / 2.0
            return np.column_stack([1.0 - p1, p1])
        prob = (np.clip(scores, -1, 1) + 1) / 2.0
        norm = prob.sum(axis=1)
        zero = norm == 0
        prob[zero] = 1.0
        norm[zero] = prob.shape[1]
        return prob / norm[:, None]

    @available_if(_check_proba)
    def predict_log_proba(self, X):
        """Log of ``predict_proba`` (computed stably for 'log_loss')."""
        if self.loss == "log_loss":
            scores = self._decision(X).astype(np.float64, copy=False)
            if scores.shape[1] == 1:
                s = scores[:, 0]
                return np.column_stack([-np.logaddexp(0, s), -np.logaddexp(0, -s)])
            mx = scores.max(axis=1, keepdims=True)
            return scores - mx - np.log(np.exp(scores - mx).sum(axis=1, keepdims=True))
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


@_fill_doc
class SGDRegressor(RegressorMixin, BaseSGD):
    """Linear regression (least squares, Huber, epsilon-insensitive) trained in mini-batches by
    a lazy adaptive optimizer; a drop-in for ``sklearn.linear_model.SGDRegressor`` on large
    sparse data. See ``SGDClassifier`` for the design.

    Parameters
    ----------
    loss : {'squared_error', 'huber', 'epsilon_insensitive', \
'squared_epsilon_insensitive'}, default='squared_error'
    %(shared)s
    epsilon : float, default=0.1
        Width of the Huber and epsilon-insensitive losses.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
        A view of the weight table (averaged weights with ``average``); a ``scipy.sparse``
        matrix of shape (1, n_features) after ``sparsify()``.
    intercept_ : ndarray of shape (1,)
    %(attributes)s

    Examples
    --------
    >>> import numpy as np
    >>> from sparseopt.linear_model import SGDRegressor
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 3))
    >>> y = X @ [1.0, -2.0, 0.5] + 3.0
    >>> reg = SGDRegressor(random_state=0, tol=None, max_iter=300).fit(X, y)
    >>> np.round(reg.coef_, 1), np.round(reg.intercept_, 1)
    (array([ 1. , -2. ,  0.5]), array([3.]))
    """

    _LOSSES = {
        "squared_error": ("squared", 0.0),
        "huber": ("huber", "epsilon"),
        "epsilon_insensitive": ("epsilon_insensitive", "epsilon"),
        "squared_epsilon_insensitive": ("squared_epsilon_insensitive", "epsilon"),
    }

    def __init__(self, loss="squared_error", *, penalty="l2", alpha=DEFAULT_ALPHA,
                 l1_ratio=0.15, fit_intercept=True, max_iter=1000, tol=DEFAULT_TOL, shuffle=True,
                 verbose=0, epsilon=0.1, random_state=None, learning_rate="invscaling", eta0=0.01,
                 power_t=0.25, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=5, warm_start=False, average=False, optimizer="adagrad",
                 batch_size="auto", beta1=0.9, beta2=0.999, rho=0.99, eps=None,
                 n_threads=None, optimizer_params=None):
        super().__init__(loss, penalty=penalty, alpha=alpha, l1_ratio=l1_ratio,
                         fit_intercept=fit_intercept, max_iter=max_iter, tol=tol,
                         shuffle=shuffle, verbose=verbose, epsilon=epsilon,
                         random_state=random_state, early_stopping=early_stopping,
                         validation_fraction=validation_fraction,
                         n_iter_no_change=n_iter_no_change, warm_start=warm_start,
                         average=average, learning_rate=learning_rate, eta0=eta0,
                         power_t=power_t, optimizer=optimizer, batch_size=batch_size,
                         beta1=beta1, beta2=beta2, rho=rho, eps=eps, n_threads=n_threads,
                         optimizer_params=optimizer_params)

    def _n_outputs(self) -> int:
        return 1

    def _coef_view(self, Wf):
        return Wf[:, 0]

    @fit_guard
    def fit(self, X, y, coef_init=None, intercept_init=None, sample_weight=None):
        """Fit the model with up to ``max_iter`` epochs of mini-batch steps.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        coef_init : ndarray of shape (n_features,), optional
        intercept_init : ndarray of shape (1,), optional
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        params = self._check_params()
        coef_init, intercept_init, state_from = self._warm_start_state(coef_init,
                                                                       intercept_init)
        X, y = _prepare_training_data(self, X, y, reset=True)
        y = np.asarray(y, dtype=np.float64)
        sw = V.check_sample_weight(sample_weight, X.shape[0])
        return self._fit_epochs(X, y, y, sw, params, coef_init, intercept_init,
                                state_from=state_from)

    @fit_guard
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch of mini-batch steps over the given samples, continuing training.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        first = not hasattr(self, "_W")
        params = self._check_params()
        if not first:
            self._check_continue()
        X, y = _prepare_training_data(self, X, y, reset=first)
        y = np.asarray(y, dtype=np.float64)
        sw = V.check_sample_weight(sample_weight, X.shape[0])
        return self._partial_fit_epoch(X, y, sw, params, first)

    def predict(self, X):
        """Predicted targets, shape (n_samples,)."""
        return self._decision(X)[:, 0]
