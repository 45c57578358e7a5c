"""Side features of users and items: the identity columns LightFM's ``Dataset`` adds.

``MatrixFactorization.fit(X, user_features=F)`` uses ``F`` exactly as given: a user's
representation is the weighted sum of its features' rows, and nothing else. A user's own
identity column (an embedding row of its own on top of the shared features) is what lets a
known user (item) move away from the average of its features; :func:`add_identity_features`
adds those columns. It is a helper rather than a default: without identity columns the shared
features must carry everything, which is the model that serves new users and items best
(``benchmarks/cold_start.py`` measures both on MovieLens), and a matrix given is never
changed behind the caller's back.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import scipy.sparse as sp

from .. import _validation as V

__all__ = ["add_identity_features"]


def add_identity_features(features: Any, n_identity: Optional[int] = None,
                          normalize: bool = False) -> sp.csr_matrix:
    """``[I | features]``: one identity column per known user (item), then the features.

    Parameters
    ----------
    features : scipy.sparse matrix (n_rows, n_features)
        The side features (checked as ``fit`` checks them).
    n_identity : int, optional
        The number of identity columns, the known users (items): row ``r < n_identity``
        gets a 1 in column ``r``; rows from ``n_identity`` on (new users or items, put last)
        get none, so their representation comes from their features only. Default: every row.
        To serve new rows, build the matrix of all rows at once (known rows first) and give
        ``fit`` its first ``n_identity`` rows and ``recommend`` the rest.
    normalize : bool, default False
        Scale every row to sum 1 (LightFM's ``normalize_*_features``): a row's
        representation is then the mean of its feature rows, whatever their number.

    Returns
    -------
    scipy.sparse.csr_matrix, float64, shape (n_rows, n_identity + n_features)

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from sparseopt.recommend import add_identity_features
    >>> genres = sp.csr_matrix(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]))
    >>> add_identity_features(genres, n_identity=2).toarray()
    array([[1., 0., 1., 0.],
           [0., 1., 1., 1.],
           [0., 0., 0., 1.]])
    """
    F = V.check_features("features", features, None, None, np.float64, "rows")
    n_rows = F.shape[0]
    n_id = n_rows if n_identity is None else V.check_int("n_identity", n_identity, 0, n_rows)
    flag = V.check_flag("normalize", normalize)
    ident = sp.csr_matrix((np.ones(n_id), np.arange(n_id), np.r_[np.arange(n_id + 1),
                           np.full(n_rows - n_id, n_id)]), shape=(n_rows, n_id))
    out = sp.hstack([ident, F], format="csr", dtype=np.float64)
    if flag:
        sums = np.asarray(abs(out).sum(axis=1)).reshape(-1)
        out = sp.diags(1.0 / np.where(sums > 0, sums, 1.0)) @ out
        out = sp.csr_matrix(out)
    return out
