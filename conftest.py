"""Doctest collection of the package: ``sparseopt.torch`` needs PyTorch and ``sparseopt.dask``
needs Dask and distributed (optional dependencies), so their modules are not collected where
those are missing. (A namespace package named torch, such as the tests/torch folder when tests/
is on sys.path, has no origin: not PyTorch; the same holds for tests/dask.)"""
import importlib.util


def _installed(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    return spec is not None and spec.origin is not None


collect_ignore_glob = []
if not _installed("torch"):
    collect_ignore_glob.append("sparseopt/torch/*")
if not (_installed("dask") and _installed("distributed")):
    collect_ignore_glob.append("sparseopt/dask/*")
