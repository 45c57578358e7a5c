"""``python -m benchmarks [--quick] [--out DIR] [--threads 1,2] ...``, from a checkout's root."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
