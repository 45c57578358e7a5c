"""Lazy Adam on an embedding table and a sparse weight
===================================================

Minimal sparseopt usage: lazy Adam on an embedding table and a sparse linear weight."""
import numpy as np
import scipy.sparse as sp
import sparseopt as so

rng = np.random.default_rng(0)
E = rng.normal(size=(100_000, 16)).astype(np.float32)   # embedding table, updated in place
w = np.zeros(100_000, dtype=np.float32)                 # 1-D weight: rows of width 1
opt = so.Adam({"emb": E, "w": w}, lr=1e-3)

idx = rng.integers(0, 100_000, size=512)                # duplicates allowed: they are summed
g_rows = rng.normal(size=(512, 16)).astype(np.float32)  # one gradient row per index
g_w = sp.random(1, 100_000, density=1e-3, format="csr", dtype=np.float32, random_state=0)
before = E.copy()
opt.step({"emb": so.RowGrad(idx, g_rows), "w": g_w})    # only the touched rows are read/written
print("rows of E changed:", np.any(E != before, axis=1).sum(), "of", len(E),
      "| unique indices:", len(np.unique(idx)), "| entries of w changed:", np.count_nonzero(w))
