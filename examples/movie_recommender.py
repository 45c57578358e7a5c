"""A movie recommender: ratings and clicks
=======================================

A movie recommender on generated data: explicit ratings (MF) and implicit clicks (BPR).

Two models from ``sparseopt.recommend``, each trained by lazy ``sparseopt.Adam`` row updates:

1. **Ratings**: a biased matrix factorisation fitted to ratings (mean 3.5, unbounded) with the
   squared loss; we print the held-out RMSE after every epoch.
2. **Clicks**: the same factorisation fitted to "watched" events with the BPR ranking loss
   (Rendle et al. 2009: a watched movie should outscore a random unwatched one); we print the
   held-out precision@10 after every epoch, next to recommending the most popular movies.

Then the top-10 movies for a few users (never one they have already seen) and the movies
most similar to a popular one. The data come from ``sparseopt.datasets``: Zipfian user
activity and movie popularity with a hidden low-rank taste signal, so nothing is downloaded.

Run:  python examples/movie_recommender.py            (about 10 s on one core)
"""
import os
import time

import numpy as np

from sparseopt.datasets import holdout_split, make_interactions, make_ratings
from sparseopt.recommend import MatrixFactorization, metrics

# The documentation build runs every example on small data (SPARSEOPT_EXAMPLES_QUICK=1,
# set by docs/conf.py); run by hand, it uses the full sizes (the values after "else").
QUICK = os.environ.get("SPARSEOPT_EXAMPLES_QUICK") == "1"
N_USERS, N_MOVIES = (4_000, 2_000) if QUICK else (20_000, 4_000)
N_RATINGS, N_CLICK_USERS, N_CLICKS = ((60_000, 3_000, 150_000) if QUICK
                                      else (440_000, 6_000, 300_000))
EPOCHS_MF, EPOCHS_BPR = (8, 8) if QUICK else (8, 10)
rng = np.random.default_rng(0)
# Made-up titles, so that the recommendations read like recommendations.
WORDS = ["Night", "River", "Last", "Silent", "Blue", "Empire", "Summer", "Ghost", "Iron",
         "Paper", "Winter", "Golden", "Lost", "Red", "Storm", "Glass", "Wild", "Secret"]
TITLES = [f"{rng.choice(WORDS)} {rng.choice(WORDS)} ({1950 + m % 70})" for m in range(N_MOVIES)]


def show(title, ids, scores, fmt):
    print(title)
    for rank, (m, s) in enumerate(zip(ids, scores), 1):
        print(f"   {rank:2d}. {TITLES[m]:<28s} {fmt.format(s)}")


# --------------------------------------------------------------------------- explicit ratings

print("== Explicit ratings: biased matrix factorisation, squared loss ==")
X = make_ratings(N_USERS, N_MOVIES, N_RATINGS, rank=8, zipf=1.0, noise=0.4, random_state=0)
train, test = holdout_split(X, test_size=1 / 11, random_state=0)
print(f"{train.nnz:,} training ratings, {test.nnz:,} held out; predicting the mean rating "
      f"gives RMSE {metrics.rmse(test.data, np.full(test.nnz, train.data.mean())):.4f}")

mf = MatrixFactorization(n_components=32, optimizer="adam", learning_rate=0.01, alpha=0.02,
                         batch_size=4096, random_state=0)
t0 = time.perf_counter()
for epoch in range(1, EPOCHS_MF + 1):
    mf.partial_fit(train, eval_set=test)          # one epoch; the optimizer state carries over
    h = mf.history_[-1]
    print(f"epoch {epoch}  train RMSE {h['train_rmse']:.4f}  test RMSE {h['eval']:.4f}  "
          f"({h['rows_per_s'] / 1e6:.1f}M ratings/s)")
print(f"trained in {time.perf_counter() - t0:.1f} s")

for user in (0, 1, 2):
    ids, scores = mf.recommend(user, n=10)        # seen movies are excluded
    show(f"\nTop 10 for user {user} ({train[user].nnz} ratings), predicted rating:",
         ids, scores, "{:.2f}")

# --------------------------------------------------------------------------- implicit clicks

print("\n== Implicit feedback: BPR ==")
# 6,000 users who watched 50 of 2,000 movies on average (the first 2,000 movie titles)
C = make_interactions(N_CLICK_USERS, 2_000, N_CLICKS, rank=8, zipf=0.8, signal=8.0, random_state=1)
ctrain, ctest = holdout_split(C, test_size=0.1, random_state=1)
users = np.flatnonzero(np.diff(ctest.indptr))[:3000]      # users with held-out clicks

popular = np.argsort(-np.bincount(ctrain.indices, minlength=C.shape[1]), kind="stable")
seen = ctrain[users].tolil().rows
pop_recs = np.array([[m for m in popular[:300] if m not in set(s)][:10] for s in seen])
print(f"{ctrain.nnz:,} training clicks; recommending the most popular unseen movies: "
      f"precision@10 {metrics.precision_at_k(ctest[users], pop_recs, 10):.4f}")

bpr = MatrixFactorization(n_components=16, loss="bpr", learning_rate=0.01, alpha=0.05,
                          batch_size=4096, random_state=0)
for epoch in range(1, EPOCHS_BPR + 1):
    bpr.partial_fit(ctrain)
    recs, _ = bpr.recommend(users, n=10)
    print(f"epoch {epoch}  BPR loss {bpr.history_[-1]['loss']:.4f}  "
          f"precision@10 {metrics.precision_at_k(ctest[users], recs, 10):.4f}  "
          f"recall@10 {metrics.recall_at_k(ctest[users], recs, 10):.4f}  "
          f"ndcg@10 {metrics.ndcg_at_k(ctest[users], recs, 10):.4f}")

ids, scores = bpr.recommend(users[0], n=10)
show(f"\nTop 10 for user {users[0]} (clicked {ctrain[users[0]].nnz}), BPR score:", ids, scores,
     "{:+.2f}")
ids, sims = bpr.similar_items(popular[0], n=5)
show(f"\nMost similar to '{TITLES[popular[0]]}' (cosine of the factors):", ids, sims,
     "{:.3f}")
