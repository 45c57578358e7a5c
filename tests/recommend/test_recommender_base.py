"""sparseopt.recommend's shared machinery: ``BaseRecommender`` and the optional scikit-learn.

* ``MatrixFactorization`` follows scikit-learn's parameter API (get_params / set_params /
  clone / repr) and still pickles and resumes to the same bits;
* ``score`` is the ``eval_set`` metric with scikit-learn's sign (higher is better);
* a second, minimal model written only against the hooks gets fit / partial_fit / eval_set /
  recommend / similar_items / score right, so the base is not MF in disguise;
* the package and its metrics import without scikit-learn, and the models then say how to
  get it; the factorisation machines' verbose line and divergence error come from the shared
  epoch loop.
"""
import inspect
import os
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from sparseopt.datasets import holdout_split, make_interactions, make_ratings
from sparseopt.recommend import metrics

pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402

import sparseopt.recommend as recommend  # noqa: E402
from sparseopt.optim import RowGrad, make_optimizer  # noqa: E402
from sparseopt.recommend import FMRegressor, MatrixFactorization  # noqa: E402
from sparseopt.recommend._base import BaseRecommender  # noqa: E402
from sparseopt.recommend._common import check_table, check_training_params  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ratings():
    X = make_ratings(120, 80, 2400, random_state=0, dtype=np.float64)
    return holdout_split(X, 0.25, random_state=0)


@pytest.fixture(scope="module")
def interactions():
    X = make_interactions(150, 60, 3000, random_state=1)
    return holdout_split(X, 0.25, random_state=1)


# =========================================================================== scikit-learn API


def test_params_are_the_init_signature_and_round_trip_through_clone():
    gen = np.random.default_rng(3)
    mf = MatrixFactorization(n_components=5, loss="bpr", optimizer_params={"lazy": "decay"},
                             dtype=np.float64, random_state=gen, n_threads=1)
    names = [n for n in inspect.signature(MatrixFactorization).parameters]
    params = mf.get_params()
    assert sorted(params) == sorted(names)
    assert params["n_components"] == 5 and params["random_state"] is gen
    c = clone(mf)
    assert type(c) is MatrixFactorization and c is not mf
    cp = c.get_params()
    assert sorted(cp) == sorted(params)
    for k, v in params.items():
        if k == "random_state":   # clone deep-copies a generator: same state, new object
            assert cp[k] is not v and cp[k].bit_generator.state == v.bit_generator.state
        else:
            assert cp[k] == v, k
    # get_params -> set_params -> get_params is the identity
    other = MatrixFactorization().set_params(**params)
    assert other.get_params() == params
    with pytest.raises(ValueError, match="Invalid parameter 'n_factors'"):
        MatrixFactorization().set_params(n_factors=3)


def test_repr_lists_the_changed_parameters_only():
    assert repr(MatrixFactorization()) == "MatrixFactorization()"
    assert repr(MatrixFactorization(n_components=4, loss="bpr")) == \
        "MatrixFactorization(loss='bpr', n_components=4)"


def test_clone_of_a_fitted_model_is_unfitted_and_refits_to_the_same_bits(ratings):
    tr, _ = ratings
    mf = MatrixFactorization(n_components=4, n_epochs=2, random_state=7).fit(tr)
    c = clone(mf)
    assert not hasattr(c, "user_table_") and not hasattr(c, "history_")
    with pytest.raises(NotFittedError, match="not fitted"):
        c.recommend([0])
    c.fit(tr)
    assert np.array_equal(c.user_table_, mf.user_table_)
    assert np.array_equal(c.item_table_, mf.item_table_)


@pytest.mark.parametrize("loss", ["squared", "bpr"])
def test_pickle_keeps_predictions_and_resumes_to_the_same_bits(loss, ratings, interactions):
    tr, te = ratings if loss == "squared" else interactions
    mf = MatrixFactorization(n_components=4, loss=loss, n_epochs=2, batch_size=200,
                             random_state=0).fit(tr, eval_set=te)
    back = pickle.loads(pickle.dumps(mf))
    assert back.get_params() == mf.get_params()
    assert back.history_ == mf.history_
    for a, b in zip(back.recommend([0, 5, 9], n=6), mf.recommend([0, 5, 9], n=6)):
        assert np.array_equal(a, b)
    assert back.score(te) == mf.score(te)
    back.partial_fit(tr)   # the generator, optimizer state and seen items came along
    mf.partial_fit(tr)
    assert np.array_equal(back.user_table_, mf.user_table_)
    assert np.array_equal(back.item_table_, mf.item_table_)


# =========================================================================== score


def test_score_is_minus_the_eval_rmse(ratings):
    tr, te = ratings
    mf = MatrixFactorization(n_components=4, n_epochs=3, random_state=0).fit(tr, eval_set=te)
    s = mf.score(te)
    assert s == -mf.history_[-1]["eval"]
    coo = te.tocoo()
    assert s == pytest.approx(-metrics.rmse(coo.data, mf.predict(coo.row, coo.col)), rel=1e-12)
    assert s < 0 and mf.score(tr) > s   # training ratings fit better: higher is better
    assert mf.score(te.tocsc()) == s and mf.score(te.tocoo()) == s


def test_bpr_score_is_the_eval_precision(interactions):
    tr, te = interactions
    mf = MatrixFactorization(n_components=4, loss="bpr", n_epochs=3, random_state=0)
    mf.fit(tr, eval_set=te)
    s = mf.score(te)
    users = np.flatnonzero(np.diff(te.indptr))
    recs, _ = mf.recommend(users, n=10)
    assert s == mf.history_[-1]["eval"] == metrics.precision_at_k(te[users], recs, 10)
    assert 0.0 < s <= 1.0
    assert np.isnan(mf.score(sp.csr_matrix(te.shape)))   # no held-out user: nothing to score


def test_score_checks_its_input_and_changes_nothing(ratings):
    tr, te = ratings
    mf = MatrixFactorization(n_components=3, n_epochs=1, random_state=0)
    with pytest.raises(NotFittedError):
        mf.score(te)
    mf.fit(tr)
    U, n, hist = mf.user_table_.copy(), mf.n_epochs_, list(mf.history_)
    with pytest.raises(TypeError, match="X must be a scipy.sparse"):
        mf.score(te.toarray().tolist())
    with pytest.raises(TypeError, match="fitted on a users x items matrix"):
        mf.score((np.array([0]), np.array([1]), np.array([3.0])))
    with pytest.raises(ValueError, match=r"X has shape \(121, 80\)"):
        mf.score(sp.csr_matrix((121, 80)))
    bad = te.copy()
    bad.data[0] = np.inf
    with pytest.raises(ValueError, match="X holds NaN or infinite"):
        mf.score(bad)
    mf.score(te)
    assert np.array_equal(mf.user_table_, U) and mf.n_epochs_ == n and mf.history_ == hist


# =========================================================================== a second model


class _DotProduct(BaseRecommender):
    """``score(u, i) = <p_u, q_i>`` on explicit ratings, trained with NumPy gradients: only
    the hooks, nothing else, to show the base carries the rest."""

    def __init__(self, n_components=3, optimizer="adam", learning_rate=0.05, alpha=0.0,
                 n_epochs=5, batch_size=64, init_std=0.1, random_state=None, n_threads=None,
                 verbose=False):
        self.n_components = n_components
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.alpha = alpha
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.init_std = init_std
        self.random_state = random_state
        self.n_threads = n_threads
        self.verbose = verbose

    def _check_params(self):
        return check_training_params(self)

    def _implicit_feedback(self, p):
        return False

    def _init_tables(self, X, p):
        k = p["k"]
        self._k = k
        self.user_table_ = self._rng.normal(0, p["init_std"], (self.n_users_, k))
        self.item_table_ = self._rng.normal(0, p["init_std"], (self.n_items_, k))
        self.optimizer_ = make_optimizer(p["optimizer"], [self.user_table_, self.item_table_],
                                         p["lr"], p["n_threads"], None)

    def _fitted(self, training=False):
        self._check_fitted()
        U = check_table("user_table_", self.user_table_, (self.n_users_, self._k),
                        np.dtype(np.float64), training)
        Q = check_table("item_table_", self.item_table_, (self.n_items_, self._k),
                        np.dtype(np.float64), training)
        return type("Fitted", (), dict(U=U, Q=Q, n_users=U.shape[0], n_items=Q.shape[0],
                                       dtype=U.dtype))

    def _check_continue(self, p, st):
        if p["k"] != self._k:
            raise ValueError("n_components cannot change between partial_fit calls")

    def _training_data(self, X, p):
        coo = X.tocoo()
        return coo.row.astype(np.int64), coo.col.astype(np.int64), coo.data

    def _epoch(self, data, p, st):
        users, items, r = data
        perm = self._rng.permutation(users.shape[0])
        total = 0.0
        for s in range(0, perm.shape[0], p["batch_size"]):
            b = perm[s:s + p["batch_size"]]
            u, i = users[b], items[b]
            e = np.einsum("ij,ij->i", st.U[u], st.Q[i]) - r[b]
            total += float(e @ e)
            g = e[:, None] / b.shape[0]
            self._step([RowGrad(u, g * st.Q[i]), RowGrad(i, g * st.U[u])])
        return {"loss": 0.5 * total / perm.shape[0]}

    def _predict_pairs(self, st, users, items):
        return np.einsum("ij,ij->i", st.U[users], st.Q[items])

    def _scorer(self, st):
        return lambda users: np.ascontiguousarray(st.U[users] @ st.Q.T)

    def _item_vectors(self, st):
        return st.Q


def test_a_model_written_against_the_hooks_gets_the_whole_api(ratings, capsys):
    tr, te = ratings
    X = tr.copy()
    X.data -= tr.data.mean()   # the model has no bias terms
    E = te.copy()
    E.data -= tr.data.mean()
    m = _DotProduct(n_components=3, n_epochs=4, random_state=0, verbose=True).fit(X, eval_set=E)
    assert [h["epoch"] for h in m.history_] == [1, 2, 3, 4]
    assert m.history_[-1]["loss"] < m.history_[0]["loss"]
    assert m.score(E) == -m.history_[-1]["eval"]
    out = capsys.readouterr().out
    assert out.count("[_DotProduct] epoch") == 4 and "eval rmse" in out
    # recommend: the brute-force ranking with the training items left out
    users = np.array([0, 7, 119])
    ids, scores = m.recommend(users, n=5)
    S = m.user_table_[users] @ m.item_table_.T
    S[X[users].toarray() != 0] = -np.inf
    want = np.argsort(-S, axis=1, kind="stable")[:, :5]
    assert np.array_equal(ids, want)
    np.testing.assert_allclose(scores, np.take_along_axis(S, want, 1), rtol=1e-12)
    ids, sims = m.similar_items(4, n=3)
    assert ids.shape == (3,) and 4 not in ids and np.all(sims <= 1 + 1e-12)
    # partial_fit continues (same shape), refuses another one, and the model clones
    before = m.user_table_.copy()
    m.partial_fit(X)
    assert m.n_epochs_ == 5 and not np.array_equal(before, m.user_table_)
    with pytest.raises(ValueError, match="shape"):
        m.partial_fit(sp.csr_matrix((3, 3)))
    assert m.n_epochs_ == 5
    c = clone(m)
    assert c.get_params() == m.get_params() and not hasattr(c, "user_table_")


def test_a_model_written_against_the_hooks_takes_raw_ids(ratings):
    """The raw-id layer lives in the base: a model that only implements the hooks fits on a
    DataFrame and serves raw ids, as MatrixFactorization does (and has no clipping, which
    needs a clip_predictions parameter)."""
    pd = pytest.importorskip("pandas")
    tr, _ = ratings
    C = tr.tocoo()
    df = pd.DataFrame({"user": C.row.astype(np.int64) * 2 + 1, "item": [f"i{c:03d}" for c in C.col],
                       "rating": C.data - tr.data.mean()})
    m = _DotProduct(n_components=3, n_epochs=2, random_state=0).fit(df)
    X = tr.copy()
    X.data -= tr.data.mean()
    ref = _DotProduct(n_components=3, n_epochs=2, random_state=0).fit(X)
    np.testing.assert_array_equal(m.user_table_, ref.user_table_)  # ids sort as the indices
    ids, _ = m.recommend([1, 15], n=4)
    rids, _ = ref.recommend([0, 7], n=4)
    assert ids.tolist() == [[f"i{c:03d}" for c in row] for row in rids]
    assert m.predict([1], ["i000"]) == ref.predict([0], [0])
    assert m.rating_range_ == (float(df.rating.min()), float(df.rating.max()))


# =========================================================================== without scikit-learn


def test_package_and_metrics_import_without_scikit_learn():
    code = textwrap.dedent("""
        import sys
        sys.modules["sklearn"] = None      # every import of scikit-learn now fails
        import numpy as np, scipy.sparse as sp
        import sparseopt.recommend as r
        from sparseopt.recommend import metrics
        assert "sklearn" not in [m.split(".")[0] for m in sys.modules if sys.modules[m]]
        assert metrics.rmse([1.0, 2.0], [1.0, 4.0]) == 2 ** 0.5
        X = sp.csr_matrix(np.array([[1, 0, 1]]))
        assert metrics.precision_at_k(X, np.array([[0, 1]]), k=2) == 0.5
        assert {"MatrixFactorization", "FMRegressor", "FMClassifier"} <= set(dir(r))
        for name in ("MatrixFactorization", "FMRegressor", "FMClassifier"):
            try:
                getattr(r, name)
            except ImportError as exc:
                assert f"sparseopt.recommend.{name} needs scikit-learn" in str(exc), exc
                assert "pip install sparseopt[sklearn]" in str(exc), exc
            else:
                raise AssertionError(name + " imported without scikit-learn")
        try:
            from sparseopt.recommend import MatrixFactorization
        except ImportError as exc:
            assert "sparseopt[sklearn]" in str(exc)
        print("CHILD-OK")
    """)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=str(ROOT), env=env)
    assert proc.returncode == 0 and "CHILD-OK" in proc.stdout, proc.stderr[-3000:]


def test_other_import_errors_are_not_blamed_on_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sparseopt.recommend._mf", None)
    with pytest.raises(ImportError) as info:
        recommend.MatrixFactorization
    assert "sparseopt.recommend._mf" in str(info.value)
    assert "pip install" not in str(info.value)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        recommend.Nope


# =========================================================================== shared epoch loop


def test_fm_verbose_line_and_divergence_error_come_from_the_shared_loop(capsys):
    rng = np.random.default_rng(0)
    X = sp.random(120, 10, density=0.3, random_state=0, format="csr")
    y = X @ rng.normal(size=10)
    m = FMRegressor(n_components=2, n_epochs=3, tol=None, random_state=0, verbose=True)
    m.fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and m.n_iter_ == 3 and len(m.loss_curve_) == 3
    for n, line in enumerate(lines, 1):
        assert re.fullmatch(rf"\[FMRegressor\] epoch {n:3d}  loss \d+\.\d{{6}}  "
                            r"[\d,]+ rows/s  \d+\.\d{3} s", line), line
    big = FMRegressor(optimizer="sgd", learning_rate=1e30, n_epochs=3, random_state=0)
    with pytest.raises(FloatingPointError, match=r"FMRegressor diverged \(non-finite "
                                                 r"gradient\) in epoch \d+; lower learning_rate"):
        big.fit(X * 1e30, y * 1e30)
