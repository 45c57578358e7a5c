"""Build facts for ``sparseopt.show_config()``."""
from ._openmp cimport SO_OPENMP_ENABLED, omp_get_max_threads, omp_get_thread_limit
from ._rowops cimport so_simd_dispatch, so_simd_has_clones


def openmp_enabled():
    """True when the kernels were compiled with OpenMP."""
    return bool(SO_OPENMP_ENABLED)


def max_threads():
    """OpenMP's current default team size (follows OMP_NUM_THREADS and threadpoolctl)."""
    return int(omp_get_max_threads())


def thread_limit():
    """OpenMP's limit on the threads of one contention group (OMP_THREAD_LIMIT)."""
    return int(omp_get_thread_limit())


def simd_dispatch():
    """The instruction set the row kernels dispatch to on this CPU."""
    return so_simd_dispatch().decode()


def simd_clones():
    """True when the build carries AVX2/AVX-512 clones chosen at run time."""
    return bool(so_simd_has_clones())
