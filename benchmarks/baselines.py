"""The torch.optim contenders: SparseAdam and Adagrad on an uncoalesced sparse gradient.

The gradient is what ``nn.Embedding(sparse=True)`` produces, a ``torch.sparse_coo_tensor``
with duplicates left in, so torch coalesces it inside ``step`` as it does in training. The
parameter is a zero-copy ``torch.from_numpy`` view of the table every contender updates.
torch is imported only when the suite runs with it.
"""

import numpy as np

from .timing import Contender, cycle_batches
from .workloads import LEARNING_RATES

#: torch.optim's sparse counterpart of each optimizer family (None: it has none)
TORCH_COUNTERPART = {"Adam": "SparseAdam", "Adagrad": "Adagrad", "RMSprop": None}


class TorchSide:
    """torch.optim contenders sharing one parameter (a zero-copy view of the NumPy table)."""

    def __init__(self, torch, table):
        self.torch = torch
        self.table = table
        self.param = torch.nn.Parameter(torch.from_numpy(table))
        self._grads = {}

    def grads(self, key, batches):
        """Uncoalesced sparse COO gradients, built once per case (as nn.Embedding builds them)."""
        if key not in self._grads:
            torch = self.torch
            shape = tuple(self.table.shape)
            self._grads = {key: [
                torch.sparse_coo_tensor(torch.from_numpy(idx.astype(np.int64, copy=False))[None, :],
                                        torch.from_numpy(vals), shape, check_invariants=False)
                for idx, vals in batches]}
        return self._grads[key]

    def optimizer(self, name):
        torch = self.torch
        if name == "SparseAdam":
            return torch.optim.SparseAdam([self.param], lr=LEARNING_RATES["Adam"])
        if name == "Adagrad":
            return torch.optim.Adagrad([self.param], lr=LEARNING_RATES["Adagrad"])
        raise ValueError(name)

    def contender(self, optimizer, name, opt, threads, grads):
        torch = self.torch
        param = self.param
        nxt = cycle_batches(grads)

        def setup():
            torch.set_num_threads(threads)

        def step():
            param.grad = nxt()
            opt.step()

        return Contender(optimizer, "torch", threads, step, setup=setup,
                         label=f"torch.optim.{name}")


def import_torch():
    """The torch module, or None when torch is not installed (its columns are then skipped)."""
    try:
        import torch
    except ImportError:
        return None
    return torch
