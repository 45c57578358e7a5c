"""Cold-start items on real data: MovieLens films never seen in training, ranked from their
genres and release year.

Data: dslabs::movielens (``benchmarks/quality_rec_data.py``; 100,004 ratings of 671 users on
9,066 films, with each film's ``genres`` and ``year``). A rating >= 4 is a positive, as in the
suite's ``movielens_implicit``. A seeded 20% of the films are *cold*: all their ratings are
held out, the model never sees them. The other films train (their positives only).

Task: for every user with a positive among the cold films (and at least one in training),
rank all cold films; a cold film the user rated >= 4 is relevant. No film is excluded (no
user has a training interaction with a cold film). Metrics: precision@10, recall@10 and the
per-user AUC over the cold films, averaged over those users.

Item features of the model: one column per genre (19 and "(no genres listed)"), one per
distinct combination of genres (unless ``--no-genre-sets``) and one per release decade (and
one for an unknown year), each film's row scaled to sum 1 (the mean of its feature rows,
LightFM's normalisation) unless ``--raw-features``. The popularity baselines see the genres
and the decade (the combination is theirs through the same-set baseline).

Contenders:

* ``random``: a seeded random ranking (the floor).
* ``popularity by features (mean)``: the fair popularity baseline for cold items: a feature's
  popularity is the mean training positive count of the warm films that have it, and a cold
  film scores the feature-weighted mean of its features' popularities. The same list for
  every user.
* ``popularity by features (same set)``: the mean positive count of the warm films with
  exactly the cold film's features (same genres, same decade); the ridge guess below when
  no warm film matches. The same list for every user.
* ``popularity by features (ridge)``: the least-squares fit (ridge 1e-3, with an intercept)
  of the warm films' positive counts on their features, applied to the cold films: the best
  linear guess of popularity from the metadata. The same list for every user.
* ``MF-BPR + item features``: ``MatrixFactorization(loss="bpr")`` with the library's
  defaults, users as themselves, films represented only by their features.
* ``MF-BPR + item features + identity``: the same with an identity column per warm film
  (``add_identity_features``, LightFM's default); cold films have none, so they are scored
  from their features only.

Run: ``python benchmarks/cold_start.py`` (about 30 s; ``--seeds`` sets the item splits).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import scipy.sparse as sp

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:
    sys.path.insert(0, os.path.dirname(HERE))

from sparseopt.recommend import MatrixFactorization, add_identity_features, metrics  # noqa

COLD_FRACTION = 0.2
THRESHOLD = 4.0
K = 10


@dataclass
class ColdSplit:
    """Users x warm films (training positives), users x cold films (held-out positives),
    and the films' feature rows."""
    X_train: sp.csr_matrix
    X_test: sp.csr_matrix
    F_warm: sp.csr_matrix
    F_cold: sp.csr_matrix
    feature_names: List[str]
    test_users: np.ndarray
    # genres and decade only, whatever the model's features: what the popularity baselines
    # see (the same-set baseline already keys on the whole combination)
    B_warm: sp.csr_matrix = None
    B_cold: sp.csr_matrix = None

    def describe(self) -> str:
        return (f"{self.X_train.shape[0]} users, {self.X_train.shape[1]} warm films "
                f"({self.X_train.nnz} positives), {self.X_test.shape[1]} cold films "
                f"({self.X_test.nnz} positives), {self.test_users.shape[0]} test users, "
                f"{len(self.feature_names)} features")


def item_features(genres: Sequence[str], years: Sequence[float], normalize: bool = True,
                  genre_sets: bool = False) -> tuple:
    """One row per film: its genres (``|``-separated) and its release decade; with
    ``genre_sets``, also one column per distinct combination of genres."""
    names: Dict[str, int] = {}
    rows, cols = [], []
    for r, (g, y) in enumerate(zip(genres, years)):
        feats = [f"genre={x}" for x in str(g).split("|") if x]
        if genre_sets:
            feats.append(f"genres={'|'.join(sorted(str(g).split('|')))}")
        feats.append("decade=unknown" if y is None or not np.isfinite(y)
                     else f"decade={int(y) // 10 * 10}")
        for f in feats:
            rows.append(r)
            cols.append(names.setdefault(f, len(names)))
    F = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(genres), len(names)))
    F.sum_duplicates()
    if normalize:
        s = np.asarray(F.sum(axis=1)).reshape(-1)
        F = sp.csr_matrix(sp.diags(1.0 / np.where(s > 0, s, 1.0)) @ F)
    order = sorted(names, key=names.get)
    return F, order


def build_split(frame, seed: int = 0, cold_fraction: float = COLD_FRACTION,
                normalize: bool = True, genre_sets: bool = True) -> ColdSplit:
    """The cold-item split of a ratings frame with ``userId``, ``movieId``, ``rating``,
    ``genres`` and ``year`` columns (dslabs::movielens's)."""
    users, u = np.unique(np.asarray(frame["userId"]), return_inverse=True)
    films, f_idx = np.unique(np.asarray(frame["movieId"]), return_inverse=True)
    u, f_idx = u.reshape(-1), f_idx.reshape(-1)
    n_users, n_films = users.shape[0], films.shape[0]
    first = np.unique(f_idx, return_index=True)[1]  # a row per film for its metadata
    genres = np.asarray(frame["genres"])[first]
    years = np.asarray(frame["year"], dtype=np.float64)[first]
    rng = np.random.default_rng(seed)
    n_cold = int(round(cold_fraction * n_films))
    perm = rng.permutation(n_films)
    cold = np.zeros(n_films, bool)
    cold[perm[:n_cold]] = True
    # column ids of warm and cold films, each in film order
    col = np.empty(n_films, np.int64)
    col[~cold] = np.arange(n_films - n_cold)
    col[cold] = np.arange(n_cold)
    pos = np.asarray(frame["rating"], dtype=np.float64) >= THRESHOLD
    tr = pos & ~cold[f_idx]
    te = pos & cold[f_idx]
    X_train = sp.csr_matrix((np.ones(tr.sum()), (u[tr], col[f_idx[tr]])),
                            shape=(n_users, n_films - n_cold))
    X_test = sp.csr_matrix((np.ones(te.sum()), (u[te], col[f_idx[te]])),
                           shape=(n_users, n_cold))
    for X in (X_train, X_test):
        X.sum_duplicates()
        X.data[:] = 1.0
    F, names = item_features(genres, years, normalize, genre_sets)
    B, _ = item_features(genres, years, normalize, False)
    test_users = np.flatnonzero((np.diff(X_test.indptr) > 0) & (np.diff(X_train.indptr) > 0))
    return ColdSplit(X_train, X_test, F[~cold], F[cold], names, test_users, B[~cold],
                     B[cold])


# -- contenders: each returns the (n_test_users, n_cold) scores --------------------------------

def random_scores(s: ColdSplit, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 1000).random((s.test_users.shape[0], s.F_cold.shape[0]))


def _same_for_all(s: ColdSplit, item_scores: np.ndarray) -> np.ndarray:
    return np.broadcast_to(item_scores, (s.test_users.shape[0], item_scores.shape[0])).copy()


def popularity_mean(s: ColdSplit, seed: int) -> np.ndarray:
    counts = np.asarray(s.X_train.sum(axis=0)).reshape(-1)
    has = (s.B_warm != 0).astype(np.float64)
    n_with = np.asarray(has.sum(axis=0)).reshape(-1)
    feat_pop = (has.T @ counts) / np.where(n_with > 0, n_with, 1.0)
    feat_pop[n_with == 0] = counts.mean()  # a feature no warm film has: the overall mean
    W = abs(s.B_cold)
    w = np.asarray(W.sum(axis=1)).reshape(-1)
    score = (W @ feat_pop) / np.where(w > 0, w, 1.0)
    score[w == 0] = counts.mean()
    return _same_for_all(s, score)


def popularity_ridge(s: ColdSplit, seed: int) -> np.ndarray:
    counts = np.asarray(s.X_train.sum(axis=0)).reshape(-1)
    A = np.hstack([s.B_warm.toarray(), np.ones((s.B_warm.shape[0], 1))])
    G = A.T @ A + 1e-3 * np.eye(A.shape[1])
    w = np.linalg.solve(G, A.T @ counts)
    score = np.hstack([s.B_cold.toarray(), np.ones((s.B_cold.shape[0], 1))]) @ w
    return _same_for_all(s, score)


def popularity_same_features(s: ColdSplit, seed: int) -> np.ndarray:
    """The mean positive count of the warm films with exactly the cold film's feature row
    (same genres, same decade); the ridge guess when no warm film has that row."""
    counts = np.asarray(s.X_train.sum(axis=0)).reshape(-1)

    def keys(F: sp.csr_matrix) -> List[bytes]:
        F = F.tocsr()
        F.sort_indices()
        return [F.indices[F.indptr[r]:F.indptr[r + 1]].tobytes() for r in range(F.shape[0])]

    total: Dict[bytes, float] = {}
    number: Dict[bytes, int] = {}
    for key, c in zip(keys(s.B_warm), counts):
        total[key] = total.get(key, 0.0) + c
        number[key] = number.get(key, 0) + 1
    fallback = popularity_ridge(s, seed)[0]
    score = np.array([total[key] / number[key] if key in number else fallback[r]
                      for r, key in enumerate(keys(s.B_cold))])
    return _same_for_all(s, score)


def _mf_scores(model: MatrixFactorization, s: ColdSplit, F_cold: sp.csr_matrix) -> np.ndarray:
    n_cold = F_cold.shape[0]
    users = np.repeat(s.test_users, n_cold)
    items = np.tile(np.arange(n_cold), s.test_users.shape[0])
    return model.predict(users, items, item_features=F_cold).reshape(-1, n_cold)


def mf_features(s: ColdSplit, seed: int) -> np.ndarray:
    model = MatrixFactorization(loss="bpr", random_state=seed)
    model.fit(s.X_train, item_features=s.F_warm)
    return _mf_scores(model, s, s.F_cold)


def mf_features_identity(s: ColdSplit, seed: int) -> np.ndarray:
    n_warm = s.F_warm.shape[0]
    F = add_identity_features(sp.vstack([s.F_warm, s.F_cold]), n_identity=n_warm)
    model = MatrixFactorization(loss="bpr", random_state=seed)
    model.fit(s.X_train, item_features=F[:n_warm])
    return _mf_scores(model, s, F[n_warm:])


CONTENDERS: Dict[str, Callable[[ColdSplit, int], np.ndarray]] = {
    "random": random_scores,
    "popularity by features (mean)": popularity_mean,
    "popularity by features (ridge)": popularity_ridge,
    "popularity by features (same set)": popularity_same_features,
    "MF-BPR + item features": mf_features,
    "MF-BPR + item features + identity": mf_features_identity,
}


def evaluate_scores(s: ColdSplit, S: np.ndarray) -> Dict[str, float]:
    """precision@10, recall@10 and AUC of the scores of the test users over the cold films
    (ties broken to the lower film id, as ``recommend`` does)."""
    truth = s.X_test[s.test_users]
    order = np.argsort(-S, axis=1, kind="stable")[:, :K]
    return {"precision@10": metrics.precision_at_k(truth, order, K),
            "recall@10": metrics.recall_at_k(truth, order, K),
            "auc": metrics.auc_score(truth, S)}


def run(frame, seeds: Sequence[int] = (0, 1, 2), normalize: bool = True,
        genre_sets: bool = True,
        contenders: Optional[Dict[str, Callable]] = None,
        log: Callable[[str], None] = print) -> Dict[str, List[Dict[str, float]]]:
    """Every contender on the cold split of every seed: ``{name: [metrics per seed]}``."""
    contenders = CONTENDERS if contenders is None else contenders
    out: Dict[str, List[Dict[str, float]]] = {name: [] for name in contenders}
    for seed in seeds:
        s = build_split(frame, seed, normalize=normalize, genre_sets=genre_sets)
        log(f"seed {seed}: {s.describe()}")
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            res = evaluate_scores(s, fn(s, seed))
            res["seconds"] = time.perf_counter() - t0
            out[name].append(res)
            log(f"  {name:36s} p@10 {res['precision@10']:.4f}  r@10 {res['recall@10']:.4f}"
                f"  auc {res['auc']:.4f}  ({res['seconds']:.1f} s)")
    return out


def summary(results: Dict[str, List[Dict[str, float]]]) -> str:
    lines = [f"{'contender':36s} {'precision@10':>18s} {'recall@10':>18s} {'auc':>18s}"]
    for name, rows in results.items():
        cells = []
        for m in ("precision@10", "recall@10", "auc"):
            v = np.array([r[m] for r in rows])
            cells.append(f"{v.mean():.4f} +- {v.std():.4f}")
        lines.append(f"{name:36s} " + " ".join(f"{c:>18s}" for c in cells))
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated item-split seeds")
    ap.add_argument("--raw-features", action="store_true",
                    help="feature values 1 (rows not scaled to sum 1)")
    ap.add_argument("--no-genre-sets", action="store_true",
                    help="no feature per distinct combination of genres (the model's "
                    "features are then the genres and the decade only)")
    args = ap.parse_args(argv)
    sys.path.insert(0, HERE)
    from quality_rec_data import _rdata

    frame = _rdata("dslabs", "movielens")
    seeds = [int(x) for x in args.seeds.split(",")]
    results = run(frame, seeds, normalize=not args.raw_features, genre_sets=not args.no_genre_sets)
    print()
    print(f"mean +- std over item splits {seeds}:")
    print(summary(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
