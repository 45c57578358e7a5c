"""nn.Embedding stepped by sparseopt.Adam, next to SparseAdam
==========================================================

PyTorch model, sparseopt optimizer: step an nn.Embedding(sparse=True) with so.Adam.

PyTorch computes the gradients; sparseopt updates the embedding table in place
through a NumPy view that shares the tensor's memory. The embedding gradient
(a sparse COO tensor with one row per lookup, duplicates included) becomes a
RowGrad without coalescing: sparseopt merges the duplicates itself.

The same training is run with torch.optim.SparseAdam for comparison; with
preset="torch" sparseopt follows SparseAdam's update rule, so the two
trajectories agree to float32 rounding.
"""
import os
import sys
import time

import numpy as np
import sparseopt as so

try:
    import torch
    from torch import nn
except ImportError:
    sys.exit("examples/torch_embedding.py needs PyTorch: pip install torch")

# The documentation build runs every example on small data (SPARSEOPT_EXAMPLES_QUICK=1,
# set by docs/conf.py); run by hand, it uses the full sizes (the values after "else").
QUICK = os.environ.get("SPARSEOPT_EXAMPLES_QUICK") == "1"
N_USERS, N_ITEMS, DIM, BATCH = 20_000, 5_000, 16, 2_048
STEPS = 30 if QUICK else 100

# Ratings from a hidden low-rank model; Zipf-popular users and items.
rng = np.random.default_rng(0)
users = torch.from_numpy((rng.zipf(1.1, size=STEPS * BATCH) - 1) % N_USERS)
items = torch.from_numpy((rng.zipf(1.1, size=STEPS * BATCH) - 1) % N_ITEMS)
p, q = rng.normal(0, 0.6, (N_USERS, 4)), rng.normal(0, 0.6, (N_ITEMS, 4))
ratings = torch.from_numpy((p[users] * q[items]).sum(1) + 3.0).float()


class DotModel(nn.Module):
    def __init__(self):
        super().__init__()
        # users and items share one table (items offset by N_USERS)
        self.emb = nn.Embedding(N_USERS + N_ITEMS, DIM, sparse=True)
        nn.init.normal_(self.emb.weight, std=0.1)
        self.bias = nn.Parameter(torch.zeros(()))        # a dense parameter

    def forward(self, u, i):
        return (self.emb(u) * self.emb(i + N_USERS)).sum(1) + self.bias


def train(optimizer):
    torch.manual_seed(0)                                 # same init for every run
    model = DotModel()
    dense_opt = torch.optim.Adam([model.bias], lr=0.05)  # dense params: any torch optimizer
    if optimizer == "torch.optim.SparseAdam":
        sparse_opt = torch.optim.SparseAdam([model.emb.weight], lr=0.01)
    else:
        W = model.emb.weight.data.numpy()                # shares memory: updates land in the model
        kwargs = {"preset": "torch"} if "torch" in optimizer else {}
        sparse_opt = so.Adam([W], lr=0.01, **kwargs)
    t_step = 0.0
    for s in range(0, STEPS * BATCH, BATCH):
        u, i, r = users[s:s + BATCH], items[s:s + BATCH], ratings[s:s + BATCH]
        model.zero_grad()
        loss = ((model(u, i) - r) ** 2).mean()
        loss.backward()
        dense_opt.step()
        t0 = time.perf_counter()
        if optimizer == "torch.optim.SparseAdam":
            sparse_opt.step()
        else:
            g = model.emb.weight.grad                     # uncoalesced sparse COO tensor:
            idx = g._indices()[0].numpy()                 # .indices() refuses uncoalesced input,
            sparse_opt.step([so.RowGrad(idx, g._values().numpy())])  # _indices() does not copy
        t_step += time.perf_counter() - t0
    return model.emb.weight.detach().numpy().copy(), loss.item(), t_step


results = {name: train(name) for name in
           ("torch.optim.SparseAdam", "so.Adam(preset='torch')", "so.Adam()")}
print(f"{STEPS} steps of {BATCH} lookups on a {N_USERS + N_ITEMS:,} x {DIM} nn.Embedding")
for name, (W, loss, t) in results.items():
    print(f"  {name:<26} final batch loss {loss:.4f}   embedding step time {t:.3f} s")
W_torch, W_so = results["torch.optim.SparseAdam"][0], results["so.Adam(preset='torch')"][0]
print(f"max |W_sparseopt - W_torch| with preset='torch': {np.abs(W_so - W_torch).max():.2e}")
print("so.Adam() defaults to per-row bias correction: a row first seen late takes an lr-sized\n"
      "first step, where SparseAdam's global correction can make it up to ~3x larger.")
