"""Build script: Cython extensions with centrally set directives and flags.

* OpenMP is detected by compiling and linking a probe program; without it the same sources
  build serially (``sparseopt/_kernels/_openmp.pxd`` shims the runtime calls) and a warning
  is printed.
* Flags are portable: ``-O3 -fno-math-errno`` (GCC will not vectorise loops that call ``sqrt``
  while ``errno`` must be set) and ``-ffp-contract=off``. Never a host-specific -march or
  the fast-math family: wider ISAs are reached by runtime dispatch (``target_clones`` in
  ``_kernels/_rowops.h``), and every clone computes the same bits.
* No generated C is committed: Cython runs at build time.
* The distribution holds the package and, as ``sparseopt.examples``, the scripts of
  ``examples/``: ``python -m sparseopt demo`` runs ``examples/demo.py``, so every install needs
  it. ``benchmarks/`` and ``tests/`` stay in the source tree.
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import warnings

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_namespace_packages, setup

COMPILER_DIRECTIVES = {
    "language_level": 3,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": False,
    "nonecheck": False,
    "embedsignature": True,
}

_PROBE = r"""
#include <omp.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    return omp_get_max_threads() > 0 && n > 0 ? 0 : 1;
}
"""


def _compiler():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return cc.split()


def _probe_openmp():
    """Return (compile_args, link_args) for OpenMP, or None when it cannot be used."""
    if os.environ.get("SPARSEOPT_NO_OPENMP"):
        return None
    flags = ["/openmp"] if sys.platform == "win32" else ["-fopenmp"]
    if sys.platform == "win32":
        return flags, []
    tmp = tempfile.mkdtemp(prefix="sparseopt-omp-")
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(_PROBE)
        cmd = _compiler() + flags + [src, "-o", os.path.join(tmp, "probe")] + flags
        ok = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0
        if ok:
            ok = subprocess.run([os.path.join(tmp, "probe")]).returncode == 0
    except OSError:
        ok = False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return (flags, flags) if ok else None


def _extensions():
    omp = _probe_openmp()
    if omp is None:
        warnings.warn(
            "sparseopt: OpenMP was not found (or SPARSEOPT_NO_OPENMP is set); building the "
            "kernels serially. Steps will use one thread.",
            stacklevel=1,
        )
        omp_cflags, omp_lflags = [], []
    else:
        omp_cflags, omp_lflags = omp
    if sys.platform == "win32":
        cflags = ["/O2"]
    else:
        # -ffp-contract=off: no silent a*b+c -> FMA contraction, so the AVX2/AVX-512 clones
        # and the baseline build round identically (results do not depend on the CPU).
        cflags = ["-O3", "-fno-math-errno", "-ffp-contract=off", "-std=c11"]
        if os.environ.get("SPARSEOPT_VEC_REPORT"):
            cflags.append("-fopt-info-vec-optimized")
    # One extension per kernel module; the C they share is the header ``_rowops.h``, declared
    # in ``_rowops.pxd`` (cimported, not an extension: it has no module of its own).
    kernels = ["_rows", "_halfrows", "_coalesce", "_info", "_linear", "_mf", "_topk", "_fm",
               "_features"]
    return [
        Extension(
            f"sparseopt._kernels.{name}",
            [f"sparseopt/_kernels/{name}.pyx"],
            include_dirs=[np.get_include(), "sparseopt/_kernels"],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=cflags + omp_cflags,
            extra_link_args=omp_lflags,
        )
        for name in kernels
    ]


# examples/ is mapped into the package rather than moved there: in the source tree it stays a
# top-level directory of scripts to read and copy.
PACKAGES = find_namespace_packages(include=["sparseopt", "sparseopt.*"]) + ["sparseopt.examples"]

setup(
    packages=PACKAGES,
    package_dir={"sparseopt.examples": "examples"},
    ext_modules=cythonize(_extensions(), compiler_directives=COMPILER_DIRECTIVES),
)
