"""``torch.optim.Optimizer`` subclasses that run sparseopt's NumPy optimizers.

Each parameter gets its own NumPy optimizer (``sparseopt.Adam``, ...) over a zero-copy NumPy
view of the tensor's memory: the update rules, modes, presets, duplicate merging, thread rules
and state checks are those of the NumPy optimizers, unchanged. This module only translates:

* hyper-parameters: ``param_groups[i]`` is the source of truth (lr schedulers read and write
  it); its values are copied into the parameter's NumPy optimizer at every step, which checks
  them again whenever they change;
* parameters: the NumPy view is re-made whenever the tensor's memory changed (``p.data = ...``,
  ``torch.utils.swap_tensors``), after checking the new tensor still fits the state;
* gradients: dense tensors become NumPy views, sparse COO tensors a ``RowGrad`` over their
  stored (uncoalesced) indices and values, without a copy (``sparse_grad_parts``);
* state: ``opt.state[p]`` holds tensors that share memory with the NumPy state, so
  ``state_dict()`` is made of tensors and ints that ``torch.save`` / ``torch.load(...,
  weights_only=True)`` round-trip; ``load_state_dict`` checks everything through the NumPy
  optimizers' ``load_state_dict`` before anything changes, and also reads the state dicts of
  ``torch.optim.SparseAdam`` and ``torch.optim.Adagrad``.

A step is two-phase for all parameters together, as a NumPy step is for its own: every
gradient and parameter of every group is checked and merged first, then the kernels run.
"""
from __future__ import annotations

import threading
import warnings
from collections import defaultdict
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np
import scipy.sparse as sp
import torch

from .. import _validation as V
from .._rowgrad import RowGrad
from ..optim import _base
from ..optim._adagrad import Adagrad as _NpAdagrad
from ..optim._adam import Adam as _NpAdam
from ..optim._rmsprop import RMSprop as _NpRMSprop
from ..optim._sgd import SGD as _NpSGD
from ..optim._slots import SLOT_KEYS as _SLOT_KEYS

__all__ = ["Adam", "AdamW", "Adagrad", "RMSprop", "SGD", "sparse_grad_parts"]

# Keys that torch.optim optimizers keep in a param group and that change nothing here when
# they hold their default (``maximize=True`` has no counterpart and is refused).
_MISSING = object()
_TORCH_GROUP_KEYS = ("foreach", "maximize", "differentiable", "fused", "capturable")


def sparse_grad_parts(grad: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The stored indices ``(sparse_dim, nnz)`` and values of a sparse COO tensor, without
    coalescing and without a copy.

    ``nn.Embedding(sparse=True)`` and ``nn.EmbeddingBag(sparse=True)`` produce uncoalesced
    gradients (one entry per lookup, duplicates included). ``Tensor.indices()`` refuses them
    and ``coalesce()`` would sort and sum on every step; the optimizers merge duplicates
    themselves (in the order given, as ``coalesce`` does). ``_indices()`` / ``_values()`` are
    the accessors that return the storage as it is; this is the one place that calls them
    (``tests/torch/test_grads.py`` fails if torch changes them).

    Parameters
    ----------
    grad : torch.Tensor
        A sparse COO tensor, coalesced or not.

    Returns
    -------
    indices : torch.Tensor
        int64 of shape ``(sparse_dim, nnz)``, as stored.
    values : torch.Tensor
        Of shape ``(nnz, *dense_shape)``, as stored.

    Examples
    --------
    >>> import torch
    >>> from sparseopt.torch import sparse_grad_parts
    >>> emb = torch.nn.Embedding(5, 2, sparse=True)
    >>> emb(torch.tensor([3, 1, 3])).sum().backward()
    >>> idx, vals = sparse_grad_parts(emb.weight.grad)
    >>> idx.tolist(), tuple(vals.shape)
    ([[3, 1, 3]], (3, 2))
    """
    return grad._indices(), grad._values()


def _numpy_grad(name: str, g: torch.Tensor, p: torch.Tensor,
                view_shape: Tuple[int, ...]) -> Any:
    """A parameter's gradient in a form the NumPy optimizers take, sharing its memory."""
    kind = V.check_torch_grad(name, g, p)
    # half-precision tables take float32 gradients (an exact widening); a sparse gradient's
    # values are widened, not the sparse tensor (whose conversion costs far more)
    half = p.dtype in _HALF
    if kind == "dense":
        if half:
            return _widen(g).reshape(view_shape)
        # .grad rarely requires grad itself (create_graph=True makes it so): detach only then
        arr = (g.detach() if g.requires_grad else g).numpy()
        return arr if arr.shape == view_shape else arr.reshape(view_shape)
    idx, vals = sparse_grad_parts(g)
    if kind == "rows":
        values = _widen(vals) if half else vals.detach().numpy()
        return RowGrad(idx[0].numpy(), values.reshape((values.shape[0],) + view_shape[1:]))
    i = idx.numpy()
    # duplicates are summed by the CSR conversion (scipy), then merged as rows
    data = _widen(vals) if half else vals.detach().numpy()
    return sp.coo_array((data, (i[0], i[1])), shape=view_shape)


def _widen(t: torch.Tensor) -> np.ndarray:
    """A float16 or bfloat16 tensor's values as float32 NumPy (exact), converted by NumPy on
    the calling thread (torch's conversion runs on its intra-op pool, whose threads wait for
    cores on a busy machine)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        bits = t.view(torch.int16).numpy().view(np.uint16)
        return (bits.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return t.numpy().astype(np.float32)


class _Slot:
    """One parameter: its NumPy optimizer, the NumPy view it updates and what the view was
    made from (to tell when the tensor's memory changed), the state tensors shown in
    ``opt.state[p]``."""

    __slots__ = ("inner", "key", "name", "shape", "dtype", "view_shape", "ptr", "views")

    def __init__(self, inner: _base.Optimizer, key: str, name: str, p: torch.Tensor,
                 view_shape: Tuple[int, ...]) -> None:
        self.inner = inner
        self.key = key
        self.name = name
        self.shape = tuple(p.shape)
        self.dtype = p.dtype
        self.view_shape = view_shape
        self.ptr = p.data_ptr()
        self.views: Dict[str, Tuple[np.ndarray, torch.Tensor]] = {}

    def follow(self, p: torch.Tensor) -> None:
        """Point the NumPy optimizer at ``p``'s current memory. The view kept from the last
        step holds a reference to the memory it shows, so an unchanged address means the same
        memory; anything else is checked and viewed again."""
        if p.data_ptr() == self.ptr and p.shape == self.shape and p.dtype == self.dtype \
                and p.is_contiguous():
            return
        V.check_torch_param_unchanged(self.name, p, self.shape, self.dtype)
        self.inner._params[0] = _numpy_view(p, self.view_shape)
        self.ptr = p.data_ptr()


# Half-precision parameter dtypes (their gradients are widened to float32 for the kernels).
_HALF = (torch.float16, torch.bfloat16)


def _numpy_view(p: torch.Tensor, view_shape: Tuple[int, ...]) -> np.ndarray:
    """The NumPy view of a contiguous CPU tensor (reshaping a contiguous array never copies);
    a bfloat16 tensor is seen as uint16 words (NumPy has no bfloat16)."""
    if p.dtype == torch.bfloat16:
        return p.detach().view(torch.int16).numpy().view(np.uint16).reshape(view_shape)
    return p.detach().numpy().reshape(view_shape)


class _TorchOptimizer(torch.optim.Optimizer):
    """Shared machinery of the ``sparseopt.torch`` optimizers (see ``Adam``)."""

    _NUMPY: type = _base.Optimizer

    def __init__(self, params: Any, hyper: Dict[str, Any], *, preset: Optional[str],
                 n_threads: Optional[int], duplicates: str, nonfinite: str,
                 rounding: str = "nearest", seed: int = 0,
                 state_dtype: Optional[str] = None, state_layout: Optional[str] = None) -> None:
        # the NumPy optimizer resolves the preset and checks every hyper-parameter and option
        probe = self._new_inner(np.zeros(1, dtype=np.float64), hyper, preset=preset,
                                n_threads=n_threads, duplicates=duplicates, nonfinite=nonfinite,
                                state_layout=state_layout)
        _, _, seed = V.check_storage(None, rounding, seed, True)
        self.preset = preset
        self._options = dict(n_threads=probe.n_threads, duplicates=probe.duplicates,
                             nonfinite=probe.nonfinite, rounding=rounding, seed=seed)
        if V.check_state_dtype(state_dtype) is not None:
            self._options["state_dtype"] = state_dtype
        if state_layout is not None:
            self._options["state_layout"] = state_layout
        self._keys = tuple(self._NUMPY._DEFAULTS)
        self._slots: Dict[torch.Tensor, _Slot] = {}
        self._lock = threading.Lock()
        self._warned_no_grad = False
        super().__init__(params, dict(probe.defaults))

    @classmethod
    def _new_inner(cls, arr: np.ndarray, hyper: Dict[str, Any], *, preset: Optional[str] = None,
                   key: str = "p", **options: Any) -> _base.Optimizer:
        state_dtype = options.pop("state_dtype", None)
        state_layout = options.pop("state_layout", None)
        inner = cls._NUMPY.__new__(cls._NUMPY)
        if state_dtype is not None:
            inner._state_dtype = state_dtype
        _base.Optimizer.__init__(inner, {key: arr}, dict(hyper), preset=preset,
                                 dtype="bfloat16" if arr.dtype == np.uint16 else None,
                                 **options)
        if state_dtype is not None:
            # Adagrad has no lazy mode (a skipped step adds nothing): it counts as frozen
            V.check_bf16_state(inner.param_groups[0].get("lazy", "frozen"), inner._params)
        if hasattr(inner, "_init_tails"):  # a param group's rowwise_tail, checked per tensor
            inner._init_tails()
        if state_layout is not None:
            inner._init_layout(state_layout)
        return inner

    @property
    def n_threads(self) -> Optional[int]:
        """Threads for large steps (``None``: OpenMP's default), as for the NumPy optimizers."""
        return self._options["n_threads"]

    # -- pickling (copy.deepcopy, torch.save of the whole object) -----------------------------

    def __getstate__(self) -> Dict[str, Any]:
        d = super().__getstate__()  # defaults, state, param_groups
        d["_options"] = dict(self._options, preset=self.preset)
        d["state"] = {p: self._dense_state(p, st) for p, st in d["state"].items()}
        return d

    def state_dict(self) -> Dict[str, Any]:
        """``torch.optim.Optimizer.state_dict``, with the moments of a compact table
        (``state_layout``) as tensors shaped like its parameter, by row (new tensors; the
        other entries share memory with the state, as in torch)."""
        sd = super().state_dict()
        ordered = [p for g in self.param_groups for p in g["params"]]
        for idx, st in list(sd["state"].items()):
            if 0 <= idx < len(ordered):
                sd["state"][idx] = self._dense_state(ordered[idx], st)
        return sd

    def _dense_state(self, p: torch.Tensor, shown: Mapping[str, Any]) -> Mapping[str, Any]:
        """``opt.state[p]`` as a direct table holds it: a compact table's slot maps dropped
        and its slotted moments by row, shaped like ``p``."""
        slot = self._slots.get(p)
        if slot is None or not slot.inner._is_compact(0) or \
                not slot.inner.state.get(slot.key):
            return shown
        dense = slot.inner.state_dict()["state"][slot.key]
        out = {}
        for sname, v in shown.items():
            if sname in _SLOT_KEYS:
                continue
            if sname in slot.inner._SLOTTED and isinstance(dense.get(sname), np.ndarray):
                v = torch.from_numpy(dense[sname])
                if v.dim() == 2:  # the moments, shaped like p (a counter is one per row)
                    v = v.view(slot.shape)
            out[sname] = v
        return out

    def __setstate__(self, d: Dict[str, Any]) -> None:
        options = dict(d.pop("_options"))
        super().__setstate__(d)
        self.preset = options.pop("preset")
        self._options = options
        self._keys = tuple(self._NUMPY._DEFAULTS)
        self._slots = {}
        self._lock = threading.Lock()
        self._warned_no_grad = False
        groups, state = self.param_groups, self.state
        self.param_groups, self.state = [], defaultdict(dict)
        for g in groups:
            self.add_param_group(dict(g))
        # the unpickled state goes through the checks of load_state_dict
        ids = {p: i for i, p in enumerate(p for g in groups for p in g["params"])}
        packed = {"state": {ids[p]: st for p, st in state.items() if p in ids},
                  "param_groups": [dict(g, params=[ids[p] for p in g["params"]])
                                   for g in groups]}
        self._load(packed)

    # -- parameters --------------------------------------------------------------------------

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group of parameters (``torch.optim.Optimizer.add_param_group``), after
        checking its parameters (CPU, float32/float64, contiguous, ``requires_grad``) and
        hyper-parameters (as the NumPy optimizer's constructor does)."""
        n_groups = len(self.param_groups)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            hyper = {k: group[k] for k in self._keys}
            new: Dict[torch.Tensor, _Slot] = {}
            for j, p in enumerate(group["params"]):
                name = f"param group {n_groups}, parameter {j}"
                view_shape = V.check_torch_param(name, p)
                key = f"group {n_groups}, parameter {j} (shape {tuple(p.shape)})"
                inner = self._new_inner(_numpy_view(p, view_shape), hyper, key=key,
                                        **self._options)
                inner._stream_base = len(self._slots) + len(new)
                new[p] = _Slot(inner, key, name, p, view_shape)
                hyper = {k: v for k, v in inner.defaults.items() if k in self._keys}
            V._check_no_overlap([(s.key, s.inner._params[0])
                                 for s in list(self._slots.values()) + list(new.values())])
        except BaseException:
            del self.param_groups[n_groups:]
            raise
        group.update(hyper)  # as checked (betas as a tuple of floats, ...)
        self._slots.update(new)

    # -- the step ----------------------------------------------------------------------------

    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        """One update of every parameter that has a gradient (``p.grad`` dense or sparse COO).

        The hyper-parameters are read from ``param_groups`` at every step. Every gradient,
        parameter and hyper-parameter is checked before any parameter or state changes.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss (run with gradients enabled).

        Returns
        -------
        The closure's loss, or None.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with self._lock:
            work = []
            undo: List[Tuple[Any, ...]] = []
            try:
                for group in self.param_groups:
                    hyper = None
                    for p in group["params"]:
                        g = p.grad
                        if g is None:
                            continue
                        slot = self._slots[p]
                        slot.follow(p)
                        self._adopt(p, slot, undo)
                        if hyper is None:
                            hyper = {k: group[k] for k in self._keys}.items()
                        raw = slot.inner.param_groups[0]
                        if not hyper <= raw.items():  # one compiled comparison per value
                            undo.append((raw, None, None, dict(raw)))
                            raw.update(hyper)
                        grad = _numpy_grad(slot.name, g, p, slot.view_shape)
                        work.append((p, slot, slot.inner._prepare({slot.key: grad})))
            except BaseException:
                for _, slot, prepared in reversed(work):
                    slot.inner._release(prepared[1])
                for inner_state, views, sname, old in reversed(undo):
                    if views is None:  # a NumPy optimizer's hyper-parameters
                        inner_state.clear()
                        inner_state.update(old)
                        continue
                    views.pop(sname, None)  # looked at again next step
                    if old is _MISSING:
                        inner_state.pop(sname, None)
                    else:
                        inner_state[sname] = old
                raise
            for p, slot, prepared in work:
                slot.inner._commit(*prepared)
                self._publish(p, slot)
            if not work and not self._warned_no_grad and self._slots:
                self._warned_no_grad = True
                warnings.warn(
                    "step(): no parameter of this optimizer has a gradient, so nothing was "
                    "updated. If the model's parameters were replaced (module.load_state_dict("
                    "..., assign=True) puts new Parameter objects in the module), this "
                    "optimizer still holds the old ones: build it again, load with "
                    "assign=False, or set torch.__future__.set_swap_module_params_on_conversion"
                    "(True) (the same objects then get the new memory, which is followed).",
                    RuntimeWarning, stacklevel=2)
        return loss

    def flush(self) -> None:
        """Bring every row's pending lazy decay up to the current step (``lazy="decay"``; a
        no-op otherwise), as ``sparseopt.Adam.flush`` does."""
        with self._lock:
            for group in self.param_groups:
                hyper = {k: group[k] for k in self._keys}
                for p in group["params"]:
                    slot = self._slots[p]
                    slot.follow(p)
                    slot.inner.param_groups[0].update(hyper)
            for group in self.param_groups:
                for p in group["params"]:
                    self._slots[p].inner.flush()

    def _adopt(self, p: torch.Tensor, slot: _Slot,
               undo: List[Tuple[Any, ...]]) -> None:
        """Entries of ``opt.state[p]`` that were replaced (``opt.state[p]["exp_avg"] = t``)
        become the NumPy optimizer's, as replacing an array of a NumPy optimizer's ``state``
        does; its step checks their shape, dtype and layout before any kernel runs, and a
        refused step puts the previous entries back (``undo``). (Writing into the shown
        tensors needs nothing: they share the NumPy state's memory.)"""
        shown = self.state.get(p)
        if not shown:
            return
        inner_state = slot.inner.state[slot.key]
        views = slot.views
        for sname, v in shown.items():
            cached = views.get(sname)
            if cached is not None and cached[1] is v:  # the tensor shown at the last step
                continue
            if isinstance(v, torch.Tensor):
                arr = self._numpy_state(slot, {sname: v})[sname]
                undo.append((inner_state, views, sname, inner_state.get(sname, _MISSING)))
                inner_state[sname] = arr
                views[sname] = (arr, v)
            elif inner_state.get(sname) is not v:
                undo.append((inner_state, views, sname, inner_state.get(sname, _MISSING)))
                inner_state[sname] = v

    def _publish(self, p: torch.Tensor, slot: _Slot) -> None:
        """``opt.state[p]``: the NumPy state as tensors sharing its memory, shaped like ``p``
        where the state is one value per element, and the scalars (``step``, ...)."""
        shown = self.state[p]
        views = slot.views
        for sname, v in slot.inner.state[slot.key].items():
            if isinstance(v, np.ndarray):
                cached = views.get(sname)
                if cached is None or cached[0] is not v:
                    t = (torch.from_numpy(v.view(np.int16)).view(torch.bfloat16)
                         if v.dtype == np.uint16 else torch.from_numpy(v))  # bfloat16 moments
                    if v.shape == slot.view_shape and v.shape != slot.shape:
                        t = t.view(slot.shape)
                    cached = views[sname] = (v, t)
                shown[sname] = cached[1]
            else:
                shown[sname] = v

    # -- state -------------------------------------------------------------------------------

    def _hyper_from_torch(self, saved: Mapping[str, Any], current: Dict[str, Any]
                          ) -> Optional[Dict[str, Any]]:
        """If ``saved`` is a param group of the matching ``torch.optim`` optimizer, the
        hyper-parameters that continue its run (refusing what has no counterpart); None if it
        is not one."""
        return None

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Load a state dict from ``state_dict()`` (also after ``torch.save`` /
        ``torch.load(..., weights_only=True)``), or from ``torch.optim.SparseAdam`` (into
        ``Adam(preset="torch")``) or ``torch.optim.Adagrad`` (into ``Adagrad``).

        Every group and state is checked as the NumPy optimizers' ``load_state_dict`` checks
        it (names, shapes, dtypes, values a run can produce) before anything changes; state is
        copied. Groups replace the current ones (keeping the parameters), as in torch.
        """
        for hook in self._optimizer_load_state_dict_pre_hooks.values():
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        with self._lock:
            self._load(state_dict)
        for hook in self._optimizer_load_state_dict_post_hooks.values():
            hook(self)

    def _load(self, state_dict: Any) -> None:
        slots, groups = self._check_state_dict(state_dict)
        self.param_groups[:] = groups
        self._slots.update(slots)
        self.state = defaultdict(dict)
        for p, slot in slots.items():
            if slot.inner.state[slot.key]:
                self._publish(p, slot)

    def _check_state_dict(self, state_dict: Any):
        states, saved_groups = V.check_torch_state_dict(
            state_dict, [len(g["params"]) for g in self.param_groups])
        slots: Dict[torch.Tensor, _Slot] = {}
        groups = []
        for gi, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            current = {k: group[k] for k in self._keys}
            hyper = self._hyper_from_torch(saved, current)
            if hyper is None:
                missing = [k for k in self._keys if k not in saved]
                if missing:
                    raise KeyError(f"param group {gi} of state_dict lacks {missing}: it is not "
                                   f"from a sparseopt.torch.{type(self).__name__}")
                hyper = {k: saved[k] for k in self._keys}
                extra = {k: v for k, v in saved.items() if k not in self._keys}
            else:
                extra = {k: v for k, v in saved.items()
                         if k not in current and k not in _TORCH_GROUP_KEYS}
            extra.pop("params")
            new_group = dict(extra, **hyper)
            for j, (sid, p) in enumerate(zip(saved["params"], group["params"])):
                slot = self._slots[p]
                slot.follow(p)
                inner = self._new_inner(slot.inner._params[0], hyper, key=slot.key,
                                        **self._options)
                inner._stream_base = slot.inner._stream_base
                st = states.get(sid)
                if st:
                    inner.load_state_dict({"state": {slot.key: self._numpy_state(slot, st)}})
                fresh = _Slot(inner, slot.key, slot.name, p, slot.view_shape)
                slots[p] = fresh
                new_group.update({k: v for k, v in inner.defaults.items() if k in self._keys})
            new_group["params"] = group["params"]
            groups.append(new_group)
        return slots, groups

    @staticmethod
    def _numpy_state(slot: _Slot, st: Any) -> Dict[str, Any]:
        """A saved state as NumPy arrays over the parameter's view, and Python scalars."""
        if not isinstance(st, Mapping):
            raise TypeError(f"state_dict: the state of {slot.name} must be a dict, got "
                            f"{type(st).__name__}")
        out: Dict[str, Any] = {}
        for sname, v in st.items():
            if sname == "step":
                out[sname] = V.check_torch_step(slot.name, v)
            elif isinstance(v, torch.Tensor):
                V.check_torch_state_tensor(slot.name, sname, v)
                if v.dtype == torch.bfloat16:  # bfloat16 moments: their bits
                    arr = v.detach().view(torch.int16).numpy().view(np.uint16)
                else:
                    arr = v.detach().numpy()
                if arr.shape == slot.shape and slot.shape != slot.view_shape:
                    arr = arr.reshape(slot.view_shape)
                out[sname] = arr
            else:
                out[sname] = v
        return out


# The NumPy optimizers' docstrings describe the rules; these say what differs.
_COMMON = """
    A ``torch.optim.Optimizer``: it takes ``model.parameters()`` or param groups, and works
    with ``zero_grad``, ``add_param_group``, step hooks and every ``torch.optim.lr_scheduler``
    (``step()`` reads each group's hyper-parameters every time). Parameters must be CPU
    float32, float64, float16 or bfloat16 tensors, contiguous, with ``requires_grad=True``;
    they are updated in place through NumPy views of their memory (followed when ``p.data`` is
    replaced). Half-precision parameters are updated as :class:`sparseopt.Adam` updates
    half-precision tables: their gradients (in the parameter's dtype) are widened to float32,
    the state is float32, and updated rows are rounded back (``rounding="nearest"``, or
    ``"stochastic"`` for bfloat16 parameters, from ``seed``; each tensor of the optimizer has
    its own stream).
    Gradients may be dense or sparse COO (uncoalesced, as ``nn.Embedding(sparse=True)`` and
    ``nn.EmbeddingBag(sparse=True)`` make them), in the same optimizer. ``state_dict()``
    holds tensors and ints (``torch.save`` / ``torch.load(weights_only=True)`` round-trip,
    bit-exact resume).
"""


class Adam(_TorchOptimizer):
    __doc__ = """Lazy Adam for PyTorch models: ``sparseopt.Adam``'s rules on ``p.grad``.
""" + _COMMON + """
    Weight decay is decoupled (AdamW), as in ``sparseopt.Adam``; ``preset="torch"`` follows
    ``torch.optim.SparseAdam`` and continues a run from its ``state_dict()``. On dense
    gradients every row is touched at every step, so the default (``bias_correction="row"``,
    ``eps`` added to the corrected root) is ``torch.optim.Adam`` / ``AdamW``'s rule.

    Parameters
    ----------
    params : iterable of tensors or of dicts (param groups)
    lr, betas, eps, weight_decay, amsgrad, lazy, bias_correction, preset, rowwise
        As for :class:`sparseopt.Adam`; each may differ per param group (``lazy``,
        ``bias_correction`` and ``rowwise`` cannot change after a parameter's first step). A
        param group may also set ``rowwise_tail`` (an int, applied to each of its tensors).
    n_threads, duplicates, nonfinite, rounding, seed, state_dtype, state_layout
        As for :class:`sparseopt.Adam`, for the whole optimizer (``state_dtype="bfloat16"``
        state is shown and saved as bfloat16 tensors; ``opt.state[p]`` of a compact table
        shows its slot buffers and maps, and ``state_dict()`` its moments shaped like ``p``).

    Examples
    --------
    >>> import torch, sparseopt.torch as sot
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> emb = torch.nn.EmbeddingBag(1000, 8, mode="sum", sparse=True)
    >>> head = torch.nn.Linear(8, 1)
    >>> opt = sot.Adam(list(emb.parameters()) + list(head.parameters()), lr=0.01)
    >>> before = emb.weight[3].clone()
    >>> ids, offsets = torch.tensor([3, 7, 3, 9]), torch.tensor([0, 2])
    >>> head(emb(ids, offsets)).sum().backward()   # a sparse and a dense gradient
    >>> opt.step(); opt.zero_grad()
    >>> bool((emb.weight[3] != before).all()), sorted(opt.state_dict()["state"][0])
    (True, ['exp_avg', 'exp_avg_sq', 'row_step', 'step'])
    """

    _NUMPY = _NpAdam

    def __init__(self, params: Any, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: Optional[float] = None, weight_decay: float = 0.0, amsgrad: bool = False,
                 lazy: Optional[str] = None, bias_correction: Optional[str] = None,
                 preset: Optional[str] = None, n_threads: Optional[int] = None,
                 duplicates: str = "sum", nonfinite: str = "raise",
                 rowwise: Any = False, rounding: str = "nearest", seed: int = 0,
                 state_dtype: Optional[str] = None, state_layout: str = "auto") -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, lazy=lazy,
                                      bias_correction=bias_correction, rowwise=rowwise),
                         preset=preset, n_threads=n_threads, duplicates=duplicates,
                         nonfinite=nonfinite, rounding=rounding,
                         seed=seed, state_dtype=state_dtype, state_layout=state_layout)

    def _hyper_from_torch(self, saved, current):
        # ours has "lazy"; torch.optim.Adam / AdamW "amsgrad"; SparseAdam neither (lr, betas,
        # eps, maximize in torch 2.x)
        if "lazy" in saved or not {"lr", "betas", "eps"} <= set(saved):
            return None
        if "amsgrad" in saved:
            raise ValueError("state_dict is from torch.optim.Adam or AdamW; sparseopt.torch "
                             "loads the state of torch.optim.SparseAdam and Adagrad (and its "
                             "own)")
        if saved.get("maximize"):
            raise ValueError("state_dict is from a torch.optim.SparseAdam with maximize=True, "
                             "which sparseopt does not have")
        torch_rule = self._NUMPY._PRESETS["torch"]
        if current.get("rowwise"):
            raise ValueError("state_dict is from torch.optim.SparseAdam (a second moment per "
                             "element): load it into an Adam with rowwise=False")
        if any(current[k] != v for k, v in torch_rule.items()) or current["amsgrad"] or \
                current["weight_decay"]:
            raise ValueError("state_dict is from torch.optim.SparseAdam: continue its run with "
                             "sparseopt.torch.Adam(..., preset='torch') (global bias "
                             "correction, lazy='frozen', no amsgrad or weight decay)")
        return dict(current, lr=saved["lr"], betas=saved["betas"], eps=saved["eps"])


class AdamW(Adam):
    __doc__ = """``Adam`` with decoupled weight decay 0.01 by default, as ``torch.optim.AdamW``.
""" + _COMMON + """
    Parameters
    ----------
    params, lr, betas, eps, amsgrad, lazy, bias_correction, preset, n_threads, duplicates, \
nonfinite, rowwise, rounding, seed, state_dtype, state_layout
        As for :class:`Adam`.
    weight_decay : float, default 1e-2
        Decoupled: a row is multiplied by ``1 - lr*weight_decay`` when it is updated (with
        ``lazy="decay"`` it first receives the factors of the steps it missed).

    Examples
    --------
    >>> import torch, sparseopt.torch as sot
    >>> w = torch.nn.Parameter(torch.ones(4))
    >>> opt = sot.AdamW([w], lr=0.1, weight_decay=0.5)
    >>> w.grad = torch.zeros(4)
    >>> opt.step()
    >>> w.tolist()   # only the decay moves it: 1 * (1 - 0.1 * 0.5)
    [0.949999988079071, 0.949999988079071, 0.949999988079071, 0.949999988079071]
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: Optional[float] = None, weight_decay: float = 1e-2, amsgrad: bool = False,
                 lazy: Optional[str] = None, bias_correction: Optional[str] = None,
                 preset: Optional[str] = None, n_threads: Optional[int] = None,
                 duplicates: str = "sum", nonfinite: str = "raise",
                 rowwise: Any = False, rounding: str = "nearest", seed: int = 0,
                 state_dtype: Optional[str] = None, state_layout: str = "auto") -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, lazy=lazy, bias_correction=bias_correction,
                         preset=preset, n_threads=n_threads, duplicates=duplicates,
                         nonfinite=nonfinite, rowwise=rowwise, rounding=rounding,
                         seed=seed, state_dtype=state_dtype, state_layout=state_layout)


class Adagrad(_TorchOptimizer):
    __doc__ = """Adagrad for PyTorch models: ``sparseopt.Adagrad``'s rules on ``p.grad``.
""" + _COMMON + """
    ``preset="torch"`` (the defaults) is ``torch.optim.Adagrad``; its ``state_dict()`` loads
    into this optimizer and continues the run (when its ``weight_decay`` is 0: torch adds it
    to the gradient, sparseopt decouples it).

    Parameters
    ----------
    params : iterable of tensors or of dicts (param groups)
    lr, lr_decay, eps, initial_accumulator_value, weight_decay, rowwise, preset
        As for :class:`sparseopt.Adagrad`, per param group (``rowwise`` fixed).
    n_threads, duplicates, nonfinite, rounding, seed, state_dtype
        As for :class:`sparseopt.Adagrad`, for the whole optimizer (``state_dtype="bfloat16"``
        state is shown and saved as bfloat16 tensors).

    Examples
    --------
    >>> import torch, sparseopt.torch as sot
    >>> emb = torch.nn.Embedding(10, 2, sparse=True)
    >>> torch.nn.init.zeros_(emb.weight)  # doctest: +ELLIPSIS
    Parameter containing:
    ...
    >>> opt = sot.Adagrad(emb.parameters(), lr=0.5)
    >>> emb(torch.tensor([2, 2])).sum().backward()
    >>> opt.step()
    >>> emb.weight[2].tolist()
    [-0.5, -0.5]
    """

    _NUMPY = _NpAdagrad

    def __init__(self, params: Any, lr: float = 1e-2, lr_decay: float = 0.0,
                 eps: Optional[float] = None, initial_accumulator_value: Optional[float] = None,
                 weight_decay: float = 0.0, rowwise: bool = False, preset: Optional[str] = None,
                 n_threads: Optional[int] = None, duplicates: str = "sum",
                 nonfinite: str = "raise", rounding: str = "nearest",
                 seed: int = 0, state_dtype: Optional[str] = None) -> None:
        super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps,
                                      initial_accumulator_value=initial_accumulator_value,
                                      weight_decay=weight_decay, rowwise=rowwise),
                         preset=preset, n_threads=n_threads, duplicates=duplicates,
                         nonfinite=nonfinite, rounding=rounding,
                         seed=seed, state_dtype=state_dtype)

    def _hyper_from_torch(self, saved, current):
        if "rowwise" in saved or "initial_accumulator_value" not in saved:
            return None
        if saved.get("maximize"):
            raise ValueError("state_dict is from a torch.optim.Adagrad with maximize=True, "
                             "which sparseopt does not have")
        if saved.get("weight_decay"):
            raise ValueError("state_dict is from a torch.optim.Adagrad with weight_decay="
                             f"{saved['weight_decay']!r}: torch adds it to the gradient, "
                             "sparseopt decouples it, so the run cannot be continued exactly")
        if current["rowwise"]:
            raise ValueError("state_dict is from torch.optim.Adagrad (one accumulator per "
                             "element): load it into an Adagrad with rowwise=False")
        return dict(current, lr=saved["lr"], lr_decay=saved["lr_decay"], eps=saved["eps"],
                    initial_accumulator_value=saved["initial_accumulator_value"],
                    weight_decay=0.0)


class RMSprop(_TorchOptimizer):
    __doc__ = """RMSprop for PyTorch models: ``sparseopt.RMSprop``'s rules on ``p.grad``.
""" + _COMMON + """
    Parameters
    ----------
    params : iterable of tensors or of dicts (param groups)
    lr, alpha, eps, momentum, centered, weight_decay, lazy, preset, rowwise
        As for :class:`sparseopt.RMSprop`, per param group (``lazy`` and ``rowwise`` fixed).
    n_threads, duplicates, nonfinite, rounding, seed, state_dtype
        As for :class:`sparseopt.RMSprop`, for the whole optimizer (``state_dtype="bfloat16"``
        state is shown and saved as bfloat16 tensors).

    Examples
    --------
    >>> import torch, sparseopt.torch as sot
    >>> w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    >>> opt = sot.RMSprop([w], lr=0.01)
    >>> w.grad = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    >>> opt.step()
    >>> [round(x, 4) for x in w.tolist()]   # lr / sqrt(1 - alpha) on the first step
    [-0.1, 0.0, 0.1]
    """

    _NUMPY = _NpRMSprop

    def __init__(self, params: Any, lr: float = 1e-2, alpha: Optional[float] = None,
                 eps: Optional[float] = None, momentum: float = 0.0, centered: bool = False,
                 weight_decay: float = 0.0, lazy: str = "frozen", preset: Optional[str] = None,
                 n_threads: Optional[int] = None, duplicates: str = "sum",
                 nonfinite: str = "raise", rowwise: bool = False, rounding: str = "nearest",
                 seed: int = 0, state_dtype: Optional[str] = None) -> None:
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, momentum=momentum,
                                      centered=centered, weight_decay=weight_decay, lazy=lazy,
                                      rowwise=rowwise),
                         preset=preset, n_threads=n_threads, duplicates=duplicates,
                         nonfinite=nonfinite, rounding=rounding,
                         seed=seed, state_dtype=state_dtype)


class SGD(_TorchOptimizer):
    __doc__ = """Plain SGD for PyTorch models: ``sparseopt.optim.SGD`` on ``p.grad``
    (``theta -= lr * g`` on the rows a gradient touches; duplicates merged first).
""" + _COMMON + """
    Parameters
    ----------
    params : iterable of tensors or of dicts (param groups)
    lr : float, default 1e-2
    n_threads, duplicates, nonfinite, rounding, seed
        As for :class:`sparseopt.Adam`.

    Examples
    --------
    >>> import torch, sparseopt.torch as sot
    >>> w = torch.nn.Parameter(torch.ones(2))
    >>> opt = sot.SGD([w], lr=0.5)
    >>> w.grad = torch.tensor([1.0, 2.0])
    >>> opt.step()
    >>> w.tolist()
    [0.5, 0.0]
    """

    _NUMPY = _NpSGD

    def __init__(self, params: Any, lr: float = 1e-2, n_threads: Optional[int] = None,
                 duplicates: str = "sum", nonfinite: str = "raise", rounding: str = "nearest",
                 seed: int = 0) -> None:
        super().__init__(params, dict(lr=lr), preset=None, n_threads=n_threads,
                         duplicates=duplicates, nonfinite=nonfinite, rounding=rounding,
                         seed=seed)
