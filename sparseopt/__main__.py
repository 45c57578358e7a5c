"""Command line: ``python -m sparseopt {demo,config,benchmark}``.

    python -m sparseopt demo [--quick] [--seed N] [--threads N]
    python -m sparseopt config
    python -m sparseopt benchmark [ARGS ...]   # forwarded to sparseopt.benchmarks
"""

import argparse
import importlib
import importlib.util
import runpy
import sys


def _benchmark(args):
    """Forward ``args`` to the ``sparseopt.benchmarks`` package, imported lazily.

    The package is optional (it is not needed to use the optimizers), so its
    absence is a clear message, not a traceback.
    """
    try:
        spec = importlib.util.find_spec("sparseopt.benchmarks")
    except ImportError:
        spec = None
    if spec is None or (spec.origin is None and
                        importlib.util.find_spec("sparseopt.benchmarks.__main__") is None):
        # absent, or an empty directory (a namespace package) where it should be
        print("python -m sparseopt benchmark: the sparseopt.benchmarks package is not "
              "available in this installation.", file=sys.stderr)
        return 2
    prog = "python -m sparseopt benchmark"
    if spec.submodule_search_locations is not None and \
            importlib.util.find_spec("sparseopt.benchmarks.__main__") is not None:
        # a package with a __main__: run it exactly as `python -m` would
        sys.argv = [prog, *args]
        try:
            runpy.run_module("sparseopt.benchmarks", run_name="__main__", alter_sys=False)
        except SystemExit as exc:
            return exc.code
        return 0
    module = importlib.import_module("sparseopt.benchmarks")
    if callable(getattr(module, "main", None)):
        sys.argv = [prog, *args]
        return module.main(args)
    print("python -m sparseopt benchmark: sparseopt.benchmarks has neither a __main__ "
          "module nor a main() function.", file=sys.stderr)
    return 2


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m sparseopt",
        description="sparseopt: lazy sparse Adam, Adagrad and RMSprop for NumPy arrays.")
    sub = parser.add_subparsers(dest="command", required=True)
    from sparseopt import _demo
    demo = sub.add_parser("demo", help="train a small embedding model with every optimizer",
                          description="Train a small embedding model on Zipf-distributed "
                          "data with each optimizer; print RMSE and rows/s.")
    _demo.add_arguments(demo)
    sub.add_parser("config", help="print build information (OpenMP, SIMD, threads)")
    sub.add_parser("benchmark", help="run the benchmarks (arguments are forwarded)",
                   add_help=False)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "benchmark":
        # everything after the command belongs to the benchmarks, --help included
        return _benchmark(argv[1:])
    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command == "demo":
        from sparseopt import _demo
        _demo.run(quick=args.quick, seed=args.seed, n_threads=args.threads, epochs=args.epochs)
        return 0
    if args.command == "config":
        import sparseopt
        sparseopt.show_config()
        return 0
    return 2  # unreachable: argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
