"""One rank of tests/torch/test_ddp.py: DistributedDataParallel (gloo, CPU) over a model with
a sparse embedding, stepped by sparseopt.torch; writes a digest of its parameters.

Usage: python _ddp_worker.py RANK WORLD_SIZE PORT OUT_FILE OPTIMIZER[,OPTIMIZER...]

One line per optimizer: the digest and whether the embedding moved. An optimizer name ending
in ``/no_sync`` trains without all-reducing the gradients (``DDP.no_sync``), the control whose
replicas must differ.
"""
import contextlib
import datetime
import hashlib
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import sparseopt.torch as sot
from sparseopt.optim import _base


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = torch.nn.EmbeddingBag(500, 8, mode="sum", sparse=True)
        self.lin = torch.nn.Linear(8, 1)

    def forward(self, ids, offsets):
        return self.lin(self.emb(ids, offsets)).squeeze(1)


OPTIMIZERS = {
    "Adam": lambda p, n: sot.Adam(p, lr=0.05, n_threads=n),
    "Adam-decay": lambda p, n: sot.Adam(p, lr=0.05, lazy="decay", weight_decay=0.01,
                                        n_threads=n),
    "Adagrad": lambda p, n: sot.Adagrad(p, lr=0.1, n_threads=n),
}


def main():
    rank, world, port, out, kind = (int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]),
                                    sys.argv[4], sys.argv[5])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=datetime.timedelta(seconds=60))
    # each rank on its own thread count, the kernels splitting rows over threads even for
    # these small steps: the replicas must still agree bit for bit
    _base.PARALLEL_MIN_ELEMENTS = 0
    lines = [train(rank, name) for name in kind.split(",")]
    with open(out, "w") as f:
        f.write("".join(lines))
    dist.destroy_process_group()


def train(rank, name):
    kind, _, mode = name.partition("/")
    torch.manual_seed(100 + rank)  # different weights per rank: DDP broadcasts rank 0's
    model = Net()
    ddp = DDP(model)
    opt = OPTIMIZERS[kind](ddp.parameters(), rank + 1)
    g = torch.Generator().manual_seed(rank)  # each rank its own batches
    first = model.emb.weight.detach().clone()
    for _ in range(6):
        ids = (torch.rand(64, generator=g) ** 3 * 500).long()
        offsets = torch.arange(0, 64, 4)
        y = torch.rand(16, generator=g)
        opt.zero_grad()
        with ddp.no_sync() if mode == "no_sync" else contextlib.nullcontext():
            loss = ((ddp(ids, offsets) - y) ** 2).mean()
            loss.backward()
        assert model.emb.weight.grad.is_sparse
        opt.step()
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().numpy().tobytes())
    moved = not torch.equal(first, model.emb.weight.detach())
    return f"{name} {digest.hexdigest()} {int(moved)}\n"


if __name__ == "__main__":
    main()
