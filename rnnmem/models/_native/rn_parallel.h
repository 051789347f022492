/*
 * Splitting a kernel's independent rows over OpenMP threads (rnnmem.models._native).
 *
 * Built with -fopenmp where the compiler has it.  The library is then linked against
 * libgomp.so.1, which on Linux resolves to the copy that torch has already loaded: the
 * kernels share torch's thread pool (threads that are still awake after torch's own
 * operations, and torch.set_num_threads), instead of starting threads of their own.
 * Python turns the splitting on (rn_set_parallel) only after checking that one OpenMP
 * runtime is loaded in the process; otherwise rows run on the calling thread and the
 * Python side splits them over its own threads as before.
 *
 * RN_PAR_ROWS(b0, b1, work, call): run `call`, an expression using `lo` and `hi`, on
 * contiguous pieces [lo, hi) of [b0, b1): one per thread, at most omp_get_max_threads(),
 * at most one per row, and at most one per rn_grain elements of `work` (the whole call's
 * element count; below it a thread costs more than it saves).  Rows are independent and
 * each is computed the same way whatever the split: results are bit-for-bit the same for
 * any thread count.
 */
#ifndef RN_PARALLEL_H
#define RN_PARALLEL_H

#ifdef _OPENMP
#include <omp.h>
#endif

#include <stdint.h>

/* One argument of a table-driven entry point (the rn_*_row functions): the 64-bit integer
 * `x` of a table row read as a pointer to TY. */
#define RN_P(TY, x) ((TY *)(intptr_t)(x))

extern int rn_parallel_on;
extern long long rn_grain;

#ifdef _OPENMP
#define RN_PAR_ROWS(B0, B1, WORK, CALL)                                                        \
    do {                                                                                       \
        const long long rn_b0_ = (B0), rn_n_ = (B1) - (B0);                                    \
        long long rn_nt_ = rn_parallel_on ? omp_get_max_threads() : 1;                         \
        const long long rn_cap_ = rn_grain > 0 ? (WORK) / rn_grain : rn_nt_;                   \
        if (rn_nt_ > rn_cap_) rn_nt_ = rn_cap_;                                                \
        if (rn_nt_ > rn_n_) rn_nt_ = rn_n_;                                                    \
        if (rn_nt_ <= 1) {                                                                     \
            const long long lo = rn_b0_, hi = rn_b0_ + rn_n_;                                  \
            CALL;                                                                              \
        } else {                                                                               \
            _Pragma("omp parallel num_threads((int)rn_nt_)")                                   \
            {                                                                                  \
                const long long rn_i_ = omp_get_thread_num(), rn_k_ = omp_get_num_threads();   \
                const long long lo = rn_b0_ + rn_n_ * rn_i_ / rn_k_;                           \
                const long long hi = rn_b0_ + rn_n_ * (rn_i_ + 1) / rn_k_;                     \
                if (hi > lo) CALL;                                                             \
            }                                                                                  \
        }                                                                                      \
    } while (0)
#else
#define RN_PAR_ROWS(B0, B1, WORK, CALL)                                                        \
    do {                                                                                       \
        const long long lo = (B0), hi = (B1);                                                  \
        (void)(WORK);                                                                          \
        CALL;                                                                                  \
    } while (0)
#endif

#endif
