"""sparseopt's benchmarks: lazy row updates against torch.optim and the NumPy reference.

They live in the source tree, not in the installed package. From the root of a checkout::

    python -m benchmarks --help                # the speed suite (this package)
    python -m benchmarks --quick               # its smoke test
    python benchmarks/bench_mf.py --quick      # matrix factorisation against PyTorch
    python benchmarks/bench_text.py --quick    # SGDClassifier against scikit-learn

NumPy is the only hard requirement: torch columns are skipped without torch, plots without
matplotlib (``pip install -e ".[bench,torch]"``). ``benchmarks/README.md`` explains the columns
and the roofline and holds the latest figures.

The suite measures, side by side in one process:

* sparseopt's :class:`~sparseopt.Adam`, :class:`~sparseopt.Adagrad` and
  :class:`~sparseopt.RMSprop` at each thread count of ``--threads`` (``n_threads=``);
* ``torch.optim.SparseAdam`` and ``torch.optim.Adagrad`` on an *uncoalesced*
  ``torch.sparse_coo_tensor`` gradient, which is what ``nn.Embedding(sparse=True)`` produces,
  at the same thread counts (``torch.set_num_threads``); skipped when torch is not installed;
* the plain-NumPy oracle :mod:`sparseopt._reference`, on the small table only (it is slow);
* the machine's in-place update bandwidth (``a *= c`` and ``a += b`` over a large float32
  array), the yardstick for "% of bandwidth".

Method (the README explains the reasoning):

* One batch of indices and gradient values is drawn per case and reused by every contender and
  every repeat; a timed step is a complete ``opt.step([so.RowGrad(idx, vals)])``, duplicate
  merging and validation included. For torch it is ``p.grad = g; opt.step()`` (torch coalesces
  the gradient inside ``step``).
* All contenders of a table update the same parameter array in place (a fair share: each is
  preceded by a contender that touched the same rows), each with its own optimizer state, created
  once per table and kept across its cases.
* Each contender first steps for ``--warm-up-ms`` (state is allocated on the first step; the next
  few steps are still slow), then the contenders are interleaved, A B C A B C ..., so machine
  noise hits all of them. A sample times ``number`` consecutive steps, with ``number`` chosen so a
  sample lasts at least ``--min-sample-ms``; the table reports the median and the min-max over
  the samples, per step. Garbage collection is off while timing, and the load that other
  processes put on the machine meanwhile is recorded (``/proc/stat``).

Modules, in the order a run uses them:

===============  ==============================================================================
``cli``          argument parsing; writes ``results.md``, ``results.json`` and the plots
``suite``        :func:`~benchmarks.suite.run_suite`: builds every case and contender, times them
``workloads``    tables, index samplers (Zipf, uniform), learning rates, default cases
``bandwidth``    the in-place update bandwidth, measured in the same run
``baselines``    the torch.optim contenders
``timing``       the harness: warm-up, round-robin or blocked samples, background load
``report``       derived figures, Markdown tables, speed targets, plots, machine description
===============  ==============================================================================
"""
