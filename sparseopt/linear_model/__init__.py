"""scikit-learn estimators trained by sparseopt's lazy optimizers.

``SGDClassifier`` and ``SGDRegressor`` take scikit-learn's parameters with scikit-learn's
meanings (loss, penalty, ``alpha`` on the same objective, ``learning_rate`` schedules with
``eta0`` and ``power_t``, ``tol``, ``class_weight``, ...) plus ``optimizer="adam" | "adagrad"
| "rmsprop" | "sgd"``, ``batch_size`` and ``n_threads``. Weights are stored feature-major, so a
mini-batch step touches only the features it contains; the penalty and averaging are applied
lazily and exactly. ``docs/semantics.md`` ("Estimators") maps every parameter. Requires
scikit-learn (``pip install sparseopt[sklearn]``).
"""
from ._base import eta0_for_rate, optimizer_rate
from ._l1 import l1_alpha_max
from ._sgd import SGDClassifier, SGDRegressor

__all__ = ["SGDClassifier", "SGDRegressor", "optimizer_rate", "eta0_for_rate", "l1_alpha_max"]
