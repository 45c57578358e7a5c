"""The first step of a row first touched at step t0, under global and per-row bias correction.

Row 0 of a small table takes a gradient of 1 at every step, so the optimizer's step count t
advances; row k takes its first gradient (also 1) at step t0_k. The figure shows how far that
first step moves row k, in units of ``lr``.
"""
import matplotlib.pyplot as plt
import numpy as np

import sparseopt as so

LR = 1e-3
FIRST_TOUCH = np.array([1, 2, 3, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 4000])


def first_steps(bias_correction):
    table = np.zeros((1 + len(FIRST_TOUCH), 1))
    opt = so.Adam({"table": table}, lr=LR, bias_correction=bias_correction)
    moved = np.empty(len(FIRST_TOUCH))
    for t in range(1, FIRST_TOUCH[-1] + 1):
        late = np.flatnonzero(FIRST_TOUCH == t) + 1
        rows = np.concatenate([[0], late])
        before = table[late, 0].copy()
        opt.step({"table": so.RowGrad(rows, np.ones((len(rows), 1)))})
        moved[late - 1] = before - table[late, 0]
    return moved / LR


fig, ax = plt.subplots(figsize=(6.4, 3.4))
for mode, style in (("global", "o-"), ("row", "s-")):
    ax.semilogx(FIRST_TOUCH, first_steps(mode), style, label=f'bias_correction="{mode}"')
ax.axhline(0.1 / np.sqrt(0.001), color="grey", lw=0.8, ls=":")
ax.text(1, 0.1 / np.sqrt(0.001) - 0.25, r"$(1-\beta_1)/\sqrt{1-\beta_2} \approx 3.16$",
        fontsize=8, va="top")
ax.set_xlabel("step t0 at which the row takes its first gradient")
ax.set_ylabel("size of its first step / lr")
ax.set_ylim(0, 3.5)
ax.legend(loc="center right")
ax.set_title("Adam, default betas, gradient 1: the first step of a late row")
fig.tight_layout()
