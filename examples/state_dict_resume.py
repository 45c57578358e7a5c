"""Checkpoint and resume a NumPy optimizer
=======================================

Checkpoint and resume: parameters with np.savez, optimizer state with pickle.

Training for 2*N steps in one go and training N steps, saving, reloading into
fresh objects and training N more give bitwise identical tables.
"""
import os
import pickle
import tempfile

import numpy as np
import sparseopt as so

N_ROWS, DIM, STEPS, BATCH = 20_000, 8, 50, 1_000


def batches(seed):
    """A reproducible stream of (indices, gradient rows) with Zipf-popular rows."""
    rng = np.random.default_rng(seed)
    while True:
        idx = (rng.zipf(1.2, size=BATCH) - 1) % N_ROWS
        yield idx, rng.normal(size=(BATCH, DIM)).astype(np.float32)


def init():
    return np.random.default_rng(1).normal(scale=0.1, size=(N_ROWS, DIM)).astype(np.float32)


def train(E, opt, stream, n):
    for _ in range(n):
        idx, g = next(stream)
        opt.step([so.RowGrad(idx, g)])


# Reference: 2 * STEPS steps without interruption.
E_ref = init()
opt_ref = so.Adam([E_ref], lr=1e-2, lazy="decay")
stream_ref = batches(seed=2)
train(E_ref, opt_ref, stream_ref, 2 * STEPS)

# Interrupted run: STEPS steps, then checkpoint to disk.
E = init()
opt = so.Adam([E], lr=1e-2, lazy="decay")
stream = batches(seed=2)
train(E, opt, stream, STEPS)
with tempfile.TemporaryDirectory() as tmp:
    np.savez(os.path.join(tmp, "params.npz"), E=E)
    with open(os.path.join(tmp, "optim.pkl"), "wb") as f:
        # state_dict() holds plain NumPy arrays and Python scalars: pickles anywhere
        pickle.dump(opt.state_dict(), f)
    del E, opt

    # ... later, in a new process: rebuild the objects, then load the state.
    E = np.load(os.path.join(tmp, "params.npz"))["E"]   # a fresh, writable, C-contiguous array
    opt = so.Adam([E], lr=1e-2, lazy="decay")           # same hyper-parameters as before
    with open(os.path.join(tmp, "optim.pkl"), "rb") as f:
        opt.load_state_dict(pickle.load(f))             # shapes and dtypes are validated

train(E, opt, stream, STEPS)                            # resume: same data stream position
print("resumed run identical to uninterrupted run:", np.array_equal(E, E_ref))
assert np.array_equal(E, E_ref)
