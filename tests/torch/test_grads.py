"""The one place that reads a sparse gradient's storage (``sparse_grad_parts``), and the
``torch`` extra's floor, the version ``sparseopt.torch`` checks."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# "torch.optim", not "torch": without PyTorch, tests/ on sys.path would make this folder an
# importable (empty) namespace package named torch
pytest.importorskip("torch.optim")
import torch  # noqa: E402

import sparseopt.torch as sot  # noqa: E402


def test_sparse_grad_parts_returns_the_uncoalesced_storage():
    """An embedding's gradient holds one entry per lookup, in lookup order, duplicates
    included; the parts are the tensor's own storage (no copy, no coalescing). If torch ever
    coalesces these gradients or changes ``_indices()`` / ``_values()``, this fails."""
    emb = torch.nn.Embedding(10, 3, sparse=True)
    ids = torch.tensor([4, 1, 4, 9, 4])
    (emb(ids) * torch.arange(5.0)[:, None]).sum().backward()
    g = emb.weight.grad
    assert g.is_sparse and not g.is_coalesced()
    idx, vals = sot.sparse_grad_parts(g)
    assert idx.tolist() == [ids.tolist()]
    assert vals[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert idx.data_ptr() == g._indices().data_ptr()
    assert vals.data_ptr() == g._values().data_ptr()
    idx_np = idx[0].numpy()
    assert idx_np.__array_interface__["data"][0] == idx.data_ptr()  # the NumPy view shares it
    # summing the parts is what coalescing would give
    dense = torch.zeros(10, 3).index_add_(0, idx[0], vals)
    assert torch.equal(dense, g.coalesce().to_dense())


def test_embedding_bag_gradients_are_read_as_stored():
    bag = torch.nn.EmbeddingBag(10, 2, mode="sum", sparse=True, padding_idx=0)
    bag(torch.tensor([1, 0, 1, 3]), torch.tensor([0, 2]),
        per_sample_weights=torch.tensor([1.0, 2.0, 3.0, 4.0])).sum().backward()
    idx, vals = sot.sparse_grad_parts(bag.weight.grad)
    assert idx.tolist() == [[1, 1, 3]]  # the padding index is left out by torch
    assert vals[:, 0].tolist() == [1.0, 3.0, 4.0]


def test_torch_extra_floor_is_the_checked_version():
    text = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'^torch = \["torch>=([0-9.]+)"\]', text, re.M).group(1)
    assert tuple(int(x) for x in floor.split(".")) == sot.MIN_TORCH
    assert sot._version_tuple(torch.__version__) >= sot.MIN_TORCH
    assert sot._version_tuple("2.13.0+cpu") == (2, 13)
    assert sot._version_tuple("2.1.0a0+git123") == (2, 1)
