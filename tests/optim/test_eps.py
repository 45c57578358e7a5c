"""``eps`` where a denominator can be zero.

Adam and RMSprop divide by ``sqrt(v) + eps`` (RMSprop: ``sqrt(v + eps)`` in the TF1 form, and
``v - a**2`` when centred) where ``v`` is zero for a row that has only seen zero gradients (and
can underflow to zero even from TF1's start at 1): ``eps`` must be > 0, or a zero gradient row
computes 0 / 0 and becomes NaN. Adagrad's accumulator only grows, so ``eps=0`` is allowed when
it starts above zero (``initial_accumulator_value > 0``, TF1's preset) and every kept or loaded
accumulator is > 0. Refusals are ``ValueError``s naming ``eps``, raised before anything changes.
"""
from __future__ import annotations

import numpy as np
import pytest

import sparseopt as so

from conftest import snapshot


def _zero_row_step(opt, dtype):
    """Row 0 gets a zero gradient, row 1 a real one."""
    g = np.zeros((2, 3), dtype=dtype)
    g[1] = 1.0
    opt.step([so.RowGrad([0, 1], g)])


@pytest.mark.parametrize("cls,kw", [
    (so.Adam, {}), (so.Adam, dict(preset="torch")), (so.Adam, dict(amsgrad=True)),
    (so.Adam, dict(lazy="decay")), (so.RMSprop, {}), (so.RMSprop, dict(centered=True)),
    (so.RMSprop, dict(preset="tensorflow")), (so.RMSprop, dict(momentum=0.9, lazy="decay")),
], ids=lambda v: getattr(v, "__name__", None) or "-".join(f"{k}={x}" for k, x in v.items()))
def test_eps_zero_is_refused_where_zero_can_divide_zero(cls, kw, dtype):
    with pytest.raises(ValueError, match=r"eps must be > 0, got 0"):
        cls([np.zeros((4, 3), dtype)], eps=0.0, **kw)
    # the default eps on the same zero row stays finite (what eps > 0 buys)
    P = np.ones((4, 3), dtype)
    opt = cls([P], **kw)
    _zero_row_step(opt, dtype)
    assert np.isfinite(P).all() and np.array_equal(P[0], np.ones(3, dtype))
    # set between steps: refused by the next step, before anything changes
    opt.param_groups[0]["eps"] = 0.0
    params, state = snapshot(opt)
    with pytest.raises(ValueError, match=r"eps must be > 0"):
        _zero_row_step(opt, dtype)
    assert np.array_equal(P, params[0]) and opt.state[0]["step"] == state[0]["step"]
    opt.param_groups[0]["eps"] = 1e-8
    # and through load_state_dict
    sd = opt.state_dict()
    sd["param_groups"][0]["eps"] = 0.0
    with pytest.raises(ValueError, match=r"eps must be > 0"):
        opt.load_state_dict(sd)
    assert opt.param_groups[0]["eps"] == 1e-8


@pytest.mark.parametrize("rowwise", [False, True], ids=["elementwise", "rowwise"])
def test_adagrad_eps_zero_needs_a_positive_initial_accumulator(rowwise, dtype):
    with pytest.raises(ValueError, match=r"eps must be > 0.*initial_accumulator_value > 0"):
        so.Adagrad([np.zeros((4, 3), dtype)], eps=0.0, rowwise=rowwise)
    # a start that rounds to zero in float32 cannot guarantee a positive accumulator
    with pytest.raises(ValueError, match=r"initial_accumulator_value > 0, got 1e-50"):
        so.Adagrad([np.zeros((4, 3), dtype)], eps=0.0, initial_accumulator_value=1e-50,
                   rowwise=rowwise)
    # TF1's preset (start 0.1, no eps): zero gradient rows stay finite
    P = np.ones((4, 3), dtype)
    opt = so.Adagrad([P], preset="tensorflow", rowwise=rowwise)
    assert opt.param_groups[0]["eps"] == 0.0
    for _ in range(3):
        _zero_row_step(opt, dtype)
    assert np.isfinite(P).all() and np.array_equal(P[0], np.ones(3, dtype))


def test_adagrad_eps_zero_refuses_kept_or_loaded_zero_accumulators(dtype):
    """State that can hold zeros (kept from eps > 0 with a zero start, or loaded) does not get
    eps=0: a zero accumulator would divide 0 by 0. The check scans once and remembers."""
    P = np.ones((5, 3), dtype)
    opt = so.Adagrad([P], lr=0.1)  # start 0: untouched rows keep G = 0
    _zero_row_step(opt, dtype)
    opt.param_groups[0].update(eps=0.0, initial_accumulator_value=0.1)
    params, state = snapshot(opt)
    with pytest.raises(ValueError, match=r"eps=0 needs every accumulator value > 0.*"
                                         r"parameter 0"):
        _zero_row_step(opt, dtype)
    assert np.array_equal(P, params[0]) and opt.state[0]["step"] == 1
    # made positive in place: accepted (scanned once), and stays finite
    opt.state[0]["sum"][...] = 0.5
    _zero_row_step(opt, dtype)
    assert np.isfinite(P).all() and opt.state[0]["step"] == 2
    # loading: every accumulator must be > 0 when eps is 0
    tf = so.Adagrad([P.copy()], preset="tensorflow")
    sd = opt.state_dict()
    sd["state"][0]["sum"][2] = 0.0
    with pytest.raises(ValueError, match=r"'sum' of parameter 0 must be > 0.0 when eps=0"):
        tf.load_state_dict(sd)
    sd["state"][0]["sum"][2] = 1e-3
    tf.load_state_dict(sd)
    _zero_row_step(tf, dtype)
    assert np.isfinite(tf.params[0]).all()
    # a replaced accumulator is scanned again
    tf.state[0]["sum"] = np.zeros_like(tf.state[0]["sum"])
    with pytest.raises(ValueError, match=r"eps=0 needs every accumulator value > 0"):
        _zero_row_step(tf, dtype)
