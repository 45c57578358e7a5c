"""Doctest collection of the package: ``sparseopt.torch`` needs PyTorch (an optional
dependency), so its modules are not collected where it is missing. (A namespace package named
torch, such as the tests/torch folder when tests/ is on sys.path, has no origin: not PyTorch.)"""
import importlib.util

_spec = importlib.util.find_spec("torch")
collect_ignore_glob = [] if _spec is not None and _spec.origin else ["sparseopt/torch/*"]
