"""``python -m sparseopt.benchmarks [--quick] [--repeats N] [--out DIR] [--threads 1,2] ...``"""

import sys

from sparseopt.benchmarks._suite import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m sparseopt.benchmarks"))
