"""The one way a model builds its optimizer from a name (``optimizer="adam"``)."""
from __future__ import annotations

from typing import Any, Dict, Optional

from .. import _validation as V
from ._adagrad import Adagrad
from ._adam import Adam
from ._ftrl import Ftrl
from ._rmsprop import RMSprop
from ._sgd import SGD

__all__ = ["OPTIMIZERS", "make_optimizer"]

OPTIMIZERS = ("adam", "adagrad", "rmsprop", "sgd", "ftrl")


def make_optimizer(name: str, params: Any, lr: float,
                   n_threads: Optional[int], optimizer_params: Optional[Dict[str, Any]] = None,
                   **fixed: Any):
    """The sparseopt optimizer called ``name`` over ``params`` (a list or dict of arrays).

    ``optimizer_params`` are the user's extra settings; they may not set what the model itself
    decides (``params``, ``lr``, ``n_threads`` and the keys of ``fixed``). ``fixed`` holds the
    model's own settings (e.g. ``nonfinite="ignore"``); ``optimizer="sgd"`` takes none of the
    user's.

    Parameters
    ----------
    name : {"adam", "adagrad", "rmsprop", "sgd", "ftrl"}
        One of ``OPTIMIZERS``.
    params : list or dict of ndarray
        The arrays to update in place.
    lr : float
        The learning rate.
    n_threads : int or None
        Threads for large steps; ``None`` follows OpenMP's default.
    optimizer_params : dict, optional
        Further keyword arguments of the optimizer's class (e.g. ``{"betas": (0.9, 0.99)}``).
    **fixed
        Settings the calling model decides; ``optimizer_params`` may not override them.

    Returns
    -------
    Optimizer

    Raises
    ------
    ValueError
        An unknown ``name``, or ``optimizer_params`` that set what the model decides.

    Examples
    --------
    >>> import numpy as np
    >>> from sparseopt.optim import make_optimizer
    >>> W = np.zeros((10, 3))
    >>> opt = make_optimizer("adam", [W], 0.01, None, {"betas": (0.9, 0.99)})
    >>> type(opt).__name__, opt.param_groups[0]["betas"]
    ('Adam', (0.9, 0.99))
    """
    V.check_choice("optimizer", name, OPTIMIZERS)
    if optimizer_params is not None and not isinstance(optimizer_params, dict):
        raise TypeError(f"optimizer_params must be a dict or None, got "
                        f"{type(optimizer_params).__name__}")
    kw = dict(optimizer_params or {})
    if name == "adam":
        # the models read their optimizer's state by row (preconditioners, Dask side tables)
        fixed = dict(fixed)
        fixed.setdefault("state_layout", "direct")
    for bad in ("params", "lr", "n_threads") + tuple(fixed):
        if bad in kw:
            raise ValueError(f"optimizer_params may not set {bad!r}: the model sets it")
    if name == "sgd":
        if kw:
            raise ValueError(f"optimizer='sgd' takes no optimizer_params, got {sorted(kw)}")
        sgd_fixed = {k: v for k, v in fixed.items() if k in ("nonfinite", "duplicates")}
        return SGD(params, lr=lr, n_threads=n_threads, **sgd_fixed)
    cls = {"adam": Adam, "adagrad": Adagrad, "rmsprop": RMSprop, "ftrl": Ftrl}[name]
    return cls(params, lr=lr, n_threads=n_threads, **fixed, **kw)
