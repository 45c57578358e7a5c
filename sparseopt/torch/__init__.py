"""sparseopt's optimizers as ``torch.optim.Optimizer`` subclasses (needs PyTorch >= 2.0, the
``torch`` extra: ``pip install "sparseopt[torch]"``).

``Adam``, ``AdamW``, ``Adagrad``, ``RMSprop`` and ``SGD`` take ``model.parameters()`` (CPU
float32/float64 tensors) and update them in place with the NumPy optimizers' kernels and rules,
from dense and sparse COO gradients alike. ``import sparseopt`` never imports this module (nor
torch).
"""
try:
    import torch as _torch
    import torch.optim  # noqa: F401  (a folder named torch on sys.path is not PyTorch)
except ImportError as _e:  # pragma: no cover - depends on the environment
    raise ImportError('sparseopt.torch needs PyTorch: pip install "sparseopt[torch]"') from _e

#: The oldest PyTorch supported, as ``(major, minor)``: the floor of the "torch" extra in
#: pyproject.toml (a test keeps the two equal); the step hooks and state-dict hooks of
#: ``torch.optim.Optimizer`` used here exist from 2.0 on, and importing this module with an
#: older PyTorch raises ``ImportError``.
MIN_TORCH = (2, 0)


def _version_tuple(version: str):
    parts = []
    for piece in version.split("+")[0].split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


if _version_tuple(_torch.__version__) < MIN_TORCH:  # pragma: no cover
    raise ImportError(f"sparseopt.torch needs PyTorch >= {'.'.join(map(str, MIN_TORCH))}, "
                      f"found {_torch.__version__}")

from ._optim import SGD, Adagrad, Adam, AdamW, RMSprop, sparse_grad_parts  # noqa: E402

__all__ = ["Adam", "AdamW", "Adagrad", "RMSprop", "SGD", "sparse_grad_parts", "MIN_TORCH"]
