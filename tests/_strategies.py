"""Valid and structurally corrupted sparse matrices, for the hostile-input suite.

``bad_sparse(fmt, kind, shape)`` builds one deterministic corruption (the probe table);
``sparse_inputs(...)`` is a Hypothesis strategy drawing a valid matrix of any SciPy format and
container (``*_matrix`` / ``*_array``), then — most of the time — one corruption of its
structure with drawn parameters. Every corruption here makes the matrix *definitely* invalid
(SciPy's ``check_format(full_check=True)`` refuses the compressed, COO and DIA ones): an index
outside the shape, an ``indptr`` that does not start at 0, decreases, ends past the stored
entries or has the wrong length, fewer values or indices than ``indptr`` promises, non-integer
index arrays, a shape shrunk under the stored indices, DIA offsets that do not match the stored
diagonals, LIL rows whose data lists are shorter, DOK keys outside the shape.

Attributes are replaced directly (``m.indices = ...``), as a user editing a matrix would, so
SciPy's constructors never get to check them.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
import scipy.sparse as sp

FORMATS = ("csr", "csc", "coo", "bsr", "dia", "lil", "dok")

# corruption kinds per format; each makes any matrix for which ``applicable`` holds invalid
KINDS: Dict[str, Tuple[str, ...]] = {
    "csr": ("index-past-end", "index-huge", "index-negative", "indptr-start-1",
            "indptr-start-negative", "indptr-decreasing", "indptr-end-past-nnz",
            "indptr-too-short", "indptr-too-long", "data-short", "indices-short",
            "float-indices", "float-indptr", "shape-shrunk"),
    "coo": ("row-past-end", "col-past-end", "row-negative", "col-huge", "coords-mismatch",
            "data-short", "float-coords", "shape-shrunk"),
    "bsr": ("block-index-past-end", "block-index-negative", "indptr-decreasing",
            "indptr-end-past-nnz", "indptr-start-negative", "indptr-too-short", "data-short",
            "float-indices"),
    "dia": ("more-diagonals-than-offsets", "more-offsets-than-diagonals"),
    "lil": ("col-past-end", "col-negative", "data-shorter-than-rows"),
    "dok": ("key-past-end", "key-negative", "row-key-past-end"),
}
KINDS["csc"] = KINDS["csr"]

# kinds for which a TypeError is as good as a ValueError (wrong dtypes)
DTYPE_KINDS = frozenset({"float-indices", "float-indptr", "float-coords"})


def container(fmt: str, array: bool):
    return getattr(sp, f"{fmt}_{'array' if array else 'matrix'}")


def blocksize_for(shape: Tuple[int, int]) -> Tuple[int, int]:
    return (2 if shape[0] % 2 == 0 else 1, 2 if shape[1] % 2 == 0 else 1)


def dense_full_rows(shape: Tuple[int, int], seed: int = 0, dtype=np.float64) -> np.ndarray:
    """A dense array with at least one non-zero in every row and in the last row and column
    (so every row, and the largest index, is really used), values in [1, 2)."""
    rng = np.random.default_rng(seed)
    n, m = shape
    A = np.where(rng.random(shape) < 0.4, 1.0 + rng.random(shape), 0.0)
    A[np.arange(n), rng.integers(0, m, size=n)] = 1.5
    A[0, m - 1] = 1.25
    A[n - 1, 0] = 1.75
    if n > 1:
        A[1, 0] = 1.5
    return A.astype(dtype)


def valid_sparse(fmt: str, shape: Tuple[int, int], *, array: bool = False, seed: int = 0,
                 dtype=np.float64, dense: Optional[np.ndarray] = None):
    A = dense_full_rows(shape, seed, dtype) if dense is None else dense
    cls = container(fmt, array)
    if fmt == "bsr":
        return cls(A, blocksize=blocksize_for(A.shape))
    return cls(A)


def corrupt(m, kind: str, *, pos: int = 0, value: Optional[int] = None):
    """Corrupt ``m`` in place by ``kind`` (see KINDS); ``pos`` picks the entry / row touched and
    ``value`` overrides the bad index where that makes sense. Returns ``m``."""
    fmt = m.format
    if fmt in ("csr", "csc", "bsr"):
        if fmt == "bsr":
            R, C = m.blocksize
            major, minor = m.shape[0] // R, m.shape[1] // C
        else:
            major, minor = m.shape if fmt == "csr" else m.shape[::-1]
        nnz = int(m.indptr[-1])
        p = pos % max(nnz, 1)
        if kind in ("index-past-end", "block-index-past-end"):
            m.indices[p] = minor if value is None else minor + abs(value)
        elif kind == "index-huge":
            m.indices = m.indices.astype(np.int64)
            m.indices[p] = 2**31 - 1 if value is None else 2**31 - 1 + abs(value)
            m.indptr = m.indptr.astype(np.int64)
        elif kind in ("index-negative", "block-index-negative"):
            m.indices[p] = -1 if value is None else -1 - abs(value)
        elif kind == "indptr-start-1":
            m.indptr[0] = 1
        elif kind == "indptr-start-negative":
            m.indptr[0] = -1 if value is None else -1 - abs(value)
        elif kind == "indptr-decreasing":
            j = 1 + pos % max(1, major - 2)  # 1 <= j <= major - 2: indptr[j] > indptr[j + 1]
            m.indptr[j] = m.indptr[j + 1] + 1
        elif kind == "indptr-end-past-nnz":
            m.indptr[-1] = nnz + (3 if value is None else 1 + abs(value))
        elif kind == "indptr-too-short":
            m.indptr = m.indptr[:-1].copy()
        elif kind == "indptr-too-long":
            m.indptr = np.append(m.indptr, m.indptr[-1])
        elif kind == "data-short":
            m.data = m.data[: nnz - 1].copy()
        elif kind == "indices-short":
            m.indices = m.indices[: nnz - 1].copy()
        elif kind == "float-indices":
            m.indices = m.indices.astype(np.float64)
        elif kind == "float-indptr":
            m.indptr = m.indptr.astype(np.float64)
        elif kind == "shape-shrunk":
            n0, n1 = m.shape
            m._shape = (n0, n1 - 1) if fmt == "csr" else (n0 - 1, n1)
        else:
            raise KeyError(kind)
        return m
    if fmt == "coo":
        row, col = (np.array(c) for c in m.coords)
        p = pos % max(row.shape[0], 1)
        n0, n1 = m.shape
        data = m.data
        if kind == "row-past-end":
            row[p] = n0 if value is None else n0 + abs(value)
        elif kind == "col-past-end":
            col[p] = n1 if value is None else n1 + abs(value)
        elif kind == "row-negative":
            row[p] = -1 if value is None else -1 - abs(value)
        elif kind == "col-huge":
            col = col.astype(np.int64)
            col[p] = 2**31 - 1
            row = row.astype(np.int64)
        elif kind == "coords-mismatch":
            col = col[:-1].copy()
        elif kind == "data-short":
            data = data[:-1].copy()
        elif kind == "float-coords":
            row, col = row.astype(np.float64), col.astype(np.float64)
        elif kind == "shape-shrunk":
            m._shape = (n0, n1 - 1)
        else:
            raise KeyError(kind)
        m.coords = (row, col)
        m.data = data
        m.has_canonical_format = False
        return m
    if fmt == "dia":
        if kind == "more-diagonals-than-offsets":
            m.data = np.vstack([m.data, m.data])
            m.offsets = m.offsets[: max(1, m.offsets.shape[0] // 2)].copy()
            if m.offsets.shape[0] >= m.data.shape[0]:
                m.offsets = m.offsets[: m.data.shape[0] - 1].copy()
        elif kind == "more-offsets-than-diagonals":
            k = m.offsets.shape[0]
            extra = np.arange(1, k + 3) + int(np.abs(m.offsets).max())
            m.offsets = np.concatenate([m.offsets, extra[:2]]).astype(m.offsets.dtype)
        else:
            raise KeyError(kind)
        return m
    if fmt == "lil":
        n0, n1 = m.shape
        r = pos % n0
        if kind == "col-past-end":
            m.rows[r] = sorted(set(m.rows[r]) | {n1 if value is None else n1 + abs(value)})
            m.data[r] = [1.0] * len(m.rows[r])
        elif kind == "col-negative":
            m.rows[r] = [-1 if value is None else -1 - abs(value)] + [c for c in m.rows[r]]
            m.data[r] = [1.0] * len(m.rows[r])
        elif kind == "data-shorter-than-rows":
            rows_with = [i for i in range(n0) if len(m.rows[i])]
            r = rows_with[pos % len(rows_with)]
            m.data[r] = list(m.data[r])[:-1]
        else:
            raise KeyError(kind)
        return m
    if fmt == "dok":
        n0, n1 = m.shape
        d = m._dict
        if kind == "key-past-end":
            d[(pos % n0, n1 if value is None else n1 + abs(value))] = 1.0
        elif kind == "key-negative":
            d[(pos % n0, -1 if value is None else -1 - abs(value))] = 1.0
        elif kind == "row-key-past-end":
            d[(n0 if value is None else n0 + abs(value), pos % n1)] = 1.0
        else:
            raise KeyError(kind)
        return m
    raise KeyError(fmt)


def applicable(m, kind: str) -> bool:
    """Whether ``kind`` makes this particular matrix invalid (e.g. an entry must exist)."""
    fmt = m.format
    if fmt in ("csr", "csc", "bsr"):
        nnz = int(m.indptr[-1])
        major = m.indptr.shape[0] - 1
        if kind == "indptr-decreasing":
            return major >= 3
        if kind in ("indptr-start-1",):
            return True
        if kind == "shape-shrunk":
            if fmt == "bsr" or nnz == 0:
                return False
            minor = m.shape[1] if fmt == "csr" else m.shape[0]
            return minor > 1 and int(m.indices[:nnz].max()) == minor - 1
        if kind in ("indptr-too-short", "indptr-too-long", "indptr-end-past-nnz",
                    "indptr-start-negative", "float-indptr"):
            return True
        if kind == "float-indices":
            return nnz > 0
        return nnz > 0
    if fmt == "coo":
        n = m.coords[0].shape[0]
        if kind == "shape-shrunk":
            return m.shape[1] > 1 and n > 0 and int(np.max(m.coords[1])) == m.shape[1] - 1
        return n > 0
    if fmt == "dia":
        if kind == "more-diagonals-than-offsets":
            return m.offsets.shape[0] >= 1
        return m.offsets.shape[0] >= 1
    if fmt == "lil":
        if kind == "data-shorter-than-rows":
            return any(len(r) for r in m.rows)
        return True
    if fmt == "dok":
        return True
    return False


def bad_sparse(fmt: str, kind: str, shape: Tuple[int, int], *, array: bool = False,
               seed: int = 0, dtype=np.float64):
    """A matrix of ``fmt`` and ``shape`` corrupted by ``kind`` (deterministic)."""
    m = valid_sparse(fmt, shape, array=array, seed=seed, dtype=dtype)
    if fmt == "dia":
        m = container("dia", array)(m)  # a dia matrix with several diagonals
    if not applicable(m, kind):
        raise ValueError(f"corruption {kind} does not apply to this {fmt} matrix {shape}")
    return corrupt(m, kind)


def describe_sparse(m) -> str:
    """A compact, complete description of a (possibly corrupted) matrix, for failure logs."""
    def arr(a):
        a = np.asarray(a)
        return f"{a.dtype}{list(a.tolist()) if a.size <= 64 else list(a.ravel()[:64].tolist())}"
    parts = [f"{type(m).__name__}(shape={m.shape}"]
    fmt = m.format
    if fmt in ("csr", "csc", "bsr"):
        parts.append(f"indptr={arr(m.indptr)}, indices={arr(m.indices)}, "
                     f"data.shape={m.data.shape}")
    elif fmt == "coo":
        parts.append(f"row={arr(m.coords[0])}, col={arr(m.coords[1])}, "
                     f"data.shape={m.data.shape}")
    elif fmt == "dia":
        parts.append(f"offsets={arr(m.offsets)}, data.shape={m.data.shape}")
    elif fmt == "lil":
        parts.append(f"rows={[list(r) for r in m.rows]}, "
                     f"data lens={[len(d) for d in m.data]}")
    elif fmt == "dok":
        parts.append(f"keys={sorted(m._dict)[:32]}")
    return ", ".join(parts) + ")"


# =========================================================================== Hypothesis


def random_sparse(rng: np.random.Generator, fmt: str, shape: Tuple[int, int],
                  dtype=np.float64):
    """A random valid matrix of ``fmt``: container, density, block size and index dtype drawn
    from ``rng``."""
    n0, n1 = shape
    density = rng.choice([0.0, 0.2, 0.5, 1.0])
    A = np.where(rng.random(shape) < density, rng.normal(size=shape).round(3), 0.0)
    A = (A + 0.0).astype(dtype)
    cls = container(fmt, bool(rng.integers(2)))
    if fmt == "bsr":
        R = rng.choice([d for d in (1, 2, 3) if n0 % d == 0])
        C = rng.choice([d for d in (1, 2, 3) if n1 % d == 0])
        m = cls(A, blocksize=(int(R), int(C)))
    else:
        m = cls(A)
    if fmt in ("csr", "csc", "bsr") and rng.integers(2):
        m.indices = m.indices.astype(np.int64)
        m.indptr = m.indptr.astype(np.int64)
    if fmt == "coo" and rng.integers(2):
        m.coords = tuple(c.astype(np.int64) for c in m.coords)
    return m


def sparse_inputs(rows=(1, 10), cols=(1, 9), *, formats=("csr", "csc", "coo", "bsr"),
                  corrupt_probability: float = 0.75, dtype=np.float64, min_rows: int = 1):
    """Strategy of ``(matrix, kind)``: a random valid sparse matrix of a drawn format, shape,
    container (``*_matrix`` / ``*_array``) and index dtype; ``kind`` is the corruption then
    applied to its structure (None: left valid). Hypothesis draws the structural choices
    (shape, format, whether and how to corrupt, the bad value); a drawn seed fills in the rest
    (values, density, block size, which entry is corrupted), which keeps an example cheap."""
    from hypothesis import strategies as st

    @st.composite
    def build(draw):
        n0 = draw(st.integers(max(min_rows, rows[0]), rows[1]))
        n1 = draw(st.integers(cols[0], cols[1]))
        fmt = draw(st.sampled_from(formats))
        seed = draw(st.integers(0, 2**32 - 1))
        corrupted = draw(st.integers(0, 99)) < 100 * corrupt_probability
        rng = np.random.default_rng(seed)
        m = random_sparse(rng, fmt, (n0, n1), dtype)
        if not corrupted:
            return m, None
        kinds = [k for k in KINDS[fmt] if applicable(m, k)]
        if not kinds:
            return m, None
        kind = kinds[draw(st.integers(0, len(kinds) - 1))]
        value = draw(st.sampled_from([None, 0, 1, 3, 2**20]))
        corrupt(m, kind, pos=int(rng.integers(0, 1000)), value=value)
        return m, kind

    return build()


# =========================================================================== Hypothesis targets
# Each target: a model factory (called once), a call that feeds X to the model, the strategy
# of its inputs (shapes it accepts) and optional extra draws. Run by run_hypothesis_target in a
# forked child (test_hostile_inputs.py), so a segfault fails one test instead of pytest.

ALLOWED = (ValueError, TypeError, IndexError)


def run_hypothesis_target(target: str, n_examples: int = 500, log=None) -> Dict[str, Any]:
    """Run the Hypothesis loop of one target; raises AssertionError on a contract breach.
    ``log`` (a text file) receives each example's description before it runs, so the
    last line names the example that killed the process."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    from _probes import diff, snapshot
    spec = TARGETS[target]
    model = spec["make"]()
    counts = {"valid": 0, "corrupted": 0}
    inputs = spec["strategy"]()
    extras = spec.get("extra", st.none)()
    # One model serves every example (a deep copy per example would double the cost), so a
    # failing example cannot be replayed on the model it failed on: Hypothesis's replay of it
    # re-raises the first failure instead of reporting the example as flaky.
    failures: Dict[str, AssertionError] = {}

    @settings(max_examples=n_examples, deadline=None, derandomize=True, database=None,
              phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck),
              print_blob=False)
    @given(case=inputs, extra=extras)
    def check(case, extra):
        X, kind = case
        key = f"{kind} {describe_sparse(X)} {extra!r}"
        if key in failures:
            raise failures[key]
        if log is not None:
            log.write(f"{target}: {key}\n")
            log.flush()
        try:
            one(X, kind, extra)
        except AssertionError as e:
            failures[key] = e
            raise

    def one(X, kind, extra):
        # A valid call may change the model (a new fit); a refused one must not.
        obj = model
        before = snapshot(obj) if obj is not None and kind is not None else None
        try:
            spec["call"](obj, X, extra)
        except ALLOWED as e:
            if kind is None:
                raise AssertionError(f"valid input refused with {type(e).__name__}: {e}; "
                                     f"X={describe_sparse(X)}") from None
            if before is not None:
                changed = diff(before, snapshot(obj))
                if changed:
                    raise AssertionError(f"{kind}: refused but the model changed: {changed}; "
                                         f"X={describe_sparse(X)}") from None
            counts["corrupted"] += 1
            return
        except Exception as e:  # noqa: BLE001 - any other exception breaks the contract
            raise AssertionError(f"{'valid input' if kind is None else kind}: "
                                 f"{type(e).__name__}: {e}; X={describe_sparse(X)}") from None
        if kind is not None:
            raise AssertionError(f"corrupted input accepted ({kind}): X={describe_sparse(X)}")
        counts["valid"] += 1

    check()
    return counts


def _fitted(kind: str):
    """Small fitted models on fixed data (n_features 7, a 9 x 8 ratings matrix)."""
    import warnings
    rng = np.random.default_rng(0)
    X = sp.random(40, 7, density=0.5, format="csr", random_state=0)
    ycls = np.arange(40) % 2
    yreg = rng.normal(size=40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "sgdc":
            from sparseopt.linear_model import SGDClassifier
            return SGDClassifier(loss="log_loss", max_iter=1, tol=None, random_state=0).fit(
                X, ycls)
        if kind == "sgdr":
            from sparseopt.linear_model import SGDRegressor
            return SGDRegressor(max_iter=1, tol=None, random_state=0).fit(X, yreg)
        if kind == "fmr":
            from sparseopt.recommend import FMRegressor
            return FMRegressor(n_components=2, n_epochs=1, random_state=0).fit(X, yreg)
        if kind == "fmc":
            from sparseopt.recommend import FMClassifier
            return FMClassifier(n_components=2, n_epochs=1, random_state=0).fit(X, ycls)
        if kind in ("mf", "mfbpr", "mfwarp"):
            from sparseopt.datasets import make_ratings
            from sparseopt.recommend import MatrixFactorization
            R = make_ratings(9, 8, 30, random_state=0)
            if kind == "mfwarp":  # the ratings read as counts (confidence weights 1 + r/2)
                return MatrixFactorization(n_components=2, n_epochs=1, batch_size=8,
                                           loss="warp", confidence_alpha=0.5,
                                           random_state=0).fit(R)
            return MatrixFactorization(n_components=2, n_epochs=1, batch_size=8,
                                       loss="squared" if kind == "mf" else "bpr",
                                       random_state=0).fit(R)
    raise KeyError(kind)


def _fit_call(method):
    def call(est, X, extra):
        import warnings
        n = X.shape[0]
        classifier = "Classifier" in type(est).__name__
        y = np.arange(n) % 2 if classifier else np.linspace(-1.0, 1.0, n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "partial_fit" and classifier:
                return est.partial_fit(X, y, classes=np.array([0, 1]))
            return getattr(est, method)(X, y)
    return call


def _predict_call(est, X, extra):
    method = extra or "predict"
    return getattr(est, method)(X)


def _opt_call(_, X, extra):
    import sparseopt as so
    from sparseopt.optim import SGD
    cls = {"adam": so.Adam, "adagrad": so.Adagrad, "rmsprop": so.RMSprop, "sgd": SGD}[extra]
    P = np.ones(X.shape, dtype=np.float64)
    bias = np.zeros(3)
    opt = cls({"emb": P, "bias": bias}, lr=0.1)
    before = snapshot_pair(opt, P, bias)
    try:
        opt.step({"bias": np.ones(3), "emb": X})
    except ALLOWED:
        from _probes import diff
        changed = diff(before, snapshot_pair(opt, P, bias))
        if changed:
            raise AssertionError(f"optimizer refused the step but changed: {changed}") from None
        raise
    if not np.all(np.isfinite(P)):
        raise AssertionError("non-finite parameter after a valid step")


def snapshot_pair(*objs):
    from _probes import snapshot
    return snapshot(objs)


def _metric_call(name):
    def call(_, X, extra):
        from sparseopt.recommend import metrics
        m, n = X.shape
        rng = np.random.default_rng(extra or 0)
        if name == "auc_score":
            return metrics.auc_score(X, rng.normal(size=(m, n)))
        if name == "auc_score-exclude":
            good = sp.csr_matrix(dense_full_rows((m, n)))
            return metrics.auc_score(good, rng.normal(size=(m, n)), exclude=X)
        k = 3
        rec = rng.integers(-1, n, size=(m, k))
        return getattr(metrics, name)(X, rec, k=k)
    return call


def _holdout_call(_, X, extra):
    from sparseopt.datasets import holdout_split
    return holdout_split(X, 0.5, random_state=0)


def _targets() -> Dict[str, Dict[str, Any]]:
    from hypothesis import strategies as st
    all_fmts = ("csr", "csc", "coo", "bsr")
    t: Dict[str, Dict[str, Any]] = {}
    t["optimizer.step"] = dict(
        make=lambda: None, copy=False, call=_opt_call,
        strategy=lambda: sparse_inputs((1, 10), (1, 6), formats=all_fmts),
        extra=lambda: st.sampled_from(["adam", "adagrad", "rmsprop", "sgd"]))
    for est, label in (("sgdc", "SGDClassifier"), ("sgdr", "SGDRegressor"),
                       ("fmr", "FMRegressor"), ("fmc", "FMClassifier")):
        for method, cols in (("fit", (1, 9)), ("partial_fit", (7, 7))):
            t[f"{label}.{method}"] = dict(
                make=(lambda e=est: _fitted(e)), call=_fit_call(method),
                strategy=(lambda c=cols: sparse_inputs((2, 10), c, formats=all_fmts,
                                                       min_rows=2)))
        methods = {"sgdc": ["predict", "decision_function", "predict_proba"],
                   "sgdr": ["predict"], "fmr": ["predict"],
                   "fmc": ["predict", "decision_function", "predict_proba"]}[est]
        t[f"{label}.predict"] = dict(
            make=(lambda e=est: _fitted(e)), call=_predict_call,
            strategy=lambda: sparse_inputs((1, 10), (7, 7), formats=all_fmts),
            extra=(lambda ms=methods: st.sampled_from(ms)))
    for est, label in (("mf", "MatrixFactorization"), ("mfbpr", "MatrixFactorization-bpr")):
        t[f"{label}.fit"] = dict(
            make=(lambda e=est: _fitted(e)), call=lambda m, X, e: m.fit(X),
            strategy=lambda: sparse_inputs((1, 10), (1, 9), formats=all_fmts))
    t["MatrixFactorization.partial_fit"] = dict(
        make=lambda: _fitted("mf"), call=lambda m, X, e: m.partial_fit(X),
        strategy=lambda: sparse_inputs((9, 9), (8, 8), formats=all_fmts))
    for name in ("precision_at_k", "recall_at_k", "ndcg_at_k", "auc_score",
                 "auc_score-exclude"):
        t[f"metrics.{name}"] = dict(
            make=lambda: None, copy=False, call=_metric_call(name),
            strategy=lambda: sparse_inputs((1, 8), (3, 9), formats=all_fmts),
            extra=lambda: st.integers(0, 100))
    t["datasets.holdout_split"] = dict(
        make=lambda: None, copy=False, call=_holdout_call,
        strategy=lambda: sparse_inputs((1, 10), (1, 9), formats=all_fmts))
    return t


class _LazyTargets(dict):
    def __missing__(self, key):
        if not super().__len__():
            self.update(_targets())
            return self[key]
        raise KeyError(key)

    def keys(self):  # noqa: D102
        if not super().__len__():
            self.update(_targets())
        return super().keys()


TARGETS: Dict[str, Dict[str, Any]] = _LazyTargets()
TARGET_NAMES = (
    ["optimizer.step"]
    + [f"{label}.{m}" for label in ("SGDClassifier", "SGDRegressor", "FMRegressor",
                                    "FMClassifier") for m in ("fit", "partial_fit", "predict")]
    + ["MatrixFactorization.fit", "MatrixFactorization-bpr.fit",
       "MatrixFactorization.partial_fit"]
    + [f"metrics.{n}" for n in ("precision_at_k", "recall_at_k", "ndcg_at_k", "auc_score",
                                "auc_score-exclude")]
    + ["datasets.holdout_split"]
)
