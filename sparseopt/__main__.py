"""Command line: ``python -m sparseopt {demo,config}``.

    python -m sparseopt demo [--quick] [--seed N] [--threads N] [--epochs N]
    python -m sparseopt config

The demo is example code, ``examples/demo.py`` in the source tree; this command only runs it
(distributions ship it as ``sparseopt.examples.demo``). The benchmarks are not part of the
package: they run from a source checkout (``python -m benchmarks``, see benchmarks/README.md).
"""

import argparse
import importlib
import importlib.util
import sys
from pathlib import Path

DEMO_PROG = "python -m sparseopt demo"


def _load_demo():
    """The demo module that belongs to the sparseopt being run, or None.

    An installed distribution has it inside the package (``sparseopt/examples/demo.py``); a
    source tree, imported in place or through an editable install, has it next to the package
    (``examples/demo.py``). Both are found from this file's location, never through the import
    path, so another copy of sparseopt installed elsewhere cannot lend its demo.
    """
    package = Path(__file__).resolve().parent
    if (package / "examples" / "demo.py").is_file():
        return importlib.import_module("sparseopt.examples.demo")
    source = package.parent / "examples" / "demo.py"
    if not source.is_file():
        return None
    spec = importlib.util.spec_from_file_location("sparseopt.examples.demo", source)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _demo(args):
    """Forward ``args`` to the demo's own command line (its options and ``--help``)."""
    demo = _load_demo()
    if demo is None:
        print(f"{DEMO_PROG}: the demo (examples/demo.py) is not part of this installation.",
              file=sys.stderr)
        return 2
    return demo.main(args, prog=DEMO_PROG)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m sparseopt",
        description="sparseopt: lazy sparse Adam, Adagrad and RMSprop for NumPy arrays.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="train a small embedding model with every optimizer "
                   "(examples/demo.py; its options follow the command)", add_help=False)
    sub.add_parser("config", help="print build information (OpenMP, SIMD, threads)")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "demo":
        # everything after the command belongs to the demo, --help included
        return _demo(argv[1:])
    parser = build_parser()
    if not argv:
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command == "config":
        import sparseopt
        sparseopt.show_config()
        return 0
    return 2  # unreachable: argparse rejects unknown commands


if __name__ == "__main__":
    sys.exit(main())
