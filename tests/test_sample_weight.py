"""Sample weights: one rule (``sparseopt._validation.check_sample_weight``) for every model.

Bad weights get the same ValueError, with the same message, from SGDClassifier, SGDRegressor,
FMRegressor and FMClassifier, from ``fit`` and ``partial_fit``, and leave a fitted model exactly
as it was. The models differ only where their training differs: the factorisation machines
divide each batch by its total weight, so they need non-negative weights whose batch totals
have a finite reciprocal; the linear estimators use the weights as given (against alpha) and,
like scikit-learn's, accept negative weights.
"""
import pickle

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("sklearn")

from sparseopt._validation import check_sample_weight, relative_weights  # noqa: E402
from sparseopt.linear_model import SGDClassifier, SGDRegressor  # noqa: E402
from sparseopt.recommend import FMClassifier, FMRegressor  # noqa: E402

N = 24


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 4))
    return X, (X[:, 0] > 0).astype(int), X[:, 0] - X[:, 1]


MODELS = {
    "SGDClassifier": lambda: SGDClassifier(max_iter=2, tol=None, random_state=0),
    "SGDRegressor": lambda: SGDRegressor(max_iter=2, tol=None, random_state=0),
    "FMRegressor": lambda: FMRegressor(n_components=2, n_epochs=2, batch_size=4,
                                       random_state=0),
    "FMClassifier": lambda: FMClassifier(n_components=2, n_epochs=2, batch_size=4,
                                         random_state=0),
}


def _target(name):
    X, yc, yr = _data()
    return X, (yc if "Classifier" in name else yr)


def _fitted(name):
    X, y = _target(name)
    return MODELS[name]().fit(X, y)


def _call(est, method, name, sample_weight):
    X, y = _target(name)
    if method == "partial_fit" and "Classifier" in name:
        return est.partial_fit(X, y, classes=np.unique(y), sample_weight=sample_weight)
    return getattr(est, method)(X, y, sample_weight=sample_weight)


BAD = [
    ("nan", np.r_[np.ones(N - 1), np.nan],
     f"sample_weight must be finite (in float64), got nan at position {N - 1}"),
    ("inf", np.r_[np.ones(3), np.inf, np.ones(N - 4)],
     "sample_weight must be finite (in float64), got inf at position 3"),
    ("-inf", np.r_[-np.inf, np.ones(N - 1)],
     "sample_weight must be finite (in float64), got -inf at position 0"),
    ("short", np.ones(N - 1),
     f"sample_weight must be a scalar or a 1-D array of {N} weights (one per sample), got "
     f"shape ({N - 1},)"),
    ("long", np.ones(N + 1),
     f"sample_weight must be a scalar or a 1-D array of {N} weights (one per sample), got "
     f"shape ({N + 1},)"),
    ("2-D", np.ones((N, 1)),
     f"sample_weight must be a scalar or a 1-D array of {N} weights (one per sample), got "
     f"shape ({N}, 1)"),
    ("all zero", np.zeros(N), "sample_weight must contain at least one non-zero weight"),
    ("scalar zero", 0.0, "sample_weight must contain at least one non-zero weight"),
    ("strings", np.array(["a"] * N), "sample_weight must hold real numbers, got dtype <U1"),
    ("complex", np.ones(N) * 1j, "sample_weight must hold real numbers, got dtype complex128"),
    ("objects", np.array([object()] * N),
     "sample_weight must hold real numbers, got objects that are not"),
    ("sparse", sp.csr_matrix(np.ones((N, 1))),
     "sample_weight must be a dense array or a scalar, got a sparse matrix; pass "
     "sample_weight.toarray().ravel()"),
]


@pytest.mark.parametrize("method", ["fit", "partial_fit"])
@pytest.mark.parametrize("label,sample_weight,message", BAD, ids=[b[0] for b in BAD])
def test_every_model_refuses_bad_weights_alike_and_changes_nothing(label, sample_weight,
                                                                   message, method):
    for name in MODELS:
        est = _fitted(name)
        before = pickle.dumps(est)
        with pytest.raises(ValueError) as info:
            _call(est, method, name, sample_weight)
        assert str(info.value) == message, name
        assert pickle.dumps(est) == before, name


@pytest.mark.parametrize("name", ["FMRegressor", "FMClassifier"])
@pytest.mark.parametrize("sample_weight,position", [
    (-np.ones(N), 0), (np.r_[np.ones(5), -0.5, np.ones(N - 6)], 5), (-2.0, 0)])
def test_fm_refuses_negative_weights_and_changes_nothing(name, sample_weight, position):
    """A factorisation machine divides each batch by its total weight: weights that cancel
    would leave a batch without a scale."""
    for method in ("fit", "partial_fit"):
        est = _fitted(name)
        before = pickle.dumps(est)
        value = float(np.broadcast_to(sample_weight, (N,))[position])
        with pytest.raises(ValueError) as info:
            _call(est, method, name, sample_weight)
        assert str(info.value) == (f"sample_weight must be non-negative, got {value} at "
                                   f"position {position}")
        assert pickle.dumps(est) == before


@pytest.mark.parametrize("name", ["SGDClassifier", "SGDRegressor"])
def test_linear_models_accept_negative_weights_as_scikit_learn_does(name):
    X, y = _target(name)
    sw = np.where(np.arange(N) % 3 == 0, -0.5, 1.0)
    est = MODELS[name]().fit(X, y, sample_weight=sw)
    assert np.isfinite(est.coef_).all()
    # a negative weight really counts: it is not clipped to zero
    clipped = MODELS[name]().fit(X, y, sample_weight=np.maximum(sw, 0.0))
    assert not np.array_equal(est.coef_, clipped.coef_)


@pytest.mark.parametrize("name", ["FMRegressor", "FMClassifier"])
def test_fm_refuses_weights_whose_batch_total_has_no_finite_reciprocal(name):
    """With batches of 4, the 1e-320 weights form batches whose total is below 2**-1024:
    dividing by it would give inf. Such weights are refused up front, naming sample_weight,
    before anything changes."""
    est = _fitted(name)
    before = pickle.dumps(est)
    sw = np.r_[1.0, np.full(N - 1, 1e-320)]
    with pytest.raises(ValueError, match=r"^sample_weight holds a positive weight \(1e-320\)"):
        _call(est, "fit", name, sw)
    assert pickle.dumps(est) == before
    # the same weights are fine for the linear models (no batch total is divided by)
    linear = "SGDClassifier" if name == "FMClassifier" else "SGDRegressor"
    X, y = _target(linear)
    assert np.isfinite(MODELS[linear]().fit(X, y, sample_weight=sw).coef_).all()


def test_relative_weights_keep_every_accepted_weight_exactly():
    """The largest weight is scaled into [0.5, 1) by a power of two: exact, so an accepted
    weight (the smallest allowed included) keeps its ratio to every other bit for bit."""
    top = 3.0 * 2.0**600
    smallest = np.ldexp(np.finfo(np.float64).tiny, 602)  # exactly at the bound
    w = np.array([top, smallest, 0.0, 1.0])
    out = relative_weights("sample_weight", w)
    assert 0.5 <= out.max() < 1.0
    np.testing.assert_array_equal(np.ldexp(out, 602), w)
    with pytest.raises(ValueError, match="sample_weight holds a positive weight"):
        relative_weights("sample_weight", np.array([top, np.nextafter(smallest, 0.0)]))
    # all-zero weights pass through unscaled (check_sample_weight refuses them first)
    assert relative_weights("sample_weight", np.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_check_sample_weight_forms():
    ones = check_sample_weight(None, 3)
    assert ones.dtype == np.float64 and ones.tolist() == [1.0, 1.0, 1.0]
    assert check_sample_weight(2, 3).tolist() == [2.0, 2.0, 2.0]
    assert check_sample_weight(np.float32(0.5), 2).tolist() == [0.5, 0.5]
    assert check_sample_weight(np.array(4.0), 2).tolist() == [4.0, 4.0]
    assert check_sample_weight([1, 2, 3], 3).tolist() == [1.0, 2.0, 3.0]
    assert check_sample_weight(np.array([True, False]), 2).tolist() == [1.0, 0.0]
    f32 = np.array([0.1, 0.2], dtype=np.float32)
    assert check_sample_weight(f32, 2).tolist() == f32.astype(np.float64).tolist()
    assert check_sample_weight(np.array([1, 2], dtype=object), 2).tolist() == [1.0, 2.0]
    assert check_sample_weight([-1.0, 2.0], 2).tolist() == [-1.0, 2.0]
    mine = np.array([1.0, 2.0])
    out = check_sample_weight(mine, 2)
    assert out is not mine and not np.shares_memory(out, mine)
    assert out.flags.c_contiguous
    strided = np.arange(6.0)[::2]
    assert check_sample_weight(strided, 3).flags.c_contiguous
