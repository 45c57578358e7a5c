"""``python -m sparseopt.benchmarks [--quick] [--repeats N] [--out DIR] [--threads 1,2] ...``"""

import sys

from sparseopt.benchmarks._suite import main

if __name__ == "__main__":
    # `python -m sparseopt benchmark` runs this module with its own name in argv[0]
    prog = sys.argv[0] if not sys.argv[0].endswith(".py") else "python -m sparseopt.benchmarks"
    sys.exit(main(prog=prog))
