"""Data-parallel training on Dask (``pip install sparseopt[dask]``).

``fit(estimator, X, y, client)`` trains an ``SGDClassifier``, ``SGDRegressor``,
``MatrixFactorization``, ``FMRegressor`` or ``FMClassifier`` on the partitions of a Dask
collection by iterative parameter mixing of sparse row deltas (``MatrixFactorization`` with
the squared loss: by DSGD, blocks of users and items that share no row trained in parallel)
and returns an ordinary fitted estimator. Importing ``sparseopt`` never imports this module (nor
Dask).
"""
from ._fit import fit

__all__ = ["fit"]
