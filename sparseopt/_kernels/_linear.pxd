# The argument bundles of the linear-model kernels (``_linear.pyx``).
#
# A cdef attribute has one C type, so an array whose type follows the specialisation (the
# float32/float64 values, the int32/int64 CSR indices) has one typed view per type; a bundle
# binds exactly the one its dtype names and the kernel of that specialisation reads only it.
# Python binds the bundles once per training call (the scratch again when ``reserve`` grows
# it, the penalty tables at each new segment of steps); between kernel calls only the scalars
# marked "per step" change.
from libc.stdint cimport int32_t, int64_t


cdef class CSRSamples:
    # The training samples: X as CSR, targets, weights and the visiting order.
    cdef readonly object dtype            # numpy dtype of ``data`` (float32 or float64)
    cdef readonly object index_dtype      # numpy dtype of ``indptr``/``indices``
    cdef readonly Py_ssize_t n_samples    # rows of X (length of y and sample_weight)
    cdef readonly Py_ssize_t n_order      # length of ``order``
    cdef int float_bits, index_bits       # 32 or 64: which typed views are bound
    cdef const int32_t[::1] indptr32
    cdef const int32_t[::1] indices32
    cdef const int64_t[::1] indptr64
    cdef const int64_t[::1] indices64
    cdef const float[::1] data32
    cdef const double[::1] data64
    cdef const double[::1] y
    cdef const double[::1] sample_weight
    cdef const int64_t[::1] order         # permuted in place by the caller between epochs


cdef class LinearModel:
    # The weight table being trained and the loss it is trained for.
    cdef readonly object W                # the caller's table, updated in place
    cdef readonly object dtype
    cdef readonly Py_ssize_t n_feat       # rows >= n_feat are intercepts
    cdef readonly bint fit_intercept      # W has the intercept row n_feat
    cdef readonly int loss                # a value of ``LOSSES``
    cdef readonly double loss_param       # hinge margin or epsilon; unused by the others
    cdef int float_bits
    cdef float[:, ::1] W32
    cdef double[:, ::1] W64


cdef class BatchScratch:
    # Work arrays of the gradient kernel, sized for the batches of one training call, and
    # the thread plan of that call. ``rows[:m]``/``G[:m]`` are the kernel's output.
    cdef readonly object dtype
    cdef readonly Py_ssize_t n_rows, n_outputs
    cdef readonly Py_ssize_t max_batch    # samples per call at most
    cdef readonly Py_ssize_t nnz_capacity  # stored entries per call at most (``reserve``)
    cdef readonly int n_threads           # team of the per-sample loop
    cdef readonly Py_ssize_t min_row_work  # unique rows x outputs below which rows run serial
    cdef readonly object rows             # int64 ndarray: unique rows, intercept first
    cdef readonly object G                # ndarray (rows capacity, K): gradient rows
    cdef int float_bits
    cdef int64_t[::1] rows_mv
    cdef float[:, ::1] G32
    cdef float[:, ::1] Wc32
    cdef double[:, ::1] G64
    cdef double[:, ::1] Wc64
    cdef int64_t[::1] hkeys               # open-addressing table: -1 = empty
    cdef int32_t[::1] hvals
    cdef int64_t[::1] hpos
    cdef int hshift
    cdef readonly bint direct
    cdef int32_t[::1] dslot
    cdef int32_t[::1] pos2u
    cdef int64_t[::1] offsets
    cdef double[:, ::1] dz
    cdef double[::1] sample_loss


cdef class LazyPenalty:
    # The kernel's view of the lazy penalty and averaging bookkeeping
    # (``sparseopt/linear_model/_lazy.py``): flags, per-row steps, the running sum for the
    # average, the current segment's tables and, with the PRE flag, the optimizer state that
    # gives each coefficient's step multiplier.
    cdef readonly int flags               # P_L1 | P_L2 | P_AVG | P_PRE; 0: nothing lazy
    cdef int64_t[::1] pen_step            # bound when flags != 0
    cdef double[:, ::1] avg               # bound when flags & P_AVG
    cdef double[:, ::1] debt              # (n_rows, 2K), bound when flags & P_L1
    cdef const double[::1] E              # bound by ``set_segment`` when flags != 0
    cdef const double[::1] Q
    cdef const double[::1] cum_a
    cdef const double[::1] cum_q
    cdef const double[::1] cum_aq
    cdef readonly Py_ssize_t segment_length  # steps the tables cover (0: none bound)
    cdef public int64_t step              # per step: this step's index in the segment
    cdef public int64_t avg_from          # per step: first averaged step of the segment
    cdef public double wscale             # per step: scale of every row of W (1 if unused)
    cdef public double l1, l2             # the penalty (read by the P_PRE path)
    cdef readonly int precond             # PRE_NONE until ``set_preconditioner``
    cdef int s_bits                       # 32 or 64: which view of S is bound
    cdef readonly Py_ssize_t s_rows, s_cols
    cdef const float[:, :] S32            # optimizer state (rows of unit stride)
    cdef const double[:, :] S64
    cdef const int64_t[::1] row_step      # bound with PRE_ADAM
    cdef readonly double eps, beta2
