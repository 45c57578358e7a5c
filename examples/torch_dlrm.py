"""A DLRM-style click model with sparseopt.torch
=============================================

A small DLRM-style click model trained with sparseopt.torch.Adam.

Two sparse ``nn.EmbeddingBag`` tables (Zipf-popular ids) and dense features feed an MLP with a
binary cross-entropy loss. One ``sparseopt.torch.Adam`` steps every parameter, the sparse
tables (lazily: only the rows a batch touches) and the dense layers alike; a cosine lr
schedule drives it. Half way, model and optimizer are checkpointed with ``torch.save`` and
reloaded with ``torch.load(weights_only=True)`` into a fresh model: the resumed run ends
bit-for-bit where the uninterrupted one does.
"""
import io
import os
import sys

import numpy as np

try:
    import torch
    from torch import nn
except ImportError:
    sys.exit("examples/torch_dlrm.py needs PyTorch: pip install torch")

import sparseopt.torch as sot

# The documentation build runs every example on small data (SPARSEOPT_EXAMPLES_QUICK=1,
# set by docs/conf.py); run by hand, it uses the full sizes (the values after "else").
QUICK = os.environ.get("SPARSEOPT_EXAMPLES_QUICK") == "1"
ROWS, DIM, BATCH, POOL = (50_000, 5_000), 8, 256, 3
STEPS = 40 if QUICK else 80


class DLRM(nn.Module):
    def __init__(self):
        super().__init__()
        self.tables = nn.ModuleList(nn.EmbeddingBag(n, DIM, mode="sum", sparse=True)
                                    for n in ROWS)
        self.bottom = nn.Sequential(nn.Linear(4, DIM), nn.ReLU())
        self.top = nn.Sequential(nn.Linear(DIM * 3, 32), nn.ReLU(), nn.Linear(32, 1))

    def forward(self, dense, ids, offsets):
        x = [self.bottom(dense)] + [t(i, offsets) for t, i in zip(self.tables, ids)]
        return self.top(torch.cat(x, 1)).squeeze(1)


rng = np.random.default_rng(0)
# each id has a hidden effect on the click rate; popular ids are seen often, rare ones seldom
effects = [rng.normal(0, 1, n) for n in ROWS]
data = []
for _ in range(STEPS):
    ids = [(rng.zipf(1.3, BATCH * POOL) - 1) % n for n in ROWS]
    dense = rng.normal(size=(BATCH, 4))
    logit = sum(e[i].reshape(BATCH, POOL).sum(1) for e, i in zip(effects, ids)) + dense[:, 0]
    y = (rng.random(BATCH) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    data.append((torch.from_numpy(dense).float(), [torch.from_numpy(i) for i in ids],
                 torch.from_numpy(y)))
offsets = torch.arange(0, BATCH * POOL, POOL)
loss_fn = nn.BCEWithLogitsLoss()


def build(seed=0):
    torch.manual_seed(seed)
    model = DLRM()
    opt = sot.Adam(model.parameters(), lr=0.02)   # sparse and dense parameters together
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)
    return model, opt, sched


def train(model, opt, sched, batches):
    losses = []
    for dense, ids, y in batches:
        opt.zero_grad()
        loss = loss_fn(model(dense, ids, offsets), y)
        loss.backward()                   # uncoalesced sparse gradients for the tables
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


model, opt, sched = build()
losses = train(model, opt, sched, data[:STEPS // 2])
buf = io.BytesIO()
torch.save({"model": model.state_dict(), "opt": opt.state_dict(),
            "sched": sched.state_dict()}, buf)
losses += train(model, opt, sched, data[STEPS // 2:])

resumed, opt2, sched2 = build(seed=1)   # other initial weights: all of it comes from the file
buf.seek(0)
ckpt = torch.load(buf, weights_only=True)
resumed.load_state_dict(ckpt["model"])
opt2.load_state_dict(ckpt["opt"])
sched2.load_state_dict(ckpt["sched"])
train(resumed, opt2, sched2, data[STEPS // 2:])

same = all(torch.equal(a, b) for a, b in zip(model.parameters(), resumed.parameters()))
touched = int((opt.state[model.tables[0].weight]["row_step"] > 0).sum())
print(f"{STEPS} steps of {BATCH} samples; tables of {ROWS[0]:,} and {ROWS[1]:,} rows")
print(f"training loss: first 10 steps {np.mean(losses[:10]):.4f}, "
      f"last 10 steps {np.mean(losses[-10:]):.4f}")
print(f"rows of table 0 ever updated: {touched:,} of {ROWS[0]:,}")
print(f"resumed from the checkpoint, bitwise equal to the uninterrupted run: {same}")
