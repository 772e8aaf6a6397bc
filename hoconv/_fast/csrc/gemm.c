/* GEMMs of the fused passes (see hoconv_native.h): register tiles, a channels-first output
   straight from the last GEMM (register transposes), rows stored in either layout, frames
   packed for the GEMMs.

   GEMMs: a 6-row x 64-column register tile (24 accumulators of 16 floats), B rows streamed,
   A broadcast; ~112-114 GFLOP/s per Zen 4 core in cache (MKL's multi-threaded GEMM over the
   whole tensor: 137-156 GFLOP/s on 2 cores). */
#include "hoconv_native.h"
#ifdef __AVX512F__
#include <immintrin.h>
#endif

#define MR 6 /* rows of a GEMM register tile */

static inline void st_stream(float* p, v16 v) {
#ifdef __AVX512F__
  _mm512_stream_ps(p, (__m512)v);
#else
  st(p, v);
#endif
}

/* Makes the STREAM stores of this thread visible (call before a parallel region ends). */
void stream_fence(void) {
#ifdef __AVX512F__
  _mm_sfence();
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
void gemm(long M, long N, long K, const float* A, long as, long ak, const float* B,
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
void gemm_cf_out(long M, long T, long K, const float* A, long as, const float* B,
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
int cf_writable(long cs, long ps, long count, long C, long Cp) {
  return ps == 1 && cs != 1 && count % 16 == 0 && C == Cp;
}

/* dst[c oc + q op] = acc[q ldc + c] for q < count, c < C: rows of an accumulator stored in a
   tensor of either layout (channels-first in 16 x 16 transposed blocks, written with
   non-temporal stores when aligned: dst is final output, never read back here). */
void store_rows(float* dst, long oc, long op, const float* acc, long ldc, long count,
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

/* Copies the C rows of a channels-first frame at `base` (channel stride xc) to `pack` (rows
   of packed_ld(count)); a channels-last frame (position stride xp != 1) is left as it is, and
   so is every frame when pack is NULL. Packing pays when the frame is read once per rank
   block and there are several (rank 288 channels-first, 2 threads, interleaved A/B runs:
   fwd+bwd 125-133 -> 122-128 ms); with one block the copy costs more than it saves (rank 64:
   29.0 -> 30.1-30.6 ms). */
void pack_frame(const float* base, long xc, long xp, long C, long count, float* pack) {
  if (xp != 1 || !pack) return;
  long ld = packed_ld(count);
  for (long c = 0; c < C; ++c) memcpy(pack + c * ld, base + c * xc, count * sizeof(float));
}

