"""sparseopt: lazy Adam, Adagrad and RMSprop for sparse and embedding-row gradients.

Only the rows a gradient touches are read and written, by Cython/SIMD kernels that run in
parallel over rows. See ``sparseopt.Adam``, ``sparseopt.Adagrad``, ``sparseopt.RMSprop`` and
``sparseopt.RowGrad``; ``sparseopt.show_config()`` prints how the kernels were built.
"""
from ._config import show_config
from ._version import __version__
from .optim import Adagrad, Adam, RMSprop, RowGrad

__all__ = ["Adam", "Adagrad", "RMSprop", "RowGrad", "show_config", "__version__"]
