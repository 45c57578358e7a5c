"""Text classification in a scikit-learn pipeline
==============================================

Text classification with sparseopt's SGDClassifier in a scikit-learn pipeline.

Documents are generated (nothing is downloaded): each of ``--n-classes`` topics has its own
Zipf-distributed vocabulary, mixed into a shared Zipf "background" language, so most words carry
no signal and a topic shows only through the words it favours. The pipeline hashes words into
2**20 features (``HashingVectorizer``, L2-normalised rows; ``--tfidf`` uses ``TfidfVectorizer``
and the vocabulary instead) and fits

* ``sparseopt.linear_model.SGDClassifier(loss="log_loss")``: multinomial logistic regression
  trained by lazy Adagrad (the default optimizer) in mini-batches, touching only the features
  present in each batch;
* ``sklearn.linear_model.SGDClassifier(loss="log_loss")``: per-sample SGD, one-vs-rest;
* ``sklearn.linear_model.LogisticRegression()``: the full-batch (L-BFGS) reference;

all with default parameters, and prints held-out accuracy, log-loss and fit time.

    python examples/text_classification.py                 # 10,000 documents, about 1 minute
    python examples/text_classification.py --tfidf         # vocabulary features, seconds

Most of the minute is ``LogisticRegression``: L-BFGS updates all 4 x 2**20 coefficients at
every iteration, where the SGD estimators touch only the features of each sample or batch.
"""
import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.linear_model import SGDClassifier as SklearnSGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.model_selection import train_test_split

from sparseopt.linear_model import SGDClassifier


def make_documents(n_docs, n_classes=4, vocabulary=50_000, length=80, topic_share=0.04,
                   seed=0):
    """``n_docs`` space-separated documents and their topic labels.

    A word is drawn from the background Zipf(1.1) distribution over the whole vocabulary, or,
    with probability ``topic_share``, from the document's topic: a Zipf(1.1) distribution over
    the vocabulary in a topic-specific random order.
    """
    rng = np.random.default_rng(seed)
    words = np.array([f"w{i}" for i in range(vocabulary)])
    p = 1.0 / np.arange(1, vocabulary + 1) ** 1.1
    cdf = np.cumsum(p / p.sum())
    topic_order = [rng.permutation(vocabulary) for _ in range(n_classes)]
    y = rng.integers(0, n_classes, size=n_docs)
    lengths = rng.poisson(length, size=n_docs) + 5
    docs = []
    for label, n_words in zip(y, lengths):
        ranks = np.searchsorted(cdf, rng.random(n_words))
        from_topic = rng.random(n_words) < topic_share
        ids = np.where(from_topic, topic_order[label][ranks], ranks)
        docs.append(" ".join(words[ids]))
    return docs, y


def main(argv=None):
    ap = argparse.ArgumentParser(description="sparseopt SGDClassifier on generated text")
    ap.add_argument("--n-docs", type=int, default=10_000)
    ap.add_argument("--n-classes", type=int, default=4)
    ap.add_argument("--n-features", type=int, default=2**20)
    ap.add_argument("--tfidf", action="store_true",
                    help="TfidfVectorizer (vocabulary) instead of HashingVectorizer")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    docs, y = make_documents(args.n_docs, args.n_classes, seed=args.seed)
    docs_train, docs_test, y_train, y_test = train_test_split(docs, y, test_size=0.25,
                                                              random_state=0)
    if args.tfidf:
        vectorizer = TfidfVectorizer()
        kind = "tf-idf"
    else:
        vectorizer = HashingVectorizer(n_features=args.n_features, alternate_sign=False)
        kind = "hashed"
    X_train = vectorizer.fit_transform(docs_train)  # CSR, float64, rows L2-normalised
    X_test = vectorizer.transform(docs_test)
    X = X_train
    print(f"{args.n_docs:,} documents, {args.n_classes} topics, {X.shape[1]:,} {kind} features, "
          f"{X.nnz / X.shape[0]:.0f} nonzeros per document (prepared in "
          f"{time.perf_counter() - t0:.1f} s)\n")

    models = {
        "sparseopt SGDClassifier(loss='log_loss')": SGDClassifier(loss="log_loss",
                                                                  random_state=0),
        "sklearn SGDClassifier(loss='log_loss')": SklearnSGDClassifier(loss="log_loss",
                                                                       random_state=0),
        "sklearn LogisticRegression()": LogisticRegression(),
    }
    print(f"| {'model':<42} | accuracy | log-loss | fit time (s) | epochs/iterations |")
    print(f"|{'-' * 44}|---------:|---------:|-------------:|------------------:|")
    for name, model in models.items():
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(X_train, y_train)
        fit_time = time.perf_counter() - t0
        acc = accuracy_score(y_test, model.predict(X_test))
        ll = log_loss(y_test, model.predict_proba(X_test), labels=model.classes_)
        n_iter = np.max(model.n_iter_)
        print(f"| {name:<42} | {acc:8.4f} | {ll:8.4f} | {fit_time:12.2f} | {n_iter:17d} |")


if __name__ == "__main__":
    main()
