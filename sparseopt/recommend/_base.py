"""``BaseRecommender``: what every user x item model shares, whatever its tables hold.

A model subclasses it, keeps its hyper-parameters in ``__init__`` (scikit-learn's rule: store
them unchanged, check them in ``fit``) and implements the hooks listed in the class
docstring; the base owns the public calls (``fit``, ``partial_fit``, ``predict``,
``recommend``, ``similar_items``, ``score``) and their checks, the epoch loop, ``eval_set``
and ``verbose``. Needs scikit-learn (``BaseEstimator`` gives ``get_params`` / ``set_params``
/ ``clone`` / repr).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from .. import _utils
from .. import _validation as V
from .._kernels import _coalesce
from .._sklearn import fit_guard, serialised
from .._utils import check_random_state, threads_for
from ..optim import RowGrad
from . import _serving
from . import metrics as _metrics
from ._interactions import SeenItems, interactions_input
from ._training import Stopping, optimizer_step, print_epoch, run_epochs

__all__ = ["BaseRecommender"]


def _split_entries(X: sp.csr_matrix, fraction: float, rng: np.random.Generator
                   ) -> Tuple[sp.csr_matrix, sp.csr_matrix]:
    """``X``'s stored entries split at random into a training and a validation matrix of
    ``X``'s shape, ``round(fraction * nnz)`` of them (at least one) in the second; the
    entries keep their values (explicit zeros included) and their order."""
    n = X.nnz
    n_valid = max(1, int(round(fraction * n)))
    if n_valid >= n:
        raise ValueError(f"validation_fraction={fraction} of the {n} stored entries of X "
                         f"leaves no entry to train on")
    held = np.zeros(n, dtype=bool)
    held[rng.permutation(n)[:n_valid]] = True
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))

    def part(mask: np.ndarray) -> sp.csr_matrix:
        indptr = np.zeros(X.shape[0] + 1, dtype=X.indptr.dtype)
        np.cumsum(np.bincount(rows[mask], minlength=X.shape[0]), out=indptr[1:])
        return sp.csr_matrix((X.data[mask], X.indices[mask], indptr), shape=X.shape)

    return part(~held), part(held)

# The eval_set metric of implicit data, precision at _EVAL_K, is computed on at most
# _EVAL_USERS users with held-out items: a fixed sample (seed 0), so that evaluating every
# epoch stays cheap and the figures of successive epochs compare the same users.
_EVAL_USERS = 2000
_EVAL_K = 10


class BaseRecommender(BaseEstimator):
    """Base class of the recommenders trained on a users x items interaction matrix.

    It owns the calls every such model offers and the rules they follow; a subclass supplies
    its tables and its arithmetic through the hooks below.

    **Training.** ``fit(X)`` starts from scratch and makes ``n_epochs`` passes;
    ``partial_fit(X)`` makes one pass, initialising the model on its first call and
    continuing it (tables, optimizer state, random generator) afterwards. Both run under
    ``fit_guard`` (one call at a time per model; a call that raises leaves the attributes as
    they were) and check every input before any table changes. After each pass a dict is
    appended to ``history_`` (the hook's statistics, then ``epoch``, ``seconds``,
    ``rows_per_s``, ``eval``) and, with ``verbose``, printed.

    **Explicit or implicit data.** ``_implicit_feedback(params)`` says whether ``X`` holds
    ratings (stored values, duplicates refused) or positives (stored non-zeros, duplicates
    merged); it fixes how ``X`` is checked and which metric ``eval_set`` and :meth:`score`
    use:

    ============  ==================================================================
    explicit      RMSE of :meth:`predict` on the stored ratings
                  (``score`` returns minus the RMSE: higher is better)
    implicit      precision at 10 of :meth:`recommend` (training items excluded) on at
                  most 2000 users with held-out items (a fixed sample, seed 0)
    ============  ==================================================================

    **Serving.** :meth:`recommend` scores blocks of users as one dense product and keeps the
    top ``n`` per user (``_serving``); :meth:`similar_items` ranks items by the cosine of the
    vectors ``_item_vectors`` returns, :meth:`similar_users` users by ``_user_vectors``.

    **Input forms and raw ids.** Every training input goes through
    ``_interactions.interactions_input`` first: a users x items matrix (sparse, or dense),
    or columns of raw ids (a DataFrame with ``user`` / ``item`` / ``rating`` columns, or a
    tuple). Fitted on columns, the model keeps an ``IdEncoder`` for users and one for items
    (``user_ids_``, ``item_ids_``) and translates ids at the edge of every public call; the
    hooks only ever see row indices. Unknown ids raise ``UnknownIdError``.

    **Clipping.** An explicit model records ``rating_range_`` (lowest and highest training
    rating); a subclass with a ``clip_predictions`` parameter set to True has ``predict``
    (and what derives from it) clipped to it.

    Notes
    -----
    **Writing a model.** A subclass defines the hyper-parameters ``n_epochs``, ``learning_rate``,
    ``random_state``, ``n_threads`` and ``verbose`` (the base reads them) and implements:

    ``_check_params() -> dict``
        Every hyper-parameter checked; at least the keys of
        ``_common.check_training_params`` (``n_epochs``, ``lr``, ``verbose``, ...).
    ``_implicit_feedback(params) -> bool``
        See above.
    ``_init_tables(X, params)``
        Draw the tables from ``self._rng``, build ``self.optimizer_`` over them, record the
        layout ``_fitted`` checks against. ``self.n_users_`` / ``self.n_items_`` are set.
    ``_fitted(training=False)``
        The checked tables the kernels will read, as one object with at least ``n_users``,
        ``n_items`` and ``dtype``; raise ``ValueError`` naming an attribute that no longer
        matches its record (call :meth:`_check_fitted` first for the not-fitted error).
    ``_check_continue(params, fitted)``
        ``partial_fit`` on a fitted model: refuse parameters that cannot change.
    ``_training_data(X, params)``
        The checked ``X`` as the epoch hook takes it (built once per call).
    ``_epoch(data, params, fitted) -> dict``
        One shuffled pass; returns at least ``{"loss": mean training loss}``. Each
        mini-batch goes to the optimizer through :meth:`_step`.
    ``_predict_pairs(fitted, users, items) -> ndarray``
        The score of each (checked) pair.
    ``_scorer(fitted) -> callable``
        ``scores(users)``: the C-contiguous ``(len(users), n_items)`` scores of a block of
        users (called once per block of :meth:`recommend`; precompute in the hook).
    ``_item_vectors(fitted) -> ndarray``
        ``(n_items, d)`` vectors whose cosine :meth:`similar_items` ranks by.
    ``_user_vectors(fitted) -> ndarray``
        Optional: ``(n_users, d)`` vectors whose cosine :meth:`similar_users` ranks by.

    Optional: ``_stopping(params)`` returns a ``sparseopt._sklearn.Stopping`` to end ``fit`` early
    (default: never), and ``_tables`` names the table attributes (freed before a refit; the
    first one marks a fitted model). A model whose checked parameters hold
    ``early_stopping=True`` (with ``validation_fraction`` and ``n_iter_no_change``) gets
    validation-based early stopping in ``fit`` (see :meth:`fit`).

    Examples
    --------
    >>> from sklearn.base import clone
    >>> from sparseopt.recommend import MatrixFactorization
    >>> from sparseopt.recommend._base import BaseRecommender
    >>> mf = MatrixFactorization(n_components=4, random_state=0)
    >>> isinstance(mf, BaseRecommender), clone(mf).get_params()["n_components"]
    (True, 4)
    """

    _tables: Tuple[str, ...] = ("user_table_", "item_table_")
    # (users, items) IdEncoders of a model fitted on raw ids; None: ids are indices
    _id_encoders: Optional[Tuple[Any, Any]] = None

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    # -- hooks (see the class docstring) ---------------------------------------------------------

    def _check_params(self) -> Dict[str, Any]:
        raise NotImplementedError

    def _implicit_feedback(self, p: Dict[str, Any]) -> bool:
        raise NotImplementedError

    def _init_tables(self, X: sp.csr_matrix, p: Dict[str, Any]) -> None:
        raise NotImplementedError

    def _fitted(self, training: bool = False) -> Any:
        raise NotImplementedError

    def _check_continue(self, p: Dict[str, Any], st: Any) -> None:
        raise NotImplementedError

    def _training_data(self, X: sp.csr_matrix, p: Dict[str, Any]) -> Any:
        raise NotImplementedError

    def _epoch(self, data: Any, p: Dict[str, Any], st: Any) -> Dict[str, Any]:
        raise NotImplementedError

    def _predict_pairs(self, st: Any, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _scorer(self, st: Any) -> Callable[[np.ndarray], np.ndarray]:
        raise NotImplementedError

    def _item_vectors(self, st: Any) -> np.ndarray:
        raise NotImplementedError

    def _user_vectors(self, st: Any) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} does not define user vectors")

    def _stopping(self, p: Dict[str, Any]) -> Optional[Stopping]:
        return None

    def _check_features(self, X: sp.csr_matrix, p: Dict[str, Any], user_features: Any,
                        item_features: Any) -> Tuple[Any, Any]:
        if user_features is not None or item_features is not None:
            raise TypeError(f"{type(self).__name__} takes no side features")
        return None, None

    def _serving_state(self, user_features: Any, item_features: Any,
                       user_interactions: Any) -> Tuple[Any, Any]:
        """``(fitted, seen)``: the checked tables of a serving call and the interactions it
        excludes (a ``SeenItems`` or None). Without the cold-start arguments, the fitted
        model and its training interactions; a model with cold start overrides this."""
        if user_features is not None or item_features is not None or \
                user_interactions is not None:
            raise TypeError(f"{type(self).__name__} takes no side features or new users")
        return self._fitted(), self._seen

    # -- fitting -------------------------------------------------------------------------------

    @fit_guard
    def fit(self, X: Any, y: Any = None, *, eval_set: Any = None, user_features: Any = None,
            item_features: Any = None) -> "BaseRecommender":
        """Fit from scratch for ``n_epochs`` passes over ``X``.

        Parameters
        ----------
        X : scipy.sparse matrix, 2-D array, DataFrame or tuple of columns
            Ratings (explicit models) or positive interactions (implicit models), in one
            of two forms:

            * a users x items matrix: any SciPy sparse format (its structure is checked
              before use), or a dense array standing for the matrix of its non-zero
              entries. Stored values are the ratings, explicit zeros included; for an
              implicit model every stored non-zero is a positive, and a pair stored more
              than once is one positive (its entries are summed first). User and item
              ids are the row and column indices.
            * columns of raw ids: a pandas DataFrame with columns ``"user"``, ``"item"``
              and a value column ``"rating"`` (or ``"value"``; other columns are
              ignored), or a tuple ``(user_ids, item_ids, values)``. Ids are integers or
              strings (not floats, not missing). The model learns ``user_ids_`` and
              ``item_ids_`` (the distinct ids, sorted; a user's row is its position) and
              from then on every call takes and returns raw ids. Explicit models need
              the values and refuse a (user, item) pair given twice; implicit ones may
              leave the values out (every row one positive) and sum a repeated pair.
        y : None
            Ignored: present for scikit-learn's API (pipelines pass it). A matrix or
            columns here are refused: ``eval_set`` is keyword-only.
        eval_set : same forms as X, optional
            Held-out ratings or interactions of ``X``'s users and items (a matrix of the
            same shape, or columns whose ids are among ``X``'s), scored after every epoch
            (RMSE, or precision@10 with training items excluded) into ``history_``.
        user_features : scipy.sparse matrix (n_users, n_user_features), optional
        item_features : scipy.sparse matrix (n_items, n_item_features), optional
            Side features of the users / items, for the models that take them (see the
            model's documentation); ``None``: each user (item) is its own feature. Rows
            follow the model's user / item order (``user_ids_`` / ``item_ids_`` for raw
            ids).

        With ``early_stopping``, the validation set is ``eval_set`` when given, else
        ``validation_fraction`` of ``X``'s stored entries drawn at random (from the model's
        generator), which are then left out of training; after every epoch its metric is
        recorded as ``history_[-1]["validation"]``, training ends once it has not improved
        on its best for ``n_iter_no_change`` epochs (or after ``n_epochs``), and the tables
        are set back to those of the best epoch (``best_epoch_``). The optimizer state stays
        that of the last epoch run, as scikit-learn's MLP keeps its solver's. The global
        mean is that of the training part; ``recommend`` excludes all of ``X``.

        Returns
        -------
        self
        """
        p, X, E, encoders = self._check_call(X, y, eval_set, False, user_features,
                                             item_features)
        rng = check_random_state(self.random_state)
        X_fit, valid = X, None
        if p.get("early_stopping", False):
            if E is not None:
                valid = E
            else:  # drawn before the tables, so that a refused split changes nothing
                X_fit, valid = _split_entries(X, p["validation_fraction"], rng)
        for attr in self._tables:  # free the old tables before allocating the new ones
            self.__dict__.pop(attr, None)
        self.__dict__.pop("best_epoch_", None)  # set again only by early stopping
        self._init_model(X_fit, p, rng, encoders)
        self._train(X_fit, p, p["n_epochs"], E, valid)
        if X_fit is not X:  # the held-out entries are the user's too: never recommend them
            self._seen = SeenItems(X)
            self._record_rating_range(X)
        return self

    @fit_guard
    def partial_fit(self, X: Any, y: Any = None, *, eval_set: Any = None,
                    user_features: Any = None, item_features: Any = None
                    ) -> "BaseRecommender":
        """One pass over ``X``; the first call initialises the model from ``X``.

        Later calls must pass a matrix of the same shape, or (for a model first given raw
        ids) columns whose ids are all among ``user_ids_`` / ``item_ids_``: the tables do
        not grow, so an unknown id raises ``UnknownIdError`` and changes nothing (refit
        on all the data to add users or items). A matrix given to a model of raw ids is
        read by index (row ``r`` is ``user_ids_[r]``). The new interactions are added to
        those excluded by ``recommend`` (and, for implicit models, from the negatives),
        and widen ``rating_range_``. The optimizer state and the random generator carry
        over. ``X``, ``y``, ``eval_set`` and the side features follow the rules of
        :meth:`fit`; features left at ``None`` in a later call keep those of the earlier
        calls, and their number of columns cannot change.

        Returns
        -------
        self
        """
        if not hasattr(self, self._tables[0]):
            p, X, E, encoders = self._check_call(X, y, eval_set, False, user_features,
                                                 item_features)
            self._init_model(X, p, check_random_state(self.random_state), encoders)
        else:
            st = self._fitted(training=True)
            p, X, E, _ = self._check_call(X, y, eval_set, True, user_features, item_features)
            if X.shape != (st.n_users, st.n_items):
                raise ValueError(f"X has shape {X.shape}, the model was fitted on "
                                 f"({st.n_users}, {st.n_items})")
            self._check_continue(p, st)
            self._seen = self._seen.union(X)
            self._record_rating_range(X)
        self.optimizer_.lr = p["lr"]
        self._train(X, p, 1, E)
        return self

    def _check_call(self, X: Any, y: Any, eval_set: Any, fitted: bool = False,
                    user_features: Any = None, item_features: Any = None
                    ) -> Tuple[Dict[str, Any], sp.csr_matrix, Optional[sp.csr_matrix],
                               Optional[Tuple[Any, Any]]]:
        """The checks of a training call, all before anything changes: the parameters, then
        ``X``, the side features (rows of ``X``'s users and items) and ``eval_set`` (of
        ``X``'s users and items) by the rules the parameters choose. Returns ``(params, X, eval_set, encoders)``: the matrices checked, the
        encoders those of columns of raw ids (learnt from ``X``, or with ``fitted`` the
        model's own), else None."""
        p = self._check_params()
        if y is not None and (sp.issparse(y) or V.is_columns(y) or np.ndim(y) == 2):
            raise TypeError("fit's second argument y is ignored (scikit-learn's API); pass "
                            "held-out data as eval_set=...")
        implicit = self._implicit_feedback(p)
        if fitted:
            X = self._as_matrix("X", X, implicit)
            encoders = self._id_encoders
        else:
            X, *learnt = interactions_input("X", X, implicit)
            encoders = tuple(learnt) if learnt[0] is not None else None
        p["user_features"], p["item_features"] = self._check_features(
            X, p, user_features, item_features)
        if eval_set is None:
            return p, X, None, encoders
        E = self._as_matrix("eval_set", eval_set, implicit, encoders)
        if E.shape != X.shape:
            raise ValueError(f"eval_set has shape {E.shape}, X has shape {X.shape}")
        return p, X, E, encoders

    def _as_matrix(self, name: str, X: Any, implicit: Optional[bool] = None,
                   encoders: Any = "model") -> sp.csr_matrix:
        """``X`` (any form :meth:`fit` takes) as a checked matrix in this model's ids: columns
        of raw ids are encoded by ``encoders`` (default: the model's own), and refused when
        there are none (a model fitted on a matrix knows indices, not ids)."""
        if implicit is None:
            implicit = self._implicit
        if isinstance(encoders, str):
            encoders = self._id_encoders
        if V.is_columns(X) and encoders is None:
            raise TypeError(f"{name} is given as columns of ids, but the model was fitted on "
                            "a users x items matrix (its ids are row and column indices): "
                            "pass a matrix, or fit on columns")
        users, items = encoders if encoders is not None else (None, None)
        return interactions_input(name, X, implicit, users, items).X

    def _init_model(self, X: sp.csr_matrix, p: Dict[str, Any],
                    rng: np.random.Generator, encoders: Optional[Tuple[Any, Any]] = None
                    ) -> None:
        """The state of a new model: the subclass's tables, then what every model records.
        The generator is the model's from here on (initialisation, shuffling, sampling), so
        a seeded model trains to the same bits every time."""
        self._rng = rng
        self.n_users_, self.n_items_ = X.shape
        self._id_encoders = encoders
        if encoders is None:  # scikit-learn's record of a matrix's columns
            self.n_features_in_ = X.shape[1]
        else:
            self.__dict__.pop("n_features_in_", None)
        self._implicit = self._implicit_feedback(p)
        self.__dict__.pop("rating_range_", None)
        self._record_rating_range(X)
        self._init_tables(X, p)
        self._seen = SeenItems(X)
        self.history_: List[Dict[str, Any]] = []
        self.n_epochs_ = 0

    def _record_rating_range(self, X: sp.csr_matrix) -> None:
        """``rating_range_``: the lowest and highest training rating of an explicit model
        (the range its predictions are clipped to), widened by every ``partial_fit``."""
        if self._implicit or X.nnz == 0:
            return
        lo, hi = float(X.data.min()), float(X.data.max())
        if "rating_range_" in self.__dict__:
            old = V.check_rating_range(self.rating_range_)
            lo, hi = min(lo, old[0]), max(hi, old[1])
        self.rating_range_ = (lo, hi)

    def _train(self, X: sp.csr_matrix, p: Dict[str, Any], n_epochs: int,
               E: Optional[sp.csr_matrix], valid: Optional[sp.csr_matrix] = None) -> None:
        """``n_epochs`` passes over ``X``; with ``valid``, early stopping on its metric (see
        :meth:`fit`)."""
        st = self._fitted(training=True)
        data = self._training_data(X, p)
        best: Dict[str, Any] = {}

        def record(stats: Dict[str, Any], seconds: float, rows_per_s: float) -> float:
            self.n_epochs_ += 1
            # evaluated after the epoch's clock stopped: `seconds` is training time only
            stats.update(epoch=self.n_epochs_, seconds=seconds, rows_per_s=rows_per_s,
                         eval=self._evaluate(E) if E is not None else None)
            if valid is None:
                self.history_.append(stats)
                if p["verbose"]:
                    self._print(stats)
                return stats["loss"]
            metric = stats["eval"] if valid is E else self._evaluate(valid)
            stats["validation"] = metric
            self.history_.append(stats)
            if p["verbose"]:
                self._print(stats)
            # the value stopping minimises: RMSE, or minus the precision; NaN never improves
            value = metric if not self._implicit else -metric
            value = value if np.isfinite(value) else np.inf
            if not best or value <= best["value"]:  # a tie is no worse: Stopping's rule
                best.update(value=value, epoch=self.n_epochs_,
                            tables=[getattr(self, a).copy() for a in self._tables])
            return value

        stopping = Stopping(0.0, p["n_iter_no_change"]) if valid is not None else \
            self._stopping(p)
        def one_epoch() -> Dict[str, Any]:
            self._begin_steps()
            return self._epoch(data, p, st)

        run_epochs(n_epochs, one_epoch, X.nnz, record, stopping)
        if valid is not None:
            if best["epoch"] != self.n_epochs_:  # in place: the optimizer trains these arrays
                for a, table in zip(self._tables, best["tables"]):
                    np.copyto(getattr(self, a), table)
            self.best_epoch_ = best["epoch"]

    def _begin_steps(self) -> None:
        """Start of an epoch's steps: the optimizer's checks of the trusted step run once
        here (``Optimizer._begin_trusted``), when its rule allows it (duplicates summed)."""
        opt = self.optimizer_
        self._trusted_steps = opt.duplicates == "sum"
        if self._trusted_steps:
            opt._begin_trusted()

    def _step(self, grads: List[RowGrad], unique: bool = False) -> None:
        """One optimizer step of the epoch in progress, one gradient per table.

        ``unique``: the caller guarantees each gradient's rows are unique int64 ids in range,
        C-contiguous, with C-contiguous value rows of the table's dtype (what the fused
        kernels return). Such a step skips the public ``step``'s validation and merge
        (``Optimizer._step_trusted``: bitwise the same update); a non-finite gradient, or an
        optimizer that averages duplicates, takes the checked ``step``, which turns the
        former into a ``FloatingPointError`` naming the model (``_training.optimizer_step``).
        """
        opt = self.optimizer_
        if unique and getattr(self, "_trusted_steps", False) and (
                opt.nonfinite == "ignore" or
                not any(_coalesce.any_nonfinite(g.values) for g in grads)):
            lr = opt.lr
            for i, g in enumerate(grads):
                opt._step_trusted(g.indices, g.values, lr, i)
            return
        optimizer_step(opt, grads, type(self).__name__, self.n_epochs_ + 1)

    # -- evaluation ----------------------------------------------------------------------------

    @property
    def _metric_name(self) -> str:
        return f"precision@{_EVAL_K}" if self._implicit else "rmse"

    def _evaluate(self, E: sp.csr_matrix) -> float:
        """The ``eval_set`` metric of the checked matrix ``E`` (see the class docstring)."""
        if not self._implicit:
            users = np.repeat(np.arange(E.shape[0], dtype=np.int64), np.diff(E.indptr))
            pred = self._predict_indices(self._fitted(), users, E.indices.astype(np.int64))
            return _metrics.rmse(E.data, pred)
        users = np.flatnonzero(np.diff(E.indptr))
        if users.shape[0] > _EVAL_USERS:
            # a fixed sample (seed 0), so every epoch and every model is scored on the same users
            users = np.sort(check_random_state(0).choice(users, _EVAL_USERS, replace=False))
        if users.shape[0] == 0:
            return float("nan")
        recs, _ = self._top_items(self._fitted(), users, min(_EVAL_K, self.n_items_),
                                  self._seen.rows)
        if recs.shape[1] < _EVAL_K:
            recs = np.concatenate([recs, np.full((recs.shape[0], _EVAL_K - recs.shape[1]), -1,
                                                 np.int64)], axis=1)
        return _metrics.precision_at_k(E[users], recs, k=_EVAL_K)

    @serialised
    def score(self, X: Any, y: None = None) -> float:
        """How well the model predicts the held-out interactions ``X``; higher is better.

        The metric ``eval_set`` records in ``history_``, with the sign scikit-learn expects
        of a score: for explicit ratings (``loss="squared"``) minus the RMSE of
        :meth:`predict` on the stored ratings; for implicit data (``loss="bpr"``) the
        precision at 10 of :meth:`recommend` with the training interactions excluded,
        averaged over the users with held-out items (at most 2000 of them, a fixed sample
        drawn with seed 0). NaN when ``X`` holds no interaction.

        Parameters
        ----------
        X : scipy.sparse matrix of shape ``(n_users_, n_items_)``, or columns of raw ids
            Held-out ratings or interactions in a form :meth:`fit` takes, checked as
            there; columns only for a model fitted on raw ids, and every id among
            ``user_ids_`` / ``item_ids_``.
        y : None
            Ignored; present for the scikit-learn API.

        Returns
        -------
        float
        """
        st = self._fitted()
        E = self._as_matrix("X", X)
        if E.shape != (st.n_users, st.n_items):
            raise ValueError(f"X has shape {E.shape}, the model was fitted on "
                             f"({st.n_users}, {st.n_items})")
        value = self._evaluate(E)
        return value if self._implicit else -value

    def _print(self, stats: Dict[str, Any]) -> None:
        fields = [f"loss {stats['loss']:.5f}"]
        if "train_rmse" in stats:
            fields.append(f"train rmse {stats['train_rmse']:.4f}")
        if "violations" in stats:  # WARP: the share of positives that were updated
            fields.append(f"violations {stats['violations']:.3f}")
        if stats["eval"] is not None:
            fields.append(f"eval {self._metric_name} {stats['eval']:.4f}")
        if "validation" in stats:
            fields.append(f"validation {self._metric_name} {stats['validation']:.4f}")
        fields.append(f"{stats['rows_per_s']:,.0f} rows/s")
        fields.append(f"{stats['seconds']:.2f} s")
        print_epoch(type(self).__name__, stats["epoch"], fields)

    # -- using the model -----------------------------------------------------------------------

    def _check_fitted(self) -> None:
        """``NotFittedError`` (an ``AttributeError`` and a ``ValueError``) before the first
        ``fit``."""
        check_is_fitted(self, self._tables[0],
                        msg=f"this {type(self).__name__} is not fitted yet; call fit first")

    def _threads(self, work: int) -> int:
        """Threads of a kernel call doing ``work`` units (the model's checked ``n_threads``,
        fewer for small work)."""
        return threads_for(V.check_n_threads(self.n_threads), work,
                           _utils.PARALLEL_MIN_MODEL_WORK)

    @serialised
    def predict(self, user_ids: Any, item_ids: Any, *, user_features: Any = None,
                item_features: Any = None, user_interactions: Any = None) -> np.ndarray:
        """Predicted score of each ``(user_ids[s], item_ids[s])`` pair.

        Parameters
        ----------
        user_ids, item_ids : array-like, same length
            Indices in ``[0, n_users_)`` and ``[0, n_items_)``, or, for a model fitted on
            raw ids, ids among ``user_ids_`` and ``item_ids_``; with the cold-start
            matrices below, indices of their rows.
        user_features, item_features, user_interactions : scipy.sparse matrix, optional
            Cold start (models that support it): users or items described by their feature
            rows, or new users by their interactions; ids then index the rows of the matrix
            given. See :meth:`recommend`.

        Returns
        -------
        ndarray, the model's dtype
            A predicted rating (explicit models) or a ranking score (implicit models).
            With ``clip_predictions``, ratings are clipped to ``rating_range_``.
        """
        st, _ = self._serving_state(user_features, item_features, user_interactions)
        new_users = user_features is not None or user_interactions is not None
        u = self._users_in("user_ids", user_ids, st, new_users)
        i = self._items_in("item_ids", item_ids, st, item_features is not None)
        if u.shape != i.shape:
            raise ValueError(f"user_ids and item_ids differ in length: {u.shape[0]} vs "
                             f"{i.shape[0]}")
        return self._predict_indices(st, u, i)

    def _predict_indices(self, st: Any, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """:meth:`predict` of checked indices."""
        clip = self._clip_range()  # checked before the kernel runs
        out = self._predict_pairs(st, users, items)
        if clip is not None:
            np.clip(out, clip[0], clip[1], out=out)
        return out

    # -- raw ids and clipping ------------------------------------------------------------------

    def _encoder(self, st: Any, side: int) -> Any:
        """The users' (``side=0``) or items' (1) ``IdEncoder``, None for a model fitted on a
        matrix; checked against that side of ``st`` only, so that a cold-start call, whose
        other side is new rows, still maps this side's ids."""
        enc = self._id_encoders
        if enc is None:
            return None
        n, what = (st.n_users, "users") if side == 0 else (st.n_items, "items")
        if len(enc[side]) != n:
            raise ValueError(f"the model's {what} encoder holds {len(enc[side])} ids, the "
                             f"tables {n} rows; refit instead")
        return enc[side]

    def _users_in(self, name: str, ids: Any, st: Any, rows: bool = False) -> np.ndarray:
        """Checked user indices of raw ids (models fitted on raw ids) or of indices; with
        ``rows`` (users given by a cold-start matrix), indices of that matrix's rows."""
        enc = None if rows else self._encoder(st, 0)
        if enc is None:
            return V.check_ids(name, ids, st.n_users, "users")
        return enc.transform(ids, name)

    def _items_in(self, name: str, ids: Any, st: Any, rows: bool = False) -> np.ndarray:
        enc = None if rows else self._encoder(st, 1)
        if enc is None:
            return V.check_ids(name, ids, st.n_items, "items")
        return enc.transform(ids, name)

    def _items_out(self, st: Any, ids: np.ndarray, rows: bool = False) -> np.ndarray:
        """Item indices (-1 for padding) as the caller's ids (unchanged with ``rows``: items
        given by a cold-start matrix)."""
        enc = None if rows else self._encoder(st, 1)
        return ids if enc is None else enc.inverse_transform(ids, fill=True)

    def _users_out(self, st: Any, ids: np.ndarray) -> np.ndarray:
        enc = self._encoder(st, 0)
        return ids if enc is None else enc.inverse_transform(ids, fill=True)

    @property
    def user_ids_(self) -> np.ndarray:
        """The raw user ids of a model fitted on columns (sorted; row ``r`` of the tables is
        user ``user_ids_[r]``). Absent (AttributeError) for a model fitted on a matrix."""
        enc = self._id_encoders
        if enc is None:
            raise AttributeError(f"this {type(self).__name__} was not fitted on raw ids "
                                 "(its users are row indices), so it has no user_ids_")
        return enc[0].classes_

    @property
    def item_ids_(self) -> np.ndarray:
        """The raw item ids of a model fitted on columns (see ``user_ids_``)."""
        enc = self._id_encoders
        if enc is None:
            raise AttributeError(f"this {type(self).__name__} was not fitted on raw ids "
                                 "(its items are column indices), so it has no item_ids_")
        return enc[1].classes_

    def _clip_range(self) -> Optional[Tuple[float, float]]:
        """``rating_range_`` when predictions are to be clipped: the model has a
        ``clip_predictions`` parameter set to True and was fitted on explicit ratings."""
        if not V.check_flag("clip_predictions", getattr(self, "clip_predictions", False)):
            return None
        if self._implicit or "rating_range_" not in self.__dict__:
            return None
        return V.check_rating_range(self.rating_range_)

    @serialised
    def recommend(self, user_ids: Any, n: int = 10, filter_items: Any = None,
                  items: Any = None, filter_already_liked: Optional[bool] = None,
                  exclude_seen: Optional[bool] = None, *, user_features: Any = None,
                  item_features: Any = None, user_interactions: Any = None
                  ) -> Tuple[np.ndarray, np.ndarray]:
        """The ``n`` items of highest predicted score for each user, best first.

        Scores are computed for blocks of users as one matrix product (BLAS), then a Cython
        kernel selects the top ``n`` of each row in parallel over users with a bounded heap
        (ties go to the lower item id). With ``filter_already_liked`` the items of the
        user's training interactions (every input given to ``fit`` / ``partial_fit``) are
        left out.

        Parameters
        ----------
        user_ids : int, str or array-like
            Row indices, or raw ids for a model fitted on raw ids (``user_ids_``).
        n : int, default 10
            At most as many columns as there are candidate items (``n_items_``, or fewer
            with ``items`` / ``filter_items``) are returned.
        filter_items : 1-D array-like, optional
            Items never to recommend, to any of the users (e.g. out of stock); indices or
            raw ids, as ``user_ids``.
        items : 1-D array-like, optional
            The only items that may be recommended (a non-empty list; ``filter_items`` are
            removed from it).
        filter_already_liked : bool, default True
            Leave out each user's training items (the name ``implicit`` uses).
        exclude_seen : bool, optional
            The former name of ``filter_already_liked``, still accepted; giving both with
            different values is an error.
        user_features : scipy.sparse matrix ``(m, n_user_features_)``, optional
            Cold start (models that support it): the users are the rows of this matrix
            (``user_ids`` are indices of its rows), each represented by its features as in
            training; new users, or known users with new feature values. They have no
            training interactions to filter.
        user_interactions : scipy.sparse matrix ``(m, n_items_)``, optional
            Cold start: the users are new ones known by these interactions (ratings or
            positives over the fitted items, columns in the model's item order;
            ``user_ids`` index the rows), folded in against the fixed item representations
            (see the model's documentation). With ``filter_already_liked`` their items are
            left out. Not with ``user_features``.
        item_features : scipy.sparse matrix ``(m_items, n_item_features_)``, optional
            Cold start: the candidate items are the rows of this matrix (new items, or all
            items with new feature values); the returned ids, ``items`` and
            ``filter_items`` are indices of its rows. No training interaction is filtered
            (the ids are not the fitted items'): block known items with ``filter_items``.

        Returns
        -------
        item_ids : ndarray, shape (n_users_asked, n) (or (n,) for a single id)
            int64 indices, or raw ids in the dtype of ``item_ids_``. Padded when a user has
            fewer than ``n`` candidate items left (after ``filter_already_liked``): with
            -1, or for raw ids with -1 (integer ids; the largest uint64 for uint64 ids) or
            the empty string (string ids). A padded slot's score is -inf, which is what
            marks it (a raw id may itself be -1 or "").
        scores : ndarray, same shape, the model's dtype
            The scores :meth:`predict` gives (up to rounding: they come from a matrix
            product; clipped as it clips them, the order being that of the unclipped
            scores); -inf for padding.

        Raises
        ------
        TypeError
            Ids that are not integers (or raw ids of another kind), a non-bool flag, a
            non-int ``n``.
        IndexError
            An index out of range (user ids in ``[0, n_users_)``, item ids in
            ``[0, n_items_)``), or a raw id the model does not know (``UnknownIdError``,
            also a ``ValueError``).
        ValueError
            ``n < 1``; ``filter_items`` or ``items`` with more than one axis; an empty
            ``items``; ``items`` and ``filter_items`` leaving no item;
            ``filter_already_liked`` and ``exclude_seen`` given with different values.
        """
        st, seen = self._serving_state(user_features, item_features, user_interactions)
        new_items = item_features is not None
        scalar = np.ndim(user_ids) == 0
        users = self._users_in("user_ids", user_ids, st,
                               user_features is not None or user_interactions is not None)
        n = V.check_positive_int("n", n)
        exclude_seen = V.check_seen_flags(filter_already_liked, exclude_seen)
        enc = None if new_items else self._encoder(st, 1)
        if enc is not None:  # raw ids -> indices, then the rules of indices
            filter_items = None if filter_items is None else \
                self._items_in("filter_items", V.check_id_list("filter_items", filter_items),
                               st)
            items = None if items is None else \
                self._items_in("items", V.check_id_list("items", items), st)
        blocked, n_candidates = V.check_candidates(filter_items, items, st.n_items)
        n = min(n, n_candidates)
        clip = self._clip_range()
        if seen is None:
            exclude_seen = False  # nothing known to filter (see item_features)
        if exclude_seen and seen.shape != (st.n_users, st.n_items):
            # a fit in another thread replaced the tables between the two reads: the kernel
            # would exclude items by the other shape's ids
            raise ValueError("the model was refitted during this call (its interactions no "
                             "longer match item_table_); call recommend again")
        ids, scores = self._top_items(st, users, n, seen.rows if exclude_seen else None,
                                      blocked)
        if clip is not None:  # after the selection: clipping must not create ties
            real = np.isfinite(scores)
            scores[real] = np.clip(scores[real], clip[0], clip[1])
        ids = self._items_out(st, ids, new_items)
        if scalar:
            return ids[0], scores[0]
        return ids, scores

    def _top_items(self, st: Any, users: np.ndarray, n: int,
                   exclusions: Optional[Callable[[np.ndarray], sp.csr_matrix]],
                   blocked: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
        """The top ``n`` (``1 <= n <= n_items``) of checked ``users``, leaving out the
        entries ``exclusions(block)`` returns for a block of users (a CSR matrix of the
        model's item ids) and the columns ``blocked`` for everyone. A blocked column gets
        the score -inf, which the kernel never selects: it is left out exactly as an
        excluded entry is, so the order of the others (ties to the lower id) is unchanged."""
        scorer = self._scorer(st)
        if blocked is not None:
            inner = scorer

            def scorer(block: np.ndarray) -> np.ndarray:
                S = inner(block)  # scratch for the kernel: ours to overwrite
                S[:, blocked] = -np.inf
                return S
        return _serving.top_n_by_blocks(
            users, n, st.n_items, st.dtype, scorer,
            exclusions if exclusions is not None else (lambda block: None),
            V.check_n_threads(self.n_threads))

    @serialised
    def _ranking_report(self, X_train: Any, X_test: Any, k: Any, metrics: Any
                        ) -> Dict[str, float]:
        """``sparseopt.recommend.evaluate`` (see there), under the model's lock."""
        st = self._fitted()
        known = tuple(_metrics.RANKING_METRICS) + ("coverage",)
        X_train = self._as_matrix("X_train", X_train) if V.is_columns(X_train) else X_train
        X_test = self._as_matrix("X_test", X_test) if V.is_columns(X_test) else X_test
        Xtr, Xte, k, names = V.check_evaluation(
            X_train, X_test, k, metrics, implicit=self._implicit,
            shape=(st.n_users, st.n_items), known=known)
        relevant = _metrics._relevant("X_test", Xte)       # stored non-zeros
        users = np.flatnonzero(np.diff(relevant.indptr))
        n = min(k, st.n_items)
        ids, _ = self._top_items(st, users, n, SeenItems(Xtr).rows)
        if n < k:  # fewer items than k: the rest of every list is padding
            ids = np.concatenate([ids, np.full((ids.shape[0], k - n), -1, np.int64)], axis=1)
        truth = relevant[users]
        return {name: (_metrics.coverage_at_k(ids, st.n_items, k) if name == "coverage"
                       else _metrics.RANKING_METRICS[name](truth, ids, k))
                for name in names}

    @serialised
    def similar_items(self, item_ids: Any, n: int = 10) -> Tuple[np.ndarray, np.ndarray]:
        """The ``n`` items most similar to each given item by cosine of their factors.

        The item itself is left out; items with all-zero factors have similarity 0 to all.

        Parameters
        ----------
        item_ids : int, str or array-like
            Column indices, or raw ids for a model fitted on raw ids (``item_ids_``); the
            returned ids are of the same kind.
        n : int, default 10
            At most ``n_items - 1`` columns are returned.

        Returns
        -------
        item_ids, similarities : ndarray
            Shaped like :meth:`recommend`'s output; similarities in the model's dtype.
        """
        st = self._fitted()
        scalar = np.ndim(item_ids) == 0
        rows = self._items_in("item_ids", item_ids, st)
        ids, sims = self._most_similar(st, rows, n, st.n_items, self._item_vectors(st))
        ids = self._items_out(st, ids)
        return (ids[0], sims[0]) if scalar else (ids, sims)

    @serialised
    def similar_users(self, user_ids: Any, n: int = 10) -> Tuple[np.ndarray, np.ndarray]:
        """The ``n`` users most similar to each given user by cosine of their factors.

        The rules of :meth:`similar_items`, over users: the user itself is left out, users
        with all-zero factors have similarity 0 to all, ties go to the lower user id.

        Parameters
        ----------
        user_ids : int, str or array-like
            Row indices, or raw ids for a model fitted on raw ids (``user_ids_``); the
            returned ids are of the same kind.
        n : int, default 10
            At most ``n_users - 1`` columns are returned.

        Returns
        -------
        user_ids, similarities : ndarray
            Shaped like :meth:`recommend`'s output; similarities in the model's dtype.
        """
        st = self._fitted()
        scalar = np.ndim(user_ids) == 0
        rows = self._users_in("user_ids", user_ids, st)
        ids, sims = self._most_similar(st, rows, n, st.n_users, self._user_vectors(st))
        ids = self._users_out(st, ids)
        return (ids[0], sims[0]) if scalar else (ids, sims)

    def _most_similar(self, st: Any, rows: np.ndarray, n: Any, count: int,
                      vectors: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Top ``n`` rows of ``vectors`` (``count`` of them) by cosine to each of the
        checked ``rows``, the row itself left out."""
        n = min(V.check_positive_int("n", n), max(1, count - 1))
        Q = vectors.astype(np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", Q, Q))
        Qn = Q / np.where(norms > 0, norms, 1.0)[:, None]
        QnT = np.ascontiguousarray(Qn.T)
        n_threads = V.check_n_threads(self.n_threads)
        out_ids, sims = _serving.top_n_by_blocks(
            rows, n, count, st.dtype,
            lambda block: np.ascontiguousarray(Qn[block] @ QnT),
            lambda block: _serving.self_exclusions(block, count), n_threads)
        return out_ids, sims
