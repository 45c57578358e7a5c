"""The scale of an L1 penalty: ``l1_alpha_max``."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_X_y

from .. import _validation as V


def l1_alpha_max(X, y, *, loss: str = "log_loss", sample_weight=None) -> float:
    """The smallest ``alpha`` at which the L1-penalised model has every coefficient 0.

    With an unpenalised intercept, ``mean(sample_weight * loss) + alpha * |w|_1`` is
    minimised by ``w = 0`` exactly when ``alpha`` is at least the largest
    ``|sum_i sample_weight_i * x_ij * r_i| / n_samples`` over the features (and classes), where
    ``r`` is the residual of the intercept-only model: for ``'log_loss'`` the class
    indicators minus their weighted means (one column for two classes, one per class for
    more, as in the multinomial model), for ``'squared_error'`` the targets minus their
    weighted mean. ``alpha = c * l1_alpha_max(X, y)`` with a fixed ``c`` is an L1 strength
    that follows the data's gradient scale (as glmnet's regularisation paths do) and does
    not depend on how many samples or features there are.

    The user guide ("Choosing an optimizer", FTRL and L1) lists the sparsity and held-out
    ROC-AUC that multiples of it give FTRL-Proximal on real data.

    Parameters
    ----------
    X : {array-like, sparse matrix} of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
        Class labels for ``'log_loss'``, real targets for ``'squared_error'``.
    loss : {'log_loss', 'squared_error'}, default='log_loss'
    sample_weight : array-like of shape (n_samples,), optional
        Weights as the estimators take them (``None``: 1 for every sample).

    Returns
    -------
    float
        ``alpha_max`` (0 when every residual is 0, e.g. a single class).

    Raises
    ------
    ValueError
        An unknown ``loss``, non-finite ``X`` or ``y``, or ``sample_weight`` of another length
        (or with non-finite values, or all zero).

    Examples
    --------
    >>> import numpy as np
    >>> from sparseopt.linear_model import l1_alpha_max
    >>> X = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    >>> y = np.array([1, 0, 1, 0])
    >>> l1_alpha_max(X, y)  # feature 0: |(1 - 0.5) + (1 - 0.5)| / 4
    0.25
    >>> l1_alpha_max(X, [1.0, 0.0, 3.0, 0.0], loss="squared_error")  # |0 + 2| / 4
    0.5
    """
    if loss not in ("log_loss", "squared_error"):
        raise ValueError(f"loss must be 'log_loss' or 'squared_error'; got {loss!r}")
    if sp.issparse(X):  # the structure is checked before SciPy converts or multiplies it
        X = V.check_sparse_matrix("X", X, dtype=np.float64)
    X, y = check_X_y(X, y, accept_sparse="csr", dtype=np.float64,
                     y_numeric=loss == "squared_error")
    n = X.shape[0]
    sw = V.check_sample_weight(sample_weight, n)
    if loss == "log_loss":
        classes, idx = np.unique(y, return_inverse=True)
        cols = np.arange(len(classes)) if len(classes) > 2 else np.array([1])
        R = (idx[:, None] == cols[None, :]).astype(np.float64)
    else:
        R = np.asarray(y, dtype=np.float64).reshape(-1, 1)
    R = (R - (sw @ R) / sw.sum()) * sw[:, None]
    G = np.asarray(X.T @ R)
    return float(np.abs(G).max()) / n if G.size else 0.0
