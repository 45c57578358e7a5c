"""Doctest collection of the package: ``sparseopt.torch`` needs PyTorch (an optional
dependency), so its modules are not collected where it is missing."""
import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("torch") else ["sparseopt/torch/*"]
