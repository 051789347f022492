/*
 * Backward of one LSTM cell step from its saved activations (rnnmem.models.lstm_sequence).
 * Built and loaded by rnnmem.models._native (ISO C99, no fast-math, no FMA contraction).
 *
 * Layout (row-major, rows [b0, b1) only, so that callers may split the batch):
 *   act  (B, 4H)  activated gates in the order i, f, o, g (sigmoid, sigmoid, sigmoid, tanh)
 *   cp   (B, H)   the previous cell state c_{t-1}
 *   tc   (B, H)   tanh(c_t)
 *   gh   (B, H)   dL/dh_t from the next step (rows ldgh apart)
 *   gh2  (B, H)   optional (NULL): dL/dh_t from the step's output, added (rows ldgh2 apart)
 *   dz   (B, C)   optional (NULL): dL/d(interface logits) of the step (rows ldz apart),
 *   wT   (C, H)   with the interface weights transposed: dz wT is added to dL/dh_t
 *   dc   (B, H)   in: dL/dc_t from later steps; out: dL/dc_{t-1}
 *   dg   (B, 4H)  out: dL/d(gate pre-activations), same order as act
 *
 * With c_t = f c_{t-1} + i g and h_t = o tanh(c_t), gh_t = gh + gh2 + dz wT:
 *   dc_t  = dc + gh_t o (1 - tc^2)
 *   di = dc_t g i (1 - i),  df = dc_t c_{t-1} f (1 - f),  do = gh_t tc o (1 - o),
 *   dg = dc_t i (1 - g^2),  dc_{t-1} = dc_t f.
 * gh_t is summed in the do slot of dg (read there before do overwrites it).
 *
 * Forward of one step (rn_lstm_fwd), rows [b0, b1):
 *   act  (B, 4H)  in: the gate pre-activations (i, f, o, g); out: the activated gates
 *   cp   (B, H)   c_{t-1};  c, tc (B, H) out: c_t and tanh(c_t);  h (B, H) out: h_t (rows
 *                 ldh apart: the h slot of the next step's input row)
 *   wT   (C, H)   optional (NULL): the interface weights transposed, with bz (C): then
 *   z    (B, C)   out (rows ldz apart): the interface logits bz + wT h_t
 * with the products and the sum of c_t rounded as torch's mul and addcmul round them.
 * sigmoid is 1 / (1 + exp(-x)); tanh |x| is, for |x| < 0.625, the Cephes library's odd
 * polynomial (float, tanhf.c) or rational form (double, tanh.c), else 1 - 2 / (exp(2|x|)
 * + 1), with the sign of x put back.  exp is our own, vectorisable (libm's exp is a call
 * per element: the double cell took 2.5x torch's time with it): n = round(x / ln 2), r =
 * x - n ln 2 in two parts, then Cephes' polynomial (expf.c) or Pade form (exp.c) on r and
 * 2^n put into the exponent bits (S. L. Moshier, Cephes Mathematical Library; the
 * coefficients are his).  Checked against exact values in tests/models/
 * test_lstm_sequence.py: sigmoid within 4 ulp, tanh within 2, in both precisions (torch's
 * own are within 2.5 and 1 on the same points).  Arguments are clamped to exp's range
 * (float [-87.3, 88.3]: beyond it sigmoid is within 1e-38 of 0 or 1; double
 * [-708, 709]).  Measured at batch 128, hidden 256 on 2 cores: the float cell with its
 * interface 161 us against 197 us for the same torch operations, the double one 301 us
 * against 369 us.
 */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "rn_parallel.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define RN_LSTM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RN_LSTM_CLONES
#endif

/* single-precision exp for vectorised loops: n = round(x log2 e) by the 1.5 * 2^23 trick
 * (exact in round-to-nearest, no fast-math here), r = x - n ln 2 in two parts, Cephes
 * expf's polynomial on r, and 2^n put into the exponent bits. */
static inline float rn_expf(float x)
{
    x = x > 88.3f ? 88.3f : x;
    x = x < -87.3f ? -87.3f : x;
    const float big = 12582912.0f;
    float n = x * 1.44269504088896341f + big;
    n = n - big;
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    const float r2 = r * r;
    float p = 1.9875691500e-4f * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r2 + r;
    p = p + 1.0f;
    const int e = ((int)n + 127) << 23;
    float scale;
    memcpy(&scale, &e, sizeof scale);
    return p * scale;
}

static inline float rn_sigmoidf(float x) { return 1.0f / (1.0f + rn_expf(-x)); }

static inline float rn_tanhf(float x)
{
    const float a = fabsf(x);
    const float z = x * x;  /* |x| < 0.625: Cephes tanhf's odd polynomial */
    float p = -5.70498872745e-3f * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    const float small = (p * z) * a + a;
    const float large = 1.0f - 2.0f / (rn_expf(2.0f * a) + 1.0f);
    return copysignf(a < 0.625f ? small : large, x);
}

/* double exp for vectorised loops: the same range reduction, then Cephes exp's Pade form
 * exp(r) = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)) */
static inline double rn_expd(double x)
{
    x = x > 709.0 ? 709.0 : x;
    x = x < -708.0 ? -708.0 : x;
    const double big = 6755399441055744.0;  /* 1.5 * 2^52 */
    double n = x * 1.4426950408889634073599 + big;
    n = n - big;
    double r = x - n * 6.93145751953125e-1;
    r = r - n * 1.42860682030941723212e-6;
    const double r2 = r * r;
    double p = 1.26177193074810590878e-4 * r2 + 3.02994407707441961300e-2;
    p = p * r2 + 9.99999999999999999910e-1;
    p = p * r;
    double q = 3.00198505138664455042e-6 * r2 + 2.52448340349684104192e-3;
    q = q * r2 + 2.27265548208155028766e-1;
    q = q * r2 + 2.00000000000000000009e0;
    const double e = 1.0 + 2.0 * (p / (q - p));
    const long long bits = (long long)((int)n + 1023) << 52;  /* via int: no AVX-512DQ */
    double scale;
    memcpy(&scale, &bits, sizeof scale);
    return e * scale;
}

static inline double rn_sigmoidd(double x) { return 1.0 / (1.0 + rn_expd(-x)); }

static inline double rn_tanhd(double x)
{
    const double a = fabs(x);
    const double z = x * x;  /* |x| < 0.625: Cephes tanh's rational form */
    double p = -9.64399179425052238628e-1 * z - 9.92877231001918586564e1;
    p = p * z - 1.61468768441708447952e3;
    double q = z + 1.12811678491632931402e2;
    q = q * z + 2.23548839060100448583e3;
    q = q * z + 4.84406305325125486048e3;
    const double small = a + a * (z * p / q);
    const double large = 1.0 - 2.0 / (rn_expd(2.0 * a) + 1.0);
    return copysign(a < 0.625 ? small : large, x);
}

#define RN_LSTM(SUF, TY)                                                                       \
static inline void rn_lstm_gh_##SUF(const TY *restrict gh, const TY *restrict gh2,             \
                                    const TY *restrict dz, const TY *restrict wT, long long C,  \
                                    TY *restrict out, long long H)                             \
{                                                                                              \
    if (gh2) {                                                                                 \
        for (long long j = 0; j < H; j++) out[j] = gh[j] + gh2[j];                             \
    } else {                                                                                   \
        for (long long j = 0; j < H; j++) out[j] = gh[j];                                      \
    }                                                                                          \
    if (dz) {                                                                                  \
        for (long long k = 0; k < C; k++) {                                                    \
            const TY z = dz[k];                                                                \
            const TY *restrict w = wT + k * H;                                                 \
            for (long long j = 0; j < H; j++) out[j] += z * w[j];                              \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
static inline void rn_lstm_row_##SUF(const TY *restrict ai, const TY *restrict af,             \
                              const TY *restrict ao, const TY *restrict ag,                    \
                              const TY *restrict c0, const TY *restrict t, TY *restrict dcb,   \
                              TY *restrict di, TY *restrict df, TY *restrict dov,              \
                              TY *restrict dgg, long long H)                                   \
{                                                                                              \
    for (long long j = 0; j < H; j++) {                                                        \
        const TY i = ai[j], f = af[j], o = ao[j], g = ag[j], th = t[j], h = dov[j];            \
        const TY c = dcb[j] + h * o * ((TY)1 - th * th);                                       \
        di[j] = c * g * i * ((TY)1 - i);                                                       \
        df[j] = c * c0[j] * f * ((TY)1 - f);                                                   \
        dov[j] = h * th * o * ((TY)1 - o);                                                     \
        dgg[j] = c * i * ((TY)1 - g * g);                                                      \
        dcb[j] = c * f;                                                                        \
    }                                                                                          \
}                                                                                              \
RN_LSTM_CLONES void rn_lstm_bwd_rows_##SUF(const TY *act, const TY *cp, const TY *tc,          \
                                           const TY *gh, long long ldgh, const TY *gh2,        \
                                           long long ldgh2, const TY *dz, long long ldz,       \
                                           const TY *wT, long long C, TY *dc, TY *dg,          \
                                           long long b0, long long b1, long long H)            \
{                                                                                              \
    for (long long b = b0; b < b1; b++) {                                                      \
        const TY *ai = act + b * 4 * H;                                                        \
        TY *di = dg + b * 4 * H;                                                               \
        rn_lstm_gh_##SUF(gh + b * ldgh, gh2 ? gh2 + b * ldgh2 : NULL,                          \
                         dz ? dz + b * ldz : NULL, wT, C, di + 2 * H, H);                      \
        rn_lstm_row_##SUF(ai, ai + H, ai + 2 * H, ai + 3 * H, cp + b * H, tc + b * H,          \
                          dc + b * H, di, di + H, di + 2 * H, di + 3 * H, H);                  \
    }                                                                                          \
}                                                                                              \
void rn_lstm_bwd_##SUF(const TY *act, const TY *cp, const TY *tc, const TY *gh, long long ldgh, \
                       const TY *gh2, long long ldgh2, const TY *dz, long long ldz,            \
                       const TY *wT, long long C, TY *dc, TY *dg, long long b0, long long b1,  \
                       long long H)                                                            \
{                                                                                              \
    RN_PAR_ROWS(b0, b1, (b1 - b0) * (4 + C) * H,                                               \
                rn_lstm_bwd_rows_##SUF(act, cp, tc, gh, ldgh, gh2, ldgh2, dz, ldz, wT, C, dc,  \
                                       dg, lo, hi, H));                                        \
}

#define LANES 16

#define RN_LSTM_FWD(SUF, TY, SIG, TANH)                                                        \
RN_LSTM_CLONES void rn_lstm_fwd_rows_##SUF(TY *act, const TY *cp, TY *c, TY *tc, TY *h,        \
                                           long long ldh, const TY *wT, const TY *bz,          \
                                           long long C, TY *z, long long ldz, long long b0,    \
                                           long long b1, long long H)                          \
{                                                                                              \
    for (long long b = b0; b < b1; b++) {                                                      \
        TY *restrict a = act + b * 4 * H;                                                      \
        for (long long j = 0; j < 3 * H; j++) a[j] = SIG(a[j]);                                \
        for (long long j = 3 * H; j < 4 * H; j++) a[j] = TANH(a[j]);                           \
        const TY *restrict cpb = cp + b * H;                                                   \
        TY *restrict cb = c + b * H, *restrict tb = tc + b * H, *restrict hb = h + b * ldh;    \
        for (long long j = 0; j < H; j++) {                                                    \
            const TY fc = a[H + j] * cpb[j], ig = a[j] * a[3 * H + j];                         \
            const TY cc = fc + ig;                                                             \
            cb[j] = cc;                                                                        \
            tb[j] = TANH(cc);                                                                  \
        }                                                                                      \
        for (long long j = 0; j < H; j++) hb[j] = a[2 * H + j] * tb[j];                        \
        if (wT) {  /* z = bz + wT h_t: LANES partial sums, in a fixed order */                 \
            for (long long k = 0; k < C; k++) {                                                \
                const TY *restrict w = wT + k * H;                                             \
                TY acc[LANES] = {0};                                                           \
                long long j = 0;                                                               \
                for (; j + LANES <= H; j += LANES)                                             \
                    for (long long l = 0; l < LANES; l++) acc[l] += hb[j + l] * w[j + l];      \
                TY sum = 0;                                                                    \
                for (long long l = 0; l < LANES; l++) sum += acc[l];                           \
                for (; j < H; j++) sum += hb[j] * w[j];                                        \
                z[b * ldz + k] = bz[k] + sum;                                                  \
            }                                                                                  \
        }                                                                                      \
    }                                                                                          \
}                                                                                              \
void rn_lstm_fwd_##SUF(TY *act, const TY *cp, TY *c, TY *tc, TY *h, long long ldh,            \
                       const TY *wT, const TY *bz, long long C, TY *z, long long ldz,          \
                       long long b0, long long b1, long long H)                                \
{                                                                                              \
    RN_PAR_ROWS(b0, b1, (b1 - b0) * (6 + C) * H,                                               \
                rn_lstm_fwd_rows_##SUF(act, cp, c, tc, h, ldh, wT, bz, C, z, ldz, lo, hi, H)); \
}

/*
 * Table-driven entry points for loops that call a kernel step after step: `a` is one row of
 * a table holding the call's arguments as 64-bit integers (addresses and integers, in the
 * order of the plain function's parameters, without b0 and b1).  One argument through
 * ctypes instead of a dozen or more: at hidden 20 the conversion of the arguments cost
 * more than the kernel (RN_P, rn_parallel.h, reads one argument).
 */
#define RN_LSTM_ROWS(SUF, TY)                                                                  \
void rn_lstm_fwd_row_##SUF(const long long *a, long long b0, long long b1)                     \
{                                                                                              \
    rn_lstm_fwd_##SUF(RN_P(TY, a[0]), RN_P(const TY, a[1]), RN_P(TY, a[2]), RN_P(TY, a[3]),    \
                      RN_P(TY, a[4]), a[5], RN_P(const TY, a[6]), RN_P(const TY, a[7]), a[8],  \
                      RN_P(TY, a[9]), a[10], b0, b1, a[11]);                                   \
}                                                                                              \
void rn_lstm_bwd_row_##SUF(const long long *a, long long b0, long long b1)                     \
{                                                                                              \
    rn_lstm_bwd_##SUF(RN_P(const TY, a[0]), RN_P(const TY, a[1]), RN_P(const TY, a[2]),        \
                      RN_P(const TY, a[3]), a[4], RN_P(const TY, a[5]), a[6],                  \
                      RN_P(const TY, a[7]), a[8], RN_P(const TY, a[9]), a[10], RN_P(TY, a[11]),\
                      RN_P(TY, a[12]), b0, b1, a[13]);                                         \
}

RN_LSTM(f32, float)
RN_LSTM(f64, double)
RN_LSTM_FWD(f32, float, rn_sigmoidf, rn_tanhf)
RN_LSTM_FWD(f64, double, rn_sigmoidd, rn_tanhd)
RN_LSTM_ROWS(f32, float)
RN_LSTM_ROWS(f64, double)
