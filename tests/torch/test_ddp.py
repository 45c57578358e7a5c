"""DistributedDataParallel: two processes (gloo backend, CPU, 127.0.0.1) train a model with a
sparse embedding, each on its own batches and its own thread count, stepped by
``sparseopt.torch``: after the all-reduced gradients every rank's update must leave
bitwise-identical replicas (tests/torch/_ddp_worker.py)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

# "torch.optim", not "torch": without PyTorch, tests/ on sys.path would make this folder an
# importable (empty) namespace package named torch
pytest.importorskip("torch.optim")
import torch  # noqa: E402
dist = pytest.importorskip("torch.distributed")

WORKER = Path(__file__).with_name("_ddp_worker.py")
ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 240


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


KINDS = ["Adam", "Adam-decay", "Adagrad", "Adam/no_sync"]


def test_ddp_replicas_are_bitwise_identical(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available")
    port = _free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS="2")
    outs = [tmp_path / f"rank{r}.txt" for r in range(2)]
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(r), "2", str(port),
                               str(outs[r]), ",".join(KINDS)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
             for r in range(2)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT)[0].decode(errors="replace"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for r, p in enumerate(procs):
        assert p.returncode == 0, f"rank {r} failed:\n{logs[r] if r < len(logs) else ''}"
    rank0, rank1 = ([line.split() for line in o.read_text().splitlines()] for o in outs)
    assert [r[0] for r in rank0] == [r[0] for r in rank1] == KINDS
    for (kind, d0, moved0), (_, d1, moved1) in zip(rank0, rank1):
        assert moved0 == moved1 == "1", kind
        if kind.endswith("/no_sync"):  # the control: without the all-reduce they differ
            assert d0 != d1, kind
        else:
            assert d0 == d1, kind
