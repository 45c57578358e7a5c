"""scikit-learn estimators trained by sparseopt's lazy optimizers.

``SGDClassifier`` and ``SGDRegressor`` take scikit-learn's parameters (loss, penalty, alpha,
...) plus ``optimizer="adam" | "adagrad" | "rmsprop" | "sgd"``, ``learning_rate`` (a float),
``batch_size`` and ``n_threads``. Weights are stored feature-major, so a mini-batch step
touches only the features it contains; the penalty and averaging are applied lazily and
exactly. Requires scikit-learn (``pip install sparseopt[sklearn]``).
"""
from ._sgd import SGDClassifier, SGDRegressor

__all__ = ["SGDClassifier", "SGDRegressor"]
