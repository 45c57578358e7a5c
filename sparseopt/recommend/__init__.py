"""Recommenders trained by lazy row updates: matrix factorisation and factorisation machines.

* :class:`MatrixFactorization`: biased MF on explicit ratings (squared loss) or implicit
  positives (BPR), with ``recommend``, ``similar_items`` and ``score``;
* :class:`FMRegressor`, :class:`FMClassifier`: second-order factorisation machines on sparse
  features;
* :mod:`sparseopt.recommend.metrics`: RMSE, precision / recall / NDCG / MAP / MRR / hit rate
  and coverage at k, AUC;
* :func:`evaluate`: the ranking metrics of a fitted recommender on held-out interactions;
* :class:`IdEncoder`: raw user / item ids (integers or strings) <-> row indices, the encoder
  the models use when fitted on a DataFrame or a tuple of columns (``UnknownIdError`` for
  an id they were not fitted with).
* :func:`add_identity_features`: identity columns in front of users' or items' side features
  (``MatrixFactorization.fit(X, user_features=..., item_features=...)``).

The models follow scikit-learn's estimator API and need scikit-learn
(``pip install sparseopt[sklearn]``); they are imported on first use, so this package and
:mod:`~sparseopt.recommend.metrics` work without it.

Every model is an embedding table updated by a sparseopt optimizer: a fused Cython kernel
turns a mini-batch into one gradient row per sample and touched row, and the optimizer merges
duplicates and updates only those rows.
"""
from importlib import import_module
from typing import Any, List

from .._validation import UnknownIdError
from . import metrics
from ._evaluate import evaluate
from ._interactions import IdEncoder
from ._features import add_identity_features

__all__ = ["MatrixFactorization", "FMRegressor", "FMClassifier", "metrics", "evaluate",
           "IdEncoder", "UnknownIdError", "add_identity_features"]

# public name -> private module holding it; each module subclasses scikit-learn's
# BaseEstimator, so it is imported on first use rather than with the package
_MODELS = {"MatrixFactorization": "_mf", "FMRegressor": "_fm", "FMClassifier": "_fm"}


def __getattr__(name: str) -> Any:
    module = _MODELS.get(name)
    if module is None:
        raise AttributeError(f"module 'sparseopt.recommend' has no attribute {name!r}")
    try:
        mod = import_module(f".{module}", __name__)
    except ImportError as exc:
        # only a missing scikit-learn is the optional extra; any other failed import (an
        # unbuilt kernel, a broken install) is reported as it is
        if (exc.name or "").split(".")[0] != "sklearn":
            raise
        raise ImportError(f"sparseopt.recommend.{name} needs scikit-learn: "
                          f"pip install sparseopt[sklearn]") from exc
    return getattr(mod, name)


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(__all__))
