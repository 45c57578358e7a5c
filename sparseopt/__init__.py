"""sparseopt: lazy Adam, Adagrad, RMSprop and FTRL-Proximal for sparse and embedding-row gradients.

Only the rows a gradient touches are read and written, by Cython/SIMD kernels that run in
parallel over rows. See ``sparseopt.Adam``, ``sparseopt.Adagrad``, ``sparseopt.RMSprop``, ``sparseopt.Ftrl`` and
``sparseopt.RowGrad``; ``sparseopt.show_config()`` prints how the kernels were built.
"""
import os as _os

# OpenMP threads that spin while waiting steal the core another process (or our own other
# thread) needs; on a busy machine that turned 0.15 ms steps into milliseconds. Sleep instead,
# unless the user chose a policy. Must be set before the kernels load the OpenMP runtime.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._config import show_config  # noqa: E402
from ._version import __version__  # noqa: E402
from .optim import Adagrad, Adam, Ftrl, RMSprop, RowGrad  # noqa: E402

__all__ = ["Adam", "Adagrad", "RMSprop", "Ftrl", "RowGrad", "show_config", "__version__"]
