"""``sparseopt.recommend.evaluate``: the ranking metrics of a fitted recommender on held-out
interactions, in one call. Imports scikit-learn only through the model it is given."""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Union

__all__ = ["evaluate"]


def evaluate(model: Any, X_train: Any, X_test: Any, k: int = 10,
             metrics: Optional[Union[str, Sequence[str]]] = None) -> Dict[str, float]:
    """Ranking metrics at ``k`` of a fitted recommender on held-out interactions.

    Every user with at least one test item (a stored non-zero of ``X_test``) gets the top
    ``k`` of :meth:`~sparseopt.recommend.MatrixFactorization.recommend`, leaving out the items
    that user has in ``X_train`` -- taken from ``X_train`` itself, not from what the model
    was fitted on, so a model trained on other data is evaluated on the same footing. The
    lists are scored against ``X_test`` with :mod:`sparseopt.recommend.metrics` (binary
    relevance: every stored non-zero is relevant, whatever its value).

    Only ranking metrics are computed, for every model: for one that predicts ratings
    (``loss="squared"``) a test rating of 1 counts as relevant as a 5. Use the model's
    ``score`` or :func:`sparseopt.recommend.metrics.rmse` for the error of its ratings.

    Parameters
    ----------
    model : fitted MatrixFactorization (or another ``BaseRecommender``)
    X_train : scipy.sparse matrix of shape ``(n_users_, n_items_)``, or columns of raw ids
        The interactions to exclude from each user's list (usually the training data);
        checked as ``fit`` checks its ``X``. Columns (a DataFrame or a tuple, see ``fit``)
        only for a model fitted on raw ids; every id must be among its ``user_ids_`` /
        ``item_ids_`` (``UnknownIdError`` otherwise).
    X_test : same forms as X_train
        The held-out interactions, checked the same way.
    k : int, default 10
        Length of every list. With fewer than ``k`` items in the catalogue, or a user with
        fewer than ``k`` unseen items, the list is padded with -1 (never a hit; precision
        still divides by ``k``).
    metrics : str or list of str, optional
        Names among ``"precision"``, ``"recall"``, ``"ndcg"``, ``"map"``, ``"mrr"``,
        ``"hit_rate"`` (averaged over the evaluated users) and ``"coverage"`` (share of the
        items in at least one evaluated user's list); all of them by default.

    Returns
    -------
    dict
        Metric name -> float, in the order asked for; NaN for the averaged metrics when
        ``X_test`` holds no interaction.

    Raises
    ------
    TypeError
        ``model`` is not a recommender, or an argument has the wrong type.
    ValueError
        A malformed matrix, a shape other than the model's, ``k < 1``, an unknown metric.
    sklearn.exceptions.NotFittedError
        The model is not fitted.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> from sparseopt.recommend import MatrixFactorization, evaluate
    >>> X = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 1, 1, 0], [1, 0, 0, 1.0]]))
    >>> test = sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0.0]]))
    >>> mf = MatrixFactorization(n_components=2, loss="bpr", random_state=0).fit(X)
    >>> scores = evaluate(mf, X, test, k=2, metrics=["recall", "coverage"])
    >>> list(scores), scores["recall"]   # 2 unseen items per user, both listed at k=2
    (['recall', 'coverage'], 1.0)
    """
    from ._base import BaseRecommender  # scikit-learn: the model already needed it

    if not isinstance(model, BaseRecommender):
        raise TypeError(f"model must be a fitted sparseopt recommender (MatrixFactorization), "
                        f"got {type(model).__name__}")
    return model._ranking_report(X_train, X_test, k, metrics)
