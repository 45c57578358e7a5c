"""Recommenders trained by lazy row updates: matrix factorisation and factorisation machines.

* :class:`MatrixFactorization`: biased MF on explicit ratings (squared loss) or implicit
  positives (BPR), with ``recommend`` and ``similar_items``;
* :class:`FMRegressor`, :class:`FMClassifier`: second-order factorisation machines on sparse
  features with the scikit-learn API (need scikit-learn, ``pip install sparseopt[sklearn]``);
* :mod:`sparseopt.recommend.metrics`: RMSE, precision / recall / NDCG at k, AUC.

Every model is an embedding table updated by a sparseopt optimizer: a fused Cython kernel
turns a mini-batch into one gradient row per sample and touched row, and the optimizer merges
duplicates and updates only those rows.
"""
from . import metrics
from ._mf import MatrixFactorization

__all__ = ["MatrixFactorization", "FMRegressor", "FMClassifier", "metrics"]


def __getattr__(name):
    # The factorisation machines subclass scikit-learn's estimators; import them on first use
    # so that sparseopt.recommend works without scikit-learn.
    if name in ("FMRegressor", "FMClassifier"):
        try:
            from . import _fm
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                f"sparseopt.recommend.{name} needs scikit-learn: pip install scikit-learn"
            ) from exc
        return getattr(_fm, name)
    raise AttributeError(f"module 'sparseopt.recommend' has no attribute {name!r}")
