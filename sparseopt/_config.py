"""``show_config()``: how the kernels were built and what they will use on this machine."""
from __future__ import annotations

import platform
import sys
from typing import Any, Dict, Optional, TextIO

from ._kernels import _info
from ._version import __version__


def config() -> Dict[str, Any]:
    """The build facts as a dict (the data behind ``show_config``)."""
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "openmp": _info.openmp_enabled(),
        "max_threads": _info.max_threads(),
        "simd_clones": _info.simd_clones(),
        "simd_dispatch": _info.simd_dispatch(),
    }


def show_config(file: Optional[TextIO] = None) -> None:
    """Print the build's OpenMP and SIMD status.

    Parameters
    ----------
    file : file-like object, optional
        Where to print; ``sys.stdout`` by default.

    Examples
    --------
    The version, the threads and the instruction set depend on the machine and the build;
    on a 2-core x86-64 machine with AVX-512 and an OpenMP build it prints::

        sparseopt 0.1.0.dev0 (Python 3.11.7, x86_64)
          OpenMP:        yes (2 threads by default)
          SIMD clones:   yes, dispatching to x86-64-v4 (AVX-512)

    >>> import sparseopt as so
    >>> so.show_config()  # doctest: +ELLIPSIS
    sparseopt ... (Python ..., ...)
      OpenMP: ...
      SIMD clones: ...
    """
    c = config()
    out = file if file is not None else sys.stdout
    omp = f"yes ({c['max_threads']} threads by default)" if c["openmp"] else "no (serial build)"
    simd = ("yes, dispatching to " if c["simd_clones"] else "no, ") + c["simd_dispatch"]
    print(f"sparseopt {c['version']} (Python {c['python']}, {c['machine']})", file=out)
    print(f"  OpenMP:        {omp}", file=out)
    print(f"  SIMD clones:   {simd}", file=out)
