# One kernel source builds with and without OpenMP: without it the runtime calls below become
# serial stand-ins, and Cython's prange compiles to a plain loop (its pragmas sit behind
# #ifdef _OPENMP).
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define SO_OPENMP_ENABLED 1
    #else
    #define SO_OPENMP_ENABLED 0
    static int omp_get_max_threads(void) { return 1; }
    static int omp_get_thread_limit(void) { return 1; }
    #endif
    """
    bint SO_OPENMP_ENABLED
    int omp_get_max_threads() noexcept nogil
    int omp_get_thread_limit() noexcept nogil
