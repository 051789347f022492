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
 */
#include <stddef.h>

#include "rn_parallel.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define RN_LSTM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RN_LSTM_CLONES
#endif

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

RN_LSTM(f32, float)
RN_LSTM(f64, double)
