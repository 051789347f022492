/*
 * Compiled kernels of the diagonal linear recurrence h_t = a_t * h_{t-1} + x_t
 * (rnnmem.models.linear_recurrence, method "native").  Built on first use by
 * rnnmem.models._native with the system C compiler (ISO C99, no fast-math, no FMA
 * contraction: every element is the same two IEEE operations, a*h then + x, that the
 * reference loop performs) and called through ctypes on the data of contiguous tensors.
 *
 * Layout: x, out, g, h, gx, da are (B, T, N) row-major; a is (N,) when tv == 0 and
 * (B, T, N) when tv != 0; h0 is (B, N) or NULL (zero state); acc is (B, N).
 * Every function handles the batch rows [b0, b1) only, so that callers can split the
 * batch across threads (rows are independent; results do not depend on the split).
 *
 * fwd:  out[b,t] = a_t * out[b,t-1] + x[b,t],       out[b,-1] = h0[b]
 * adj:  gx[b,t]  = g[b,t] + conj(a_{t+1}) * gx[b,t+1],  gx[b,T] = 0
 *       and, when need_a, with p = h[b,t-1] (h0[b] at t = 0, nothing when h0 is NULL):
 *       tv:  da[b,t]  = gx[b,t] * conj(p)          (zero at t = 0 without h0)
 *       ti:  acc[b]  += gx[b,t] * conj(p)          (summed over time; the caller sums b)
 */
#include <complex.h>
#include <stddef.h>

#include "rn_parallel.h"

#define RN_REAL_CONJ(v) (v)

#define RN_DEFINE(SUF, TY, CONJ)                                                               \
static void rn_fwd_rows_##SUF(const TY *a, int tv, const TY *x, const TY *h0, TY *out,         \
                              long long b0, long long b1, long long T, long long N)            \
{                                                                                              \
    for (long long b = b0; b < b1; b++) {                                                      \
        const TY *xb = x + b * T * N;                                                          \
        TY *ob = out + b * T * N;                                                              \
        const TY *ab = tv ? a + b * T * N : a;                                                 \
        if (T <= 0) continue;                                                                  \
        if (h0) {                                                                              \
            const TY *restrict hb = h0 + b * N;                                                \
            const TY *restrict a0 = ab;                                                        \
            const TY *restrict x0 = xb;                                                        \
            TY *restrict o0 = ob;                                                              \
            for (long long n = 0; n < N; n++) o0[n] = a0[n] * hb[n] + x0[n];                   \
        } else {                                                                               \
            for (long long n = 0; n < N; n++) ob[n] = xb[n];                                   \
        }                                                                                      \
        for (long long t = 1; t < T; t++) {                                                    \
            const TY *restrict at = tv ? ab + t * N : a;                                       \
            const TY *restrict xt = xb + t * N;                                                \
            const TY *restrict op = ob + (t - 1) * N;                                          \
            TY *restrict o = ob + t * N;                                                       \
            for (long long n = 0; n < N; n++) o[n] = at[n] * op[n] + xt[n];                    \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
                                                                                               \
static void rn_adj_rows_##SUF(const TY *a, int tv, const TY *g, const TY *h, const TY *h0,      \
                              TY *gx, TY *da, TY *acc, int need_a, long long b0, long long b1, \
                              long long T, long long N)                                        \
{                                                                                              \
    for (long long b = b0; b < b1; b++) {                                                      \
        const TY *gb = g + b * T * N;                                                          \
        const TY *hb = h ? h + b * T * N : NULL;                                               \
        const TY *ab = tv ? a + b * T * N : a;                                                 \
        TY *ob = gx + b * T * N;                                                               \
        for (long long t = T - 1; t >= 0; t--) {                                               \
            const TY *restrict gt = gb + t * N;                                                \
            TY *restrict o = ob + t * N;                                                       \
            if (t == T - 1) {                                                                  \
                for (long long n = 0; n < N; n++) o[n] = gt[n];                                \
            } else {                                                                           \
                const TY *restrict an = tv ? ab + (t + 1) * N : a;                             \
                const TY *restrict on = ob + (t + 1) * N;                                      \
                for (long long n = 0; n < N; n++) o[n] = gt[n] + CONJ(an[n]) * on[n];          \
            }                                                                                  \
            if (!need_a) continue;                                                             \
            const TY *restrict p = t > 0 ? hb + (t - 1) * N : (h0 ? h0 + b * N : NULL);        \
            if (tv) {                                                                          \
                TY *restrict d = da + b * T * N + t * N;                                       \
                if (p) { for (long long n = 0; n < N; n++) d[n] = o[n] * CONJ(p[n]); }         \
                else   { for (long long n = 0; n < N; n++) d[n] = 0; }                         \
            } else if (p) {                                                                    \
                TY *restrict s = acc + b * N;                                                  \
                for (long long n = 0; n < N; n++) s[n] += o[n] * CONJ(p[n]);                   \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
                                                                                               \
void rn_fwd_##SUF(const TY *a, int tv, const TY *x, const TY *h0, TY *out,                     \
                  long long b0, long long b1, long long T, long long N)                        \
{                                                                                              \
    RN_PAR_ROWS(b0, b1, (b1 - b0) * T * N, rn_fwd_rows_##SUF(a, tv, x, h0, out, lo, hi, T, N)); \
}                                                                                              \
                                                                                               \
void rn_adj_##SUF(const TY *a, int tv, const TY *g, const TY *h, const TY *h0, TY *gx,         \
                  TY *da, TY *acc, int need_a, long long b0, long long b1, long long T,        \
                  long long N)                                                                 \
{                                                                                              \
    RN_PAR_ROWS(b0, b1, (b1 - b0) * T * N,                                                     \
                rn_adj_rows_##SUF(a, tv, g, h, h0, gx, da, acc, need_a, lo, hi, T, N));        \
}

RN_DEFINE(f32, float, RN_REAL_CONJ)
RN_DEFINE(f64, double, RN_REAL_CONJ)
RN_DEFINE(c64, float _Complex, conjf)
RN_DEFINE(c128, double _Complex, conj)

int rn_abi_version(void) { return 8; }

/* The row splitting of rn_parallel.h: on (after Python's check that torch and this
 * library share one OpenMP runtime) or off, and the fewest elements per thread. */
int rn_parallel_on = 0;
long long rn_grain = 1LL << 14;

void rn_set_parallel(int on, long long grain)
{
    rn_parallel_on = on;
    rn_grain = grain;
}

/* Whether the library was built with OpenMP, and its runtime's thread count (0 without). */
int rn_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int rn_omp_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 0;
#endif
}
