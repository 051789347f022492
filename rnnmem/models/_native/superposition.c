/*
 * Compiled kernels of the superposition-stack update (rnnmem.models.stacks, the
 * differentiable stack of Joulin & Mikolov, NeurIPS 2015), forward and backward in one
 * pass each.  Same build rules as recurrence.c (ISO C99, no FMA contraction).
 *
 * Layout: R = B * K independent rows; s (R, d, W); act (R, 3) holding the probabilities
 * (push, pop, no-op); v (R, W) the pushed vector; out and g (R, nd, W) with nd = d + 1
 * (the stack grown by one empty bottom cell), d, or any 1 <= nd < d (only the top nd
 * cells of the update computed: cells that no later read can reach, see
 * lstm_sequence._depths); gs (R, d, W); ga (R, 3); gv (R, W).
 *
 * fwd:  out[j] = ap * (j == 0 ? v : s[j-1])  [+ ao * s[j+1] if j < d-1]  [+ an * s[j] if j < d]
 *       summed in this order (that of the torch form, stacks._superposition_forward)
 * bwd:  gs[j] = an g[j] [+ ap g[j+1] if j < nd-1] [+ ao g[j-1] if j >= 1], where g[j] = 0
 *       for j >= nd (so gs[j] = 0 for j > nd)
 *       ga    = (<g[0], v> + <g[1:nd], s[:nd-1]>, <g[:d-1], s[1:]>, <g[:d], s>)
 *       gv    = ap g[0]
 *       with g replaced by g + gt on the top rd rows when gt (R, rd, W), the gradient of
 *       a read of the top cells returned by the same step, is given (no full-size sum)
 * Arithmetic in CT = double, also for float data: a product of two floats is exact in
 * double, and each output is rounded to float once (the torch form rounds each product
 * and sum in float, or fuses some into FMAs; the two agree to rounding, not bit for bit).  The reason is speed: the
 * deep cells of a long stack hold products of hundreds of push/pop probabilities, float32
 * subnormals, and every float instruction that makes a subnormal takes the CPU's slow
 * path (~100 cycles on x86, once per instruction).  In double these numbers are normal:
 * measured at depth 500, batch 32, width 8, all cells subnormal, the float forward took
 * 1.85 ms and this one 0.09 ms, the same as for normal numbers.
 * Rows of a row-major (d, W) block are consecutive, so the shifts by one cell are shifts
 * by W of one flat index: the interior is one long loop that the compiler vectorises.
 * Inner products use LANES partial sums (a fixed summation order, whatever the vector
 * width).
 *
 * On x86-64 with GCC, AVX-512, AVX2 and baseline versions are compiled and the loader
 * picks the best the CPU has (function multi-versioning); results do not depend on the
 * version (no FMA contraction, sums in their fixed order).
 */
#include <stddef.h>
#include <stdint.h>

#include "rn_parallel.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define RN_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RN_CLONES
#endif

#define LANES 16

#define RN_SUP(SUF, TY, CT)                                                                    \
RN_CLONES void rn_sup_fwd_rows_##SUF(const TY *s, const TY *act, const TY *v, TY *out,         \
                                     long long r0, long long r1, long long d, long long nd,    \
                                     long long W)                                              \
{                                                                                              \
    for (long long r = r0; r < r1; r++) {                                                      \
        const CT ap = act[3 * r], ao = act[3 * r + 1], an = act[3 * r + 2];                    \
        const TY *restrict sr = s + r * d * W;                                                 \
        const TY *restrict vr = v + r * W;                                                     \
        TY *restrict o = out + r * nd * W;                                                     \
        /* row 0: push v */                                                                    \
        if (d >= 2) {                                                                          \
            for (long long w = 0; w < W; w++) {                                                \
                CT t = ap * vr[w];                                                             \
                t = t + ao * sr[W + w];                                                        \
                o[w] = (TY)(t + an * sr[w]);                                                   \
            }                                                                                  \
        } else if (d == 1) {                                                                   \
            for (long long w = 0; w < W; w++) { CT t = ap * vr[w]; o[w] = (TY)(t + an * sr[w]); } \
        } else {                                                                               \
            for (long long w = 0; w < W; w++) o[w] = (TY)(ap * vr[w]);                         \
        }                                                                                      \
        /* rows 1 .. min(d-1, nd)-1: all three terms; flat index i = j W + w */                \
        const long long ie = (d - 1 < nd ? d - 1 : nd) * W;                                    \
        for (long long i = W; i < ie; i++) {                                                   \
            CT t = ap * sr[i - W];                                                             \
            t = t + ao * sr[i + W];                                                            \
            o[i] = (TY)(t + an * sr[i]);                                                       \
        }                                                                                      \
        /* row d-1 (when d >= 2 and it is kept): push and no-op */                             \
        if (d >= 2 && nd >= d) {                                                               \
            for (long long i = (d - 1) * W; i < d * W; i++) {                                  \
                CT t = ap * sr[i - W];                                                         \
                o[i] = (TY)(t + an * sr[i]);                                                   \
            }                                                                                  \
        }                                                                                      \
        /* grown bottom row d: push only */                                                    \
        if (nd > d && d >= 1) {                                                                \
            for (long long i = d * W; i < nd * W; i++) o[i] = (TY)(ap * sr[i - W]);            \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
                                                                                               \
RN_CLONES void rn_sup_bwd_rows_##SUF(const TY *s, const TY *act, const TY *v, const TY *g,     \
                                     TY *gs, TY *ga, TY *gv, const TY *gt, long long rd,       \
                                     long long r0, long long r1, long long d, long long nd,    \
                                     long long W)                                              \
{                                                                                              \
    for (long long r = r0; r < r1; r++) {                                                      \
        const CT ap = act[3 * r], ao = act[3 * r + 1], an = act[3 * r + 2];                    \
        const TY *restrict sr = s + r * d * W;                                                 \
        const TY *restrict vr = v + r * W;                                                     \
        const TY *restrict gr = g + r * nd * W;                                                \
        TY *restrict gsr = gs + r * d * W;                                                     \
        CT lp[LANES] = {0}, lo[LANES] = {0}, ln[LANES] = {0};                                  \
        double push = 0, pop = 0, noop = 0;                                                    \
        for (long long w = 0; w < W; w++) {                                                    \
            push += (CT)gr[w] * vr[w];                                                         \
            gv[r * W + w] = (TY)(gr[w] * ap);                                                  \
        }                                                                                      \
        const long long n = d * W;              /* cells of s */                               \
        const long long up = (nd - 1) * W;      /* i < up: g[i + W] exists (push term) */      \
        long long i = 0;                                                                       \
        /* i < W: row 0 (no pop term) */                                                       \
        for (; i < W && i < n; i++) {                                                          \
            CT t = gr[i] * an;                                                                 \
            if (i < up) { t = t + gr[i + W] * ap; push += (CT)gr[i + W] * sr[i]; }             \
            gsr[i] = (TY)t;                                                                    \
            noop += (CT)gr[i] * sr[i];                                                         \
        }                                                                                      \
        /* interior rows: all three terms, in blocks of LANES */                               \
        long long end = n < up ? n : up;                                                       \
        for (; i + LANES <= end; i += LANES) {                                                 \
            for (long long k = 0; k < LANES; k++) {                                            \
                const TY gi = gr[i + k], sk = sr[i + k];                                       \
                CT t = gi * an;                                                                \
                t = t + gr[i + k + W] * ap;                                                    \
                gsr[i + k] = (TY)(t + gr[i + k - W] * ao);                                     \
                ln[k] += (CT)gi * sk;                                                          \
                lp[k] += (CT)gr[i + k + W] * sk;                                               \
                lo[k] += (CT)gr[i + k - W] * sk;                                               \
            }                                                                                  \
        }                                                                                      \
        /* the rest of the rows that g has: bounds checked per cell */                         \
        const long long n1 = (nd < d ? nd : d) * W;                                            \
        for (; i < n1; i++) {                                                                  \
            CT t = gr[i] * an;                                                                 \
            if (i < up) { t = t + gr[i + W] * ap; push += (CT)gr[i + W] * sr[i]; }             \
            t = t + gr[i - W] * ao;                                                            \
            gsr[i] = (TY)t;                                                                    \
            noop += (CT)gr[i] * sr[i];                                                         \
            pop += (CT)gr[i - W] * sr[i];                                                      \
        }                                                                                      \
        /* a shallower output (nd < d): row nd gets the pop term alone, deeper rows 0 */     \
        for (; i < n && i < (nd + 1) * W; i++) {                                               \
            gsr[i] = (TY)(gr[i - W] * ao);                                                     \
            pop += (CT)gr[i - W] * sr[i];                                                      \
        }                                                                                      \
        for (; i < n; i++) gsr[i] = 0;                                                         \
        for (long long k = 0; k < LANES; k++) {                                                \
            push += lp[k]; pop += lo[k]; noop += ln[k];                                        \
        }                                                                                      \
        if (gt) {  /* dL/dread of the top rd cells: the same formulas on g's top rows */       \
            const TY *restrict tr = gt + r * rd * W;                                           \
            for (long long j = 0; j <= rd && j < d; j++) {                                     \
                for (long long w = 0; w < W; w++) {                                            \
                    const CT sj = sr[j * W + w];                                               \
                    CT t = 0;                                                                  \
                    if (j < rd) { t = t + tr[j * W + w] * an; noop += tr[j * W + w] * sj; }    \
                    if (j + 1 < rd && j < nd - 1) {                                            \
                        t = t + tr[(j + 1) * W + w] * ap;                                      \
                        push += tr[(j + 1) * W + w] * sj;                                      \
                    }                                                                          \
                    if (j >= 1 && j - 1 < rd) {                                                \
                        t = t + tr[(j - 1) * W + w] * ao;                                      \
                        pop += tr[(j - 1) * W + w] * sj;                                       \
                    }                                                                          \
                    gsr[j * W + w] = (TY)(gsr[j * W + w] + t);                                 \
                }                                                                              \
            }                                                                                  \
            for (long long w = 0; w < W; w++) {                                                \
                push += (CT)tr[w] * vr[w];                                                     \
                gv[r * W + w] = (TY)(gv[r * W + w] + tr[w] * ap);                              \
            }                                                                                  \
        }                                                                                      \
        ga[3 * r] = (TY)push;                                                                  \
        ga[3 * r + 1] = (TY)pop;                                                               \
        ga[3 * r + 2] = (TY)noop;                                                              \
    }                                                                                          \
}                                                                                              \
                                                                                               \
void rn_sup_fwd_##SUF(const TY *s, const TY *act, const TY *v, TY *out, long long r0,          \
                      long long r1, long long d, long long nd, long long W)                    \
{                                                                                              \
    RN_PAR_ROWS(r0, r1, (r1 - r0) * nd * W,                                                    \
                rn_sup_fwd_rows_##SUF(s, act, v, out, lo, hi, d, nd, W));                      \
}                                                                                              \
void rn_sup_bwd_##SUF(const TY *s, const TY *act, const TY *v, const TY *g, TY *gs, TY *ga,    \
                      TY *gv, const TY *gt, long long rd, long long r0, long long r1,          \
                      long long d, long long nd, long long W)                                  \
{                                                                                              \
    RN_PAR_ROWS(r0, r1, (r1 - r0) * nd * W,                                                    \
                rn_sup_bwd_rows_##SUF(s, act, v, g, gs, ga, gv, gt, rd, lo, hi, d, nd, W));    \
}                                                                                              \

RN_SUP(f32, float, double)
RN_SUP(f64, double, double)

/*
 * The stack step of a whole-sequence model (rnnmem.models.lstm_sequence): the controls
 * from the interface logits, the update and the read, in one call; and back.  Rows are
 * batch rows b in [b0, b1) (each holding K stacks); the update itself is rn_sup_fwd /
 * rn_sup_bwd on the K rows of the batch row.
 *
 * z (B, ldz): logits, the first 3K the actions (push, pop, no-op of stack 0, then stack
 *   1, ...), the next KW the values; act (B, K, 3) = softmax over each stack's 3 logits
 *   (joint != 0: over all 3K), v (B, K, W) = sigmoid; s (B, K, d, W) -> out (B, K, nd, W);
 *   rd (B, ldr): the top rdp cells of every stack, (K, rdp, W) flattened, written.
 * bwd: g (B, K, nd, W) = dL/dout, gt (B, ldt) = dL/drd (K, rdp, W) flattened; writes
 *   gs (B, K, d, W), ga (B, K, 3), gv (B, K, W) as rn_sup_bwd, and dz (B, ldz):
 *   dz_a = a (ga - <ga, a>) over each softmax group, dz_v = gv v (1 - v).
 * Controls computed in double and rounded once: softmax as exp(z - max) / sum.
 */
#include <math.h>

static void rn_softmax_d(const double *x, double *p, long long n)
{
    double m = x[0], t = 0;
    for (long long j = 1; j < n; j++) m = x[j] > m ? x[j] : m;
    for (long long j = 0; j < n; j++) { p[j] = exp(x[j] - m); t += p[j]; }
    for (long long j = 0; j < n; j++) p[j] /= t;
}

#define RN_SUPCTL(SUF, TY)                                                                     \
static void rn_supctl_fwd_rows_##SUF(const TY *z, long long ldz, int joint, const TY *s,       \
                                     TY *act, TY *v, TY *out, TY *rd, long long ldr,           \
                                     long long rdp, long long b0, long long b1, long long K,   \
                                     long long d, long long nd, long long W)                   \
{                                                                                              \
    double x[3], p[3];                                                                         \
    for (long long b = b0; b < b1; b++) {                                                      \
        const TY *zb = z + b * ldz;                                                            \
        TY *ab = act + b * K * 3, *vb = v + b * K * W;                                         \
        if (joint) {                                                                           \
            double m = zb[0], t = 0;                                                           \
            for (long long j = 1; j < 3 * K; j++) m = zb[j] > m ? zb[j] : m;                   \
            for (long long j = 0; j < 3 * K; j++) t += exp((double)zb[j] - m);                 \
            for (long long j = 0; j < 3 * K; j++) ab[j] = (TY)(exp((double)zb[j] - m) / t);    \
        } else {                                                                               \
            for (long long k = 0; k < K; k++) {                                                \
                for (int j = 0; j < 3; j++) x[j] = zb[3 * k + j];                              \
                rn_softmax_d(x, p, 3);                                                         \
                for (int j = 0; j < 3; j++) ab[3 * k + j] = (TY)p[j];                          \
            }                                                                                  \
        }                                                                                      \
        for (long long j = 0; j < K * W; j++)                                                  \
            vb[j] = (TY)(1.0 / (1.0 + exp(-(double)zb[3 * K + j])));                          \
        rn_sup_fwd_rows_##SUF(s + b * K * d * W, ab, vb, out + b * K * nd * W, 0, K, d, nd,    \
                              W);                                                              \
        for (long long k = 0; k < K; k++)                                                      \
            for (long long j = 0; j < rdp * W; j++)                                            \
                rd[b * ldr + k * rdp * W + j] = out[(b * K + k) * nd * W + j];                 \
    }                                                                                          \
}                                                                                              \
static void rn_supctl_bwd_rows_##SUF(const TY *s, const TY *act, const TY *v, const TY *g,     \
                                     TY *gs, TY *ga, TY *gv, const TY *gt, long long ldt,      \
                                     long long rdp, TY *dz, long long ldz, int joint,          \
                                     long long b0, long long b1, long long K, long long d,     \
                                     long long nd, long long W)                                \
{                                                                                              \
    for (long long b = b0; b < b1; b++) {                                                      \
        const TY *ab = act + b * K * 3, *vb = v + b * K * W;                                   \
        TY *gab = ga + b * K * 3, *gvb = gv + b * K * W, *zb = dz + b * ldz;                   \
        rn_sup_bwd_rows_##SUF(s + b * K * d * W, ab, vb, g + b * K * nd * W,                   \
                              gs + b * K * d * W,                                              \
                         gab, gvb, gt ? gt + b * ldt : NULL, gt ? rdp : 0, 0, K, d, nd, W);    \
        const long long n = joint ? 3 * K : 3;                                                 \
        for (long long k0 = 0; k0 < 3 * K; k0 += n) {                                          \
            double dot = 0;                                                                    \
            for (long long j = k0; j < k0 + n; j++) dot += (double)gab[j] * ab[j];             \
            for (long long j = k0; j < k0 + n; j++)                                            \
                zb[j] = (TY)((double)ab[j] * ((double)gab[j] - dot));                          \
        }                                                                                      \
        for (long long j = 0; j < K * W; j++)                                                  \
            zb[3 * K + j] = (TY)((double)gvb[j] * vb[j] * (1.0 - (double)vb[j]));              \
    }                                                                                          \
}                                                                                              \
void rn_supctl_fwd_##SUF(const TY *z, long long ldz, int joint, const TY *s, TY *act, TY *v,  \
                         TY *out, TY *rd, long long ldr, long long rdp, long long b0,          \
                         long long b1, long long K, long long d, long long nd, long long W)    \
{                                                                                              \
    RN_PAR_ROWS(b0, b1, (b1 - b0) * K * nd * W,                                                \
                rn_supctl_fwd_rows_##SUF(z, ldz, joint, s, act, v, out, rd, ldr, rdp, lo, hi,  \
                                         K, d, nd, W));                                        \
}                                                                                              \
void rn_supctl_bwd_##SUF(const TY *s, const TY *act, const TY *v, const TY *g, TY *gs,        \
                         TY *ga, TY *gv, const TY *gt, long long ldt, long long rdp, TY *dz,   \
                         long long ldz, int joint, long long b0, long long b1, long long K,    \
                         long long d, long long nd, long long W)                               \
{                                                                                              \
    RN_PAR_ROWS(b0, b1, (b1 - b0) * K * nd * W,                                                \
                rn_supctl_bwd_rows_##SUF(s, act, v, g, gs, ga, gv, gt, ldt, rdp, dz, ldz,      \
                                         joint, lo, hi, K, d, nd, W));                         \
}

RN_SUPCTL(f32, float)
RN_SUPCTL(f64, double)

/*
 * One step of the LSTM controller with its stack (rnnmem.models.lstm_sequence), in one
 * call, rows [b0, b1) in one parallel region: forward, the cell and the interface logits
 * (rn_lstm_fwd in lstm.c) then the controls, update and read above; backward, the stack
 * and controls' derivatives above then the cell's (rn_lstm_bwd), which reads the row of
 * dL/dz just written.  Everything is per batch row, so the split changes no bit.
 */
#define RN_STEP(SUF, TY)                                                                       \
void rn_lstm_fwd_rows_##SUF(TY *act, const TY *cp, TY *c, TY *tc, TY *h, long long ldh,       \
                            const TY *wT, const TY *bz, long long C, TY *z, long long ldz,     \
                            long long b0, long long b1, long long H);                          \
void rn_lstm_bwd_rows_##SUF(const TY *act, const TY *cp, const TY *tc, const TY *gh,           \
                            long long ldgh, const TY *gh2, long long ldgh2, const TY *dz,      \
                            long long ldz, const TY *wT, long long C, TY *dc, TY *dg,          \
                            long long b0, long long b1, long long H);                          \
void rn_lstm_stack_fwd_##SUF(TY *act, const TY *cp, TY *c, TY *tc, TY *h, long long ldh,      \
                             const TY *wT, const TY *bz, long long C, TY *z, long long ldz,    \
                             int joint, const TY *s, TY *sa, TY *sv, TY *out, TY *rd,          \
                             long long ldr, long long rdp, long long b0, long long b1,         \
                             long long H, long long K, long long d, long long nd, long long W) \
{                                                                                              \
    RN_PAR_ROWS(b0, b1, (b1 - b0) * ((6 + C) * H + K * nd * W),                                \
                (rn_lstm_fwd_rows_##SUF(act, cp, c, tc, h, ldh, wT, bz, C, z, ldz, lo, hi, H), \
                 rn_supctl_fwd_rows_##SUF(z, ldz, joint, s, sa, sv, out, rd, ldr, rdp, lo, hi, \
                                          K, d, nd, W)));                                      \
}                                                                                              \
void rn_lstm_stack_bwd_##SUF(const TY *s, const TY *sa, const TY *sv, const TY *g, TY *gs,     \
                             TY *ga, TY *gv, const TY *gt, long long ldt, long long rdp,       \
                             TY *dz, long long ldz, int joint, const TY *act, const TY *cp,    \
                             const TY *tc, const TY *gh, long long ldgh, const TY *gh2,        \
                             long long ldgh2, const TY *wT, TY *dc, TY *dg, long long b0,      \
                             long long b1, long long H, long long K, long long d,              \
                             long long nd, long long W)                                        \
{                                                                                              \
    const long long C = 3 * K + K * W;                                                         \
    RN_PAR_ROWS(b0, b1, (b1 - b0) * ((4 + C) * H + K * nd * W),                               \
                (rn_supctl_bwd_rows_##SUF(s, sa, sv, g, gs, ga, gv, gt, ldt, rdp, dz, ldz,     \
                                          joint, lo, hi, K, d, nd, W),                         \
                 rn_lstm_bwd_rows_##SUF(act, cp, tc, gh, ldgh, gh2, ldgh2, dz, ldz, wT, C, dc, \
                                        dg, lo, hi, H)));                                      \
}

/* Table-driven entry points (see lstm.c): one row of 64-bit arguments per call. */
#define RN_STEP_ROWS(SUF, TY)                                                                  \
void rn_lstm_stack_fwd_row_##SUF(const long long *a, long long b0, long long b1)               \
{                                                                                              \
    rn_lstm_stack_fwd_##SUF(RN_P(TY, a[0]), RN_P(const TY, a[1]), RN_P(TY, a[2]),              \
                            RN_P(TY, a[3]), RN_P(TY, a[4]), a[5], RN_P(const TY, a[6]),        \
                            RN_P(const TY, a[7]), a[8], RN_P(TY, a[9]), a[10], (int)a[11],     \
                            RN_P(const TY, a[12]), RN_P(TY, a[13]), RN_P(TY, a[14]),           \
                            RN_P(TY, a[15]), RN_P(TY, a[16]), a[17], a[18], b0, b1, a[19],     \
                            a[20], a[21], a[22], a[23]);                                       \
}                                                                                              \
void rn_lstm_stack_bwd_row_##SUF(const long long *a, long long b0, long long b1)               \
{                                                                                              \
    rn_lstm_stack_bwd_##SUF(RN_P(const TY, a[0]), RN_P(const TY, a[1]), RN_P(const TY, a[2]),  \
                            RN_P(const TY, a[3]), RN_P(TY, a[4]), RN_P(TY, a[5]),              \
                            RN_P(TY, a[6]), RN_P(const TY, a[7]), a[8], a[9], RN_P(TY, a[10]), \
                            a[11], (int)a[12], RN_P(const TY, a[13]), RN_P(const TY, a[14]),   \
                            RN_P(const TY, a[15]), RN_P(const TY, a[16]), a[17],               \
                            RN_P(const TY, a[18]), a[19], RN_P(const TY, a[20]),               \
                            RN_P(TY, a[21]), RN_P(TY, a[22]), b0, b1, a[23], a[24], a[25],     \
                            a[26], a[27]);                                                     \
}

RN_STEP(f32, float)
RN_STEP(f64, double)
RN_STEP_ROWS(f32, float)
RN_STEP_ROWS(f64, double)
