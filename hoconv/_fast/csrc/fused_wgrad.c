/* Weight-gradient pieces of the fused backward (fused_bwd.c): per-tap dot products of the
   output gradient with the shifted inputs, fused with the tap sums where they read the same
   rows (the three-tap case of every pass), and one row pass with its weight gradient. */
#include "hoconv_native.h"

/* ac[c] += sum_{m < count} a[m as + c] b[m bs + c], c < 16 NV: position by position
   (as taps in native.c), two accumulators per vector. */
#define DOT(NV)                                                                           \
  static void dot_##NV(float* ac, const float* a, long as, const float* b, long bs,       \
                       long count) {                                                      \
    vf s0[NV * L16], s1[NV * L16];                                                                   \
    for (int v = 0; v < NV * L16; ++v) s0[v] = s1[v] = bc(0.f);                                 \
    long m = 0;                                                                           \
    for (; m + 1 < count; m += 2)                                                         \
      for (int v = 0; v < NV * L16; ++v) {                                                      \
        s0[v] += ld(a + m * as + VW * v) * ld(b + m * bs + VW * v);                       \
        s1[v] += ld(a + (m + 1) * as + VW * v) * ld(b + (m + 1) * bs + VW * v);           \
      }                                                                                   \
    for (int v = 0; v < NV * L16 && m < count; ++v)                                             \
      s0[v] += ld(a + m * as + VW * v) * ld(b + m * bs + VW * v);                         \
    for (int v = 0; v < NV * L16; ++v) st(ac + VW * v, ld(ac + VW * v) + s0[v] + s1[v]);        \
  }
DOT(1)
DOT(2)
DOT(3)
DOT(4)

/* ac[c] += sum_{m < count} a[m as + c] b[m bs + c], c < 16 nv (nv 1 to 4). */
HC_INTERNAL void dot_acc(float* ac, const float* a, long as, const float* b, long bs, long count,
                    long nv) {
  if (nv == 4) dot_4(ac, a, as, b, bs, count);
  else if (nv == 3) dot_3(ac, a, as, b, bs, count);
  else if (nv == 2) dot_2(ac, a, as, b, bs, count);
  else dot_1(ac, a, as, b, bs, count);
}

/* h[m] = sum_a w_a s_a[m] and dw_a += sum_m gh[m] s_a[m] for three taps a, in one pass over
   the s_a (all of stride cs, m < count, NV vectors), position by position. */
#define TAPS3_DOT(NV)                                                                     \
  static void taps3_dot_##NV(float* h, const float* gh, const float* const* s,            \
                             const float* const* w, float* const* dw, long count, long cs) { \
    vf w0[NV * L16], w1[NV * L16], w2[NV * L16], a0[NV * L16], a1[NV * L16], a2[NV * L16];                                   \
    for (int v = 0; v < NV * L16; ++v) {                                                        \
      w0[v] = ld(w[0] + VW * v);                                                          \
      w1[v] = ld(w[1] + VW * v);                                                          \
      w2[v] = ld(w[2] + VW * v);                                                          \
      a0[v] = a1[v] = a2[v] = bc(0.f);                                                    \
    }                                                                                     \
    for (long m = 0; m < count; ++m)                                                      \
      for (int v = 0; v < NV * L16; ++v) {                                                      \
        long o = m * cs + VW * v;                                                         \
        vf x0 = ld(s[0] + o), x1 = ld(s[1] + o), x2 = ld(s[2] + o), g = ld(gh + o);      \
        st(h + o, w0[v] * x0 + w1[v] * x1 + w2[v] * x2);                                  \
        a0[v] += g * x0;                                                                  \
        a1[v] += g * x1;                                                                  \
        a2[v] += g * x2;                                                                  \
      }                                                                                   \
    for (int v = 0; v < NV * L16; ++v) {                                                        \
      st(dw[0] + VW * v, ld(dw[0] + VW * v) + a0[v]);                                     \
      st(dw[1] + VW * v, ld(dw[1] + VW * v) + a1[v]);                                     \
      st(dw[2] + VW * v, ld(dw[2] + VW * v) + a2[v]);                                     \
    }                                                                                     \
  }
TAPS3_DOT(1)
TAPS3_DOT(2)
TAPS3_DOT(3)
TAPS3_DOT(4)

HC_INTERNAL void taps3_dot(float* h, const float* gh, const float* const* s, const float* const* w,
                      float* const* dw, long count, long cs, long nv) {
  if (nv == 4) taps3_dot_4(h, gh, s, w, dw, count, cs);
  else if (nv == 3) taps3_dot_3(h, gh, s, w, dw, count, cs);
  else if (nv == 2) taps3_dot_2(h, gh, s, w, dw, count, cs);
  else taps3_dot_1(h, gh, s, w, dw, count, cs);
}


/* d[m] = sum_k w_k s_k[m] and dw_k += sum_m gh[m] s_k[m] for m < count over nk taps (every
   array of stride cs). */
HC_INTERNAL void taps_dot(float* d, const float* gh, const float* const* s, const float* const* w,
                     float* const* dw, long nk, long count, long cs, long nv) {
  if (nk == 3) {
    taps3_dot(d, gh, s, w, dw, count, cs, nv);
    return;
  }
  taps(d, cs, s, cs, count, w, nk, nv);
  for (long k = 0; k < nk; ++k) dot_acc(dw[k], gh, cs, s[k], cs, count, nv);
}

/* The taps k < K of output o along an axis of L inputs `step` floats apart that fall inside:
   input s + i step (i = o + k dil - pad), weight wt + k ws, weight gradient dwt + k ws. */
HC_INTERNAL long taps_at(long o, long L, long K, long dil, long pad, const float* s, long step,
                    const float* wt, float* dwt, long ws, const float** sp, const float** wp,
                    float** dp) {
  long nk = 0;
  for (long k = 0; k < K; ++k) {
    long i = o + k * dil - pad;
    if (i >= 0 && i < L) {
      sp[nk] = s + i * step;
      wp[nk] = wt + k * ws;
      dp[nk++] = dwt + k * ws;
    }
  }
  return nk;
}

/* One row pass with its weight gradient, o < Lo (every array of stride cs):
   d[o] = sum_k wt[k ws] s[o + k dil - pad], dwt[k ws] += sum_o gh[o] s[o + k dil - pad]. */
HC_INTERNAL void pass_dot(float* d, const float* s, const float* gh, long Lo, long L,
                     const float* wt, float* dwt, long ws, long K, long dil, long pad, long cs,
                     long nv) {
  const float* sp[MAXK];
  const float* wp[MAXK];
  float* dp[MAXK];
  long oa = lmin(Lo, lmax(0, pad)), ob = lmax(oa, lmin(Lo, L - (K - 1) * dil + pad));
  for (long o = 0; o < Lo; ++o) {
    long count = o == oa && ob > oa ? ob - oa : 1; /* the stretch with every tap inside */
    long nk = taps_at(o, L, K, dil, pad, s, cs, wt, dwt, ws, sp, wp, dp);
    taps_dot(d + o * cs, gh + o * cs, sp, wp, dp, nk, count, cs, nv);
    o += count - 1;
  }
}
