# The shared layer of the kernels: the declarations of ``_rowops.h`` (every C row helper) and the
# Cython helpers more than one kernel uses. A kernel cimports what it needs from here and keeps
# no C of its own; the OpenMP runtime shim is ``_openmp.pxd``.
#
# The fused ``cdef inline`` fronts pick the float or double C function from the ``floating``
# specialisation, so a kernel calls ``_dot(k, a, b)`` whatever its table's dtype. Scalars come
# in as float64 and are cast to the row's type here (the C helpers compute in the row's type).
from libc.math cimport exp, log1p
from libc.stdint cimport int32_t, int64_t
from cython cimport floating

# Index arrays of CSR structures and id lists: whichever of the two the caller holds.
ctypedef fused index_t:
    int32_t
    int64_t


cdef extern from "_rowops.h" nogil:
    # ISA dispatch (for show_config)
    const char* so_simd_dispatch()
    int so_simd_has_clones()

    # prefetch every cache line of a span (read into L1; read or write into L2), or the one
    # line holding ptr (write into L1)
    void so_prefetch_read(const void* ptr, size_t nbytes)
    void so_prefetch_read_l2(const void* ptr, size_t nbytes)
    void so_prefetch_write_l2(const void* ptr, size_t nbytes)
    void so_prefetch_line_write(const void* ptr)

    # optimizer row updates (one row in place; scalars already in the row's type)
    void so_adam_row_f(Py_ssize_t d, float* p, float* m, float* v, float* vmax, const float* g,
                       float b1, float omb1, float b2, float omb2, float a, float c, float eps,
                       float pmul)
    void so_adam_row_d(Py_ssize_t d, double* p, double* m, double* v, double* vmax,
                       const double* g, double b1, double omb1, double b2, double omb2,
                       double a, double c, double eps, double pmul)
    void so_adagrad_row_f(Py_ssize_t d, float* p, float* s, const float* g, float a, float eps,
                          float pmul)
    void so_adagrad_row_d(Py_ssize_t d, double* p, double* s, const double* g, double a,
                          double eps, double pmul)
    void so_ftrl_row_f(Py_ssize_t d, float* p, float* z, float* n, const float* g, float lr,
                       float b0, float l1, float l2, float shr, float pw)
    void so_ftrl_row_d(Py_ssize_t d, double* p, double* z, double* n, const double* g,
                       double lr, double b0, double l1, double l2, double shr, double pw)
    void so_axpby_row_f(Py_ssize_t d, float* p, const float* g, float k, float pmul)
    void so_axpby_row_d(Py_ssize_t d, double* p, const double* g, double k, double pmul)
    void so_rmsprop_row_f(Py_ssize_t d, float* p, float* v, float* ga, float* buf, const float* g,
                          float al, float oma, float mu, float lr, float eps_in, float eps,
                          float pmul)
    void so_rmsprop_row_d(Py_ssize_t d, double* p, double* v, double* ga, double* buf,
                          const double* g, double al, double oma, double mu, double lr,
                          double eps_in, double eps, double pmul)
    void so_scale_row_f(Py_ssize_t d, float* x, float f)
    void so_scale_row_d(Py_ssize_t d, double* x, double f)
    void so_add_row_f(Py_ssize_t d, float* dst, const float* src)
    void so_add_row_d(Py_ssize_t d, double* dst, const double* src)
    int so_any_nonfinite_f(Py_ssize_t n, const float* x)
    int so_any_nonfinite_d(Py_ssize_t n, const double* x)
    double so_row_sumsq_f(Py_ssize_t d, const float* x)
    double so_row_sumsq_d(Py_ssize_t d, const double* x)
    # row-wise Adam / RMSprop: a row's float64 sums (fixed order), then its m / buffer and p
    double so_rw_sumsq_f(Py_ssize_t d, const float* x)
    double so_rw_sumsq_d(Py_ssize_t d, const double* x)
    double so_rw_sum_f(Py_ssize_t d, const float* x)
    double so_rw_sum_d(Py_ssize_t d, const double* x)
    void so_rw_adam_f(Py_ssize_t d, float* p, float* m, const float* g, float b1, float omb1,
                      float k, float pmul)
    void so_rw_adam_d(Py_ssize_t d, double* p, double* m, const double* g, double b1,
                      double omb1, double k, double pmul)
    void so_rw_momentum_f(Py_ssize_t d, float* p, float* buf, const float* g, float mu,
                          float k, float lr, float pmul)
    void so_rw_momentum_d(Py_ssize_t d, double* p, double* buf, const double* g, double mu,
                          double k, double lr, double pmul)

    # embedding-row algebra of the fused batch kernels
    double so_dot_f(Py_ssize_t d, const float* a, const float* b)
    double so_dot_d(Py_ssize_t d, const double* a, const double* b)
    double so_dot_diff_f(Py_ssize_t d, const float* a, const float* b, const float* c)
    double so_dot_df(Py_ssize_t d, const double* a, const float* b)
    double so_dot_diff_d(Py_ssize_t d, const double* a, const double* b, const double* c)
    void so_set_axpby_f(Py_ssize_t d, float* out, float x, const float* a, float y,
                        const float* b)
    void so_set_axpby_d(Py_ssize_t d, double* out, double x, const double* a, double y,
                        const double* b)
    void so_add_axpby_f(Py_ssize_t d, float* out, float x, const float* a, float y,
                        const float* b)
    void so_add_axpby_d(Py_ssize_t d, double* out, double x, const double* a, double y,
                        const double* b)
    void so_set_axmbpy_f(Py_ssize_t d, float* out, float x, const float* a, const float* b,
                         float y, const float* c)
    void so_set_axmbpy_d(Py_ssize_t d, double* out, double x, const double* a,
                         const double* b, double y, const double* c)
    void so_add_axmbpy_f(Py_ssize_t d, float* out, float x, const float* a, const float* b,
                         float y, const float* c)
    void so_add_axmbpy_d(Py_ssize_t d, double* out, double x, const double* a,
                         const double* b, double y, const double* c)
    double so_bits_to_double(int64_t bits)


# ---------------------------------------------------------------- typed fronts of _rowops.h

cdef inline void _scale(Py_ssize_t d, floating* x, double f) noexcept nogil:
    """``x *= f``."""
    if floating is float:
        so_scale_row_f(d, x, <float>f)
    else:
        so_scale_row_d(d, x, f)


cdef inline void _add_row(Py_ssize_t d, floating* dst, const floating* x) noexcept nogil:
    """``dst += x``."""
    if floating is float:
        so_add_row_f(d, dst, x)
    else:
        so_add_row_d(d, dst, x)


cdef inline int _any_nonfinite(Py_ssize_t n, const floating* x) noexcept nogil:
    """1 when any of the ``n`` values is NaN or infinite."""
    if floating is float:
        return so_any_nonfinite_f(n, x)
    else:
        return so_any_nonfinite_d(n, x)


cdef inline double _dot(Py_ssize_t d, const floating* a, const floating* b) noexcept nogil:
    """``sum a*b``, accumulated in float64."""
    if floating is float:
        return so_dot_f(d, a, b)
    else:
        return so_dot_d(d, a, b)


cdef inline double _dot_diff(Py_ssize_t d, const floating* a, const floating* b,
                             const floating* c) noexcept nogil:
    """``sum a*(b - c)``, accumulated in float64."""
    if floating is float:
        return so_dot_diff_f(d, a, b, c)
    else:
        return so_dot_diff_d(d, a, b, c)


cdef inline void _axpby(Py_ssize_t d, floating* out, double x, const floating* a, double y,
                        const floating* b) noexcept nogil:
    """``out = x*a + y*b``."""
    if floating is float:
        so_set_axpby_f(d, out, <float>x, a, <float>y, b)
    else:
        so_set_axpby_d(d, out, x, a, y, b)


cdef inline void _axpby_add(Py_ssize_t d, floating* out, double x, const floating* a,
                            double y, const floating* b) noexcept nogil:
    """``out += x*a + y*b``."""
    if floating is float:
        so_add_axpby_f(d, out, <float>x, a, <float>y, b)
    else:
        so_add_axpby_d(d, out, x, a, y, b)


cdef inline void _axmbpy(Py_ssize_t d, floating* out, double x, const floating* a,
                         const floating* b, double y, const floating* c) noexcept nogil:
    """``out = x*(a - b) + y*c``."""
    if floating is float:
        so_set_axmbpy_f(d, out, <float>x, a, b, <float>y, c)
    else:
        so_set_axmbpy_d(d, out, x, a, b, y, c)


cdef inline void _axmbpy_add(Py_ssize_t d, floating* out, double x, const floating* a,
                             const floating* b, double y, const floating* c) noexcept nogil:
    """``out += x*(a - b) + y*c``."""
    if floating is float:
        so_add_axmbpy_f(d, out, <float>x, a, b, <float>y, c)
    else:
        so_add_axmbpy_d(d, out, x, a, b, y, c)


# ---------------------------------------------------------------- scalar helpers

cdef inline double _softplus(double z) noexcept nogil:
    """log(1 + exp(z)) without overflow."""
    if z > 0:
        return z + log1p(exp(-z))
    return log1p(exp(z))


cdef inline double _sigmoid(double z) noexcept nogil:
    """1 / (1 + exp(-z)) without overflow."""
    cdef double e
    if z >= 0:
        return 1.0 / (1.0 + exp(-z))
    e = exp(z)
    return e / (1.0 + e)
