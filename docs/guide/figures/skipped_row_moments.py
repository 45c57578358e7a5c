"""Adam's moments of a row that is skipped for a while, under the two lazy modes and dense Adam.

Row 1 of a two-row table takes a gradient of 1 for ten steps, none for the next 30 steps
(row 0 keeps the step count moving), then gradients of 1 again. The dense optimizer is given
an explicit zero gradient for row 1 during the gap. For ``lazy="decay"`` the figure shows the
moments as stored (flat while the row is skipped) and the value ``flush()`` brings them to.
"""
import copy

import matplotlib.pyplot as plt
import numpy as np

import sparseopt as so

ON, GAP, AFTER = 10, 30, 10
STEPS = ON + GAP + AFTER


def touched(t):
    return t <= ON or t > ON + GAP


def run(mode):
    """Return (m, v) of row 1 after every step; mode 'dense', 'frozen', 'decay' or 'flushed'."""
    table = np.zeros((2, 1))
    lazy = "frozen" if mode in ("dense", "frozen") else "decay"
    opt = so.Adam({"table": table}, lr=1e-2, lazy=lazy)
    m, v = [], []
    for t in range(1, STEPS + 1):
        if mode == "dense":
            grad = np.array([[1.0], [1.0 if touched(t) else 0.0]])
        else:
            rows = [0, 1] if touched(t) else [0]
            grad = so.RowGrad(np.array(rows), np.ones((len(rows), 1)))
        opt.step({"table": grad})
        view = opt
        if mode == "flushed":
            view = copy.deepcopy(opt)   # flush a copy, so the run itself stays lazy
            view.flush()
        state = view.state_dict()["state"]["table"]
        m.append(state["exp_avg"][1, 0])
        v.append(state["exp_avg_sq"][1, 0])
    return np.array(m), np.array(v)


steps = np.arange(1, STEPS + 1)
runs = {
    "dense Adam (zero gradient in the gap)": ("dense", dict(color="black", lw=3, alpha=0.35)),
    'lazy="frozen"': ("frozen", dict(color="C0", ls="-")),
    'lazy="decay", as stored': ("decay", dict(color="C1", ls="--")),
    'lazy="decay", after flush()': ("flushed", dict(color="C1", ls=":", marker=".")),
}
fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.9), sharex=True)
for label, (mode, style) in runs.items():
    m, v = run(mode)
    axes[0].plot(steps, m, label=label, **style)
    axes[1].plot(steps, v, label=label, **style)
for ax, name in zip(axes, ("first moment m", "second moment v")):
    ax.axvspan(ON + 0.5, ON + GAP + 0.5, color="grey", alpha=0.12, lw=0)
    ax.set_xlabel("step")
    ax.set_title(f"{name} of the skipped row")
fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8,
           frameon=False)
fig.tight_layout(rect=(0, 0.14, 1, 1))
