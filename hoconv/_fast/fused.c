/* Fused forward of a stride-1 CP convolution (built after native.c, in the same unit: it uses
   its vectors, taps and pass_axis).

   out[n, :, od] = U^T (sum_a fd[a] g[od + a dd - pd]) + bias, with g[f] = H(W(V^T x[n, :, f]))
   the rank-space frame f after the 1x1 conv and the W and H passes of the separable kernel.
   Each thread walks its samples (or a range of output frames of one sample) frame by frame,
   keeping the last `span` frames g[f] in a ring; per output frame, per block of RB ranks:
   the new input frames' 1x1 conv (GEMM, K = C) and W / H passes into the ring, then the D pass
   into the block's columns of h2 (the frame, all ranks); then the output frame in one GEMM
   (K = R, starting from the bias): written into the output itself (channels-last, T a
   multiple of 16), into a channels-first output through register transposes (gemm_cf_out),
   or into a frame buffer stored afterwards (store_frame). Every rank-space
   intermediate stays in L2 / L3: only x is read and out written, once. A 2-D conv runs as a
   3-D one whose frames are its rows (native.py).

   GEMMs: a 6-row x 64-column register tile (24 accumulators of 16 floats), B rows streamed,
   A broadcast; ~112-114 GFLOP/s per Zen 4 core in cache (MKL's multi-threaded GEMM over the
   whole tensor: 137-156 GFLOP/s on 2 cores). */

#define MR 6  /* rows of a GEMM register tile */
#define RB 64 /* ranks per block */

/* Block r0 of ring slot i: rings are (span, R / RB, size, RB), each block of a frame
   contiguous (size positions of cs = min(RB, R - r0) ranks). */
static inline float* blk(float* ring, long i, long size, long R, long r0) {
  return ring + (i * R + r0) * size;
}

static inline v16 bc(float s) {
  v16 v = {s, s, s, s, s, s, s, s, s, s, s, s, s, s, s, s};
  return v;
}

#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* How a GEMM treats C: start from init (FRESH), add to it (ACCUM), or start from init and
   write with non-temporal stores (STREAM: final output never read back, so its cache lines
   need not be fetched first; 64-byte aligned rows, AVX-512 only, else FRESH). */
enum { FRESH = 0, ACCUM = 1, STREAM = 2 };

static inline void st_stream(float* p, v16 v) {
#ifdef __AVX512F__
  _mm512_stream_ps(p, (__m512)v);
#else
  st(p, v);
#endif
}

/* C[i, 16 j] (ldc) = (acc ? C : init) + sum_k A[i as + k ak] B[k ldb + 16 j], i < mr <= MR,
   j < NV; init: a row every row of C starts from (NULL: zeros). A last tile of mr < MR rows
   computes its last row again in the spare accumulators (reads only, never stored): a
   one-row kernel would chain every FMA on one accumulator (4x slower per row, and GEMMs of
   64 rows, e.g. 2-D frames or the parameter gradients, have 4 such rows). Every loop over
   the accumulators has constant bounds and is unrolled, so GCC keeps them in registers: with
   a runtime row count in the loops it copied all 24 through the stack before and after the
   K loop, a 7 % loss at K = 64 (105 -> 114 GFLOP/s per core in cache). */
#define TILE(NV)                                                                          \
  static void tile##NV(long K, const float* A, long as, long ak, const float* B, long ldb,  \
                       float* C, long ldc, long mr, int mode, const float* init) {         \
    v16 c[MR][NV], b[NV];                                                                  \
    const float* ar[MR];                                                                   \
    _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i) ar[i] = A + lmin(i, mr - 1) * as; \
    if (mode == ACCUM) {                                                                   \
      _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i)                                 \
        _Pragma("GCC unroll 4") for (int j = 0; j < NV; ++j)                               \
          c[i][j] = ld(C + lmin(i, mr - 1) * ldc + 16 * j);                                \
    } else {                                                                               \
      _Pragma("GCC unroll 4") for (int j = 0; j < NV; ++j) b[j] = init ? ld(init + 16 * j) : bc(0.f); \
      _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i)                                 \
        _Pragma("GCC unroll 4") for (int j = 0; j < NV; ++j) c[i][j] = b[j];               \
    }                                                                                      \
    for (long k = 0; k < K; ++k) {                                                         \
      _Pragma("GCC unroll 4") for (int j = 0; j < NV; ++j) b[j] = ld(B + k * ldb + 16 * j); \
      _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i) {                               \
        v16 a = bc(ar[i][k * ak]);                                                         \
        _Pragma("GCC unroll 4") for (int j = 0; j < NV; ++j) c[i][j] += a * b[j];          \
      }                                                                                    \
    }                                                                                      \
    _Pragma("GCC unroll 8") for (int i = 0; i < MR; ++i)                                   \
      _Pragma("GCC unroll 4") for (int j = 0; j < NV; ++j)                                 \
        if (i < mr) {                                                                      \
          if (mode == STREAM) st_stream(C + i * ldc + 16 * j, c[i][j]);                    \
          else st(C + i * ldc + 16 * j, c[i][j]);                                          \
        }                                                                                  \
  }
TILE(4)
TILE(3)
TILE(2)
TILE(1)

/* C (M x N, ldc) = (ACCUM ? C : init rows) + A (M x K, strides as, ak) B (K x N, ldb); N a multiple
   of 16. A channels-first frame is A with as = 1: no transposed copy. */
static void gemm(long M, long N, long K, const float* A, long as, long ak, const float* B,
                 long ldb, float* C, long ldc, int mode, const float* init) {
#ifdef __AVX512F__
  if (mode == STREAM && (((unsigned long)C | (unsigned long)(ldc * 4)) & 63)) mode = FRESH;
#else
  if (mode == STREAM) mode = FRESH;
#endif
  for (long n0 = 0; n0 < N; n0 += 64) {
    long nv = lmin(4, (N - n0) / 16), m = 0;
    const float* b = B + n0;
    const float* i0 = init ? init + n0 : NULL;
    for (; m < M; m += MR) {
      const float* a = A + m * as;
      float* c = C + m * ldc + n0;
      long mr = lmin(MR, M - m);
      if (nv == 4) tile4(K, a, as, ak, b, ldb, c, ldc, mr, mode, i0);
      else if (nv == 3) tile3(K, a, as, ak, b, ldb, c, ldc, mr, mode, i0);
      else if (nv == 2) tile2(K, a, as, ak, b, ldb, c, ldc, mr, mode, i0);
      else tile1(K, a, as, ak, b, ldb, c, ldc, mr, mode, i0);
    }
  }
}

typedef struct {
  const float *x, *vt, *fd, *fh, *fw, *ut, *bias;
  float* out;
  long N, C, D, H, W, Do, Ho, Wo, R, T, Tp, KD, KH, KW, pd, ph, pw, dd, dh, dw;
  long xn, xc, xp, on, oc, op; /* strides: sample, channel, position (d h w flattened) */
} Fwd;

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define HAVE_SHUFFLE 1
#endif
#endif


/* r[t][q] = r[q][t] for q, t < 16: a 16 x 16 block transposed in registers. */
static inline void transpose_regs(v16* r) {
#ifdef HAVE_SHUFFLE
  v16 lo, hi;
  /* stage k swaps bit k of the row and column indices: rows i and i + 2^k, bit k of i clear */
  for (int i = 0; i < 16; i += 2) {
    lo = __builtin_shufflevector(r[i], r[i + 1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
    hi = __builtin_shufflevector(r[i], r[i + 1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
    r[i] = lo; r[i + 1] = hi;
  }
  for (int i = 0; i < 16; ++i) {
    if (i & 2) continue;
    lo = __builtin_shufflevector(r[i], r[i + 2], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
    hi = __builtin_shufflevector(r[i], r[i + 2], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
    r[i] = lo; r[i + 2] = hi;
  }
  for (int i = 0; i < 16; ++i) {
    if (i & 4) continue;
    lo = __builtin_shufflevector(r[i], r[i + 4], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    hi = __builtin_shufflevector(r[i], r[i + 4], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    r[i] = lo; r[i + 4] = hi;
  }
  for (int i = 0; i < 8; ++i) {
    lo = __builtin_shufflevector(r[i], r[i + 8], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    hi = __builtin_shufflevector(r[i], r[i + 8], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    r[i] = lo; r[i + 8] = hi;
  }
#else
  float m[16][16];
  for (int q = 0; q < 16; ++q) st(m[q], r[q]);
  for (int t = 0; t < 16; ++t)
    for (int q = 0; q < 16; ++q) r[t][q] = m[q][t];
#endif
}

/* dst[t ds + q] = src[q ss + t] for q < 16, t < nt: a 16 x 16 block transposed (rows of dst
   past nt not written); `stream`: dst rows are 64-byte aligned final output (st_stream). */
static void transpose16(float* dst, long ds, const float* src, long ss, long nt, int stream) {
  v16 r[16];
  for (int i = 0; i < 16; ++i) r[i] = ld(src + i * ss);
  transpose_regs(r);
  for (long t = 0; t < nt; ++t)
    if (stream) st_stream(dst + t * ds, r[t]);
    else st(dst + t * ds, r[t]);
}

/* A channels-first output frame straight from the last GEMM: dst[t oc + q] = init[q, t] +
   sum_k A[q as + k] B[k ldb + t] for q < M, t < T (both multiples of 16); init: the rows of
   acc (ldc) when acc is not NULL, else the bias (or zeros). 16 positions x 16 channels per
   register tile, transposed in registers and stored (non-temporal when aligned): no frame
   buffer written and read back. */
static void gemm_cf_out(long M, long T, long K, const float* A, long as, const float* B,
                        long ldb, const float* acc, long ldc, const float* bias, float* dst,
                        long oc) {
  int stream = !(((unsigned long)dst | (unsigned long)(oc * 4)) & 63);
  for (long q0 = 0; q0 < M; q0 += 16)
    for (long t0 = 0; t0 < T; t0 += 16) {
      v16 c[16];
      const float* a = A + q0 * as;
      for (int i = 0; i < 16; ++i)
        c[i] = acc ? ld(acc + (q0 + i) * ldc + t0) : bias ? ld(bias + t0) : bc(0.f);
      for (long k = 0; k < K; ++k) {
        v16 b = ld(B + k * ldb + t0);
        for (int i = 0; i < 16; ++i) c[i] += bc(a[i * as + k]) * b;
      }
      transpose_regs(c);
      for (int t = 0; t < 16; ++t)
        if (stream) st_stream(dst + (t0 + t) * oc + q0, c[t]);
        else st(dst + (t0 + t) * oc + q0, c[t]);
    }
}

/* Whether gemm_cf_out can write a frame of `count` positions and C channels (padded to Cp in
   the GEMM) of a tensor with channel stride cs and position stride ps: channels-first,
   positions and channels whole vectors. */
static inline int cf_writable(long cs, long ps, long count, long C, long Cp) {
  return ps == 1 && cs != 1 && count % 16 == 0 && C == Cp;
}

/* Input frames one output frame reads along the first axis (the rings' length). */
static inline long span_of(const Fwd* p) { return (p->KD - 1) * p->dd + 1; }

/* Whether output frames are (Ho Wo, T) row-major with whole vectors (GEMMs write them). */
static int direct_out(const Fwd* p) { return p->oc == 1 && p->op == p->T && p->T == p->Tp; }

/* Where output frame od of sample n is accumulated: the output itself when direct_out, else
   `buffer` (stored by store_frame). */
static float* frame_acc(const Fwd* p, long n, long od, float* buffer) {
  return direct_out(p) ? p->out + n * p->on + od * p->Ho * p->Wo * p->op : buffer;
}

/* dst[c oc + q op] = acc[q ldc + c] for q < count, c < C: rows of an accumulator stored in a
   tensor of either layout (channels-first in 16 x 16 transposed blocks, written with
   non-temporal stores when aligned: dst is final output, never read back here). */
static void store_rows(float* dst, long oc, long op, const float* acc, long ldc, long count,
                       long C) {
  if (oc == 1) {
    for (long q = 0; q < count; ++q) memcpy(dst + q * op, acc + q * ldc, C * sizeof(float));
    return;
  }
  long q16 = op == 1 ? count / 16 * 16 : 0;
  int stream = !(((unsigned long)dst | (unsigned long)(oc * 4)) & 63);
  for (long q0 = 0; q0 < q16; q0 += 16)
    for (long c0 = 0; c0 < C; c0 += 16)
      transpose16(dst + c0 * oc + q0, oc, acc + q0 * ldc + c0, ldc, lmin(16, C - c0), stream);
  for (long q = q16; q < count; ++q) /* the rest, and other layouts */
    for (long c = 0; c < C; ++c) dst[c * oc + q * op] = acc[q * ldc + c];
}

/* A frame's matrix: element (position q, channel c) at a[q as + c ak]. */
typedef struct {
  const float* a;
  long as, ak;
} Mat;

/* Row stride of a packed channels-first frame of `count` positions: whole vectors plus one,
   so that rows do not alias in the caches (rows 2^k floats apart share their cache sets: the
   GEMMs then reread every row from L3). */
static inline long packed_ld(long count) { return (count + 15) / 16 * 16 + 16; }

/* Copies the C rows of a channels-first frame at `base` (channel stride xc) to `pack` (rows
   of packed_ld(count)); a channels-last frame (position stride xp != 1) is left as it is, and
   so is every frame when pack is NULL. Packing pays when the frame is read once per rank
   block and there are several (rank 288 channels-first, 2 threads, interleaved A/B runs:
   fwd+bwd 125-133 -> 122-128 ms); with one block the copy costs more than it saves (rank 64:
   29.0 -> 30.1-30.6 ms). */
static void pack_frame(const float* base, long xc, long xp, long C, long count, float* pack) {
  if (xp != 1 || !pack) return;
  long ld = packed_ld(count);
  for (long c = 0; c < C; ++c) memcpy(pack + c * ld, base + c * xc, count * sizeof(float));
}

/* The frame at `base` as a GEMM operand: its pack_frame copy, if any, else itself. */
static inline Mat frame_view(const float* base, long xc, long xp, long count, const float* pack) {
  return xp != 1 || !pack ? (Mat){base, xp, xc} : (Mat){pack, 1, packed_ld(count)};
}

/* The packing buffer to use (NULL: do not pack) for a layer of R ranks. */
static inline float* packing(long R, float* buffer) { return R > RB ? buffer : NULL; }

/* The accumulator into output frame od of sample n when it is not the output itself. */
static void store_frame(const Fwd* p, long n, long od, const float* acc) {
  long frame = p->Ho * p->Wo;
  if (!direct_out(p))
    store_rows(p->out + n * p->on + od * frame * p->op, p->oc, p->op, acc, p->Tp, frame, p->T);
}

/* g (Ho, Wo, cs) = H(W(h1)) for ranks [r0, r0 + cs) of one frame (h1: (H, W, cs)), row by
   row: each output row from the W-passed rows it reads, kept in `rows` (a ring of min(span,
   H) rows of (Wo, cs)). */
static void wh_passes(const Fwd* p, float* g, const float* h1, float* rows, long r0, long cs) {
  long R = p->R, nv = cs / 16, row = p->Wo * cs, span = (p->KH - 1) * p->dh + 1;
  long slots = lmin(span, p->H), next = 0; /* rows below `next` are W-passed */
  const float* sp[MAXK];
  const float* wp[MAXK];
  for (long ho = 0; ho < p->Ho; ++ho) {
    long lo = ho - p->ph, hi = lmin(p->H, lo + span), nk = 0;
    for (next = lmax(next, lmax(lo, 0)); next < hi; ++next)
      pass_axis(rows + next % slots * row, cs, h1 + next * p->W * cs, cs, p->Wo, p->W, 1,
                p->fw + r0, R, p->KW, p->dw, p->pw, nv);
    for (long b = 0; b < p->KH; ++b) {
      long i = lo + b * p->dh;
      if (i >= 0 && i < p->H) {
        sp[nk] = rows + i % slots * row;
        wp[nk++] = p->fh + b * R + r0;
      }
    }
    taps(g + ho * row, cs, sp, cs, p->Wo, wp, nk, nv);
  }
}

/* Floats of one thread's cp_fwd_f32 workspace: the layout of fwd_range. */
long cp_fwd_ws_floats(long C, long H, long W, long Ho, long Wo, long R, long Tp, long span) {
  long hw = H * W, frame = Ho * Wo;
  return hw * RB + H * Wo * RB + span * frame * R + frame * R + frame * Tp +
         span * C * packed_ld(hw);
}

/* Output frames [o0, o1) of sample n; `ws`: the workspace of one thread (cp_fwd_ws_floats). */
static void fwd_range(const Fwd* p, long n, long o0, long o1, float* ws) {
  long span = span_of(p), hw = p->H * p->W, frame = p->Ho * p->Wo, R = p->R;
  float* h1 = ws;                           /* (H W, RB): the 1x1 conv of a block */
  float* tw = h1 + hw * RB;                 /* (H, Wo, RB): after the W pass */
  float* ring = tw + p->H * p->Wo * RB;     /* span frames after the H pass (blk) */
  float* h2 = ring + span * frame * R;      /* (Ho Wo, R): after the D pass */
  float* acc = h2 + frame * R;              /* (Ho Wo, Tp): the output frame */
  float* pack = packing(R, acc + frame * p->Tp); /* span frames (C, packed_ld(H W)), or NULL */
  const float* sp[MAXK];
  const float* wp[MAXK];
  long next = 0; /* input frames below `next` are done */
  /* channels-first frames of whole vectors come straight from the last GEMM (gemm_cf_out) */
  int cf_out = cf_writable(p->oc, p->op, frame, p->T, p->Tp);
  for (long od = o0; od < o1; ++od) {
    float* out = frame_acc(p, n, od, acc);
    long lo = od - p->pd, hi = lmin(p->D, lo + span), first = lmax(next, lmax(lo, 0));
    for (long f = first; f < hi && pack; ++f) /* channels-first frames copied (pack_frame) */
      pack_frame(p->x + n * p->xn + f * hw * p->xp, p->xc, p->xp, p->C, hw,
                 pack + (f % span) * p->C * packed_ld(hw));
    next = lmax(next, hi);
    for (long r0 = 0; r0 < R; r0 += RB) {
      long cs = lmin(RB, R - r0), nv = cs / 16;
      for (long f = first; f < hi; ++f) { /* the new input frames' g, ranks [r0, r0 + cs) */
        Mat xm = frame_view(p->x + n * p->xn + f * hw * p->xp, p->xc, p->xp, hw,
                            pack ? pack + (f % span) * p->C * packed_ld(hw) : NULL);
        gemm(hw, cs, p->C, xm.a, xm.as, xm.ak, p->vt + r0, R, h1, cs, 0, NULL);
        wh_passes(p, blk(ring, f % span, frame, R, r0), h1, tw, r0, cs);
      }
      long nk = 0;
      for (long a = 0; a < p->KD; ++a) {
        long f = od + a * p->dd - p->pd;
        if (f >= 0 && f < p->D) {
          sp[nk] = blk(ring, f % span, frame, R, r0);
          wp[nk++] = p->fd + a * R + r0;
        }
      }
      taps(h2 + r0, R, sp, cs, frame, wp, nk, nv); /* into h2's columns [r0, r0 + cs) */
    }
    /* the output frame: one GEMM over every rank (K = R, accumulators in registers) */
    if (cf_out) {
      gemm_cf_out(frame, p->T, R, h2, R, p->ut, p->Tp, NULL, 0, p->bias,
                  p->out + n * p->on + od * frame, p->oc);
    } else {
      gemm(frame, p->Tp, R, h2, R, 1, p->ut, p->Tp, out, p->Tp, out != acc ? STREAM : FRESH,
           p->bias);
      store_frame(p, n, od, out);
    }
  }
}

/* Entry point: `threads` OpenMP threads, each with `ws_len` floats of `ws`. The work is
   N x chunks units (a range of output frames of one sample); chunks makes the units a
   multiple of the threads when N is not. Pointers: x, V^T (C, R), fd (KD, R), fh, fw,
   U^T (R, Tp) zero-padded to Tp columns (a multiple of 16), bias (Tp, zero-padded) or NULL,
   out. */
void cp_fwd_f32(const float* x, const float* vt, const float* fd, const float* fh,
                const float* fw, const float* ut, const float* bias, float* out, float* ws,
                long ws_len, long threads, long N, long C, long D, long H, long W, long Do,
                long Ho, long Wo, long R, long T, long Tp, long KD, long KH, long KW, long pd,
                long ph, long pw, long dd, long dh, long dw, long xn, long xc, long xp, long on,
                long oc, long op) {
  Fwd p = {x, vt, fd, fh, fw, ut, bias, out, N, C, D, H, W, Do, Ho, Wo, R, T, Tp, KD, KH, KW,
           pd, ph, pw, dd, dh, dw, xn, xc, xp, on, oc, op};
  long g = threads, m = N; /* chunks = threads / gcd(N, threads), at most Do */
  while (m) { long t = g % m; g = m; m = t; }
  long chunks = lmin(Do, threads / g), units = N * chunks;
#pragma omp parallel for num_threads(threads) schedule(static, 1)
  for (long i = 0; i < threads; ++i) {
    for (long u = i; u < units; u += threads) {
      long n = u / chunks, c = u % chunks;
      fwd_range(&p, n, Do * c / chunks, Do * (c + 1) / chunks, ws + i * ws_len);
    }
#ifdef __AVX512F__
    _mm_sfence(); /* the STREAM stores are visible before the call returns */
#endif
  }
}
