/* Depthwise kernels of the fast CP path (see hoconv_native.h for the layouts).

   hc_dw_sep:   stride-1 depthwise conv with a separable kernel fd[a] fh[b] fw[c] (a CP
                kernel's spatial part): three 1-D passes (9 taps for 3x3x3 instead of 27) per
                32-channel block, the W and H passes into a small compact scratch that stays
                in L2, the D pass from a ring of frames straight into the output.
   hc_dw_wgrad: the kernel gradient of a stride-1 depthwise conv (27 taps), accumulated.
   taps / pass_axis: the 1-D tap passes, also used by the fused passes. Each call handles the
   channels [r0, r1) (multiples of 16; dw_wgrad's last range may end in a partial vector), so
   threads split the channels and never write the same memory. */
#include "hoconv_native.h"

/* The 3-tap case of taps for NV vectors, position by position (all NV vectors of one
   position, then the next): 30 % faster than vector by vector on 64-rank blocks in L2
   (4.9 vs 7.1 us per 32 x 32 W pass), the accesses running through memory in order. */
#define TAPS3(NV)                                                                         \
  static void taps3_##NV(float* d, long ds, const float* const* s, long ss, long count,   \
                         const float* const* w) {                                         \
    vf w0[NV * L16], w1[NV * L16], w2[NV * L16];                                                           \
    for (int v = 0; v < NV * L16; ++v) {                                                        \
      w0[v] = ld(w[0] + VW * v);                                                          \
      w1[v] = ld(w[1] + VW * v);                                                          \
      w2[v] = ld(w[2] + VW * v);                                                          \
    }                                                                                     \
    for (long m = 0; m < count; ++m)                                                      \
      for (int v = 0; v < NV * L16; ++v) {                                                      \
        long o = m * ss + VW * v;                                                         \
        st(d + m * ds + VW * v, w0[v] * ld(s[0] + o) + w1[v] * ld(s[1] + o) + w2[v] * ld(s[2] + o)); \
      }                                                                                   \
  }
TAPS3(1)
TAPS3(2)
TAPS3(3)
TAPS3(4)

/* d[m ds + c] = sum_k w[k][c] s[k][m ss + c] for m < count, c < 16 nv, over nk taps. */
void taps(float* d, long ds, const float* const* s, long ss, long count,
                 const float* const* w, long nk, long nv) {
  if (nk == 3 && nv >= 1 && nv <= 4) {
    if (nv == 4) taps3_4(d, ds, s, ss, count, w);
    else if (nv == 3) taps3_3(d, ds, s, ss, count, w);
    else if (nv == 2) taps3_2(d, ds, s, ss, count, w);
    else taps3_1(d, ds, s, ss, count, w);
    return;
  }
  for (long v = 0; v < nv * L16; ++v) {
    long o = VW * v;
    if (nk == 3) {
      vf w0 = ld(w[0] + o), w1 = ld(w[1] + o), w2 = ld(w[2] + o);
      const float *s0 = s[0] + o, *s1 = s[1] + o, *s2 = s[2] + o;
      for (long m = 0; m < count; ++m)
        st(d + m * ds + o, w0 * ld(s0 + m * ss) + w1 * ld(s1 + m * ss) + w2 * ld(s2 + m * ss));
    } else if (nk == 2) {
      vf w0 = ld(w[0] + o), w1 = ld(w[1] + o);
      const float *s0 = s[0] + o, *s1 = s[1] + o;
      for (long m = 0; m < count; ++m)
        st(d + m * ds + o, w0 * ld(s0 + m * ss) + w1 * ld(s1 + m * ss));
    } else if (nk == 1) {
      vf w0 = ld(w[0] + o);
      const float* s0 = s[0] + o;
      for (long m = 0; m < count; ++m) st(d + m * ds + o, w0 * ld(s0 + m * ss));
    } else if (nk == 0) {
      vf zero = {0};
      for (long m = 0; m < count; ++m) st(d + m * ds + o, zero);
    } else {
      for (long m = 0; m < count; ++m) {
        vf acc = ld(w[0] + o) * ld(s[0] + m * ss + o);
        for (long k = 1; k < nk; ++k) acc += ld(w[k] + o) * ld(s[k] + m * ss + o);
        st(d + m * ds + o, acc);
      }
    }
  }
}

/* One 1-D pass along an axis, for o < Lo and j < inner:
   d[(o inner + j) ds] = sum_k wt[k R] s[((o + k dil - pad) inner + j) ss], taps outside [0, L)
   skipped. The output positions whose taps are all inside run as one flat stretch. */
void pass_axis(float* d, long ds, const float* s, long ss, long Lo, long L, long inner,
                      const float* wt, long R, long K, long dil, long pad, long nv) {
  const float* sp[MAXK];
  const float* wp[MAXK];
  long oa = lmin(Lo, lmax(0, pad)), ob = lmax(oa, lmin(Lo, L - (K - 1) * dil + pad));
  for (long o = 0; o < Lo; ++o) {
    if (o == oa && ob > oa) {
      for (long k = 0; k < K; ++k) {
        sp[k] = s + (oa + k * dil - pad) * inner * ss;
        wp[k] = wt + k * R;
      }
      taps(d + oa * inner * ds, ds, sp, ss, (ob - oa) * inner, wp, K, nv);
      o = ob - 1;
      continue;
    }
    long nk = 0;
    for (long k = 0; k < K; ++k) {
      long i = o + k * dil - pad;
      if (i >= 0 && i < L) {
        sp[nk] = s + i * inner * ss;
        wp[nk++] = wt + k * R;
      }
    }
    taps(d + o * inner * ds, ds, sp, ss, inner, wp, nk, nv);
  }
}

/* The W pass of one input frame's rows (src: the frame at this channel block) into tw. */
static void w_pass(float* tw, long cs, const float* src, long H, long W, long Wo, long R,
                   const float* fw, long KW, long dw, long pw, long nv) {
  for (long h = 0; h < H; ++h)
    pass_axis(tw + h * Wo * cs, cs, src + h * W * R, R, Wo, W, 1, fw, R, KW, dw, pw, nv);
}

/* out (N, Do, Ho, Wo, R) = the conv of x (N, D, H, W, R) with the kernel fd[a] fh[b] fw[c]
   (factors transposed: (KD, R), (KH, R), (KW, R)); out[o] reads x[o + k dil - pad] per axis.
   scratch: (H Wo + ((KD - 1) dd + 1) Ho Wo) 32 floats. */
static void sep_range(const float* x, float* out, const float* fd, const float* fh,
                      const float* fw, float* scratch, long r0, long r1, long N, long D, long H,
                      long W, long Do, long Ho, long Wo, long R, long KD, long KH, long KW,
                      long pd, long ph, long pw, long dd, long dh, long dw) {
  long span = (KD - 1) * dd + 1, frame = Ho * Wo;
  float* tw = scratch;              /* (H, Wo, cs): one input frame after the W pass */
  float* ring = scratch + H * Wo * 32; /* span frames (Ho, Wo, cs) after the H pass */
  const float* sp[MAXK];
  const float* wp[MAXK];
  float hw[MAXK * 32]; /* fh times fd, for a D axis of one tap */
  for (long c0 = r0; c0 < r1; c0 += 32) {
    long nv = lmin(2, (r1 - c0) / 16), cs = 16 * nv;
    if (KD == 1 && pd == 0 && Do == D) { /* 2-D blocks: the H pass writes the output */
      for (long b = 0; b < KH; ++b)
        for (long c = 0; c < cs; ++c) hw[b * 32 + c] = fh[b * R + c0 + c] * fd[c0 + c];
      for (long f = 0; f < N * D; ++f) {
        w_pass(tw, cs, x + f * H * W * R + c0, H, W, Wo, R, fw + c0, KW, dw, pw, nv);
        pass_axis(out + f * frame * R + c0, R, tw, cs, Ho, H, Wo, hw, 32, KH, dh, ph, nv);
      }
      continue;
    }
    for (long n = 0; n < N; ++n) {
      long next = 0; /* input frames below `next` are in the ring or no longer needed */
      for (long od = 0; od < Do; ++od) {
        long lo = od - pd, hi = lmin(D, od - pd + span);
        for (next = lmax(next, lo); next < hi; ++next) {
          const float* src = x + (n * D + next) * H * W * R + c0;
          w_pass(tw, cs, src, H, W, Wo, R, fw + c0, KW, dw, pw, nv);
          pass_axis(ring + (next % span) * frame * cs, cs, tw, cs, Ho, H, Wo, fh + c0, R, KH, dh,
                    ph, nv);
        }
        long nk = 0;
        for (long a = 0; a < KD; ++a) {
          long i = od + a * dd - pd;
          if (i >= 0 && i < D) {
            sp[nk] = ring + (i % span) * frame * cs;
            wp[nk++] = fd + c0 + a * R;
          }
        }
        taps(out + (n * Do + od) * frame * R + c0, R, sp, cs, frame, wp, nk, nv);
      }
    }
  }
}

/* ac[c R] += sum_ow g[ow R] x[(ow + c - pw) R] for c = 0, 1, 2 (x zero outside [0, W)), one
   16-channel vector: two output positions per step, the input carried in registers. */
static void row3(float* ac, long R, const float* g, const float* x, long W, long Wo, long pw) {
  vf zero = {0};
#define X(i) (((i) >= 0 && (i) < W) ? ld(x + (i) * R) : zero)
  vf a0 = ld(ac), a1 = ld(ac + R), a2 = ld(ac + 2 * R);
  vf b0 = zero, b1 = zero, b2 = zero;
  vf xa = X(-pw), xb = X(1 - pw);
  long ow = 0;
  for (; ow + 1 < Wo; ow += 2) {
    long i = ow - pw;
    vf xc = X(i + 2), xd = X(i + 3);
    vf g0 = ld(g + ow * R), g1 = ld(g + (ow + 1) * R);
    a0 += g0 * xa; a1 += g0 * xb; a2 += g0 * xc;
    b0 += g1 * xb; b1 += g1 * xc; b2 += g1 * xd;
    xa = xc; xb = xd;
  }
  if (ow < Wo) {
    vf g0 = ld(g + ow * R);
    a0 += g0 * xa; a1 += g0 * xb; a2 += g0 * X(ow - pw + 2);
  }
#undef X
  st(ac, a0 + b0); st(ac + R, a1 + b1); st(ac + 2 * R, a2 + b2);
}

/* ac[c R] += sum_ow g[ow R] x[(ow + c dw - pw) R] for c < KW (x zero outside [0, W)), nv vectors. */
static void row_taps(float* ac, long R, const float* g, const float* x, long W, long Wo,
                     long KW, long dw, long pw, long nv) {
  for (long v = 0; v < nv * L16; ++v) {
    long o = VW * v;
    if (KW == 3 && dw == 1) {
      row3(ac + o, R, g + o, x + o, W, Wo, pw);
      continue;
    }
    for (long c = 0; c < KW; ++c) {
      long shift = c * dw - pw;
      long ow0 = lmax(0, -shift), ow1 = lmin(Wo, W - shift);
      vf s0 = ld(ac + c * R + o), s1 = {0};
      long ow = ow0;
      for (; ow + 1 < ow1; ow += 2) {
        s0 += ld(g + ow * R + o) * ld(x + (ow + shift) * R + o);
        s1 += ld(g + (ow + 1) * R + o) * ld(x + (ow + 1 + shift) * R + o);
      }
      if (ow < ow1) s0 += ld(g + ow * R + o) * ld(x + (ow + shift) * R + o);
      st(ac + c * R + o, s0 + s1);
    }
  }
}

/* acc (KD, KH, KW, R) += sum over (n, od, oh, ow) of gy[n, od, oh, ow] times
   h[n, od + a dd - pd, oh + b dh - ph, ow + c dw - pw] (zero outside h), channels [r0, r1). */
static void wgrad_range(const float* gy, const float* h, float* acc, long r0, long r1, long N,
                        long D, long H, long W, long Do, long Ho, long Wo, long R, long KD,
                        long KH, long KW, long pd, long ph, long pw, long dd, long dh, long dw) {
  for (long t = 0; t < N * Do; ++t) {
    long n = t / Do, od = t % Do;
    for (long a = 0; a < KD; ++a) {
      long id = od + a * dd - pd;
      if (id < 0 || id >= D) continue;
      for (long oh = 0; oh < Ho; ++oh) {
        const float* grow = gy + ((n * Do + od) * Ho + oh) * Wo * R;
        for (long b = 0; b < KH; ++b) {
          long ih = oh + b * dh - ph;
          if (ih < 0 || ih >= H) continue;
          const float* hrow = h + ((n * D + id) * H + ih) * W * R;
          float* ac = acc + (a * KH + b) * KW * R;
          long r16 = r0 + (r1 - r0) / 16 * 16;
          for (long c0 = r0; c0 < r16; c0 += 64)
            row_taps(ac + c0, R, grow + c0, hrow + c0, W, Wo, KW, dw, pw, lmin(4, (r16 - c0) / 16));
          for (long r = r16; r < r1; ++r) /* channels past the last full vector */
            for (long c = 0; c < KW; ++c) {
              long shift = c * dw - pw;
              float s = ac[c * R + r];
              for (long ow = lmax(0, -shift); ow < lmin(Wo, W - shift); ++ow)
                s += grow[ow * R + r] * hrow[(ow + shift) * R + r];
              ac[c * R + r] = s;
            }
        }
      }
    }
  }
}

/* The channel range of thread i of n: 16-channel vectors split evenly, the last one up to R. */
static void split(long R, long i, long n, long* r0, long* r1) {
  long vectors = R / 16;
  *r0 = 16 * (vectors * i / n);
  *r1 = i + 1 == n ? R : 16 * (vectors * (i + 1) / n);
}

/* Why the geometry of a depthwise call is wrong (NULL if it is not). */
static const char* check_dw(long threads, long N, long D, long H, long W, long Do, long Ho,
                            long Wo, long R, long KD, long KH, long KW, long dd, long dh,
                            long dw) {
  if (threads < 1) return "threads must be >= 1";
  if (N < 0 || D < 1 || H < 1 || W < 1) return "N, D, H, W must be >= 0, 1, 1, 1";
  if (Do < 1 || Ho < 1 || Wo < 1) return "Do, Ho, Wo must be >= 1";
  if (R < 1) return "R must be >= 1";
  if (KD < 1 || KH < 1 || KW < 1 || KD > MAXK || KH > MAXK || KW > MAXK)
    return "KD, KH, KW must be in [1, 16] (MAXK)";
  if (dd < 1 || dh < 1 || dw < 1) return "dilations dd, dh, dw must be >= 1";
  return NULL;
}

/* Entry points: `threads` OpenMP threads (the runtime PyTorch already loaded) split the
   channels; hc_dw_sep takes R a multiple of 16 and `scratch_len` floats of scratch each. */
const char* hc_dw_sep(const DwSep* a) {
  const char* err = check_dw(a->threads, a->N, a->D, a->H, a->W, a->Do, a->Ho, a->Wo, a->R,
                             a->KD, a->KH, a->KW, a->dd, a->dh, a->dw);
  if (err) return err;
  if (a->R % 16) return "R must be a multiple of 16 (whole vectors)";
  long span = (a->KD - 1) * a->dd + 1;
  if (a->scratch_len < (a->H * a->Wo + span * a->Ho * a->Wo) * 32)
    return "scratch_len must be >= (H Wo + ((KD - 1) dd + 1) Ho Wo) 32";
  if (a->N > 0 && (!a->x || !a->out || !a->fd || !a->fh || !a->fw || !a->scratch))
    return "x, out, fd, fh, fw, scratch must not be NULL";
#pragma omp parallel for num_threads(a->threads) schedule(static, 1)
  for (long i = 0; i < a->threads; ++i) {
    long r0, r1;
    split(a->R, i, a->threads, &r0, &r1);
    sep_range(a->x, a->out, a->fd, a->fh, a->fw, a->scratch + i * a->scratch_len, r0, r1, a->N,
              a->D, a->H, a->W, a->Do, a->Ho, a->Wo, a->R, a->KD, a->KH, a->KW, a->pd, a->ph,
              a->pw, a->dd, a->dh, a->dw);
  }
  return NULL;
}

const char* hc_dw_wgrad(const DwWgrad* a) {
  const char* err = check_dw(a->threads, a->N, a->D, a->H, a->W, a->Do, a->Ho, a->Wo, a->R,
                             a->KD, a->KH, a->KW, a->dd, a->dh, a->dw);
  if (err) return err;
  if (a->N > 0 && (!a->gy || !a->h || !a->acc)) return "gy, h, acc must not be NULL";
#pragma omp parallel for num_threads(a->threads) schedule(static, 1)
  for (long i = 0; i < a->threads; ++i) {
    long r0, r1;
    split(a->R, i, a->threads, &r0, &r1);
    wgrad_range(a->gy, a->h, a->acc, r0, r1, a->N, a->D, a->H, a->W, a->Do, a->Ho, a->Wo, a->R,
                a->KD, a->KH, a->KW, a->pd, a->ph, a->pw, a->dd, a->dh, a->dw);
  }
  return NULL;
}
